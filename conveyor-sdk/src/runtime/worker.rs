//! One message, top to bottom: decode → its record (only when delivered again) →
//! validate → reconcile (within its deadline, cancellable) → logs and result out →
//! the run's record → ack. What a run came to is an [`Outcome`]; how its message is
//! acknowledged follows from that alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ack::{acknowledge, keep_alive, progress, progress_interval};
use super::cancel::InFlight;
use super::log_sink::{NatsLogOptions, NatsLogSink};
use super::observe::Observer;
use super::outcome::Outcome;
use super::reconcile::{self, Returned};
use super::records::{RunRecord, RunRecords};
use super::refuse;
use super::store_result::store_result;
use super::supersede::{Claim, Latest, Supersede};
use super::Config;
use crate::driver::{CancelReason, Driver, Run, RunCancellation};
use crate::log::LogHandle;
use crate::protocol::subjects::MAX_TOKEN_LEN;
use crate::protocol::{DriverMessage, DriverResult, Event, PipelineEvent};
use crate::report::{error_text, shown};
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
    /// Bounds the runs that are finishing ([`Config::max_finishing`]): storing the
    /// rest of their log, their result and their record, and acknowledging their
    /// message. A run takes one of these before it hands its reconcile slot back and
    /// keeps it until its message is acknowledged, so when results cannot be stored, no
    /// more than this many runs are storing them, and at most `concurrency` more wait
    /// with their reconcile slot.
    pub(crate) finishing: Arc<Semaphore>,
    /// Where the runs' metrics go.
    pub(crate) observer: Observer,
    /// What is remembered of runs across deliveries.
    pub(crate) records: RunRecords,
    /// The runs in progress, for cancel requests.
    pub(crate) in_flight: InFlight,
    /// The newest event taken on of each resource.
    pub(crate) supersede: Supersede,
}

/// What a run came to, and the result to store when it has one.
struct Ended {
    outcome: Outcome,
    result: Option<DriverResult>,
    /// The retries of the run before this delivery, for its record.
    retries: u32,
}

impl Ended {
    /// A result to store.
    fn result(result: DriverResult, outcome: Outcome, retries: u32) -> Self {
        Self { outcome, result: Some(result), retries }
    }

    /// Nothing to store.
    fn without_result(outcome: Outcome) -> Self {
        Self { outcome, result: None, retries: 0 }
    }
}

/// Handles one message, top to bottom: decode → validate → reconcile → logs and
/// result out → ack. Never panics on what the message holds.
pub(crate) async fn handle<D: Driver>(shared: Arc<Shared<D>>, message: Message, slot: OwnedSemaphorePermit) {
    let (attempt, sequence) =
        message.info().map(|i| (i.delivered.max(1) as u64, i.stream_sequence)).unwrap_or((1, 0));
    let delivery = match DriverMessage::decode(&message.payload) {
        Ok(delivery) => delivery,
        // Its run, when it names one, gets a failure result; then it is terminated.
        Err(error) => return refuse::refuse(shared, message, error, attempt, slot).await,
    };
    // The run id is a token; the resource's names are shown as the diagnostics may hold them.
    let span = tracing::info_span!(
        "run",
        driver = %shared.name,
        run_id = %delivery.run_id,
        resource_type = %shown(&delivery.payload.resource, MAX_TOKEN_LEN),
        resource_name = %shown(&delivery.payload.name, MAX_TOKEN_LEN),
        attempt,
    );
    process(shared, message, delivery, Place { attempt, sequence }, slot).instrument(span).await
}

/// Where a message stands: its delivery and its place in the stream.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// Its delivery, from 1.
    attempt: u64,
    /// Its sequence in the stream: the order the server published events in.
    sequence: u64,
}

