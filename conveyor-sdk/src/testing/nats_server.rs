//! A real nats-server process, started for a test.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::TestingError;

/// A `nats-server` (2.10 or newer) with JetStream, listening on a free loopback port
/// with its own store directory; killed when dropped.
///
/// The binary is `$CONVEYOR_NATS_SERVER`, else `nats-server` on the `PATH`, else the
/// one `scripts/services.sh` installed.
///
/// ```no_run
/// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
/// let mut nats = conveyor_sdk::testing::NatsServer::start().await?;
/// println!("NATS at {}", nats.url());
/// nats.restart().await?; // same port, same stored streams
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    extra_args: Vec<std::ffi::OsString>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server and waits until it is ready.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let nats = conveyor_sdk::testing::NatsServer::start().await?;
    /// let client = async_nats::connect(nats.url()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start() -> Result<Self, TestingError> {
        Self::start_with_args(Vec::new()).await
    }

    /// Starts a server that requires mutual TLS: it presents `cert` and `key` (PEM) and
    /// accepts only clients with a certificate signed by `ca`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let nats = conveyor_sdk::testing::NatsServer::start_with_tls(
    ///     "server.pem".as_ref(), "server.key".as_ref(), "ca.pem".as_ref(),
    /// ).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Result<Self, TestingError> {
        let args = vec![
            "--tlsverify".into(),
            "--tlscert".into(),
            cert.as_os_str().to_owned(),
            "--tlskey".into(),
            key.as_os_str().to_owned(),
            "--tlscacert".into(),
            ca.as_os_str().to_owned(),
        ];
        Self::start_with_args(args).await
    }

    async fn start_with_args(extra_args: Vec<std::ffi::OsString>) -> Result<Self, TestingError> {
        Self::start_on(free_port()?, extra_args).await
    }

    /// Starts a server on `port` with `extra_args` (a node of a cluster).
    pub(crate) async fn start_on(
        port: u16,
        extra_args: Vec<std::ffi::OsString>,
    ) -> Result<Self, TestingError> {
        let binary = find_binary()?;
        let store = tempfile::tempdir().map_err(TestingError::Spawn)?;
        let mut server = Self { binary, port, store, extra_args, child: None };
        server.spawn().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let nats = conveyor_sdk::testing::NatsServer::start().await?;
    /// let config = conveyor_sdk::Config::default().nats_url(nats.url());
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash would). Its streams stay on disk.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut nats = conveyor_sdk::testing::NatsServer::start().await?;
    /// nats.stop().await; // the driver under test now sees a lost connection
    /// nats.restart().await?;
    /// # Ok(()) }
    /// ```
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops the server if it runs, then starts it again on the same port and store.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut nats = conveyor_sdk::testing::NatsServer::start().await?;
    /// let url = nats.url();
    /// nats.restart().await?;
    /// assert_eq!(nats.url(), url, "clients reconnect to the same address");
    /// # Ok(()) }
    /// ```
    pub async fn restart(&mut self) -> Result<(), TestingError> {
        self.stop().await;
        self.spawn().await
    }

    /// Whether the process runs (it was not stopped, or was restarted since).
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    async fn spawn(&mut self) -> Result<(), TestingError> {
        let mut child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(TestingError::Spawn)?;
        let stderr = child.stderr.take().ok_or_else(|| TestingError::NotReady("no stderr".into()))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Server is ready") {
                    return true;
                }
                seen.push(line);
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let _ = child.kill().await;
            return Err(TestingError::NotReady(seen.join("\n")));
        }
        // Keep draining its output so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }
}

fn find_binary() -> Result<PathBuf, TestingError> {
    if let Some(path) = std::env::var_os("CONVEYOR_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let state_dir = std::env::var("CONVEYOR_STATE_DIR").unwrap_or_else(|_| "/tmp/conveyor-services".into());
    if let Ok(recorded) = std::fs::read_to_string(format!("{state_dir}/nats-server.path")) {
        let candidate = PathBuf::from(recorded.trim());
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(TestingError::NatsServerNotFound)
}

fn free_port() -> Result<u16, TestingError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(TestingError::Spawn)?;
    let port = listener.local_addr().map_err(TestingError::Spawn)?.port();
    Ok(port)
}
