//! Which replicas of a driver are serving: a record per replica in a JetStream
//! key-value bucket, kept fresh by the replica and gone within a TTL of its death.
//!
//! A driver that leaves things behind while it works (containers, machines,
//! directories) labels them with its instance ([`Config::instance`](crate::Config::instance))
//! and, in its [`housekeeping`](crate::Driver::housekeeping), removes those whose
//! replica has no record any more ([`Replicas::alive`]). The runtime keeps the record
//! when [`Config::liveness_ttl`](crate::Config::liveness_ttl) is set: written before
//! the first run is taken, again every third of the TTL, and deleted after the
//! driver's [`shutdown`](crate::Driver::shutdown).
//!
//! The bucket [`BUCKET`] (`conveyor_runners`) holds, under [`record_key`]
//! `<driver>.<instance>`, a small JSON [`LivenessRecord`]. The bucket's `max_age` is
//! the TTL: a record not written again within it is removed by the NATS server. A
//! replica cut off from NATS for less than the TTL keeps its record; one killed loses
//! it at most a TTL after its last write.
//!
//! The bucket's `max_age` is fixed when it is created, by the first replica that
//! opens it. A replica asking for another TTL uses the bucket's (and says so), so that
//! its refreshes always come in time: the bucket's TTL wins.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::{Config as BucketConfig, Store};
use async_nats::jetstream::stream::StorageType;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The key-value bucket of liveness records.
pub const BUCKET: &str = "conveyor_runners";

/// The key of the record of replica `instance` of driver `driver`:
/// `<driver>.<instance>`, each part with anything but `[-/_a-zA-Z0-9]` written as
/// `=XX` (hex), so that any name makes a valid key and no two make the same.
///
/// ```
/// use conveyor_sdk::liveness::record_key;
///
/// assert_eq!(record_key("command-runner", "5b1c"), "command-runner.5b1c");
/// assert_eq!(record_key("a.b", "c d"), "a=2Eb.c=20d");
/// ```
pub fn record_key(driver: &str, instance: &str) -> String {
    format!("{}.{}", key_token(driver), key_token(instance))
}

fn key_token(text: &str) -> String {
    let mut token = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'/' | b'_') {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    if token.is_empty() {
        token.push('=');
    }
    token
}

/// How often a record is written again when the TTL is `ttl`: three times per TTL,
/// so that two writes may be lost before it expires.
///
/// ```
/// use std::time::Duration;
///
/// let every = conveyor_sdk::liveness::refresh_interval(Duration::from_secs(30));
/// assert_eq!(every, Duration::from_secs(10));
/// ```
pub fn refresh_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

/// What a replica says about itself in its record: enough for an operator to find the
/// process.
///
/// ```
/// let record = conveyor_sdk::liveness::LivenessRecord::of_this_process(std::time::Duration::from_secs(30));
/// assert_eq!(record.pid, std::process::id());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LivenessRecord {
    /// The host the replica runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// The TTL of the record, in seconds.
    pub ttl_seconds: u64,
}

