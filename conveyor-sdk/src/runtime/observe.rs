//! Where the runtime reports what happens, for its metrics and readiness. Without
//! the feature `metrics`, or without metrics in the config, every report is a no-op.

use std::time::Duration;

use super::outcome::Outcome;
use super::Config;

/// The runtime's reports, to its metrics when it has any.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observer {
    #[cfg(feature = "metrics")]
    metrics: Option<super::metrics::Metrics>,
}

#[cfg(feature = "metrics")]
impl Observer {
    /// The metrics of `config`: those given, else new ones when an endpoint is asked
    /// for, else none. A new serving begins: nothing is connected or bound yet.
    pub(crate) fn new(config: &Config) -> Self {
        let metrics =
            config.metrics.clone().or_else(|| config.metrics_listen.map(|_| super::metrics::Metrics::new()));
        if let Some(metrics) = &metrics {
            metrics.reset_state();
        }
        Self { metrics }
    }

    pub(crate) fn metrics(&self) -> Option<&super::metrics::Metrics> {
        self.metrics.as_ref()
    }

    fn each(&self, report: impl FnOnce(&super::metrics::Metrics)) {
        if let Some(metrics) = &self.metrics {
            report(metrics);
        }
    }
}

#[cfg(not(feature = "metrics"))]
impl Observer {
    pub(crate) fn new(_config: &Config) -> Self {
        Self {}
    }

    #[inline(always)]
    fn each(&self, _report: impl FnOnce(&NoMetrics)) {}
}

/// What the reports are made to without the feature `metrics`: never made.
#[cfg(not(feature = "metrics"))]
#[allow(dead_code)]
struct NoMetrics;

#[cfg(not(feature = "metrics"))]
impl NoMetrics {
    fn set_client(&self, _: &async_nats::Client) {}
    fn set_consumer_bound(&self) {}
    fn set_stopping(&self) {}
    fn run_started(&self, _: bool) {}
    fn run_finished(&self, _: Outcome, _: Duration) {}
    fn undecodable(&self) {}
    fn log_line_published(&self) {}
    fn log_publish_failed(&self) {}
    fn result_publish_failed(&self) {}
}

impl Observer {
    /// Serving on `client`.
    pub(crate) fn connected(&self, client: &async_nats::Client) {
        self.each(|m| m.set_client(client));
    }

    /// The durable consumer exists: runs can come.
    pub(crate) fn consumer_bound(&self) {
        self.each(|m| m.set_consumer_bound());
    }

    /// Shutdown began: no new runs.
    pub(crate) fn stopping(&self) {
        self.each(|m| m.set_stopping());
    }

    /// A decoded message is taken up as a run; `attempt` is its delivery count.
    pub(crate) fn run_started(&self, attempt: u64) {
        self.each(|m| m.run_started(attempt > 1));
    }

    /// A run ended with `outcome`, `took` after it started.
    pub(crate) fn run_finished(&self, outcome: Outcome, took: Duration) {
        self.each(|m| m.run_finished(outcome, took));
    }

    /// A message that is not a run was terminated.
    pub(crate) fn undecodable(&self) {
        self.each(|m| m.undecodable());
    }

    /// JetStream acknowledged a log line.
    pub(crate) fn log_line_published(&self) {
        self.each(|m| m.log_line_published());
    }

    /// Publishing a log line, or its acknowledgement, failed.
    pub(crate) fn log_publish_failed(&self) {
        self.each(|m| m.log_publish_failed());
    }

    /// A result could not be stored.
    pub(crate) fn result_publish_failed(&self) {
        self.each(|m| m.result_publish_failed());
    }
}