/// Runs a decoded message, holding it with progress acknowledgements meanwhile; then
/// stores what the run came to and acknowledges the message as its outcome says.
async fn process<D: Driver>(
    shared: Arc<Shared<D>>,
    message: Message,
    delivery: DriverMessage,
    place: Place,
    slot: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    shared.observer.run_started(place.attempt);
    let config = &shared.config;
    let log = run_log(&shared, &delivery);
    // Held until its message is acknowledged: a cancel request reaches it until then,
    // and a newer event of its resource waits for that.
    let cancel = RunCancellation::child_of(&shared.run_cancel);
    let held = shared.in_flight.enter(&delivery.run_id, cancel.clone());
    let work = async {
        let ended = run(&shared, &delivery, place, &log, &cancel).await;
        held.finishing();
        // The reconcile slot goes to the next message once this run may finish.
        let finishing = shared.finishing.clone().acquire_owned().await;
        drop(slot);
        (finish(&shared, delivery, &log, ended).await, finishing)
    };
    let (outcome, finishing) =
        keep_alive(progress_interval(config.ack_wait), work, || progress(&message)).await;
    acknowledge(&message, outcome.ack(config.nak_delay)).await;
    drop(finishing);
    shared.observer.run_finished(outcome, started.elapsed());
}

/// The run's log: stored on JetStream, relayed live on core NATS.
fn run_log<D: Driver>(shared: &Shared<D>, delivery: &DriverMessage) -> LogHandle {
    let config = &shared.config;
    LogHandle::new(NatsLogSink::new(
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
    ))
}

/// What the run comes to: unless it finished before, was delivered too often or was
/// superseded, its spec validated and reconciled.
async fn run<D: Driver>(
    shared: &Shared<D>,
    delivery: &DriverMessage,
    Place { attempt, sequence }: Place,
    log: &LogHandle,
    cancel: &RunCancellation,
) -> Ended {
    let config = &shared.config;
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
        return Ended::without_result(Outcome::AlreadyFinished);
    }
    let retries = record.retries;
    if attempt > config.max_deliveries {
        let reason = format!(
            "given up after {} deliveries (the limit is {}); see the driver's diagnostics",
            attempt - 1,
            config.max_deliveries
        );
        tracing::error!(%reason, "giving up on the run");
        log.log(&reason).await;
        return Ended::result(DriverResult::failure(reason), Outcome::GivenUp, retries);
    }
    if attempt > 1 {
        tracing::info!(retries, "redelivered run");
        log.log(redelivered_line(attempt, config.max_deliveries, &record, config.max_retries)).await;
    }
    let superseded = match claim(shared, delivery, sequence, cancel).await {
        Ok(superseded) => superseded,
        Err(newest) => {
            let text = newest.superseded_text();
            tracing::info!(%text, "an older event of the resource arrived after a newer one; not running it");
            log.log(format!("not run: {text}")).await;
            return Ended::result(DriverResult::failure(text), Outcome::Superseded, retries);
        }
    };
    let run = Run::new(delivery.payload.clone(), ())
        .with_event(delivery.event.clone())
        .with_run_id(delivery.run_id.clone())
        .with_log(log.clone())
        .with_run_cancellation(cancel.clone())
        .with_delivery(delivery.id.clone(), attempt, retries)
        .with_superseded_run(superseded);
    let spec = shared.validator.decode::<D::Spec>(&delivery.payload);
    match (&delivery.event, spec) {
        (Event::Delete, spec) => {
            // A deletion is answered whatever its spec: the driver cleans up with what it has.
            let spec = spec
                .inspect_err(|error| tracing::info!(%error, "the deleted resource's spec does not validate"))
                .ok();
            reconcile(shared, run, Work::Cleanup(spec), cancel, log).await
        }
        (_, Err(error)) => {
            tracing::warn!(%error, "refusing the resource");
            log.log(error.to_string()).await;
            Ended::result(DriverResult::failure(error.to_string()), Outcome::InvalidSpec, retries)
        }
        (_, Ok(spec)) => reconcile(shared, run, Work::Apply(spec), cancel, log).await,
    }
}