impl LivenessRecord {
    /// The record of this process, with TTL `ttl`.
    ///
    /// ```
    /// let record = conveyor_sdk::liveness::LivenessRecord::of_this_process(std::time::Duration::from_secs(3));
    /// assert_eq!(record.ttl_seconds, 3);
    /// ```
    pub fn of_this_process(ttl: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        Self {
            host,
            pid: std::process::id(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ttl_seconds: ttl.as_secs(),
        }
    }
}

/// What can go wrong with the liveness bucket.
///
/// ```
/// use conveyor_sdk::liveness::LivenessError;
///
/// fn explain(error: &LivenessError) -> String {
///     conveyor_sdk::error_text(error)
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LivenessError {
    /// The bucket could be neither opened nor created.
    #[error("cannot open or create the liveness bucket {bucket}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bucket's records could not be read.
    #[error("cannot read the liveness bucket {bucket}")]
    Read {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The runtime keeps no liveness records: [`Config::liveness_ttl`](crate::Config::liveness_ttl)
    /// is not set.
    #[error("no liveness records are kept: set Config::liveness_ttl")]
    NotKept,
    /// A record could not be written.
    #[error("cannot write the liveness record {key}")]
    Write {
        /// Its key.
        key: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The liveness bucket, opened; created first (TTL `ttl`, one value per key, on
/// file storage so that records outlive a NATS restart) if it does not exist. Returns
/// the bucket and its TTL, which is the bucket's own when it existed already.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let js = async_nats::jetstream::new(client);
/// let (bucket, ttl) = conveyor_sdk::liveness::open_bucket(&js, std::time::Duration::from_secs(30)).await?;
/// println!("records expire {ttl:?} after their last write");
/// # Ok(())
/// # }
/// ```
pub async fn open_bucket(
    js: &async_nats::jetstream::Context,
    ttl: Duration,
) -> Result<(Store, Duration), LivenessError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| LivenessError::Bucket {
        bucket: BUCKET.into(),
        source,
    };
    let store = match js.get_key_value(BUCKET).await {
        Ok(store) => store,
        Err(_) => {
            let config = BucketConfig {
                bucket: BUCKET.into(),
                description: "Serving driver replicas alive: one record per replica, expiring with its TTL"
                    .into(),
                history: 1,
                max_age: ttl,
                storage: StorageType::File,
                ..Default::default()
            };
            match js.create_key_value(config).await {
                Ok(store) => store,
                // Created meanwhile by another replica, or not there to be read: ask again.
                Err(create) => js.get_key_value(BUCKET).await.map_err(|_| failed(Box::new(create)))?,
            }
        }
    };
    let max_age = store.status().await.map_err(|error| failed(Box::new(error)))?.max_age();
    let ttl = if max_age.is_zero() {
        tracing::warn!(
            bucket = BUCKET,
            "the liveness bucket has no max age: the records of killed replicas never expire and what they left is never removed; recreate it"
        );
        ttl
    } else {
        if max_age != ttl {
            tracing::warn!(
                bucket = BUCKET,
                bucket_ttl = %humantime::format_duration(max_age),
                asked_ttl = %humantime::format_duration(ttl),
                "the liveness bucket exists with another TTL; using the bucket's"
            );
        }
        max_age
    };
    Ok((store, ttl))
}

/// The keys of the records in `bucket` now: the replicas alive.
///
/// ```no_run
/// # async fn demo(bucket: async_nats::jetstream::kv::Store) -> Result<(), conveyor_sdk::liveness::LivenessError> {
/// use conveyor_sdk::liveness::{live_records, record_key};
///
/// let alive = live_records(&bucket).await?.contains(&record_key("command-runner", "5b1c"));
/// # Ok(())
/// # }
/// ```
pub async fn live_records(bucket: &Store) -> Result<HashSet<String>, LivenessError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| LivenessError::Read {
        bucket: BUCKET.into(),
        source,
    };
    let keys = bucket.keys().await.map_err(|error| failed(Box::new(error)))?;
    keys.try_collect().await.map_err(|error| failed(Box::new(error)))
}

/// The replicas of a driver, as its [`housekeeping`](crate::Driver::housekeeping)
/// sees them: this one's instance, and which replicas have a liveness record.
///
/// ```no_run
/// # async fn demo(replicas: &conveyor_sdk::liveness::Replicas) -> Result<(), conveyor_sdk::liveness::LivenessError> {
/// use conveyor_sdk::liveness::record_key;
///
/// let alive = replicas.alive().await?;
/// let owner = "5b1c"; // e.g. read from a container's label
/// if owner != replicas.instance() && !alive.contains(&record_key(replicas.driver(), owner)) {
///     println!("what {owner} left behind can go");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Replicas {
    driver: String,
    instance: String,
    bucket: Option<Store>,
}

impl Replicas {
    /// Replica `instance` of `driver`, reading liveness records from `bucket` (see
    /// [`open_bucket`]), or none.
    ///
    /// ```
    /// let replicas = conveyor_sdk::liveness::Replicas::new("command-runner", "5b1c", None);
    /// assert_eq!(replicas.instance(), "5b1c");
    /// ```
    pub fn new(driver: impl Into<String>, instance: impl Into<String>, bucket: Option<Store>) -> Self {
        Self { driver: driver.into(), instance: instance.into(), bucket }
    }

    /// The driver's name.
    ///
    /// ```
    /// let replicas = conveyor_sdk::liveness::Replicas::new("command-runner", "5b1c", None);
    /// assert_eq!(replicas.driver(), "command-runner");
    /// ```
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// This replica's instance ([`Config::instance`](crate::Config::instance)).
    ///
    /// ```
    /// let replicas = conveyor_sdk::liveness::Replicas::new("command-runner", "5b1c", None);
    /// assert_eq!(replicas.instance(), "5b1c");
    /// ```
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The liveness bucket, when records are kept.
    ///
    /// ```
    /// let replicas = conveyor_sdk::liveness::Replicas::new("command-runner", "5b1c", None);
    /// assert!(replicas.bucket().is_none());
    /// ```
    pub fn bucket(&self) -> Option<&Store> {
        self.bucket.as_ref()
    }

    /// The keys ([`record_key`]) of the records now in the bucket: the replicas
    /// alive, of every driver. Fails with [`LivenessError::NotKept`] when no records
    /// are kept: then no replica can be known to be gone.
    ///
    /// ```no_run
    /// # async fn demo(replicas: conveyor_sdk::liveness::Replicas) -> Result<(), conveyor_sdk::liveness::LivenessError> {
    /// let alive = replicas.alive().await?;
    /// println!("{} replicas alive", alive.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn alive(&self) -> Result<HashSet<String>, LivenessError> {
        match &self.bucket {
            Some(bucket) => live_records(bucket).await,
            None => Err(LivenessError::NotKept),
        }
    }
}

/// The record of a serving replica, written again every [`refresh_interval`] until
/// [`stop`](Self::stop).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use conveyor_sdk::liveness::Liveness;
///
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let liveness = Liveness::start(client, "command-runner", "5b1c", Duration::from_secs(30)).await?;
/// // … take runs …
/// liveness.stop().await;
/// # Ok(())
/// # }
/// ```
pub struct Liveness {
    bucket: Store,
    key: String,
    ttl: Duration,
    stop: CancellationToken,
    refreshing: JoinHandle<()>,
}

impl Liveness {
    /// Opens the bucket ([`open_bucket`]), writes the record of `instance` of
    /// `driver` once, and keeps it fresh in the background. Fails, writing nothing
    /// more, if the first write does not succeed: a replica should take no run before
    /// it has a record.
    ///
    /// ```no_run
    /// # async fn demo(client: async_nats::Client) -> Result<(), conveyor_sdk::liveness::LivenessError> {
    /// let liveness = conveyor_sdk::liveness::Liveness::start(
    ///     client, "command-runner", "5b1c", std::time::Duration::from_secs(30),
    /// ).await?;
    /// println!("refreshed every {:?}", liveness.ttl() / 3);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(
        client: async_nats::Client,
        driver: &str,
        instance: &str,
        ttl: Duration,
    ) -> Result<Self, LivenessError> {
        let js = async_nats::jetstream::new(client);
        let (bucket, ttl) = open_bucket(&js, ttl).await?;
        let key = record_key(driver, instance);
        let record = serde_json::to_vec(&LivenessRecord::of_this_process(ttl))
            .map_err(|error| LivenessError::Write { key: key.clone(), source: Box::new(error) })?;
        let record = bytes::Bytes::from(record);
        bucket
            .put(&key, record.clone())
            .await
            .map_err(|error| LivenessError::Write { key: key.clone(), source: Box::new(error) })?;
        let stop = CancellationToken::new();
        let refreshing = tokio::spawn(refresh(bucket.clone(), key.clone(), record, ttl, stop.clone()));
        Ok(Self { bucket, key, ttl, stop, refreshing })
    }

