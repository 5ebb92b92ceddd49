//! Which installation a serving runner belongs to: an identity kept in the
//! installation's own NATS, the same for every runner that serves from it.
//!
//! Two installations (a staging and a production, two test suites) may run runners of
//! the same driver name on one Docker engine, each with its own NATS. A sweep knows
//! only the liveness records of its own NATS ([`liveness`](super::liveness)), so it
//! must know which containers are its installation's at all: every container a
//! serving runner makes carries its installation's identity in the label
//! [`labels::INSTALLATION`](crate::pod::labels::INSTALLATION), and a sweep looks
//! only at containers with its own ([`cleanup`](super::cleanup)).
//!
//! [`CommandRunner::serve`](crate::CommandRunner::serve) reads it before the runner
//! takes a run, and keeps it in the runner's
//! [`ContainerSettings::installation`](crate::ContainerSettings::installation).
//!
//! The identity is a random UUID, stored under the key [`KEY`] (`id`) of the
//! key-value bucket [`BUCKET`] (`conveyor_installation`): created once, by the first
//! runner that finds none (a create that only succeeds when the key does not exist:
//! the first writer wins, the others read what it wrote), and never changed. The
//! bucket has no TTL, keeps one value, is stored on file so that it outlives a NATS
//! restart, and has as many replicas as the server's stream `messages` when that
//! exists (one otherwise): on a cluster every server agrees on it, through the
//! stream's leader, and it outlives the loss of one.
//!
//! Deleting the bucket or its key gives the installation a new identity at the next
//! start of a runner: the containers labelled with the old one are then no longer
//! its own, and no sweep removes them.

use std::time::Duration;

use async_nats::jetstream::kv::{Config as BucketConfig, CreateErrorKind, Store};
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::Context;
use conveyor_sdk::protocol::subjects::MESSAGES_STREAM;

/// The key-value bucket of the installation's identity.
pub const BUCKET: &str = "conveyor_installation";

/// The key of the identity in [`BUCKET`].
pub const KEY: &str = "id";

/// The longest identity accepted from the bucket.
const MAX_LEN: usize = 128;

/// How often the identity is asked for before an error is returned: 0.1 s, then
/// twice as long each time, 3.1 s in all.
const ATTEMPTS: u32 = 6;

/// What can go wrong while the installation's identity is read or made.
///
/// ```
/// use simple_runner::housekeeping::installation::InstallationError;
///
/// fn explain(error: &InstallationError) -> String {
///     conveyor_sdk::error_text(error)
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallationError {
    /// The bucket could be neither opened nor created.
    #[error("cannot open or create the installation bucket {bucket}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The identity could be neither read nor written.
    #[error("cannot read or write the installation's identity (bucket {bucket}, key {key})")]
    Entry {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another runner made the identity, yet it cannot be read back.
    #[error("the installation's identity (bucket {bucket}, key {key}) exists but cannot be read back")]
    Unreadable {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// What the bucket holds is not an identity; it is left as it is.
    #[error(
        "the installation's identity (bucket {bucket}, key {key}) is not valid: {value:?}; \
         expected 1 to 128 letters, digits, `-`, `_` or `.`"
    )]
    Invalid {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What it holds, lossily as text.
        value: String,
    },
}

/// The identity of the installation whose NATS `js` talks to: read, or made and
/// stored first if there is none. Every runner of the installation gets the same one,
/// whichever server of a cluster it talks to and across restarts.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let js = async_nats::jetstream::new(client);
/// let installation = simple_runner::housekeeping::installation::identify(&js).await?;
/// println!("containers of this installation are labelled conveyor.installation={installation}");
/// # Ok(())
/// # }
/// ```
pub async fn identify(js: &Context) -> Result<String, InstallationError> {
    let bucket = open_bucket(js).await?;
    let mut attempt = 0;
    loop {
        let failed = match read(&bucket).await {
            Ok(Some(id)) => return Ok(id),
            Ok(None) => {
                let made = uuid::Uuid::new_v4().to_string();
                match bucket.create(KEY, made.clone().into()).await {
                    Ok(_) => {
                        tracing::info!(installation = %made, bucket = BUCKET, "this installation has a new identity");
                        return Ok(made);
                    }
                    // Another runner wrote it first: its identity is the installation's.
                    Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
                        InstallationError::Unreadable { bucket: BUCKET.into(), key: KEY.into() }
                    }
                    Err(error) => entry_error(error),
                }
            }
            Err(invalid @ InstallationError::Invalid { .. }) => return Err(invalid),
            Err(error) => error,
        };
        // A bucket just created on a cluster, or a replica not yet up to date, may
        // answer a moment later.
        attempt += 1;
        if attempt >= ATTEMPTS {
            return Err(failed);
        }
        tracing::debug!(error = %conveyor_sdk::error_text(&failed), attempt, "reading the installation's identity again");
        tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt - 1)).await;
    }
}

/// The bucket, opened; created first when missing (no TTL, one value, file storage,
/// the replicas of the server's stream `messages`).
async fn open_bucket(js: &Context) -> Result<Store, InstallationError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| InstallationError::Bucket {
        bucket: BUCKET.into(),
        source,
    };
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    let replicas = match js.get_stream(MESSAGES_STREAM).await {
        Ok(stream) => stream.cached_info().config.num_replicas.max(1),
        Err(_) => 1,
    };
    let config = BucketConfig {
        bucket: BUCKET.into(),
        description: "The identity of this Conveyor installation, on the containers of its runners; \
                      see docs/operations.md"
            .into(),
        history: 1,
        max_age: Duration::ZERO,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Created meanwhile by another runner, or not there to be read: ask again.
        Err(create) => js.get_key_value(BUCKET).await.map_err(|_| failed(Box::new(create))),
    }
}

/// The identity stored, if any.
async fn read(bucket: &Store) -> Result<Option<String>, InstallationError> {
    let value = bucket.get(KEY).await.map_err(entry_error)?;
    value.map(|bytes| parse(&bytes)).transpose()
}

/// An identity as stored: 1 to 128 of `[A-Za-z0-9._-]`.
fn parse(bytes: &[u8]) -> Result<String, InstallationError> {
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match std::str::from_utf8(bytes) {
        Ok(id) if valid => Ok(id.to_owned()),
        _ => Err(InstallationError::Invalid {
            bucket: BUCKET.into(),
            key: KEY.into(),
            value: String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LEN + 1)]).into_owned(),
        }),
    }
}

fn entry_error(error: impl std::error::Error + Send + Sync + 'static) -> InstallationError {
    InstallationError::Entry { bucket: BUCKET.into(), key: KEY.into(), source: Box::new(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_a_short_label_value_and_anything_else_is_refused_not_replaced() {
        assert_eq!(
            parse(b"5b1c9e2a-0d4f-4c3e-9a63-1f2e3d4c5b6a").unwrap(),
            "5b1c9e2a-0d4f-4c3e-9a63-1f2e3d4c5b6a"
        );
        assert_eq!(parse(b"staging.eu_1").unwrap(), "staging.eu_1");
        for bad in [&b""[..], b"two words", b"a=b", "é".as_bytes(), &[0xff, 0xfe], &[b'a'; 129]] {
            let error = parse(bad).expect_err("refused");
            assert!(matches!(error, InstallationError::Invalid { .. }), "{error:?}");
            assert!(error.to_string().contains("conveyor_installation"), "{error}");
        }
    }
}
