//! When a service is ready for the steps: a port listening in the pod's network
//! namespace, a command of its own exiting 0, its image's `HEALTHCHECK` passing, or
//! merely started; asked again, more and more slowly, until its timeout.
//!
//! Every probe runs inside the pod through the engine, so it works whatever the
//! runner's own network: a port is read from the namespace's `/proc/net/tcp` and
//! `/proc/net/tcp6` by the shell of a step container (no tool of the image is needed:
//! a socket that listens is one a connection from inside the pod reaches), a command
//! and a health check run in the service's own container.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::service::RunningService;
use crate::engine::error::EngineError;
use crate::engine::Engine;
use crate::spec::{Ready, Service};

/// The first pause between two probes; each next one is half again as long.
const FIRST_PAUSE: Duration = Duration::from_millis(25);

/// The longest pause between two probes.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Prints the lines of the network namespace's TCP sockets with shell built-ins only.
const SOCKETS: &str = r#"for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && while IFS= read -r l; do printf '%s\n' "$l"; done < "$f"; done; :"#;

/// What a service is waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Something listens on this TCP port in the pod.
    Tcp(u16),
    /// This command exits 0 in the service's container, through `sh -c`.
    Command(String),
    /// The image's health check, run by the runner: these arguments (`CMD`) exit 0 in
    /// the service's container.
    Health(Vec<String>),
    /// Nothing: it is ready once started.
    Started,
}

impl Probe {
    /// What `service` is waited for: its `ready`, else its image's health check, else
    /// nothing.
    pub(crate) async fn of(engine: &Engine, service: &Service) -> Probe {
        match &service.ready {
            Some(Ready::Tcp(port)) => Probe::Tcp(*port),
            Some(Ready::Command(command)) => Probe::Command(command.clone()),
            None => match health_check(engine, &service.image).await {
                Some(test) => Probe::Health(test),
                None => Probe::Started,
            },
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Tcp(port) => write!(f, "nothing listened on port {port}"),
            Probe::Command(command) => write!(f, "its ready command `{command}` did not exit 0"),
            Probe::Health(_) => f.write_str("its image's health check did not pass"),
            Probe::Started => f.write_str("it did not start"),
        }
    }
}

/// Why a service did not become ready.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// Its process ended first.
    Exited(Option<i64>),
    /// Its timeout passed; what the last probe said, if anything.
    TimedOut { after: Duration, probe: Probe, said: String },
    /// The engine could not run a probe.
    Engine(EngineError),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Exited(Some(code)) => write!(f, "exited with code {code} before the steps began"),
            NotReady::Exited(None) => f.write_str("ended before the steps began"),
            NotReady::TimedOut { after, probe, said } => {
                write!(f, "was not ready within {}: {probe}", crate::report::human(*after))?;
                match said.trim() {
                    "" => Ok(()),
                    said => write!(f, " (it said: {})", last_line(said)),
                }
            }
            NotReady::Engine(error) => {
                write!(f, "could not be probed: {}", conveyor_sdk::error_text(error))
            }
        }
    }
}

/// Waits until `service` is ready by `probe`, for at most `timeout`; a port is read
/// in `pod`, a step container of the pod. `env` is the service's, for its commands.
pub(crate) async fn wait_ready(
    engine: &Engine,
    service: &RunningService,
    pod: &str,
    probe: &Probe,
    env: &[String],
    timeout: Duration,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut said = String::new();
    loop {
        if let Some(code) = service.ended() {
            return Err(NotReady::Exited(code));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ask(engine, service, pod, probe, env)).await {
            Ok(Ok((true, _))) => return Ok(()),
            Ok(Ok((false, output))) => said = output,
            Ok(Err(error)) if service.ended().is_none() => return Err(NotReady::Engine(error)),
            // Its container went with its process.
            Ok(Err(_)) => {}
            Err(_) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return match service.ended() {
                Some(code) => Err(NotReady::Exited(code)),
                None => Err(NotReady::TimedOut { after: timeout, probe: probe.clone(), said }),
            };
        }
        tokio::select! {
            code = service.wait_ended() => return Err(NotReady::Exited(code)),
            () = tokio::time::sleep(pause.min(left)) => {}
        }
        pause = (pause * 3 / 2).min(MAX_PAUSE);
    }
}