/// Claims the delivery's resource ([`Config::supersede`]): the run of the older event it
/// cancelled or waited for, if any; or, when a newer event was taken on already, that
/// one.
async fn claim<D: Driver>(
    shared: &Shared<D>,
    delivery: &DriverMessage,
    sequence: u64,
    cancel: &RunCancellation,
) -> Result<Option<String>, Latest> {
    match shared.supersede.claim(delivery, sequence).await {
        Claim::Older(newest) => Err(newest),
        Claim::Newest { older: None } => Ok(None),
        Claim::Newest { older: Some(older) } => {
            let config = &shared.config;
            let newer = Latest::of(delivery, sequence, &config.instance);
            let budget = config.cancel_timeout.saturating_add(config.log_retry);
            Ok(shared.supersede.end_older(&older, &newer, budget, cancel.token()).await)
        }
    }
}

/// What the driver is asked to do with a resource.
enum Work<S> {
    /// Bring it about: [`Driver::reconcile`].
    Apply(S),
    /// Clean up after its deletion: [`Driver::cleanup`], with its spec when it validates.
    Cleanup(Option<S>),
}

/// Calls the driver's reconcile (or cleanup, for a deletion) and says what the run came
/// to, by why it was cancelled, if it was, then by what the driver returned.
async fn reconcile<D: Driver>(
    shared: &Shared<D>,
    run: Run<()>,
    work: Work<D::Spec>,
    cancel: &RunCancellation,
    log: &LogHandle,
) -> Ended {
    let config = &shared.config;
    let (run_id, retries) = (run.run_id().to_owned(), run.retries());
    let returned = match work {
        Work::Apply(spec) => {
            let run = run.with_spec(spec);
            let deadline = shared.driver.deadline(&run).unwrap_or(config.run_deadline);
            reconcile::call(shared.driver.reconcile(run), deadline, cancel, config.cancel_timeout).await
        }
        Work::Cleanup(spec) => {
            let run = run.with_spec(spec);
            reconcile::call(shared.driver.cleanup(run), config.run_deadline, cancel, config.cancel_timeout)
                .await
        }
    };
    let (result, outcome) = match (cancel.reason(), returned) {
        (Some(CancelReason::Shutdown), _) | (None, Returned::Abandoned) => {
            tracing::info!("run cancelled by shutdown; it will be delivered again");
            return Ended::without_result(Outcome::Cancelled);
        }
        (Some(CancelReason::Deadline(after)), returned) => {
            let text = deadline_text(after, returned.result());
            tracing::warn!(%text, "the run's deadline passed");
            log.log(format!("the run {text}")).await;
            let data = returned.result().map(|r| r.data.clone()).unwrap_or_default();
            (DriverResult::failure(text).with_data(data), Outcome::TimedOut)
        }
        (Some(reason @ (CancelReason::Superseded { .. } | CancelReason::Deleted { .. })), returned) => {
            tracing::info!(%reason, "the run was cancelled: a newer event of its resource arrived");
            log.log(format!("the run was cancelled: {reason}")).await;
            let data = returned.result().map(|r| r.data.clone()).unwrap_or_default();
            (DriverResult::failure(reason.to_string()).with_data(data), Outcome::Superseded)
        }
        (Some(_), returned) => {
            tracing::info!("the run was cancelled on request");
            log.log("the run was cancelled on request").await;
            let data = returned.result().map(|r| r.data.clone()).unwrap_or_default();
            (DriverResult::failure("cancelled").with_data(data), Outcome::CancelRequested)
        }
        (None, Returned::Result(result)) => {
            let outcome = Outcome::of(&result);
            (result, outcome)
        }
        (None, Returned::Error(error)) => match error.retry_delay() {
            Some(delay) => {
                return retry(shared, &run_id, delay, &error_text(error.error()), retries, log).await
            }
            None => {
                let text = format!("reconcile failed: {}", error_text(error.error()));
                tracing::warn!(error = %text, "reconcile returned an error");
                log.log(&text).await;
                (DriverResult::failure(text), Outcome::Failure)
            }
        },
        (None, Returned::Panicked(panic)) => {
            let text = format!("reconcile panicked: {panic}");
            tracing::error!(error = %text, "reconcile did not return");
            log.log(&text).await;
            (DriverResult::failure(text), Outcome::Failure)
        }
    };
    tracing::info!(success = result.success, result = %result.message, "reconciled");
    Ended::result(result, outcome, retries)
}

