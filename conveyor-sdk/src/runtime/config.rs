//! The runtime's settings.

use std::path::PathBuf;
use std::time::Duration;

use super::Backoff;

/// How a [`Runtime`](crate::Runtime) connects and runs. Every setter states its default.
///
/// ```
/// use std::time::Duration;
/// let config = conveyor_sdk::Config::default()
///     .nats_url("nats://127.0.0.1:4222")
///     .concurrency(8)
///     .ack_wait(Duration::from_secs(30));
/// assert_eq!(config.get_concurrency(), 8);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) nats_url: String,
    #[cfg(feature = "client")]
    pub(crate) api_url: Option<String>,
    #[cfg(feature = "client")]
    pub(crate) api_root_ca: Option<PathBuf>,
    pub(crate) concurrency: usize,
    pub(crate) max_finishing: usize,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliveries: u64,
    pub(crate) max_retries: u32,
    pub(crate) run_deadline: Duration,
    pub(crate) run_record_ttl: Duration,
    pub(crate) supersede: bool,
    pub(crate) nak_delay: Duration,
    pub(crate) grace_period: Duration,
    pub(crate) cancel_timeout: Duration,
    pub(crate) legacy_live_logs: bool,
    pub(crate) log_window: usize,
    pub(crate) log_retry: Duration,
    pub(crate) store_backoff: Backoff,
    pub(crate) register_backoff: Backoff,
    pub(crate) pull_expiry: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) instance: String,
    pub(crate) liveness_ttl: Option<Duration>,
    pub(crate) housekeeping_interval: Duration,
    pub(crate) nats_root_ca: Option<PathBuf>,
    pub(crate) nats_client_certificate: Option<(PathBuf, PathBuf)>,
    pub(crate) nats_credentials: Option<PathBuf>,
    pub(crate) nats_token: Option<String>,
    #[cfg(feature = "auth")]
    pub(crate) api_identity: Option<crate::auth::ClientIdentity>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<super::metrics::Metrics>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            #[cfg(feature = "client")]
            api_url: None,
            #[cfg(feature = "client")]
            api_root_ca: None,
            concurrency: 4,
            max_finishing: 32,
            ack_wait: Duration::from_secs(30),
            max_deliveries: 20,
            max_retries: 5,
            run_deadline: Duration::from_secs(60 * 60),
            run_record_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            supersede: true,
            nak_delay: Duration::from_secs(5),
            grace_period: Duration::from_secs(30),
            cancel_timeout: Duration::from_secs(10),
            legacy_live_logs: true,
            log_window: 1024,
            log_retry: Duration::from_secs(60),
            store_backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
            register_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            pull_expiry: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
            instance: uuid::Uuid::new_v4().to_string(),
            liveness_ttl: None,
            housekeeping_interval: Duration::from_secs(30),
            nats_root_ca: None,
            nats_client_certificate: None,
            nats_credentials: None,
            nats_token: None,
            #[cfg(feature = "auth")]
            api_identity: None,
            #[cfg(feature = "metrics")]
            metrics: None,
            #[cfg(feature = "metrics")]
            metrics_listen: None,
        }
    }
}

