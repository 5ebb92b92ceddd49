//! What a runtime counts (feature `metrics`): runs by outcome, their duration,
//! redeliveries, log lines, failed publishes and the NATS connection, in a
//! Prometheus registry that a driver can add its own metrics to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

use super::outcome::Outcome;

/// The `Content-Type` of [`Metrics::encode`]'s text: the OpenMetrics text format,
/// which Prometheus scrapes.
///
/// ```
/// assert!(conveyor_sdk::runtime::METRICS_CONTENT_TYPE.starts_with("application/openmetrics-text"));
/// ```
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A runtime's metrics, in a Prometheus registry (feature `metrics`). Cheap to clone;
/// every clone is the same registry.
///
/// Give it to the runtime with [`Config::metrics`](crate::Config::metrics), and have
/// it served with [`Config::metrics_listen`](crate::Config::metrics_listen)
/// (`/metrics`, beside `/healthz` and `/readyz`). The runtime counts:
///
/// | metric | what |
/// |---|---|
/// | `conveyor_runs_started_total` | deliveries taken up as a run (decoded) |
/// | `conveyor_runs_finished_total{outcome}` | `success`, `failure`, `invalid_spec`, `given_up`, `cancelled` (by shutdown), `not_stored` (log or result not stored: delivered again), `timed_out` (its deadline passed), `cancel_requested` (cancelled on request), `retried` (asked to be tried again: delivered again later), `already_finished` (delivered again after its result was stored: not run again) |
/// | `conveyor_runs_in_flight` | runs started and not finished |
/// | `conveyor_run_duration_seconds` | histogram of a run's time, from its start to its acknowledgement |
/// | `conveyor_redeliveries_total` | deliveries after the first of a message |
/// | `conveyor_messages_undecodable_total` | messages terminated because they are not a run |
/// | `conveyor_log_lines_published_total` | log lines acknowledged by JetStream |
/// | `conveyor_log_publish_failures_total` | failed attempts to store a log line (each is retried) |
/// | `conveyor_result_publish_failures_total` | results that could not be stored (the run is delivered again) |
/// | `conveyor_nats_connected` | 1 while the NATS connection is up, else 0 |
///
/// Recording is a few atomic operations on the run's path; the registry is locked
/// only by [`register`](Self::register) and by encoding.
///
/// A driver adds its own metrics with [`register`](Self::register), under a prefix of
/// its own:
///
/// ```
/// use conveyor_sdk::prometheus_client::metrics::counter::Counter;
/// use conveyor_sdk::runtime::Metrics;
///
/// let metrics = Metrics::new();
/// let cache_hits: Counter = Counter::default();
/// metrics.register("greeter_cache_hits", "Greetings answered from the cache", cache_hits.clone());
/// cache_hits.inc();
/// assert!(metrics.encode().contains("greeter_cache_hits_total 1"));
/// let config = conveyor_sdk::Config::default()
///     .metrics(metrics)
///     .metrics_listen("127.0.0.1:9090".parse().unwrap());
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    runs_started: Counter,
    /// One counter per [`Outcome`], in its order.
    runs_finished: Vec<Counter>,
    runs_in_flight: Gauge,
    run_duration: Histogram,
    redeliveries: Counter,
    undecodable: Counter,
    log_lines: Counter,
    log_failures: Counter,
    result_failures: Counter,
    nats_connected: Gauge,
    state: State,
}

