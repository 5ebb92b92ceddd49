//! Cache entries in the object store bucket: each an object of the bucket, readable by
//! any client of the object store (`nats object get`).
//!
//! An entry is written as the object store writes an object, its chunks first and its
//! record (the object's metadata, under its name) last, so that a half-written entry is
//! never seen; but with chunks under an id of the runner's, so that the chunks of an
//! entry that is not finished (too big, a store that fails, a run that ends) are purged,
//! and with a record written only if none is there yet, so that an entry is never
//! overwritten, even by two runs saving one key at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::time::Duration;

use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_ROLLUP};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::object_store::{ObjectInfo, ObjectOptions};
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind, Stream};
use async_nats::HeaderMap;
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use bytes::BytesMut;
use conveyor_sdk::error_text;
use futures_util::StreamExt;
use ring::digest::{Context as Sha256, SHA256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::objects::store::Bucket;

/// The bytes of one chunk, as the object store's clients write them.
pub(crate) const CHUNK: usize = 128 * 1024;

/// How many chunks may be on their way to the store, unacknowledged, at once.
const IN_FLIGHT: usize = 8;

/// An entry's record, as the bucket has it.
pub(crate) struct Record {
    /// The object's metadata.
    pub(crate) info: ObjectInfo,
    /// The sequence of the record in the bucket's stream.
    pub(crate) sequence: u64,
}

/// The subject of the record of object `name` in `bucket`.
fn record_subject(bucket: &Bucket, name: &str) -> String {
    format!("$O.{}.M.{}", bucket.name, URL_SAFE.encode(name))
}

/// The record of entry `name`, deleted or not; `None` when there is none.
pub(crate) async fn record(bucket: &Bucket, name: &str) -> Result<Option<Record>, String> {
    let subject = record_subject(bucket, name);
    let message = if bucket.stream.cached_info().config.allow_direct {
        match bucket.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => message,
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error_text(&error)),
        }
    } else {
        match bucket.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(error) => return Err(error_text(&error)),
        }
    };
    let info: ObjectInfo = serde_json::from_slice(&message.payload)
        .map_err(|e| format!("the record of {name} cannot be read: {e}"))?;
    Ok(Some(Record { info, sequence: message.sequence }))
}

/// Every entry of the bucket whose name starts with `prefix`, not deleted.
pub(crate) async fn list(bucket: &Bucket, prefix: &str) -> Result<Vec<ObjectInfo>, String> {
    let mut listed = bucket.store.list().await.map_err(|e| error_text(&e))?;
    let mut found = Vec::new();
    while let Some(info) = listed.next().await {
        let info = info.map_err(|e| error_text(&e))?;
        if info.name.starts_with(prefix) && !info.deleted {
            found.push(info);
        }
    }
    Ok(found)
}

/// How many chunks one pull of a read asks for: what a read holds in memory at most,
/// twice over.
const READ_BATCH: i64 = 16;

/// The bytes of entry `info`, chunk after chunk, checked against its size and digest at
/// the end (an error then). Read by a pull consumer that asks for [`READ_BATCH`] chunks
/// at a time, so that a reader slower than the store holds no more than that.
pub(crate) async fn read(
    bucket: &Bucket,
    info: &ObjectInfo,
) -> Result<impl futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static, String> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let config = OrderedConfig {
        filter_subject: format!("$O.{}.C.{}", bucket.name, info.nuid),
        max_batch: READ_BATCH,
        ..Default::default()
    };
    let messages = match info.chunks {
        0 => None,
        _ => {
            let consumer = bucket.stream.create_consumer(config).await.map_err(|e| error_text(&e))?;
            Some(consumer.messages().await.map_err(|e| error_text(&e))?)
        }
    };
    let state = Reading {
        messages,
        left: info.chunks,
        size: 0,
        hasher: Sha256::new(&SHA256),
        expected_size: info.size as u64,
        expected_digest: info.digest.clone(),
    };
    Ok(futures_util::stream::try_unfold(state, |mut state| async move {
        if state.left == 0 {
            state.check()?;
            return Ok(None);
        }
        let Some(messages) = state.messages.as_mut() else { return Ok(None) };
        let message = match messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(io::Error::other(error_text(&error))),
            None => return Err(io::Error::other("the store ended the entry early")),
        };
        let chunk = message.message.payload;
        state.left -= 1;
        state.size += chunk.len() as u64;
        state.hasher.update(&chunk);
        Ok(Some((chunk, state)))
    }))
}

/// Where a [`read`] is.
struct Reading {
    messages: Option<async_nats::jetstream::consumer::pull::Ordered>,
    left: usize,
    size: u64,
    hasher: Sha256,
    expected_size: u64,
    expected_digest: Option<String>,
}

