//! Opening a JetStream object store bucket of the runner's: created with the replicas
//! of the server's stream of resource messages when missing, used as it is when present.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::object_store::{Config, ObjectStore};
use async_nats::jetstream::stream::{StorageType, Stream};
use async_nats::jetstream::Context;
use conveyor_sdk::error_text;
use conveyor_sdk::protocol::subjects::MESSAGES_STREAM;

/// An open bucket: the object store and the stream under it.
pub(crate) struct Bucket {
    /// Its name.
    pub(crate) name: String,
    /// The JetStream it is in.
    pub(crate) js: Context,
    /// The object store.
    pub(crate) store: ObjectStore,
    /// Its stream (`OBJ_<name>`), for what the object store does not offer.
    pub(crate) stream: Stream,
    /// How long a message of it is kept (zero: for ever), as the bucket has it.
    pub(crate) max_age: Duration,
}

/// Buckets found with another `max_age` than asked for, already said in the
/// diagnostics: said once per process.
static OTHER_AGE_SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Opens bucket `name` of `js`, creating it with `description`, messages kept for
/// `max_age` and the replicas of the stream of resource messages (one when that stream
/// cannot be read) when missing. A bucket that exists is used as it is: when its
/// `max_age` is another, the diagnostics say so once and the bucket's is kept.
pub(crate) async fn open(
    js: &Context,
    name: &str,
    description: &str,
    max_age: Duration,
) -> Result<Bucket, String> {
    let stream_name = format!("OBJ_{name}");
    let stream = match js.get_stream(&stream_name).await {
        Ok(stream) => stream,
        Err(error) if !is_missing(&error) => {
            return Err(format!("the bucket {name} cannot be read: {}", error_text(&error)))
        }
        Err(missing) => {
            let config = Config {
                bucket: name.to_owned(),
                description: Some(description.to_owned()),
                max_age,
                max_bytes: -1,
                storage: StorageType::File,
                num_replicas: replicas(js).await,
                ..Default::default()
            };
            match js.create_object_store(config).await {
                Ok(_) => {}
                // Another runner may have created it meanwhile.
                Err(error) if js.get_stream(&stream_name).await.is_err() => {
                    return Err(format!(
                        "the bucket {name} can be neither read ({}) nor created ({})",
                        error_text(&missing),
                        error_text(&error)
                    ))
                }
                Err(_) => {}
            }
            js.get_stream(&stream_name)
                .await
                .map_err(|e| format!("the bucket {name} cannot be read: {}", error_text(&e)))?
        }
    };
    let store = js
        .get_object_store(name)
        .await
        .map_err(|e| format!("the bucket {name} cannot be read: {}", error_text(&e)))?;
    let kept = stream.cached_info().config.max_age;
    if kept != max_age && said_first(name) {
        tracing::warn!(
            bucket = name,
            kept = %humantime::format_duration(kept),
            asked = %humantime::format_duration(max_age),
            "the bucket exists with another max_age: it is kept as it is (change it with `nats stream edit OBJ_{name} --max-age`)"
        );
    }
    Ok(Bucket { name: name.to_owned(), js: js.clone(), store, stream, max_age: kept })
}

/// Whether `error` says that the stream does not exist (rather than that JetStream
/// did not answer).
fn is_missing(error: &async_nats::jetstream::context::GetStreamError) -> bool {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    matches!(error.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Whether this is the first time bucket `name`'s other `max_age` is said.
fn said_first(name: &str) -> bool {
    let Ok(mut said) = OTHER_AGE_SAID.lock() else { return false };
    said.get_or_insert_with(HashSet::new).insert(name.to_owned())
}

/// The replicas of the server's stream of resource messages, as the SDK gives its
/// own buckets; 1 when it cannot be read.
async fn replicas(js: &Context) -> usize {
    match js.get_stream(MESSAGES_STREAM).await {
        Ok(stream) => stream.cached_info().config.num_replicas.max(1),
        Err(_) => 1,
    }
}
