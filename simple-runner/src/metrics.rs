//! What the runner counts beside the runtime: image pulls, container start time,
//! removed containers and reaped orphans, served with the runtime's metrics.

use conveyor_sdk::prometheus_client::metrics::counter::Counter;
use conveyor_sdk::prometheus_client::metrics::family::Family;
use conveyor_sdk::prometheus_client::metrics::gauge::Gauge;
use conveyor_sdk::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use conveyor_sdk::prometheus_client::registry::Unit;
use conveyor_sdk::runtime::Metrics;

/// The runner's metrics. Every [`Engine`](crate::Engine) records its own from the
/// start, a few atomic operations each; [`register`](Self::register) has them
/// served (`--metrics-listen`). Cheap to clone; clones count together.
///
/// | metric | what |
/// |---|---|
/// | `simple_runner_image_pulls_total{outcome}` | pulls, `success` or `failure` |
/// | `simple_runner_container_start_seconds` | histogram of the time to create and start a run container |
/// | `simple_runner_containers_removed_total` | containers the runner removed |
/// | `simple_runner_orphans_reaped_total` | containers of runners that are gone, removed |
/// | `simple_runner_run_starts_total{start}` | runs given a container, `warm` (ready before the run) or `cold` (made for it) |
/// | `simple_runner_warm_containers` | warm containers ready now |
///
/// ```no_run
/// # async fn demo() -> Result<(), simple_runner::EngineError> {
/// let engine = simple_runner::Engine::connect().await?;
/// let metrics = conveyor_sdk::runtime::Metrics::new();
/// engine.metrics().register(&metrics);
/// let config = conveyor_sdk::Config::default().metrics(metrics);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RunnerMetrics {
    pulls: Family<[(&'static str, &'static str); 1], Counter>,
    pulled: Counter,
    pull_failed: Counter,
    container_start: Histogram,
    removed: Counter,
    orphans_reaped: Counter,
    starts: Family<[(&'static str, &'static str); 1], Counter>,
    warm_starts: Counter,
    cold_starts: Counter,
    warm_ready: Gauge,
}

impl std::fmt::Debug for RunnerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerMetrics").finish_non_exhaustive()
    }
}

impl Default for RunnerMetrics {
    fn default() -> Self {
        let pulls = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let pulled = pulls.get_or_create(&[("outcome", "success")]).clone();
        let pull_failed = pulls.get_or_create(&[("outcome", "failure")]).clone();
        let starts = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let warm_starts = starts.get_or_create(&[("start", "warm")]).clone();
        let cold_starts = starts.get_or_create(&[("start", "cold")]).clone();
        Self {
            pulls,
            pulled,
            pull_failed,
            // 10 ms to about 20 s.
            container_start: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            removed: Counter::default(),
            orphans_reaped: Counter::default(),
            starts,
            warm_starts,
            cold_starts,
            warm_ready: Gauge::default(),
        }
    }
}

impl RunnerMetrics {
    /// Adds these metrics to the runtime's registry, to be served with its own.
    ///
    /// ```
    /// let metrics = conveyor_sdk::runtime::Metrics::new();
    /// simple_runner::metrics::RunnerMetrics::default().register(&metrics);
    /// assert!(metrics.encode().contains("simple_runner_image_pulls_total{outcome=\"failure\"} 0"));
    /// ```
    pub fn register(&self, metrics: &Metrics) {
        metrics.register("simple_runner_image_pulls", "Image pulls, by outcome", self.pulls.clone());
        metrics.register_with_unit(
            "simple_runner_container_start",
            "Time to create and start a run container",
            Unit::Seconds,
            self.container_start.clone(),
        );
        metrics.register(
            "simple_runner_containers_removed",
            "Containers the runner removed",
            self.removed.clone(),
        );
        metrics.register(
            "simple_runner_orphans_reaped",
            "Containers of runners that are gone, removed",
            self.orphans_reaped.clone(),
        );
        metrics.register(
            "simple_runner_run_starts",
            "Runs given a container: warm (ready before the run) or cold (made for it)",
            self.starts.clone(),
        );
        metrics.register("simple_runner_warm_containers", "Warm containers ready", self.warm_ready.clone());
    }

    pub(crate) fn pull_finished(&self, succeeded: bool) {
        if succeeded { &self.pulled } else { &self.pull_failed }.inc();
    }

    pub(crate) fn container_started(&self, took: std::time::Duration) {
        self.container_start.observe(took.as_secs_f64());
    }

    pub(crate) fn container_removed(&self) {
        self.removed.inc();
    }

    pub(crate) fn run_started(&self, warm: bool) {
        if warm { &self.warm_starts } else { &self.cold_starts }.inc();
    }

    pub(crate) fn warm_ready(&self, ready: usize) {
        self.warm_ready.set(i64::try_from(ready).unwrap_or(i64::MAX));
    }

    pub(crate) fn orphan_reaped(&self) {
        self.orphans_reaped.inc();
    }
}