impl Reading {
    /// Whether what was read is the entry whole.
    fn check(&mut self) -> io::Result<()> {
        let digest = format!(
            "SHA-256={}",
            URL_SAFE.encode(std::mem::replace(&mut self.hasher, Sha256::new(&SHA256)).finish())
        );
        if self.size != self.expected_size {
            return Err(io::Error::other(format!("{} bytes read of {}", self.size, self.expected_size)));
        }
        match &self.expected_digest {
            Some(expected) if *expected != digest => {
                Err(io::Error::other("its SHA-256 is not the one recorded"))
            }
            _ => Ok(()),
        }
    }
}

/// A new entry.
pub(crate) struct NewEntry {
    /// Its name in the bucket.
    pub(crate) name: String,
    /// What it is, for whoever lists the bucket.
    pub(crate) description: String,
    /// Its metadata.
    pub(crate) metadata: HashMap<String, String>,
    /// The sequence of the deleted record it takes the place of (0: none).
    pub(crate) replaces: u64,
    /// The most bytes it may have.
    pub(crate) limit: u64,
}

/// Why an entry was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// It was bigger than its limit.
    #[error("it is bigger than {limit} bytes")]
    TooBig {
        /// The limit.
        limit: u64,
    },
    /// Another run wrote an entry of its name meanwhile.
    #[error("another run saved it meanwhile")]
    Exists,
    /// Its bytes could not be read.
    #[error("it could not be read: {0}")]
    Source(String),
    /// The store did not take it.
    #[error("the object store did not take it: {0}")]
    Store(String),
}

/// Writes `entry` with the bytes of `data`, whose writer ends with `written`; the chunks
/// written are purged when it is not written in full (when the future is dropped, by a
/// task of their own).
pub(crate) async fn write(
    bucket: &Bucket,
    entry: NewEntry,
    data: &mut (impl AsyncRead + Unpin),
    written: impl Future<Output = io::Result<()>>,
) -> Result<ObjectInfo, WriteError> {
    let nuid = uuid::Uuid::new_v4().simple().to_string();
    let mut chunks = Chunks::new(bucket.stream.clone(), format!("$O.{}.C.{nuid}", bucket.name));
    let started = time::OffsetDateTime::now_utc();
    let mut acks = VecDeque::with_capacity(IN_FLIGHT);
    let wrote = write_chunks(bucket, &chunks.subject, data, entry.limit, &mut acks).await;
    // Chunks still on their way would land after the purge.
    for ack in acks {
        let _ = ack.await;
    }
    match wrote {
        Ok((size, count, digest)) => {
            // The writer's own end: a tar cut short is no entry.
            if let Err(error) = written.await {
                chunks.purge().await;
                return Err(WriteError::Source(error.to_string()));
            }
            let info = ObjectInfo {
                name: entry.name,
                description: Some(entry.description),
                metadata: entry.metadata,
                headers: None,
                options: Some(ObjectOptions { link: None, max_chunk_size: Some(CHUNK) }),
                bucket: bucket.name.clone(),
                nuid,
                size: usize::try_from(size).unwrap_or(usize::MAX),
                chunks: count,
                modified: Some(started),
                digest: Some(format!("SHA-256={}", URL_SAFE.encode(digest))),
                deleted: false,
            };
            match publish_record(bucket, &info, entry.replaces).await {
                Ok(()) => {
                    chunks.keep();
                    Ok(info)
                }
                Err(error) => {
                    chunks.purge().await;
                    Err(error)
                }
            }
        }
        Err(error) => {
            chunks.purge().await;
            Err(error)
        }
    }
}

/// Publishes the chunks of `data` to `subject`, at most `limit` bytes, with up to
/// [`IN_FLIGHT`] acknowledgements outstanding in `acks` (left there on an error); their
/// size, count and SHA-256.
async fn write_chunks(
    bucket: &Bucket,
    subject: &str,
    data: &mut (impl AsyncRead + Unpin),
    limit: u64,
    acks: &mut VecDeque<PublishAckFuture>,
) -> Result<(u64, usize, Vec<u8>), WriteError> {
    let context = &bucket.js;
    let mut hasher = Sha256::new(&SHA256);
    let (mut size, mut count) = (0u64, 0usize);
    let mut buffer = BytesMut::with_capacity(CHUNK);
    loop {
        buffer.reserve(CHUNK);
        while buffer.len() < CHUNK {
            let read = (&mut *data).take((CHUNK - buffer.len()) as u64).read_buf(&mut buffer).await;
            match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => return Err(WriteError::Source(error.to_string())),
            }
        }
        if buffer.is_empty() {
            break;
        }
        let chunk = buffer.split().freeze();
        size += chunk.len() as u64;
        if size > limit {
            return Err(WriteError::TooBig { limit });
        }
        hasher.update(&chunk);
        count += 1;
        let ack = context
            .publish(subject.to_owned(), chunk)
            .await
            .map_err(|e| WriteError::Store(error_text(&e)))?;
        acks.push_back(ack);
        if acks.len() >= IN_FLIGHT {
            if let Some(ack) = acks.pop_front() {
                ack.await.map_err(|e| WriteError::Store(error_text(&e)))?;
            }
        }
    }
    while let Some(ack) = acks.pop_front() {
        ack.await.map_err(|e| WriteError::Store(error_text(&e)))?;
    }
    Ok((size, count, hasher.finish().as_ref().to_vec()))
}

