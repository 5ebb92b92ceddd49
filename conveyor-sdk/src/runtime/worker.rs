//! One message, top to bottom: decode → its record (only when delivered again) →
//! validate → reconcile (within its deadline, cancellable) → logs and result out →
//! the run's record → ack.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{AckKind, Message};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ack::{ack_kind, keep_alive, progress_interval, Ending};
use super::cancel::InFlight;
use super::log_sink::{NatsLogOptions, NatsLogSink};
use super::observe::{Observer, RunOutcome};
use super::records::{RunRecord, RunRecords};
use super::Config;
use crate::driver::{CancelReason, Driver, Run, RunCancellation};
use crate::log::LogHandle;
use crate::protocol::{subjects, DriverMessage, DriverResult, PipelineEvent};
use crate::report::error_text;
use crate::validate::SpecValidator;

/// What every worker of one runtime shares.
pub(crate) struct Shared<D: Driver> {
    pub(crate) driver: Arc<D>,
    pub(crate) name: String,
    pub(crate) validator: SpecValidator,
    pub(crate) js: async_nats::jetstream::Context,
    pub(crate) client: async_nats::Client,
    pub(crate) config: Config,
    /// Cancelled when the grace period of a shutdown is over.
    pub(crate) run_cancel: CancellationToken,
    /// Bounds the runs that are publishing their result after their reconcile slot
    /// was handed back.
    pub(crate) finishing: Arc<Semaphore>,
    /// Where the runs' metrics go.
    pub(crate) observer: Observer,
    /// What is remembered of runs across deliveries.
    pub(crate) records: RunRecords,
    /// The runs in progress, for cancel requests.
    pub(crate) in_flight: InFlight,
}

/// What a run came to, before its result is published.
enum Outcome {
    /// Publish this result, then ack (or, after giving up, terminate).
    Publish { result: DriverResult, outcome: RunOutcome, retries: u32 },
    /// It had finished before this delivery: ack, nothing else.
    AlreadyFinished,
    /// It asked to be tried again: nak with this delay.
    Retry(Duration),
    /// The run's log lines could not be stored: leave the message to be delivered again.
    LogNotStored(String),
    /// Shutdown cancelled the run: no result, deliver again.
    Cancelled,
}

/// What a reconcile came to.
enum Reconciled {
    /// A result to publish.
    Done(DriverResult, RunOutcome),
    /// Try again in `delay` because of `reason`.
    Retry { delay: Duration, reason: String },
    /// Shutdown cancelled it.
    Shutdown,
}

/// Handles one message, top to bottom: decode → validate → reconcile → logs and
/// result out → ack. Never panics on what the message holds.
pub(crate) async fn handle<D: Driver>(shared: Arc<Shared<D>>, message: Message, slot: OwnedSemaphorePermit) {
    let attempt = message.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
    let delivery = match DriverMessage::decode(&message.payload) {
        Ok(delivery) => delivery,
        Err(error) => {
            tracing::error!(
                driver = %shared.name, subject = %message.subject, attempt,
                run_id = error.run_id().unwrap_or(""), reason = %error_text(&error),
                "terminating a message that cannot be processed"
            );
            shared.observer.undecodable();
            ack(&message, ack_kind(Ending::Undecodable, shared.config.nak_delay)).await;
            return;
        }
    };
    let span = tracing::info_span!(
        "run",
        driver = %shared.name,
        run_id = %delivery.run_id,
        resource_type = %delivery.payload.resource,
        resource_name = %delivery.payload.name,
        attempt,
    );
    process(shared, message, delivery, attempt, slot).instrument(span).await
}

