//! A message the runtime cannot run ([`DriverMessage::decode`] refused it) never waits
//! for ever and never stalls the driver: when it names a run, the run gets one failure
//! result saying why, with as much of the resource as could be read; then the message
//! is terminated.
//!
//! Nothing is built of a run id that cannot stand in a subject: no log subject, no key
//! of a run record, no cancel subject, and not the result's message id (a hash of it
//! stands there). The diagnostics show such an id quoted, escaped and cut short.
//!
//! A refusal holds its reconcile slot only until it has a finishing place, like a run
//! that finishes, and that place only while its result is stored: at most
//! [`Config::log_retry`](super::Config::log_retry) (60 s). A result that could not be
//! stored in that time is tried again on a later delivery, after the nak delay, until
//! [`Config::max_deliveries`](super::Config::max_deliveries); the messages behind it
//! are taken meanwhile.
//!
//! [`DriverMessage::decode`]: crate::DriverMessage::decode

use std::borrow::Cow;
use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::ack::{acknowledge, keep_alive, progress, progress_interval};
use super::worker::Shared;
use crate::driver::Driver;
use crate::protocol::{subjects, DecodeError, DriverResult, PipelineEvent, Resource};
use crate::report::{error_text, quoted, shown};

/// How many characters of the reason a refusal's result and diagnostics hold.
const SHOWN_REASON: usize = 1024;

/// What a publish may take beside the result's JSON: the message id header and the
/// rest of the protocol line.
const PUBLISH_OVERHEAD: usize = 1024;

/// The failure result of a message that names a run but cannot be run.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The result event; its `run_id` is the message's, as it is (JSON escapes it).
    event: PipelineEvent,
    /// The JetStream message id of the result, which makes JetStream drop a second
    /// copy: `result.<run_id>.<driver>` as a run's result has it, or
    /// `refused.<hash of the run id>.<driver>` for a run id that is not a token.
    message_id: String,
}

impl Refusal {
    /// The refusal of a message that did not decode as `error` says; `None` when it
    /// names no run.
    pub(crate) fn of(error: &DecodeError, driver: &str) -> Option<Self> {
        let (run_id, message_id) = match (error.run_id(), error.invalid_run_id()) {
            (Some(run_id), _) => (run_id, format!("result.{run_id}.{driver}")),
            (None, Some(raw)) => (raw, format!("refused.{:016x}.{driver}", fnv1a(raw.as_bytes()))),
            (None, None) => return None,
        };
        let resource = error.resource().cloned().unwrap_or_else(|| Resource::new("", "", Value::Null));
        let text = format!("refused: {}", shown(&error_text(error), SHOWN_REASON));
        let result = DriverResult::failure(text).into_event(driver);
        Some(Self { event: PipelineEvent::driver_result(run_id, resource, result), message_id })
    }

    /// The run id, as the diagnostics may show it: as it is when it is a token, else
    /// quoted.
    fn shown_run_id(&self) -> Cow<'_, str> {
        match subjects::is_token(&self.event.run_id) {
            true => Cow::Borrowed(&self.event.run_id),
            false => Cow::Owned(quoted(&self.event.run_id)),
        }
    }

    /// The result's JSON, at most `max` bytes: without the resource when it is too
    /// large with it; `None` when even the run id alone is too large.
    fn encode(&self, max: usize) -> Option<Bytes> {
        let full = serde_json::to_vec(&self.event).ok().filter(|bytes| bytes.len() <= max);
        let bare = || {
            let resource = Resource::new("", "", Value::Null);
            let event = PipelineEvent::driver_result(
                self.event.run_id.clone(),
                resource,
                self.event.driverresult.clone(),
            );
            serde_json::to_vec(&event).ok().filter(|bytes| bytes.len() <= max)
        };
        full.or_else(bare).map(Bytes::from)
    }
}