/// One probe: whether it passed, and what it said.
async fn ask(
    engine: &Engine,
    service: &RunningService,
    pod: &str,
    probe: &Probe,
    env: &[String],
) -> Result<(bool, String), EngineError> {
    let shell = |command: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), command.to_owned()];
    match probe {
        Probe::Started => Ok((true, String::new())),
        Probe::Tcp(port) => {
            let probed = engine.probe(pod, shell(SOCKETS), Vec::new()).await?;
            Ok((listening(&probed.output, *port), String::new()))
        }
        Probe::Command(command) => {
            let probed = engine.probe(&service.container_id, shell(command), env.to_vec()).await?;
            Ok((probed.code == Some(0), probed.output))
        }
        Probe::Health(test) => {
            let probed = engine.probe(&service.container_id, test.clone(), env.to_vec()).await?;
            Ok((probed.code == Some(0), probed.output))
        }
    }
}

/// The command of `image`'s `HEALTHCHECK`, when it has one that is not `NONE`.
async fn health_check(engine: &Engine, image: &str) -> Option<Vec<String>> {
    let inspected = match engine.docker().inspect_image(image).await {
        Ok(inspected) => inspected,
        Err(error) => {
            tracing::debug!(%error, image, "cannot read the image's health check");
            return None;
        }
    };
    let test = inspected.config?.healthcheck?.test?;
    health_command(&test)
}

/// The command a `HEALTHCHECK`'s `test` runs: `["CMD", args…]` as they are,
/// `["CMD-SHELL", command]` through `sh -c`; none for `["NONE"]`, an empty test or
/// one inherited (`[]`).
fn health_command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => Some(args.to_vec()),
        Some((kind, [command])) if kind == "CMD-SHELL" => {
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), command.clone()])
        }
        _ => None,
    }
}

/// Whether the lines of `/proc/net/tcp` and `/proc/net/tcp6` in `sockets` have a
/// socket listening on `port`.
fn listening(sockets: &str, port: u16) -> bool {
    sockets.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { return false };
        let local_port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        *state == "0A" && local_port == Some(port)
    })
}

/// The last line of `text` that says something, at most 200 characters of it.
fn last_line(text: &str) -> String {
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 0100007F:A0C2 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0";

    #[test]
    fn a_port_is_ready_when_a_socket_listens_on_it_over_ipv4_or_ipv6() {
        assert!(listening(TCP, 8080), "0x1F90 listens on IPv4");
        assert!(listening(TCP, 5432), "0x1538 listens on IPv6");
        assert!(!listening(TCP, 80), "port 80 has a connection, not a listener");
        assert!(!listening(TCP, 9000));
        assert!(!listening("", 8080));
        assert!(!listening("garbage\n  0: nonsense", 8080));
    }

    #[test]
    fn a_health_check_runs_its_command_or_its_shell_line() {
        let test = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert_eq!(health_command(&test(&["CMD", "wget", "-q", "x"])), Some(test(&["wget", "-q", "x"])));
        assert_eq!(
            health_command(&test(&["CMD-SHELL", "pg_isready"])),
            Some(test(&["/bin/sh", "-c", "pg_isready"]))
        );
        assert_eq!(health_command(&test(&["NONE"])), None);
        assert_eq!(health_command(&test(&["CMD"])), None);
        assert_eq!(health_command(&[]), None);
    }

    #[test]
    fn not_ready_says_why_with_the_last_word_of_the_probe() {
        let timed_out = NotReady::TimedOut {
            after: Duration::from_secs(5),
            probe: Probe::Command("pg_isready".into()),
            said: "first\nno response\n\n".into(),
        };
        assert_eq!(
            timed_out.to_string(),
            "was not ready within 5s: its ready command `pg_isready` did not exit 0 (it said: no response)"
        );
        let port = NotReady::TimedOut {
            after: Duration::from_secs(60),
            probe: Probe::Tcp(5432),
            said: String::new(),
        };
        assert_eq!(port.to_string(), "was not ready within 1m: nothing listened on port 5432");
        assert_eq!(NotReady::Exited(Some(3)).to_string(), "exited with code 3 before the steps began");
    }
}