/// Reconcile asked to be tried again after `delay`: recorded and said in the log,
/// unless the run has been retried as often as it may, which gives it up.
async fn retry<D: Driver>(
    shared: &Shared<D>,
    run_id: &str,
    delay: Duration,
    reason: &str,
    retries: u32,
    log: &LogHandle,
) -> Ended {
    let max_retries = shared.config.max_retries;
    if retries >= max_retries {
        let text = format!("given up after {retries} retries (the limit is {max_retries}): {reason}");
        tracing::warn!(%text, "giving up on the run");
        log.log(&text).await;
        return Ended::result(DriverResult::failure(text), Outcome::GivenUp, retries);
    }
    let next = retries + 1;
    let text = format!(
        "trying again in {} (retry {next} of at most {max_retries}): {reason}",
        humantime::format_duration(delay)
    );
    tracing::info!(%text, "reconcile asked to try again");
    log.log(text).await;
    if !shared.records.retrying(run_id, next, reason).await {
        tracing::warn!("the retry is not recorded: the next delivery will not know its number");
    }
    Ended::without_result(Outcome::Retried(delay))
}

/// Stores what is left of a run that ended: the rest of its log, then its result and
/// its record, when it has a result. Says the outcome of the run, which is
/// [`Outcome::NotStored`] when any of it could not be stored.
async fn finish<D: Driver>(
    shared: &Shared<D>,
    delivery: DriverMessage,
    log: &LogHandle,
    ended: Ended,
) -> Outcome {
    if ended.outcome == Outcome::Cancelled {
        return ended.outcome;
    }
    if let Err(error) = log.flush().await {
        tracing::error!(
            reason = %error_text(&error),
            "the run's log lines could not be stored; the run will be delivered again"
        );
        return Outcome::NotStored;
    }
    let Some(result) = ended.result else {
        return ended.outcome;
    };
    let (success, text) = (result.success, result.message.clone());
    let run_id = delivery.run_id.clone();
    match publish_result(shared, delivery, result).await {
        Ok(()) => {
            // Before the ack: a delivery after a crash here finds it.
            shared.records.finished(&shared.client, &run_id, ended.retries, success, &text).await;
            ended.outcome
        }
        Err(reason) => {
            shared.observer.result_publish_failed();
            tracing::error!(%reason, "publishing the result failed; the run will be delivered again");
            Outcome::NotStored
        }
    }
}

/// Publishes the run's `driver.result` event and waits until JetStream has stored it,
/// publishing again as the store back-off paces for up to `log_retry` in all: a NATS node
/// going away or a stream electing its leader is waited out. Its message id makes
/// JetStream drop a second copy (published again, or after a crash before the ack).
async fn publish_result<D: Driver>(
    shared: &Shared<D>,
    delivery: DriverMessage,
    result: DriverResult,
) -> Result<(), String> {
    let id = format!("result.{}.{}", delivery.run_id, shared.name);
    let event = PipelineEvent::driver_result(
        delivery.run_id,
        delivery.payload,
        result.into_event(shared.name.clone()),
    );
    let payload = bytes::Bytes::from(serde_json::to_vec(&event).map_err(|e| e.to_string())?);
    store_result(&shared.js, &shared.config, payload, &id, "the result").await
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
}