/// Why a refusal's result is not stored.
enum NotStored {
    /// It is larger than the NATS server accepts, even without the resource.
    TooLarge,
    /// Publishing it failed for [`Config::log_retry`](super::Config::log_retry).
    Failed(String),
}

/// Refuses a message that did not decode: its failure result when it names a run,
/// then the message terminated. A result that could not be stored leaves the message
/// to be delivered again, until the last delivery allowed.
pub(crate) async fn refuse<D: Driver>(
    shared: Arc<Shared<D>>,
    message: Message,
    error: DecodeError,
    attempt: u64,
    slot: OwnedSemaphorePermit,
) {
    let reason = error_text(&error);
    let reason = shown(&reason, SHOWN_REASON);
    let Some(refusal) = Refusal::of(&error, &shared.name) else {
        tracing::error!(
            driver = %shared.name, subject = %message.subject, attempt, %reason,
            "terminating a message that is not a run: it names no run to answer"
        );
        terminate(&shared, &message).await;
        return;
    };
    let run_id = refusal.shown_run_id();
    tracing::error!(
        driver = %shared.name, subject = %message.subject, attempt, %run_id, kind = ?error.kind(), %reason,
        "refusing a message that cannot be run: its run gets a failure result, then it is terminated"
    );
    let config = &shared.config;
    let work = async {
        // As a run that finishes: a finishing place, then the slot goes to the next message.
        let finishing = shared.finishing.clone().acquire_owned().await;
        drop(slot);
        (store(&shared, &refusal).await, finishing)
    };
    let (stored, finishing) =
        keep_alive(progress_interval(config.ack_wait), work, || progress(&message)).await;
    match stored {
        Ok(()) => terminate(&shared, &message).await,
        Err(NotStored::TooLarge) => {
            shared.observer.result_publish_failed();
            tracing::error!(%run_id, "the refusal's result is larger than the NATS server accepts: terminated without it");
            terminate(&shared, &message).await;
        }
        Err(NotStored::Failed(why)) if attempt >= config.max_deliveries => {
            shared.observer.result_publish_failed();
            tracing::error!(%run_id, reason = %why, "storing the refusal's result failed on the last delivery: terminated without it");
            terminate(&shared, &message).await;
        }
        Err(NotStored::Failed(why)) => {
            shared.observer.result_publish_failed();
            tracing::error!(%run_id, reason = %why, "storing the refusal's result failed; the message will be delivered again");
            acknowledge(&message, AckKind::Nak(Some(config.nak_delay))).await;
        }
    }
    drop(finishing);
}

/// Terminates a message that is not a run: no later delivery can do better.
async fn terminate<D: Driver>(shared: &Shared<D>, message: &Message) {
    shared.observer.undecodable();
    acknowledge(message, AckKind::Term).await;
}

/// Publishes the refusal's result and waits until JetStream has stored it, publishing
/// again as the store back-off paces, as a run's result is; for `log_retry` at most,
/// the attempt in flight included.
async fn store<D: Driver>(shared: &Shared<D>, refusal: &Refusal) -> Result<(), NotStored> {
    let max = match shared.client.server_info().max_payload {
        0 => 1024 * 1024, // not told yet: the server's default
        max => max,
    };
    let payload = refusal.encode(max.saturating_sub(PUBLISH_OVERHEAD)).ok_or(NotStored::TooLarge)?;
    let config = &shared.config;
    let publish = || async {
        let message = PublishMessage::build().payload(payload.clone()).message_id(&refusal.message_id);
        match shared.js.send_publish(subjects::DRIVER_RESULT, message).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        }
    };
    let retried = config.store_backoff.retry_within(
        config.log_retry,
        publish,
        |reason| tracing::warn!(%reason, "storing the refusal's result failed; retrying"),
    );
    // The last attempt too ends within the budget.
    match tokio::time::timeout(config.log_retry, retried).await {
        Ok(stored) => stored.map_err(NotStored::Failed),
        Err(_) => Err(NotStored::Failed(format!(
            "not stored within {}",
            humantime::format_duration(config.log_retry)
        ))),
    }
}