/// What readiness depends on, beside the driver.
#[derive(Default)]
struct State {
    client: Mutex<Option<async_nats::Client>>,
    consumer_bound: AtomicBool,
    stopping: AtomicBool,
    local_addr: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("local_addr", &self.local_addr()).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves nothing half-done here.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    /// A registry with the runtime's metrics, all at zero.
    ///
    /// ```
    /// let metrics = conveyor_sdk::runtime::Metrics::new();
    /// assert!(metrics.encode().contains("conveyor_runs_started_total 0"));
    /// ```
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let runs_started = Counter::default();
        registry.register("conveyor_runs_started", "Deliveries taken up as a run", runs_started.clone());
        let finished = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let runs_finished =
            Outcome::ALL.iter().map(|o| finished.get_or_create(&[("outcome", o.label())]).clone()).collect();
        registry.register("conveyor_runs_finished", "Runs finished, by outcome", finished);
        let runs_in_flight = Gauge::default();
        registry.register("conveyor_runs_in_flight", "Runs started and not finished", runs_in_flight.clone());
        // 10 ms to about 2.6 h.
        let run_duration = Histogram::new(exponential_buckets(0.01, 2.5, 16));
        registry.register_with_unit(
            "conveyor_run_duration",
            "Time of a run from its start to its acknowledgement",
            Unit::Seconds,
            run_duration.clone(),
        );
        let redeliveries = Counter::default();
        registry.register(
            "conveyor_redeliveries",
            "Deliveries after the first of a message",
            redeliveries.clone(),
        );
        let undecodable = Counter::default();
        registry.register(
            "conveyor_messages_undecodable",
            "Messages terminated because they are not a run",
            undecodable.clone(),
        );
        let log_lines = Counter::default();
        registry.register(
            "conveyor_log_lines_published",
            "Log lines published and acknowledged by JetStream",
            log_lines.clone(),
        );
        let log_failures = Counter::default();
        registry.register(
            "conveyor_log_publish_failures",
            "Failed attempts to store a log line, each retried",
            log_failures.clone(),
        );
        let result_failures = Counter::default();
        registry.register(
            "conveyor_result_publish_failures",
            "Results that could not be stored, their runs delivered again",
            result_failures.clone(),
        );
        let nats_connected = Gauge::default();
        registry.register(
            "conveyor_nats_connected",
            "1 while the connection to NATS is up, else 0",
            nats_connected.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                runs_started,
                runs_finished,
                runs_in_flight,
                run_duration,
                redeliveries,
                undecodable,
                log_lines,
                log_failures,
                result_failures,
                nats_connected,
                state: State::default(),
            }),
        }
    }

    /// Adds a metric of the driver to the registry, served with the runtime's. Counters
    /// get the suffix `_total`; choose a name prefix of your own.
    ///
    /// ```
    /// use conveyor_sdk::prometheus_client::metrics::gauge::Gauge;
    /// let metrics = conveyor_sdk::runtime::Metrics::new();
    /// let queue: Gauge = Gauge::default();
    /// metrics.register("greeter_queue_length", "Greetings waiting", queue.clone());
    /// queue.set(3);
    /// assert!(metrics.encode().contains("greeter_queue_length 3"));
    /// ```
    pub fn register(&self, name: impl Into<String>, help: impl Into<String>, metric: impl Metric) {
        lock(&self.inner.registry).register(name, help, metric);
    }

    /// Adds a metric of the driver with a unit, which becomes a suffix of its name.
    ///
    /// ```
    /// use conveyor_sdk::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    /// use conveyor_sdk::prometheus_client::registry::Unit;
    /// let metrics = conveyor_sdk::runtime::Metrics::new();
    /// let checkout = Histogram::new(exponential_buckets(0.1, 2.0, 10));
    /// metrics.register_with_unit("greeter_checkout", "Time to check out", Unit::Seconds, checkout.clone());
    /// checkout.observe(0.3);
    /// assert!(metrics.encode().contains("greeter_checkout_seconds_count 1"));
    /// ```
    pub fn register_with_unit(
        &self,
        name: impl Into<String>,
        help: impl Into<String>,
        unit: Unit,
        metric: impl Metric,
    ) {
        lock(&self.inner.registry).register_with_unit(name, help, unit, metric);
    }

    /// Every metric of the registry in the OpenMetrics text format
    /// ([`METRICS_CONTENT_TYPE`]), what `/metrics` answers.
    ///
    /// ```
    /// let text = conveyor_sdk::runtime::Metrics::new().encode();
    /// assert!(text.contains("conveyor_runs_finished_total{outcome=\"given_up\"} 0"));
    /// assert!(text.ends_with("# EOF\n"));
    /// ```
    pub fn encode(&self) -> String {
        let connected = lock(&self.inner.state.client)
            .as_ref()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
        self.inner.nats_connected.set(i64::from(connected));
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &lock(&self.inner.registry)) {
            // Only a metric of the driver's own can fail to encode.
            tracing::warn!(%error, "encoding the metrics failed");
        }
        text
    }

    /// Where the runtime's HTTP endpoint listens, once it does
    /// ([`Config::metrics_listen`](crate::Config::metrics_listen)); useful with port 0.
    ///
    /// ```no_run
    /// # async fn demo<D: conveyor_sdk::Driver>(driver: D) {
    /// let metrics = conveyor_sdk::runtime::Metrics::new();
    /// let config = conveyor_sdk::Config::default()
    ///     .metrics(metrics.clone())
    ///     .metrics_listen("127.0.0.1:0".parse().unwrap());
    /// tokio::spawn(conveyor_sdk::Runtime::with_config(driver, config).run());
    /// // … a moment later:
    /// if let Some(addr) = metrics.local_addr() {
    ///     println!("scrape http://{addr}/metrics");
    /// }
    /// # }
    /// ```
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.state.local_addr)
    }

    /// Why the runtime is not ready, the driver aside; `None` when it is.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        let state = &self.inner.state;
        if state.stopping.load(Ordering::Relaxed) {
            return Some("shutting down");
        }
        let connected = lock(&state.client)
            .as_ref()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
        if !connected {
            return Some("not connected to NATS");
        }
        if !state.consumer_bound.load(Ordering::Relaxed) {
            return Some("the durable consumer is not bound yet (is stream `messages` there?)");
        }
        None
    }

    pub(crate) fn set_local_addr(&self, addr: Option<SocketAddr>) {
        *lock(&self.inner.state.local_addr) = addr;
    }

    /// A new serving begins: nothing is connected or bound yet.
    pub(crate) fn reset_state(&self) {
        let state = &self.inner.state;
        *lock(&state.client) = None;
        state.consumer_bound.store(false, Ordering::Relaxed);
        state.stopping.store(false, Ordering::Relaxed);
    }

    pub(crate) fn set_client(&self, client: &async_nats::Client) {
        *lock(&self.inner.state.client) = Some(client.clone());
    }

    pub(crate) fn set_consumer_bound(&self) {
        self.inner.state.consumer_bound.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_stopping(&self) {
        self.inner.state.stopping.store(true, Ordering::Relaxed);
    }

    pub(crate) fn run_started(&self, redelivered: bool) {
        self.inner.runs_started.inc();
        self.inner.runs_in_flight.inc();
        if redelivered {
            self.inner.redeliveries.inc();
        }
    }

    pub(crate) fn run_finished(&self, outcome: Outcome, took: Duration) {
        self.inner.runs_in_flight.dec();
        if let Some(counter) = self.inner.runs_finished.get(outcome.index()) {
            counter.inc();
        }
        self.inner.run_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn undecodable(&self) {
        self.inner.undecodable.inc();
    }

    pub(crate) fn log_line_published(&self) {
        self.inner.log_lines.inc();
    }

    pub(crate) fn log_publish_failed(&self) {
        self.inner.log_failures.inc();
    }

    pub(crate) fn result_publish_failed(&self) {
        self.inner.result_failures.inc();
    }
}
