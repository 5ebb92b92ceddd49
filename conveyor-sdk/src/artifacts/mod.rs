//! A run's artifacts: what a driver keeps of a run after it, in a JetStream object
//! store bucket that every replica on every host reaches, fetched by anyone with the
//! run's id.
//!
//! An artifact is one object of the bucket ([`BUCKET`], `conveyor_artifacts`, by
//! default) named [`object_name`] `<driver>/<run_id>/<name>`: a driver that keeps it
//! ([`ArtifactStore::put`]) and a user who fetches it ([`fetch`],
//! [`ArtifactStore::fetch`]) agree on where it is through the [`ArtifactKey`] alone.
//! What the object holds is the driver's to say (simple-runner keeps a tar of the
//! artifact's paths).
//!
//! Everything streams: a put reads its content in chunks of 128 KiB and publishes each
//! as it is read, a fetch pulls [`FETCH_BATCH`] chunks at a time and writes each as it
//! arrives, so that an artifact of any size moves in a few MiB of memory. The size and
//! SHA-256 are computed while the content streams, and a fetch checks both at its end.
//!
//! The bucket's `max_age` is the artifacts' time to live: an artifact is gone that
//! long after it was put. It is fixed when the bucket is created, by the first driver
//! that opens it ([`ArtifactStore::create`]); a bucket that exists keeps its own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use conveyor_sdk::artifacts::{self, ArtifactKey};
//!
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! let key = ArtifactKey::new("command-runner", "4f7c0e5a-run-id", "binary")?;
//! let mut file = tokio::fs::File::create("binary.tar").await?;
//! let info = artifacts::fetch(&js, artifacts::BUCKET, &key, &mut file).await?;
//! println!("{} bytes, sha256 {}", info.size, info.sha256);
//! # Ok(()) }
//! ```

mod error;
mod stream;

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::object_store::{self, ObjectInfo, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};

pub use error::ArtifactError;

use crate::protocol::subjects;
use stream::{copy_chunks, sha256_hex, Expected, Limited};

/// The object store bucket of artifacts, unless a driver names another.
pub const BUCKET: &str = "conveyor_artifacts";

/// How many chunks of 128 KiB a fetch asks NATS for at a time (it asks again when half
/// have arrived): what a fetch holds in memory, whatever the artifact's size.
pub const FETCH_BATCH: i64 = 8;

/// How a read that times out is asked again: during a cluster's failover JetStream
/// answers nothing for a few seconds.
const FAILOVER_BACKOFF: crate::runtime::Backoff =
    crate::runtime::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

/// For how long a read that times out is asked again.
const FAILOVER_WITHIN: Duration = Duration::from_secs(20);

/// The longest part of an [`ArtifactKey`], in bytes.
pub const MAX_PART_LEN: usize = subjects::MAX_TOKEN_LEN;

/// The name of the object that holds artifact `name` of run `run_id` of driver
/// `driver`: `<driver>/<run_id>/<name>`. Check the parts with [`ArtifactKey::new`]:
/// none may hold a `/`.
///
/// ```
/// use conveyor_sdk::artifacts::object_name;
///
/// assert_eq!(object_name("command-runner", "7c1d", "binary"), "command-runner/7c1d/binary");
/// ```
pub fn object_name(driver: &str, run_id: &str, name: &str) -> String {
    format!("{driver}/{run_id}/{name}")
}

/// Which artifact: of which driver, which run, under which name; each part checked to
/// stand alone in its [`object_name`].
///
/// ```
/// use conveyor_sdk::artifacts::ArtifactKey;
///
/// let key = ArtifactKey::new("command-runner", "7c1d", "test-report.xml")?;
/// assert_eq!(key.object_name(), "command-runner/7c1d/test-report.xml");
/// assert!(ArtifactKey::new("command-runner", "7c1d", "../secrets").is_err());
/// # Ok::<(), conveyor_sdk::artifacts::ArtifactError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactKey {
    driver: String,
    run_id: String,
    name: String,
}