impl Config {
    /// The NATS server to connect to, or the servers of a NATS cluster as a
    /// comma-separated list (default `nats://127.0.0.1:4222`). The runtime connects to
    /// any of them that answers and, when that one goes, to another (also to those the
    /// cluster announces). Ignored by
    /// [`Runtime::run_with_client`](crate::Runtime::run_with_client).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().nats_url("nats://nats-1:4222");
    /// assert_eq!(config.get_nats_url(), "nats://nats-1:4222");
    ///
    /// let cluster = conveyor_sdk::Config::default().nats_url("nats://nats-1:4222, nats://nats-2:4222");
    /// assert_eq!(cluster.get_nats_urls(), ["nats://nats-1:4222", "nats://nats-2:4222"]);
    /// ```
    #[must_use]
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.nats_url = url.into();
        self
    }

    /// The servers of a NATS cluster, one URL each: [`nats_url`](Self::nats_url) with a
    /// list (default `nats://127.0.0.1:4222`).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default()
    ///     .nats_urls(["nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"]);
    /// assert_eq!(config.get_nats_urls().len(), 3);
    /// ```
    #[must_use]
    pub fn nats_urls<I>(mut self, urls: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let urls: Vec<String> = urls.into_iter().map(|url| url.as_ref().trim().to_owned()).collect();
        self.nats_url = urls.join(",");
        self
    }

    /// The Conveyor API server to register resource definitions with (default: none,
    /// nothing is registered). Feature `client`.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().api_url("http://127.0.0.1:8080");
    /// ```
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    #[must_use]
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// Trusts this root CA (PEM file) for an `https://` API server, besides the
    /// system's root CAs (default: the system's only). A file that cannot be read or
    /// holds no certificate stops [`Runtime::run`](crate::Runtime::run) with an error.
    /// Feature `client`.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default()
    ///     .api_url("https://conveyor.internal:8443")
    ///     .api_root_ca("conveyor-ca.pem");
    /// ```
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    #[must_use]
    pub fn api_root_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.api_root_ca = Some(ca.into());
        self
    }

    /// How many reconciles run at once, at most (default 4; at least 1). The runtime
    /// never pulls more messages than it has free slots for.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().concurrency(0);
    /// assert_eq!(config.get_concurrency(), 1);
    /// ```
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How many runs may be finishing at once: storing the rest of their log, their
    /// result and their record, and acknowledging their message (default 32). A run
    /// whose reconcile returned waits for a place, holding its reconcile slot; so when
    /// results cannot be stored, no more than this many are being stored and no more
    /// than [`concurrency`](Self::concurrency) wait, and the driver pulls nothing more.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().max_finishing(8);
    /// ```
    #[must_use]
    pub fn max_finishing(mut self, n: usize) -> Self {
        self.max_finishing = n.max(1);
        self
    }

    /// How long JetStream waits for an acknowledgement before it delivers a message
    /// again (default 30 s). A run in progress sends a progress acknowledgement every
    /// third of this, so a long run is not redelivered; a run of a process that died
    /// is redelivered about this long after.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().ack_wait(std::time::Duration::from_secs(60));
    /// ```
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait.max(Duration::from_millis(300));
        self
    }

    /// How many deliveries of one event are tried at the most, of every kind:
    /// retries, shutdowns and crashes included (default 20). A guard against an event
    /// that kills its driver process each time: a message delivered more often than
    /// this is given up, a failure result is published for it and it is terminated.
    /// Retries have their own, lower limit, [`max_retries`](Self::max_retries).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().max_deliveries(50);
    /// ```
    #[must_use]
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// How many times a run is tried again after an attempt that asked for it
    /// ([`ReconcileError::retry_after`](crate::ReconcileError::retry_after)) or whose
    /// log or result could not be stored (default 5). Past it, the run ends with a
    /// failure result that says why. Deliveries caused by a shutdown or a crash of the
    /// driver do not count: the runtime counts retries itself, in the run's record in
    /// the key-value bucket `conveyor_runs`.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().max_retries(10);
    /// ```
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// How long a run may take, from the start of its reconcile, unless its driver says
    /// otherwise ([`Driver::deadline`](crate::Driver::deadline)); default 1 hour. When it
    /// passes the run is cancelled, has [`cancel_timeout`](Self::cancel_timeout) to
    /// clean up, and ends with a failure result `timed out after …`; its message is
    /// acknowledged.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().run_deadline(std::time::Duration::from_secs(30 * 60));
    /// ```
    #[must_use]
    pub fn run_deadline(mut self, deadline: Duration) -> Self {
        self.run_deadline = deadline;
        self
    }

    /// How long the record of a finished run is kept (default 7 days). A message
    /// delivered again after its run finished (a crash between the result and the
    /// acknowledgement) is acknowledged without running again while the record lives.
    /// The records are in the key-value bucket `conveyor_runs`, created with this
    /// maximum age by the first driver that needs it; the age of an existing bucket is
    /// kept.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().run_record_ttl(std::time::Duration::from_secs(24 * 60 * 60));
    /// ```
    #[must_use]
    pub fn run_record_ttl(mut self, ttl: Duration) -> Self {
        self.run_record_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Whether the newest version of a resource wins (default `true`): runs of one
    /// resource (its type and name) never overlap, in this process or across replicas.
    ///
    /// - An [`update`](crate::Event::Update) or [`delete`](crate::Event::Delete) that
    ///   arrives while a run of an older event of the same resource is in flight cancels
    ///   that run ([`CancelReason::Superseded`](crate::driver::CancelReason::Superseded),
    ///   [`CancelReason::Deleted`](crate::driver::CancelReason::Deleted)): its step is
    ///   stopped and its failure result says `superseded by run <run id> (version N)`
    ///   or `the resource was deleted`. The new event is handled once that run has
    ///   ended, and [`Run::superseded_run`](crate::Run::superseded_run) names it. A
    ///   deletion in progress is waited for, never cancelled. The wait holds the new
    ///   event's reconcile slot for at most [`cancel_timeout`](Self::cancel_timeout)
    ///   plus [`log_retry`](Self::log_retry) (the older run's time to stop and to
    ///   store its result); past that, the new event runs.
    /// - An event older than the newest one handled for its resource (by
    ///   `metadata.version` when both are numbers and the resource id is the same, else
    ///   by the order the server published them in), delivered late (a redelivery, a
    ///   replica that was down), does not run: it gets one failure result saying which
    ///   run superseded it, and is acknowledged.
    ///
    /// This is what users of a CI system expect (a newer commit cancels the pipeline
    /// of an older one; a deleted resource stops running), and what a Kubernetes
    /// controller does: work only towards the newest state. The newest event of each
    /// resource is kept in the key-value bucket `conveyor_resources`, shared by the
    /// replicas of a driver, for [`run_record_ttl`](Self::run_record_ttl). Turn it off
    /// for a driver whose runs of one resource may overlap; every event then runs.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().supersede(false);
    /// assert!(!config.get_supersede());
    /// ```
    #[must_use]
    pub fn supersede(mut self, on: bool) -> Self {
        self.supersede = on;
        self
    }

    /// How long JetStream waits before delivering again a message whose result could
    /// not be published (default 5 s).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().nak_delay(std::time::Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn nak_delay(mut self, delay: Duration) -> Self {
        self.nak_delay = delay;
        self
    }

    /// On shutdown, how long runs in progress may go on before they are cancelled
    /// (default 30 s).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().grace_period(std::time::Duration::from_secs(120));
    /// ```
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// After cancelling a run (a shutdown's grace period is over, its deadline passed,
    /// a cancel request), how long its reconcile has to clean up and return before it
    /// is abandoned (default 10 s). After a shutdown its message is left to be
    /// delivered again; after a deadline or a cancel request its failure result is
    /// published then.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().cancel_timeout(std::time::Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn cancel_timeout(mut self, timeout: Duration) -> Self {
        self.cancel_timeout = timeout;
        self
    }

    /// Whether each log line is also published on the live subject of servers before
    /// 2026-01-21, `driver:<driver>:logs:<run_id>` (default `true`).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().legacy_live_logs(false);
    /// ```
    #[must_use]
    pub fn legacy_live_logs(mut self, enabled: bool) -> Self {
        self.legacy_live_logs = enabled;
        self
    }

    /// How many of a run's log lines may await JetStream's acknowledgement at once
    /// (default 1024). A run that logs faster waits.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().log_window(256);
    /// ```
    #[must_use]
    pub fn log_window(mut self, lines: usize) -> Self {
        self.log_window = lines.max(1);
        self
    }

    /// How long a log line or result that could not be stored (a NATS server went
    /// away, a stream is electing its leader) is retried before the run is given back
    /// for redelivery (default 60 s).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().log_retry(std::time::Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn log_retry(mut self, retry: Duration) -> Self {
        self.log_retry = retry;
        self
    }

    /// The pauses between tries to store a log line, a result or an acknowledgement
    /// that JetStream did not confirm (default 50 ms, doubled up to 2 s), tried for up
    /// to [`log_retry`](Self::log_retry) (the acknowledgement for up to the ack wait);
    /// and between tries to subscribe the runtime's listeners (cancel requests, other
    /// replicas' questions about older runs), tried until they are subscribed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conveyor_sdk::runtime::Backoff;
    /// let config = conveyor_sdk::Config::default()
    ///     .store_backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(5)));
    /// ```
    #[must_use]
    pub fn store_backoff(mut self, backoff: Backoff) -> Self {
        self.store_backoff = backoff;
        self
    }

    /// The pauses between tries to register the resource definitions with the API
    /// server while it refuses or cannot be reached (default 1 s, doubled up to 30 s).
    /// The driver serves meanwhile.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conveyor_sdk::runtime::Backoff;
    /// let config = conveyor_sdk::Config::default().register_backoff(Backoff::constant(Duration::from_secs(5)));
    /// ```
    #[must_use]
    pub fn register_backoff(mut self, backoff: Backoff) -> Self {
        self.register_backoff = backoff;
        self
    }

    /// How long one pull request waits for messages before it is renewed (default
    /// 5 s). Pull requests lost with a NATS server that went away are made again as
    /// soon as the client is connected again; those lost without the client noticing
    /// are given up after about one and a half times this.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().pull_expiry(std::time::Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn pull_expiry(mut self, expiry: Duration) -> Self {
        self.pull_expiry = expiry.max(Duration::from_millis(100));
        self
    }

    /// How often start-up steps (connecting, finding the stream) are retried while
    /// the server is not ready (default 2 s).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().retry_interval(std::time::Duration::from_millis(500));
    /// ```
    #[must_use]
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// This replica's name among the replicas of the driver, e.g. for labels on what
    /// it makes (default: a random UUID, new with each `Config::default()`). The
    /// driver's [`housekeeping`](crate::Driver::housekeeping) hears it in
    /// [`Replicas::instance`](crate::liveness::Replicas::instance).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().instance("runner-1");
    /// assert_eq!(config.get_instance(), "runner-1");
    /// ```
    #[must_use]
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// Keeps a liveness record of this replica with this TTL (default: none kept).
    /// The record is written before the first run is taken (no run is taken until it
    /// is), written again every third of the TTL, and deleted once serving ended and
    /// the driver's [`shutdown`](crate::Driver::shutdown) returned; a replica that is
    /// killed loses it within the TTL. The TTL of an existing bucket wins. See
    /// [`liveness`](crate::liveness).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().liveness_ttl(std::time::Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn liveness_ttl(mut self, ttl: Duration) -> Self {
        self.liveness_ttl = Some(ttl.max(Duration::from_secs(1)));
        self
    }

    /// How often the driver's [`housekeeping`](crate::Driver::housekeeping) is called
    /// while serving, the first time when serving begins (default 30 s).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().housekeeping_interval(std::time::Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn housekeeping_interval(mut self, interval: Duration) -> Self {
        self.housekeeping_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Verifies the NATS server against this root CA (PEM) and requires TLS (default:
    /// no TLS unless the URL says `tls://`).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().nats_url("tls://nats.example:4222").nats_root_ca("ca.pem");
    /// ```
    #[must_use]
    pub fn nats_root_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.nats_root_ca = Some(ca.into());
        self
    }

    /// Presents this client certificate chain and key (PEM) to NATS: mutual TLS
    /// (default: none).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default()
    ///     .nats_root_ca("ca.pem")
    ///     .nats_client_certificate("driver-chain.pem", "driver-key.pem");
    /// ```
    #[must_use]
    pub fn nats_client_certificate(mut self, chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.nats_client_certificate = Some((chain.into(), key.into()));
        self
    }

    /// Authenticates to NATS with a credentials file (JWT and NKey seed; default: none).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().nats_credentials_file("driver.creds");
    /// ```
    #[must_use]
    pub fn nats_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.nats_credentials = Some(path.into());
        self
    }

    /// Authenticates to NATS with a token (default: none).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().nats_token("s3cr3t");
    /// ```
    #[must_use]
    pub fn nats_token(mut self, token: impl Into<String>) -> Self {
        self.nats_token = Some(token.into());
        self
    }

    /// Signs the requests to the API server with certificate-bound tokens of
    /// `identity`, for a server with `auth_enabled` (default: unsigned). Feature `auth`.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), conveyor_sdk::auth::AuthError> {
    /// let identity = conveyor_sdk::auth::ClientIdentity::from_files("chain.pem", "key.pem")?;
    /// let config = conveyor_sdk::Config::default().api_url("https://conveyor.example").api_identity(identity);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    #[must_use]
    pub fn api_identity(mut self, identity: crate::auth::ClientIdentity) -> Self {
        self.api_identity = Some(identity);
        self
    }

    /// Records the runtime's metrics in `metrics`, a registry the driver may add its
    /// own metrics to (default: none, unless [`metrics_listen`](Self::metrics_listen)
    /// is set, which makes one). Feature `metrics`.
    ///
    /// ```
    /// let metrics = conveyor_sdk::runtime::Metrics::new();
    /// let config = conveyor_sdk::Config::default().metrics(metrics.clone());
    /// // … serve; then, e.g. in an HTTP server of the driver's own:
    /// let text = metrics.encode();
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    #[must_use]
    pub fn metrics(mut self, metrics: super::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves HTTP on `addr` while the runtime runs (default: nothing is served):
    /// `GET /healthz` (200 while the process serves), `GET /readyz` (200 only while
    /// NATS is connected, the durable consumer is bound and
    /// [`Driver::ready`](crate::Driver::ready) says so; otherwise 503 with the reason)
    /// and `GET /metrics` (the metrics of [`metrics`](Self::metrics), in the OpenMetrics
    /// text format). Port 0 picks a free port:
    /// [`Metrics::local_addr`](crate::runtime::Metrics::local_addr) tells which.
    /// Feature `metrics`.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().metrics_listen("127.0.0.1:9090".parse().unwrap());
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    #[must_use]
    pub fn metrics_listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_listen = Some(addr);
        self
    }

    /// The NATS connection options these settings ask for: credentials, token, TLS.
    /// The runtime connects with these (adding its name and endless reconnects); use
    /// them for a connection of your own beside the runtime's.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = conveyor_sdk::Config::default().nats_root_ca("ca.pem");
    /// let client = config.nats_connect_options().await?.connect("nats://127.0.0.1:4222").await?;
    /// # Ok(()) }
    /// ```
    pub async fn nats_connect_options(&self) -> Result<async_nats::ConnectOptions, super::Error> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(path) = &self.nats_credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|source| super::Error::NatsCredentials { path: path.clone(), source })?;
        }
        if let Some(token) = &self.nats_token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.nats_root_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((chain, key)) = &self.nats_client_certificate {
            options = options.add_client_certificate(chain.clone(), key.clone()).require_tls(true);
        }
        Ok(options)
    }

    /// The configured NATS URL.
    ///
    /// ```
    /// assert_eq!(conveyor_sdk::Config::default().get_nats_url(), "nats://127.0.0.1:4222");
    /// ```
    pub fn get_nats_url(&self) -> &str {
        &self.nats_url
    }

    /// The configured NATS servers, one URL each: [`get_nats_url`](Self::get_nats_url)
    /// split at commas, white space and empty entries dropped.
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default().nats_url("nats://a:4222,,nats://b:4222 ");
    /// assert_eq!(config.get_nats_urls(), ["nats://a:4222", "nats://b:4222"]);
    /// ```
    pub fn get_nats_urls(&self) -> Vec<String> {
        split_urls(&self.nats_url)
    }

    /// The configured NATS servers as addresses to connect to, for a connection of
    /// your own beside the runtime's (with
    /// [`nats_connect_options`](Self::nats_connect_options)). An error names the first
    /// address that is not a NATS URL, or says that there is none.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = conveyor_sdk::Config::default().nats_url("nats://nats-1:4222,nats://nats-2:4222");
    /// let servers = config.nats_servers()?;
    /// assert_eq!(servers.len(), 2);
    /// let client = config.nats_connect_options().await?.connect(servers).await?;
    /// # Ok(()) }
    /// ```
    pub fn nats_servers(&self) -> Result<Vec<async_nats::ServerAddr>, super::Error> {
        let urls = self.get_nats_urls();
        if urls.is_empty() {
            return Err(super::Error::NoNatsUrl);
        }
        urls.into_iter()
            .map(|url| url.parse().map_err(|source| super::Error::InvalidNatsUrl { url, source }))
            .collect()
    }

    /// Whether the newest version of a resource wins ([`supersede`](Self::supersede)).
    ///
    /// ```
    /// assert!(conveyor_sdk::Config::default().get_supersede());
    /// ```
    pub fn get_supersede(&self) -> bool {
        self.supersede
    }

    /// This replica's instance ([`instance`](Self::instance)).
    ///
    /// ```
    /// let config = conveyor_sdk::Config::default();
    /// assert!(!config.get_instance().is_empty());
    /// ```
    pub fn get_instance(&self) -> &str {
        &self.instance
    }

    /// The TTL of this replica's liveness record, when one is kept
    /// ([`liveness_ttl`](Self::liveness_ttl)).
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(conveyor_sdk::Config::default().get_liveness_ttl(), None);
    /// let kept = conveyor_sdk::Config::default().liveness_ttl(Duration::from_secs(30));
    /// assert_eq!(kept.get_liveness_ttl(), Some(Duration::from_secs(30)));
    /// ```
    pub fn get_liveness_ttl(&self) -> Option<Duration> {
        self.liveness_ttl
    }

    /// The configured concurrency.
    ///
    /// ```
    /// assert_eq!(conveyor_sdk::Config::default().get_concurrency(), 4);
    /// ```
    pub fn get_concurrency(&self) -> usize {
        self.concurrency
    }
}