    /// The TTL in force: the bucket's.
    ///
    /// ```no_run
    /// # fn demo(liveness: conveyor_sdk::liveness::Liveness) {
    /// println!("a killed replica is forgotten within {:?}", liveness.ttl());
    /// # }
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The bucket, for a sweep of the same connection.
    ///
    /// ```no_run
    /// # async fn demo(liveness: conveyor_sdk::liveness::Liveness) -> Result<(), conveyor_sdk::liveness::LivenessError> {
    /// let alive = conveyor_sdk::liveness::live_records(liveness.bucket()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bucket(&self) -> &Store {
        &self.bucket
    }

    /// Stops refreshing and deletes the record: the replica is gone. A record that
    /// cannot be deleted expires within the TTL.
    ///
    /// ```no_run
    /// # async fn demo(liveness: conveyor_sdk::liveness::Liveness) {
    /// liveness.stop().await;
    /// # }
    /// ```
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.refreshing.await;
        if let Err(error) = self.bucket.delete(&self.key).await {
            tracing::warn!(
                error = %crate::error_text(&error),
                key = %self.key,
                "cannot delete this replica's liveness record; it expires by itself within the TTL"
            );
        }
    }
}

async fn refresh(bucket: Store, key: String, record: bytes::Bytes, ttl: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(refresh_interval(ttl));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first write was made by `start`
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        match bucket.put(&key, record.clone()).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(%key, "the liveness record is written again");
            }
            Ok(_) => {}
            Err(error) => {
                failing = true;
                tracing::warn!(
                    error = %crate::error_text(&error),
                    %key,
                    ttl = %humantime::format_duration(ttl),
                    "cannot refresh this replica's liveness record; if it stays unwritten for the TTL, other replicas take what this replica left for orphans"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct_for_any_names() {
        let valid = |key: &str| {
            key.split('.').all(|t| !t.is_empty())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c))
        };
        for (driver, instance) in
            [("command-runner", "x"), ("a.b", "c"), ("a", "b.c"), ("", ""), ("é*>", "=")]
        {
            let key = record_key(driver, instance);
            assert!(valid(&key), "{key}");
            assert_eq!(key.matches('.').count(), 1, "{key}");
        }
        assert_ne!(record_key("a.b", "c"), record_key("a", "b.c"));
        assert_ne!(record_key("a=2E", "c"), record_key("a.", "c"));
    }

    #[test]
    fn records_are_written_three_times_per_ttl_and_at_most_ten_times_a_second() {
        assert_eq!(refresh_interval(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(refresh_interval(Duration::from_millis(30)), Duration::from_millis(100));
    }
}