impl ArtifactKey {
    /// The key of artifact `name` of run `run_id` of driver `driver`. Each part is
    /// not empty, at most [`MAX_PART_LEN`] bytes, and has no `/`, white space or
    /// control character; the name is not `.` or `..`
    /// ([`ArtifactError::InvalidKey`] otherwise).
    ///
    /// ```
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("command-runner", "7c1d", "binary")?;
    /// assert_eq!(key.name(), "binary");
    /// # Ok::<(), conveyor_sdk::artifacts::ArtifactError>(())
    /// ```
    pub fn new(
        driver: impl Into<String>,
        run_id: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Self, ArtifactError> {
        let key = Self { driver: driver.into(), run_id: run_id.into(), name: name.into() };
        for (part, text) in [("driver", &key.driver), ("run id", &key.run_id), ("name", &key.name)] {
            if let Some(fault) = part_fault(text) {
                return Err(ArtifactError::InvalidKey { part, text: text.clone(), fault });
            }
        }
        Ok(key)
    }

    /// The driver that kept it.
    ///
    /// ```
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("command-runner", "7c1d", "binary")?;
    /// assert_eq!(key.driver(), "command-runner");
    /// # Ok::<(), conveyor_sdk::artifacts::ArtifactError>(())
    /// ```
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The run it was kept by.
    ///
    /// ```
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("command-runner", "7c1d", "binary")?;
    /// assert_eq!(key.run_id(), "7c1d");
    /// # Ok::<(), conveyor_sdk::artifacts::ArtifactError>(())
    /// ```
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Its name.
    ///
    /// ```
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("command-runner", "7c1d", "binary")?;
    /// assert_eq!(key.name(), "binary");
    /// # Ok::<(), conveyor_sdk::artifacts::ArtifactError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of its object in the bucket ([`object_name`]).
    ///
    /// ```
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("d", "r", "n")?;
    /// assert_eq!(key.object_name(), "d/r/n");
    /// # Ok::<(), conveyor_sdk::artifacts::ArtifactError>(())
    /// ```
    pub fn object_name(&self) -> String {
        object_name(&self.driver, &self.run_id, &self.name)
    }
}

/// Why `text` cannot be a part of a key; `None` when it can.
fn part_fault(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("it is empty")
    } else if text.len() > MAX_PART_LEN {
        Some("it is too long")
    } else if text.contains('/') {
        Some("it holds a `/`")
    } else if text.contains(char::is_control) {
        Some("it holds a control character")
    } else if text.contains(char::is_whitespace) {
        Some("it holds white space")
    } else if text == "." || text == ".." {
        Some("it is `.` or `..`")
    } else {
        None
    }
}

/// An artifact as it is stored.
///
/// ```
/// let info = conveyor_sdk::artifacts::ArtifactInfo {
///     name: "binary".into(),
///     size: 0,
///     sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
///     modified: None,
/// };
/// assert_eq!(info.size, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// Its name ([`ArtifactKey::name`]).
    pub name: String,
    /// How many bytes it holds.
    pub size: u64,
    /// The SHA-256 of what it holds, in lowercase hex.
    pub sha256: String,
    /// When it was put, as the store says.
    pub modified: Option<SystemTime>,
}

