//! Run records: what the runtime remembers of a run across deliveries, in the
//! key-value bucket `conveyor_runs` (one key per run and driver, kept for
//! [`Config::run_record_ttl`](super::Config::run_record_ttl)).
//!
//! - A run that asked to be tried again records its retries, so that a later delivery
//!   knows which retry it is, and deliveries caused by a shutdown or a crash do not
//!   count.
//! - A finished run records its ending, so that a message delivered again after its
//!   result was stored (a crash between the result and the acknowledgement) is
//!   acknowledged without running again, however late it comes.
//!
//! Records are read only for a redelivered message: a first delivery has none.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::Context;
use serde::{Deserialize, Serialize};

use crate::log::clock::format_rfc3339_nanos;
use crate::protocol::subjects;
use crate::report::error_text;

/// What the runtime remembers of one run of one driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// How many attempts asked to be tried again.
    #[serde(default)]
    pub(crate) retries: u32,
    /// Why the last of them did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retry_reason: Option<String>,
    /// How the run ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished: Option<Finished>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Finished {
    /// When its result was stored (RFC 3339).
    pub(crate) at: String,
    /// Whether it succeeded.
    pub(crate) success: bool,
    /// Its result's message.
    pub(crate) message: String,
}

/// The bucket of run records of one runtime; without one (it could not be created),
/// nothing is remembered and a redelivered run runs again.
#[derive(Clone)]
pub(crate) struct RunRecords {
    store: Option<Store>,
    driver: String,
}

impl RunRecords {
    /// Opens the bucket, creating it (with the replicas of `replicas`) when missing.
    pub(crate) async fn open(js: &Context, driver: &str, ttl: Duration, replicas: usize) -> Self {
        let bucket = Bucket {
            name: subjects::RUNS_BUCKET,
            description: "Conveyor drivers: runs that finished or asked to be retried",
            without: "a run delivered again after it finished will run again, and retries are limited \
                      only by max_deliveries",
        };
        Self { store: bucket.open(js, ttl, replicas).await, driver: driver.to_owned() }
    }

    /// Records that nothing is remembered: for a runtime whose bucket cannot be had.
    #[cfg(test)]
    pub(crate) fn none(driver: &str) -> Self {
        Self { store: None, driver: driver.to_owned() }
    }

    /// The record of `run_id`; `None` when there is none or it cannot be read (then the
    /// run goes on as if it had none, and says so in the diagnostics).
    pub(crate) async fn read(&self, run_id: &str) -> Option<RunRecord> {
        let store = self.store.as_ref()?;
        match store.get(subjects::run_record_key(run_id, &self.driver)).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(%error, "the run's record is unreadable; going on without it");
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(error = %error_text(&error), "cannot read the run's record; going on without it");
                None
            }
        }
    }

    /// Remembers that `run_id` ended as `success` with `message`. Sent, not awaited:
    /// the record goes out before the message's acknowledgement on the same connection,
    /// so a crash after the acknowledgement finds it; a record that is lost on the way
    /// (NATS went away just then) only means that a redelivery would run again. Waiting
    /// for it would cost every run a round trip.
    pub(crate) async fn finished(
        &self,
        client: &async_nats::Client,
        run_id: &str,
        retries: u32,
        success: bool,
        message: &str,
    ) {
        if self.store.is_none() {
            return;
        }
        let record = RunRecord {
            retries,
            retry_reason: None,
            finished: Some(Finished { at: now(), success, message: message.to_owned() }),
        };
        let Ok(value) = serde_json::to_vec(&record) else { return };
        let subject =
            format!("$KV.{}.{}", subjects::RUNS_BUCKET, subjects::run_record_key(run_id, &self.driver));
        if let Err(error) = client.publish(subject, value.into()).await {
            tracing::warn!(%error, "cannot record that the run finished");
        }
    }

    /// Remembers that `run_id` asked to be tried again for the `retries`-th time.
    /// `false` when that could not be stored.
    pub(crate) async fn retrying(&self, run_id: &str, retries: u32, reason: &str) -> bool {
        let record = RunRecord { retries, retry_reason: Some(reason.to_owned()), finished: None };
        self.write(run_id, &record, "the run's retries").await
    }

    async fn write(&self, run_id: &str, record: &RunRecord, what: &str) -> bool {
        let Some(store) = &self.store else { return false };
        let Ok(value) = serde_json::to_vec(record) else { return false };
        match store.put(subjects::run_record_key(run_id, &self.driver), value.into()).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(error = %error_text(&error), "cannot record {what}");
                false
            }
        }
    }
}

/// A key-value bucket of the runtime's, kept with one version of each key.
pub(crate) struct Bucket {
    /// Its name.
    pub(crate) name: &'static str,
    /// Its description.
    pub(crate) description: &'static str,
    /// What goes missing without it, for the diagnostics.
    pub(crate) without: &'static str,
}

impl Bucket {
    /// Opens the bucket, creating it with keys kept for `ttl` (and the replicas of
    /// `replicas`) when missing; `None`, said in the diagnostics, when it can be neither.
    pub(crate) async fn open(&self, js: &Context, ttl: Duration, replicas: usize) -> Option<Store> {
        if let Ok(store) = js.get_key_value(self.name).await {
            return Some(store);
        }
        let config = kv::Config {
            bucket: self.name.to_owned(),
            description: self.description.to_owned(),
            history: 1,
            max_age: ttl,
            storage: StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(store) => Some(store),
            // Another driver may have created it meanwhile.
            Err(error) => match js.get_key_value(self.name).await {
                Ok(store) => Some(store),
                Err(_) => {
                    tracing::error!(
                        bucket = self.name, error = %error_text(&error),
                        "cannot create the bucket: {}", self.without
                    );
                    None
                }
            },
        }
    }
}

fn now() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default();
    format_rfc3339_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_reads_without_optional_fields() {
        let record = RunRecord {
            retries: 2,
            retry_reason: Some("busy".into()),
            finished: Some(Finished { at: now(), success: true, message: "ok".into() }),
        };
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(serde_json::from_slice::<RunRecord>(&json).unwrap(), record);
        assert_eq!(serde_json::from_str::<RunRecord>("{}").unwrap(), RunRecord::default());
    }

    #[tokio::test]
    async fn without_a_bucket_nothing_is_remembered() {
        let records = RunRecords::none("d");
        assert!(!records.retrying("r", 1, "busy").await);
        assert_eq!(records.read("r").await, None);
    }
}
