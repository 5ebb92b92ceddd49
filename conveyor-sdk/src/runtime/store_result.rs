//! Storing a result event on JetStream: published again as the store back-off paces,
//! for [`Config::log_retry`](super::Config::log_retry) at most, the attempt in flight
//! included, so that a result that cannot be stored holds its finishing place no longer.

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;

use super::Config;
use crate::protocol::subjects;

/// Publishes `payload` on the results subject with the JetStream message id
/// `message_id` (JetStream drops a second copy) until it is stored; `what` names it in
/// the diagnostics. The last failure, or that the time was up.
pub(crate) async fn store_result(
    js: &Context,
    config: &Config,
    payload: bytes::Bytes,
    message_id: &str,
    what: &str,
) -> Result<(), String> {
    let publish = || async {
        let message = PublishMessage::build().payload(payload.clone()).message_id(message_id);
        match js.send_publish(subjects::DRIVER_RESULT, message).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        }
    };
    let retried = config.store_backoff.retry_within(
        config.log_retry,
        publish,
        |reason| tracing::warn!(%reason, "storing {what} failed; retrying"),
    );
    // The attempt in flight when the time is up is not waited for.
    match tokio::time::timeout(config.log_retry, retried).await {
        Ok(stored) => stored,
        Err(_) => Err(format!("not stored within {}", humantime::format_duration(config.log_retry))),
    }
}