impl ArtifactInfo {
    /// The artifact `name` as `info` describes its object.
    fn of(name: &str, info: &ObjectInfo) -> Result<Self, ArtifactError> {
        let sha256 = info.digest.as_deref().and_then(sha256_hex).ok_or_else(|| ArtifactError::Digest {
            object: info.name.clone(),
            digest: info.digest.clone(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            size: info.size as u64,
            sha256,
            modified: info.modified.map(SystemTime::from),
        })
    }
}

/// The artifacts of one bucket.
///
/// ```no_run
/// # async fn demo(js: async_nats::jetstream::Context) -> Result<(), conveyor_sdk::artifacts::ArtifactError> {
/// use std::time::Duration;
/// use conveyor_sdk::artifacts::{ArtifactKey, ArtifactStore, BUCKET};
///
/// let store = ArtifactStore::create(&js, BUCKET, Duration::from_secs(7 * 24 * 3600)).await?;
/// let key = ArtifactKey::new("my-driver", "7c1d", "report")?;
/// let info = store.put(&key, &mut &b"all tests passed\n"[..], 1 << 20).await?;
/// assert_eq!(info.size, 17);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ArtifactStore {
    js: Context,
    store: ObjectStore,
    bucket: String,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// The artifacts of `bucket`, which must exist ([`ArtifactError::NoBucket`]
    /// otherwise): to fetch and list them.
    ///
    /// ```no_run
    /// # async fn demo(js: async_nats::jetstream::Context) -> Result<(), conveyor_sdk::artifacts::ArtifactError> {
    /// let store = conveyor_sdk::artifacts::ArtifactStore::open(&js, conveyor_sdk::artifacts::BUCKET).await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(js: &Context, bucket: &str) -> Result<Self, ArtifactError> {
        match js.get_object_store(bucket).await {
            Ok(store) => Ok(Self { js: js.clone(), store, bucket: bucket.to_owned() }),
            Err(error) => Err(match bucket_missing(js, bucket).await {
                true => ArtifactError::NoBucket(bucket.to_owned()),
                false => ArtifactError::store(format!("cannot open bucket {bucket}"), error),
            }),
        }
    }

    /// The artifacts of `bucket`, created when missing with `ttl` as its `max_age`
    /// and as many replicas as the server's stream of resource events has (1 when it
    /// cannot be read), as the runtime's own buckets: to keep them. A bucket that
    /// exists keeps its own `max_age`.
    ///
    /// ```no_run
    /// # async fn demo(js: async_nats::jetstream::Context) -> Result<(), conveyor_sdk::artifacts::ArtifactError> {
    /// use std::time::Duration;
    /// let ttl = Duration::from_secs(3 * 24 * 3600);
    /// let store = conveyor_sdk::artifacts::ArtifactStore::create(&js, "my_artifacts", ttl).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create(js: &Context, bucket: &str, ttl: Duration) -> Result<Self, ArtifactError> {
        if let Ok(store) = js.get_object_store(bucket).await {
            return Ok(Self { js: js.clone(), store, bucket: bucket.to_owned() });
        }
        let replicas = match js.get_stream(subjects::MESSAGES_STREAM).await {
            Ok(stream) => stream.cached_info().config.num_replicas.max(1),
            Err(_) => 1,
        };
        let config = object_store::Config {
            bucket: bucket.to_owned(),
            description: Some("Artifacts of Conveyor runs, kept after each run under its id".to_owned()),
            max_age: ttl,
            max_bytes: -1,
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        match js.create_object_store(config).await {
            Ok(store) => Ok(Self { js: js.clone(), store, bucket: bucket.to_owned() }),
            // Another driver may have created it meanwhile.
            Err(error) => match js.get_object_store(bucket).await {
                Ok(store) => Ok(Self { js: js.clone(), store, bucket: bucket.to_owned() }),
                Err(_) => Err(ArtifactError::store(format!("cannot create bucket {bucket}"), error)),
            },
        }
    }

    /// The bucket's name.
    ///
    /// ```no_run
    /// # async fn demo(store: conveyor_sdk::artifacts::ArtifactStore) {
    /// assert_eq!(store.bucket(), conveyor_sdk::artifacts::BUCKET);
    /// # }
    /// ```
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Keeps what `content` reads, to its end, as artifact `key` (in place of one of
    /// the same key), streamed: its size and SHA-256 computed on the way. When
    /// `content` holds more than `limit` bytes, what was put is deleted again and the
    /// put fails with [`ArtifactError::TooLarge`]. A `content` that ends early is kept
    /// as it is: a caller whose source failed deletes the artifact
    /// ([`delete`](Self::delete)).
    ///
    /// ```no_run
    /// # async fn demo(store: conveyor_sdk::artifacts::ArtifactStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("my-driver", "7c1d", "logs")?;
    /// let mut file = tokio::fs::File::open("build.log").await?;
    /// let info = store.put(&key, &mut file, 100 << 20).await?;
    /// println!("kept {} bytes, sha256 {}", info.size, info.sha256);
    /// # Ok(()) }
    /// ```
    pub async fn put<R>(
        &self,
        key: &ArtifactKey,
        content: &mut R,
        limit: u64,
    ) -> Result<ArtifactInfo, ArtifactError>
    where
        R: AsyncRead + Unpin,
    {
        let meta = ObjectMetadata {
            name: key.object_name(),
            description: Some(format!("artifact {} of run {}", key.name, key.run_id)),
            ..Default::default()
        };
        let mut limited = Limited::new(content, limit);
        let put = self.store.put(meta, &mut limited).await;
        let over = limited.over();
        let info = put.map_err(|error| match error.kind() {
            object_store::PutErrorKind::ReadChunks => ArtifactError::Read(std::io::Error::other(error)),
            _ => ArtifactError::store(format!("cannot put {}", key.object_name()), error),
        })?;
        if over {
            // What fit under the limit was put, ending early: it goes again.
            let _ = self.delete(key).await;
            return Err(ArtifactError::TooLarge { limit });
        }
        ArtifactInfo::of(&key.name, &info)
    }

    /// Writes artifact `key` into `writer` as it arrives, and flushes it; its size
    /// and SHA-256 are checked at the end ([`ArtifactError::Corrupt`] when they do not
    /// match what was put). [`ArtifactError::NotFound`] when there is no such
    /// artifact: never kept, deleted, or gone with the bucket's `max_age`.
    ///
    /// The chunks are pulled [`FETCH_BATCH`] at a time, so that a writer slower than
    /// NATS (a disk, a pipe) holds back the server rather than filling memory.
    ///
    /// ```no_run
    /// # async fn demo(store: conveyor_sdk::artifacts::ArtifactStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("command-runner", "7c1d", "binary")?;
    /// let info = store.fetch(&key, &mut tokio::io::stdout()).await?;
    /// eprintln!("{} bytes", info.size);
    /// # Ok(()) }
    /// ```
    pub async fn fetch<W>(&self, key: &ArtifactKey, writer: &mut W) -> Result<ArtifactInfo, ArtifactError>
    where
        W: AsyncWrite + Unpin,
    {
        let object = self.store.info(key.object_name()).await.map_err(|error| match error.kind() {
            object_store::InfoErrorKind::NotFound => ArtifactError::not_found(key),
            _ => ArtifactError::store(format!("cannot read {}", key.object_name()), error),
        })?;
        let info = ArtifactInfo::of(&key.name, &object)?;
        let expected = Expected { chunks: object.chunks, size: info.size, sha256: &info.sha256 };
        if object.chunks == 0 {
            copy_chunks(futures_util::stream::empty::<Result<Bytes, ArtifactError>>(), expected, writer)
                .await?;
            return Ok(info);
        }
        let config = pull::OrderedConfig {
            filter_subject: format!("$O.{}.C.{}", self.bucket, object.nuid),
            deliver_policy: DeliverPolicy::All,
            max_batch: FETCH_BATCH,
            ..Default::default()
        };
        let action = || format!("cannot read {} from the object store", key.object_name());
        // Right after a node of a cluster is lost, JetStream may not answer until its
        // new leaders are in place: a request that times out is asked again meanwhile.
        let stream = format!("OBJ_{}", self.bucket);
        let created = FAILOVER_BACKOFF
            .retry_within(
                FAILOVER_WITHIN,
                || async {
                    match self.js.create_consumer_on_stream(config.clone(), stream.clone()).await {
                        Err(error) if matches!(error.kind(), ConsumerErrorKind::TimedOut) => Err(error),
                        other => Ok(other),
                    }
                },
                |error| tracing::debug!(%error, "reading an artifact timed out; asking again"),
            )
            .await;
        let consumer =
            created.and_then(std::convert::identity).map_err(|e| ArtifactError::store(action(), e))?;
        let messages = consumer.messages().await.map_err(|e| ArtifactError::store(action(), e))?;
        let chunks = messages.map(|message| match message {
            Ok(message) => Ok(message.payload.clone()),
            Err(error) => Err(ArtifactError::store(action(), error)),
        });
        copy_chunks(chunks, expected, writer).await?;
        Ok(info)
    }

    /// What is stored of artifact `key`, without its content.
    ///
    /// ```no_run
    /// # async fn demo(store: conveyor_sdk::artifacts::ArtifactStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("command-runner", "7c1d", "binary")?;
    /// println!("{}", store.info(&key).await?.sha256);
    /// # Ok(()) }
    /// ```
    pub async fn info(&self, key: &ArtifactKey) -> Result<ArtifactInfo, ArtifactError> {
        let info = self.store.info(key.object_name()).await.map_err(|error| match error.kind() {
            object_store::InfoErrorKind::NotFound => ArtifactError::not_found(key),
            _ => ArtifactError::store(format!("cannot read {}", key.object_name()), error),
        })?;
        ArtifactInfo::of(&key.name, &info)
    }

    /// The artifacts of run `run_id` of driver `driver`, by name. The bucket names its
    /// objects in an encoding that keeps no prefix, so this reads the description of
    /// every artifact in the bucket (not their content).
    ///
    /// ```no_run
    /// # async fn demo(store: conveyor_sdk::artifacts::ArtifactStore) -> Result<(), conveyor_sdk::artifacts::ArtifactError> {
    /// for artifact in store.list("command-runner", "7c1d").await? {
    ///     println!("{}\t{}\t{}", artifact.name, artifact.size, artifact.sha256);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, driver: &str, run_id: &str) -> Result<Vec<ArtifactInfo>, ArtifactError> {
        // The key checks the parts; the name is a placeholder.
        let key = ArtifactKey::new(driver, run_id, "_")?;
        let prefix = format!("{}/{}/", key.driver, key.run_id);
        let action = || format!("cannot list bucket {}", self.bucket);
        let mut objects = self.store.list().await.map_err(|e| ArtifactError::store(action(), e))?;
        let mut found = Vec::new();
        while let Some(object) = objects.try_next().await.map_err(|e| ArtifactError::store(action(), e))? {
            if let Some(name) = object.name.strip_prefix(&prefix) {
                found.push(ArtifactInfo::of(name, &object)?);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Deletes artifact `key`, its content at once; [`ArtifactError::NotFound`] when
    /// there is none.
    ///
    /// ```no_run
    /// # async fn demo(store: conveyor_sdk::artifacts::ArtifactStore) -> Result<(), conveyor_sdk::artifacts::ArtifactError> {
    /// let key = conveyor_sdk::artifacts::ArtifactKey::new("command-runner", "7c1d", "binary")?;
    /// store.delete(&key).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, key: &ArtifactKey) -> Result<(), ArtifactError> {
        self.store.delete(key.object_name()).await.map_err(|error| match error.kind() {
            object_store::DeleteErrorKind::NotFound => ArtifactError::not_found(key),
            _ => ArtifactError::store(format!("cannot delete {}", key.object_name()), error),
        })
    }
}

/// Whether `bucket` does not exist, as opposed to the server not answering.
async fn bucket_missing(js: &Context, bucket: &str) -> bool {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    match js.get_stream(format!("OBJ_{bucket}")).await {
        Err(error) => {
            matches!(error.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
        }
        Ok(_) => false,
    }
}

/// Writes artifact `key` of `bucket` into `writer` as it arrives: [`ArtifactStore::open`]
/// and [`ArtifactStore::fetch`] in one call.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use conveyor_sdk::artifacts::{fetch, ArtifactKey, BUCKET};
///
/// let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await?);
/// let key = ArtifactKey::new("command-runner", "7c1d", "binary")?;
/// let mut out = tokio::fs::File::create("binary.tar").await?;
/// let info = fetch(&js, BUCKET, &key, &mut out).await?;
/// assert_eq!(info.name, "binary");
/// # Ok(()) }
/// ```
pub async fn fetch<W>(
    js: &Context,
    bucket: &str,
    key: &ArtifactKey,
    writer: &mut W,
) -> Result<ArtifactInfo, ArtifactError>
where
    W: AsyncWrite + Unpin,
{
    ArtifactStore::open(js, bucket).await?.fetch(key, writer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_refuses_parts_that_would_not_stand_alone_in_the_object_name() {
        assert!(ArtifactKey::new("command-runner", "4f7c0e5a-1b2c", "app.tar.gz").is_ok());
        let refused = |driver: &str, run: &str, name: &str| match ArtifactKey::new(driver, run, name) {
            Err(ArtifactError::InvalidKey { part, .. }) => part,
            other => panic!("{driver}/{run}/{name} was not refused: {other:?}"),
        };
        assert_eq!(refused("", "r", "n"), "driver");
        assert_eq!(refused("d", "a/b", "n"), "run id");
        assert_eq!(refused("d", "r", ".."), "name");
        assert_eq!(refused("d", "r", "two words"), "name");
        assert_eq!(refused("d", "r", "line\n"), "name");
        assert_eq!(refused("d", "r", &"n".repeat(MAX_PART_LEN + 1)), "name");
    }

    #[test]
    fn an_objects_name_is_the_driver_the_run_and_the_name() {
        let key = ArtifactKey::new("command-runner", "7c1d", "binary").unwrap();
        assert_eq!(key.object_name(), "command-runner/7c1d/binary");
        assert_eq!((key.driver(), key.run_id(), key.name()), ("command-runner", "7c1d", "binary"));
    }
}