/// Runs a decoded message, holding it with progress acknowledgements meanwhile, and
/// acknowledges it as its ending calls for.
async fn process<D: Driver>(
    shared: Arc<Shared<D>>,
    message: Message,
    delivery: DriverMessage,
    attempt: u64,
    slot: OwnedSemaphorePermit,
) {
    let started = std::time::Instant::now();
    shared.observer.run_started(attempt);
    let work = async {
        match run(&shared, &delivery, attempt, slot).await {
            Outcome::Publish { result, outcome, retries } => {
                let (success, text) = (result.success, result.message.clone());
                match publish_result(&shared, &delivery, result).await {
                    Ok(()) => {
                        // Before the ack: a delivery after a crash here finds it.
                        shared
                            .records
                            .finished(&shared.client, &delivery.run_id, retries, success, &text)
                            .await;
                        let ending =
                            if outcome == RunOutcome::GivenUp { Ending::GivenUp } else { Ending::Finished };
                        (ending, outcome)
                    }
                    Err(reason) => {
                        shared.observer.result_publish_failed();
                        tracing::error!(%reason, "publishing the result failed; the message will be delivered again");
                        (Ending::Failed, RunOutcome::NotStored)
                    }
                }
            }
            Outcome::AlreadyFinished => (Ending::Finished, RunOutcome::AlreadyFinished),
            Outcome::Retry(delay) => (Ending::Retry(delay), RunOutcome::Retried),
            Outcome::LogNotStored(reason) => {
                tracing::error!(%reason, "the run will be delivered again");
                (Ending::Failed, RunOutcome::NotStored)
            }
            Outcome::Cancelled => {
                tracing::info!("run cancelled by shutdown; it will be delivered again");
                (Ending::Cancelled, RunOutcome::Cancelled)
            }
        }
    };
    let every = progress_interval(shared.config.ack_wait);
    let (ending, outcome) = keep_alive(every, work, || ack(&message, AckKind::Progress)).await;
    match ack_kind(ending, shared.config.nak_delay) {
        // A lost final acknowledgement means a second run: make sure it arrived.
        AckKind::Ack => confirmed_ack(&message, shared.config.ack_wait).await,
        kind => ack(&message, kind).await,
    }
    shared.observer.run_finished(outcome, started.elapsed());
}

/// Validates and reconciles, with the run's log; hands the reconcile slot back when
/// reconcile is done.
async fn run<D: Driver>(
    shared: &Shared<D>,
    delivery: &DriverMessage,
    attempt: u64,
    slot: OwnedSemaphorePermit,
) -> Outcome {
    let config = &shared.config;
    let log = LogHandle::new(NatsLogSink::new(
        shared.js.clone(),
        shared.client.clone(),
        &delivery.run_id,
        &shared.name,
        delivery.payload.pipeline(),
        NatsLogOptions {
            window: config.log_window,
            legacy_live: config.legacy_live_logs,
            retry_for: config.log_retry,
            backoff: config.store_backoff,
            observer: shared.observer.clone(),
        },
    ));
    // Only a message delivered again can have a record.
    let record = match attempt {
        1 => RunRecord::default(),
        _ => shared.records.read(&delivery.run_id).await.unwrap_or_default(),
    };
    if let Some(finished) = &record.finished {
        let text = format!(
            "this run already finished at {} ({}: {}); delivered again (attempt {attempt}), it is \
             acknowledged without running again",
            finished.at,
            if finished.success { "succeeded" } else { "failed" },
            finished.message
        );
        tracing::info!("{text}");
        log.log(text).await;
        return match log.flush().await {
            Ok(()) => Outcome::AlreadyFinished,
            Err(error) => Outcome::LogNotStored(error_text(&error)),
        };
    }
    let retries = record.retries;
    let (result, outcome) = if attempt > config.max_deliveries {
        let reason = format!(
            "given up after {} deliveries (the limit is {}); see the driver's diagnostics",
            attempt - 1,
            config.max_deliveries
        );
        tracing::error!(%reason, "giving up on the run");
        log.log(&reason).await;
        (DriverResult::failure(reason), RunOutcome::GivenUp)
    } else {
        if attempt > 1 {
            tracing::info!(retries, "redelivered run");
            log.log(redelivered_line(attempt, config.max_deliveries, &record, config.max_retries)).await;
        }
        match shared.validator.decode::<D::Spec>(&delivery.payload) {
            Err(error) => {
                tracing::warn!(%error, "refusing the resource");
                log.log(error.to_string()).await;
                (DriverResult::failure(error.to_string()), RunOutcome::InvalidSpec)
            }
            Ok(spec) => match reconcile(shared, delivery, spec, attempt, retries, log.clone()).await {
                Reconciled::Done(result, outcome) => (result, outcome),
                Reconciled::Shutdown => return Outcome::Cancelled,
                Reconciled::Retry { delay: _, reason } if retries >= config.max_retries => {
                    let text = format!(
                        "given up after {retries} retries (the limit is {}): {reason}",
                        config.max_retries
                    );
                    tracing::warn!(%text, "giving up on the run");
                    log.log(&text).await;
                    (DriverResult::failure(text), RunOutcome::GivenUp)
                }
                Reconciled::Retry { delay, reason } => {
                    let next = retries + 1;
                    let text = format!(
                        "trying again in {} (retry {next} of at most {}): {reason}",
                        humantime::format_duration(delay),
                        config.max_retries
                    );
                    tracing::info!(%text, "reconcile asked to try again");
                    log.log(text).await;
                    if !shared.records.retrying(&delivery.run_id, next, &reason).await {
                        tracing::warn!(
                            "the retry is not recorded: the next delivery will not know its number"
                        );
                    }
                    drop(slot);
                    return match log.flush().await {
                        Ok(()) => Outcome::Retry(delay),
                        Err(error) => Outcome::LogNotStored(error_text(&error)),
                    };
                }
            },
        }
    };
    // The reconcile slot is free for the next message while this one finishes.
    let finishing = shared.finishing.clone().acquire_owned().await;
    drop(slot);
    let outcome = match log.flush().await {
        Ok(()) => Outcome::Publish { result, outcome, retries },
        Err(error) => {
            Outcome::LogNotStored(format!("the run's log lines could not be stored: {}", error_text(&error)))
        }
    };
    drop(finishing);
    outcome
}