/// FNV-1a, 64 bits: a message id of a run id that cannot stand in one, the same in
/// every process and version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::subjects::is_token;
    use crate::protocol::DriverMessage;

    const FIXTURES: [&str; 6] = [
        include_str!("../../tests/fixtures/driver-message.create.json"),
        include_str!("../../tests/fixtures/driver-message.process.json"),
        include_str!("../../tests/fixtures/driver-message.update.json"),
        include_str!("../../tests/fixtures/driver-message.delete.json"),
        include_str!("../../tests/fixtures/driver-message.pipeline-step.delete.json"),
        include_str!("../../tests/fixtures/driver-message.pipeline-step.rich-metadata.json"),
    ];

    const DRIVER: &str = "command-runner";

    #[test]
    fn a_bad_run_id_is_answered_under_a_hash_of_it_and_a_good_one_as_a_run_is() {
        let bad = DriverMessage::decode(
            br#"{"event":"create","payload":"{\"name\":\"n\",\"resource\":\"job\"}","run_id":"a\r\nb"}"#,
        )
        .unwrap_err();
        let refusal = Refusal::of(&bad, DRIVER).expect("it names a run");
        assert_eq!(refusal.event.run_id, "a\r\nb", "the result names the run as the message does");
        assert_eq!(refusal.event.resource.name, "n");
        assert_eq!(refusal.message_id, format!("refused.{:016x}.{DRIVER}", fnv1a(b"a\r\nb")));
        assert_eq!(refusal.shown_run_id(), r#""a\r\nb""#);
        let other =
            DriverMessage::decode(br#"{"event":"create","payload":"{}","run_id":"a\r\nc"}"#).unwrap_err();
        assert_ne!(Refusal::of(&other, DRIVER).unwrap().message_id, refusal.message_id);

        let good =
            DriverMessage::decode(br#"{"event":"create","payload":"[1]","run_id":"r-1"}"#).unwrap_err();
        let refusal = Refusal::of(&good, DRIVER).expect("it names a run");
        assert_eq!(refusal.message_id, format!("result.r-1.{DRIVER}"));
        assert_eq!(refusal.shown_run_id(), "r-1");
        assert!(refusal
            .event
            .driverresult
            .message
            .starts_with("refused: the payload of run r-1 is not a resource"));
        assert_eq!(refusal.event.resource, Resource::new("", "", Value::Null), "nothing of it could be read");

        let none = DriverMessage::decode(br#"{"event":"create","payload":"{}","run_id":7}"#).unwrap_err();
        assert!(Refusal::of(&none, DRIVER).is_none(), "a message naming no run is not answered");
    }

    #[test]
    fn a_result_too_large_with_its_resource_is_sent_without_it_and_one_too_large_without_is_not() {
        let spec = serde_json::json!({"blob": "x".repeat(10_000)});
        let text = serde_json::json!({"event": "create", "payload": {"name": "n", "resource": "job", "spec": spec}, "run_id": "a b"});
        let error = DriverMessage::decode(text.to_string().as_bytes()).unwrap_err();
        let refusal = Refusal::of(&error, DRIVER).unwrap();
        let full = refusal.encode(usize::MAX).unwrap();
        let bare = refusal.encode(2_000).expect("small enough without the resource");
        assert!(full.len() > 10_000 && bare.len() <= 2_000);
        let event: PipelineEvent = serde_json::from_slice(&bare).unwrap();
        assert_eq!((event.run_id.as_str(), event.resource.name.as_str()), ("a b", ""));
        assert!(refusal.encode(100).is_none());
    }

    #[test]
    fn every_fixture_decodes_unchanged() {
        for fixture in FIXTURES {
            let message = DriverMessage::decode(fixture.as_bytes()).expect("a fixture decodes");
            assert!(is_token(&message.run_id));
        }
    }
}