/// Publishes the record `info`, only if the last record of its name is `replaces` (0:
/// none).
async fn publish_record(bucket: &Bucket, info: &ObjectInfo, replaces: u64) -> Result<(), WriteError> {
    let payload = serde_json::to_vec(info).map_err(|e| WriteError::Store(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(NATS_ROLLUP, "sub");
    headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, replaces.to_string().as_str());
    let subject = record_subject(bucket, &info.name);
    let published = bucket.js.publish_with_headers(subject, headers, payload.into()).await;
    let acked = match published {
        Ok(ack) => ack.await,
        Err(error) => Err(error),
    };
    match acked {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Err(WriteError::Exists),
        Err(error) => Err(WriteError::Store(error_text(&error))),
    }
}

/// The chunks of an entry being written: purged unless kept.
struct Chunks {
    stream: Stream,
    subject: String,
    done: bool,
}

impl Chunks {
    fn new(stream: Stream, subject: String) -> Self {
        Self { stream, subject, done: false }
    }

    /// They make an entry: kept.
    fn keep(&mut self) {
        self.done = true;
    }

    /// They make no entry: purged, as far as the store answers.
    async fn purge(&mut self) {
        self.done = true;
        if let Err(error) = self.stream.purge().filter(&self.subject).await {
            tracing::warn!(subject = %self.subject, error = %error_text(&error), "the chunks of an unfinished cache entry were not purged; the bucket's max_age removes them");
        }
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (stream, subject) = (self.stream.clone(), std::mem::take(&mut self.subject));
        runtime.spawn(async move {
            // After the chunks still on their way, which the store acknowledges within
            // its timeout.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.purge().filter(&subject)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    async fn bucket() -> (conveyor_sdk::testing::NatsServer, Bucket) {
        let nats = conveyor_sdk::testing::NatsServer::start()
            .await
            .unwrap_or_else(|e| panic!("{e}: run `bash scripts/services.sh` (it installs nats-server)"));
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let bucket =
            crate::objects::store::open(&js, "entries", "test", Duration::from_secs(3600)).await.unwrap();
        (nats, bucket)
    }

    fn entry(name: &str, limit: u64) -> NewEntry {
        NewEntry { name: name.into(), description: "d".into(), metadata: HashMap::new(), replaces: 0, limit }
    }

    async fn messages(bucket: &Bucket) -> u64 {
        bucket.stream.clone().info().await.unwrap().state.messages
    }

    #[tokio::test]
    async fn an_entry_reads_back_whole_and_a_second_of_its_name_is_refused_leaving_no_chunk() {
        let (_nats, bucket) = bucket().await;
        let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let info =
            write(&bucket, entry("a", 1 << 20), &mut bytes.as_slice(), async { Ok(()) }).await.unwrap();
        assert_eq!((info.size, info.chunks), (1_000_000, 8));
        assert_eq!(messages(&bucket).await, 9, "eight chunks and a record");
        let other = vec![7u8; 300_000];
        let again = write(&bucket, entry("a", 1 << 20), &mut other.as_slice(), async { Ok(()) }).await;
        assert!(matches!(again, Err(WriteError::Exists)), "{again:?}");
        assert_eq!(messages(&bucket).await, 9, "the second one's chunks were purged");
        let info = record(&bucket, "a").await.unwrap().unwrap().info;
        let chunks: Vec<bytes::Bytes> = read(&bucket, &info).await.unwrap().try_collect().await.unwrap();
        let read = chunks.concat();
        assert!(read == bytes, "the first one, whole");
        let by_clients = bucket.store.info("a").await.unwrap();
        assert_eq!(by_clients.size, 1_000_000, "the object store's clients read it too");
    }

    #[tokio::test]
    async fn an_entry_over_its_limit_or_whose_writer_failed_leaves_nothing() {
        let (_nats, bucket) = bucket().await;
        let bytes = vec![1u8; 500_000];
        let big = write(&bucket, entry("big", 300_000), &mut bytes.as_slice(), async { Ok(()) }).await;
        assert!(matches!(big, Err(WriteError::TooBig { limit: 300_000 })), "{big:?}");
        let cut = write(&bucket, entry("cut", 1 << 20), &mut bytes.as_slice(), async {
            Err(io::Error::other("the engine went away"))
        })
        .await;
        assert!(matches!(&cut, Err(WriteError::Source(why)) if why.contains("went away")), "{cut:?}");
        assert_eq!(messages(&bucket).await, 0);
        assert!(
            record(&bucket, "big").await.unwrap().is_none()
                && record(&bucket, "cut").await.unwrap().is_none()
        );
    }
}