/// The line a delivered-again run's log starts with: which delivery, and which retry
/// when the last attempt asked for one.
fn redelivered_line(attempt: u64, max_deliveries: u64, record: &RunRecord, max_retries: u32) -> String {
    match (&record.retry_reason, record.retries) {
        (Some(reason), retries) if retries > 0 => format!(
            "redelivered: attempt {attempt}, retry {retries} of at most {max_retries}: the last attempt \
             asked to try again: {reason}"
        ),
        _ => format!("redelivered: attempt {attempt} of at most {max_deliveries}"),
    }
}

/// The message of a run whose deadline passed after `after`: `timed out after …`, then
/// what the driver's failure said, unless the driver said it in those words already.
fn deadline_text(after: Duration, returned: Option<&DriverResult>) -> String {
    let text = format!("timed out after {}", humantime::format_duration(after));
    match returned.filter(|r| !r.success && !r.message.is_empty()) {
        Some(result) if result.message.starts_with("timed out after") => result.message.clone(),
        Some(result) => format!("{text}: {}", result.message),
        None => text,
    }
}

/// Calls the driver's reconcile, catching a panic, within the run's deadline and open
/// to cancellation: a cancelled reconcile has `cancel_timeout` to return.
async fn reconcile<D: Driver>(
    shared: &Shared<D>,
    delivery: &DriverMessage,
    spec: D::Spec,
    attempt: u64,
    retries: u32,
    log: LogHandle,
) -> Reconciled {
    let cancel = RunCancellation::child_of(&shared.run_cancel);
    let _held = shared.in_flight.enter(&delivery.run_id, cancel.clone());
    let run = Run::new(delivery.payload.clone(), spec)
        .with_event(delivery.event.clone())
        .with_run_id(delivery.run_id.clone())
        .with_log(log.clone())
        .with_run_cancellation(cancel.clone())
        .with_delivery(delivery.id.clone(), attempt, retries);
    let deadline = shared.driver.deadline(&run).unwrap_or(shared.config.run_deadline);
    let expires = Instant::now().checked_add(deadline);
    let reconciling = AssertUnwindSafe(shared.driver.reconcile(run)).catch_unwind();
    tokio::pin!(reconciling);
    let expiry = async {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let joined = tokio::select! {
        joined = &mut reconciling => Some(joined),
        _ = expiry => {
            cancel.cancel(CancelReason::Deadline(deadline));
            None
        }
        _ = cancel.token().cancelled() => None,
    };
    let joined = match joined {
        Some(joined) => Some(joined),
        None => match tokio::time::timeout(shared.config.cancel_timeout, &mut reconciling).await {
            Ok(joined) => Some(joined),
            Err(_) => {
                tracing::warn!("reconcile did not return in time after cancellation; abandoning it");
                None
            }
        },
    };
    // What reconcile returned, if it did and it is a result.
    let returned = match &joined {
        Some(Ok(Ok(result))) => Some(result),
        _ => None,
    };
    let ended = match cancel.reason() {
        Some(CancelReason::Shutdown) => return Reconciled::Shutdown,
        Some(CancelReason::Deadline(after)) => {
            let text = deadline_text(after, returned);
            tracing::warn!(%text, "the run's deadline passed");
            log.log(format!("the run {text}")).await;
            let data = returned.map(|r| r.data.clone()).unwrap_or_default();
            Reconciled::Done(DriverResult::failure(text).with_data(data), RunOutcome::TimedOut)
        }
        Some(_) => {
            tracing::info!("the run was cancelled on request");
            log.log("the run was cancelled on request").await;
            let data = returned.map(|r| r.data.clone()).unwrap_or_default();
            Reconciled::Done(DriverResult::failure("cancelled").with_data(data), RunOutcome::CancelRequested)
        }
        None => match joined {
            Some(Ok(Ok(result))) => {
                let outcome = if result.success { RunOutcome::Success } else { RunOutcome::Failure };
                Reconciled::Done(result, outcome)
            }
            Some(Ok(Err(error))) => match error.retry_delay() {
                Some(delay) => return Reconciled::Retry { delay, reason: error_text(error.error()) },
                None => {
                    let text = format!("reconcile failed: {}", error_text(error.error()));
                    tracing::warn!(error = %text, "reconcile returned an error");
                    log.log(&text).await;
                    Reconciled::Done(DriverResult::failure(text), RunOutcome::Failure)
                }
            },
            Some(Err(panic)) => {
                let text = format!("reconcile panicked: {}", panic_text(panic));
                tracing::error!(error = %text, "reconcile did not return");
                log.log(&text).await;
                Reconciled::Done(DriverResult::failure(text), RunOutcome::Failure)
            }
            // Only a cancelled reconcile is abandoned, and that has a reason.
            None => Reconciled::Shutdown,
        },
    };
    if let Reconciled::Done(result, _) = &ended {
        tracing::info!(success = result.success, result = %result.message, "reconciled");
    }
    ended
}

/// Publishes the run's `driver.result` event and waits until JetStream has stored it.
/// Its message id makes JetStream drop a second copy (a crash between publish and ack).
async fn publish_result<D: Driver>(
    shared: &Shared<D>,
    delivery: &DriverMessage,
    result: DriverResult,
) -> Result<(), String> {
    let event = PipelineEvent::driver_result(
        delivery.run_id.clone(),
        delivery.payload.clone(),
        result.into_event(shared.name.clone()),
    );
    let payload = bytes::Bytes::from(serde_json::to_vec(&event).map_err(|e| e.to_string())?);
    let id = format!("result.{}.{}", delivery.run_id, shared.name);
    // Publishing again is safe (the message id), and cheaper than running again: a NATS
    // node going away or a stream electing its leader is waited out for `log_retry`.
    let deadline = Instant::now() + shared.config.log_retry;
    let mut delay = RETRY_FIRST;
    loop {
        let message = PublishMessage::build().payload(payload.clone()).message_id(&id);
        let stored = match shared.js.send_publish(subjects::DRIVER_RESULT, message).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match stored {
            Ok(()) => return Ok(()),
            Err(reason) if Instant::now() + delay >= deadline => return Err(reason),
            Err(reason) => {
                tracing::warn!(%reason, "storing the result failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The first pause before asking NATS again, doubled each time up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

async fn ack(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, "acknowledging a message failed; JetStream will deliver it again");
    }
}

/// Acknowledges `message` and waits until JetStream confirms it, asking again while it
/// does not (a NATS node went away, the consumer is electing its leader), for up to
/// `within`: once the ack wait is over the message is delivered again anyway.
async fn confirmed_ack(message: &Message, within: Duration) {
    let deadline = Instant::now() + within;
    let mut delay = RETRY_FIRST;
    loop {
        match message.double_ack().await {
            Ok(()) => return,
            Err(error) if Instant::now() + delay >= deadline => {
                tracing::warn!(%error, "acknowledging a message failed; JetStream will deliver it again");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "acknowledging a message not confirmed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_says_timed_out_with_what_the_driver_said_once() {
        let after = Duration::from_millis(1500);
        assert_eq!(deadline_text(after, None), "timed out after 1s 500ms");
        let stopped = DriverResult::failure("stopped");
        assert_eq!(deadline_text(after, Some(&stopped)), "timed out after 1s 500ms: stopped");
        let own = DriverResult::failure("timed out after 2s during step slow");
        assert_eq!(deadline_text(after, Some(&own)), "timed out after 2s during step slow");
        let success = DriverResult::success("done anyway");
        assert_eq!(deadline_text(after, Some(&success)), "timed out after 1s 500ms");
    }

    #[test]
    fn a_redelivery_says_its_attempt_and_after_a_retry_request_which_retry_and_why() {
        let plain = redelivered_line(3, 20, &RunRecord::default(), 5);
        assert_eq!(plain, "redelivered: attempt 3 of at most 20");
        let record = RunRecord { retries: 2, retry_reason: Some("busy".into()), finished: None };
        assert_eq!(
            redelivered_line(4, 20, &record, 5),
            "redelivered: attempt 4, retry 2 of at most 5: the last attempt asked to try again: busy"
        );
    }

    #[test]
    fn panic_payloads_become_text() {
        assert_eq!(panic_text(Box::new("static")), "static");
        assert_eq!(panic_text(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_text(Box::new(7)), "(no message)");
    }
}