/// The entries of a comma-separated list of URLs, trimmed, empty ones dropped.
fn split_urls(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_nats_url_is_one_server() {
        let config = Config::default().nats_url("nats://127.0.0.1:4222");
        assert_eq!(config.get_nats_urls(), ["nats://127.0.0.1:4222"]);
        assert_eq!(config.nats_servers().map(|s| s.len()).ok(), Some(1));
    }

    #[test]
    fn a_comma_separated_nats_url_is_a_list_of_servers() {
        let config = Config::default().nats_url(" nats://a:4222 ,nats://b:4223,, tls://c:4224,");
        assert_eq!(config.get_nats_urls(), ["nats://a:4222", "nats://b:4223", "tls://c:4224"]);
        let servers = config.nats_servers().map_err(|e| e.to_string());
        assert_eq!(servers.map(|s| s.len()), Ok(3));
    }

    #[test]
    fn nats_urls_takes_any_list_of_strings() {
        let owned = vec![String::from("nats://a:4222"), String::from("nats://b:4222")];
        assert_eq!(Config::default().nats_urls(&owned).get_nats_urls(), owned);
        assert_eq!(Config::default().nats_urls(["nats://c:1"]).get_nats_url(), "nats://c:1");
    }

    #[test]
    fn an_empty_list_of_nats_urls_is_refused() {
        for empty in ["", " , ,"] {
            let error = Config::default().nats_url(empty).nats_servers().err();
            assert!(matches!(error, Some(crate::runtime::Error::NoNatsUrl)), "{empty:?}: {error:?}");
        }
        let error = Config::default().nats_urls(Vec::<String>::new()).nats_servers().err();
        assert!(matches!(error, Some(crate::runtime::Error::NoNatsUrl)), "{error:?}");
    }

    #[test]
    fn an_address_that_is_not_a_nats_url_is_named_in_the_error() {
        let error = Config::default().nats_url("nats://a:4222,http://b:4222").nats_servers().err();
        match error {
            Some(crate::runtime::Error::InvalidNatsUrl { url, .. }) => assert_eq!(url, "http://b:4222"),
            other => panic!("expected InvalidNatsUrl, got {other:?}"),
        }
    }
}
