//! Cancelling one run in flight, whichever replica of its driver holds it.
//!
//! Every runtime subscribes to `conveyor.cancel.<driver>.*` (core NATS: nothing is
//! stored, and no other driver's consumer sees it). The replica that holds the run
//! cancels it ([`CancelReason::Requested`]) and answers
//! [`CancelState::Cancelling`]; the others stay silent. [`cancel_run`] is the asking
//! side: with no answer it looks up the run's record to tell a finished run from an
//! unknown one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;

use super::backoff::Backoff;
use crate::driver::{CancelReason, RunCancellation};
use crate::protocol::{subjects, CancelReply, CancelState};

/// How long [`cancel_run`] waits for the replica that holds the run to answer.
pub const CANCEL_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Errors of [`cancel_run`].
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) {
/// match conveyor_sdk::runtime::cancel_run(&client, "command-runner", "fbdf5edf").await {
///     Ok(reply) => println!("{:?}", reply.state),
///     Err(error) => eprintln!("{}", conveyor_sdk::error_text(&error)),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// The driver name or run id is not a single NATS subject token.
    #[error("cannot cancel run {run_id:?} of driver {driver:?}: both must be single NATS subject tokens")]
    InvalidName {
        /// The driver.
        driver: String,
        /// The run.
        run_id: String,
    },
    /// The request could not be sent.
    #[error("cannot send the cancel request")]
    Request(#[source] async_nats::RequestError),
    /// The answer is not a [`CancelReply`].
    #[error("the driver's answer to the cancel request is not a cancel reply")]
    Reply(#[source] serde_json::Error),
}

/// Asks the replica of `driver` that holds run `run_id` to cancel it, and says what came
/// of it: [`CancelState::Cancelling`], or, when no replica holds it,
/// [`CancelState::Finished`] (its record says it finished) or
/// [`CancelState::NotRunning`]. Waits at most [`CANCEL_ANSWER_WAIT`] for an answer.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use conveyor_sdk::protocol::CancelState;
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let reply = conveyor_sdk::runtime::cancel_run(&client, "command-runner", "fbdf5edf-66d4").await?;
/// if reply.state != CancelState::Cancelling {
///     println!("nothing to cancel: {:?}", reply.state);
/// }
/// # Ok(()) }
/// ```
pub async fn cancel_run(
    client: &async_nats::Client,
    driver: &str,
    run_id: &str,
) -> Result<CancelReply, CancelError> {
    if !subjects::is_token(driver) || !subjects::is_token(run_id) {
        return Err(CancelError::InvalidName { driver: driver.to_owned(), run_id: run_id.to_owned() });
    }
    let request = client.request(subjects::cancel(driver, run_id), bytes::Bytes::new());
    match tokio::time::timeout(CANCEL_ANSWER_WAIT, request).await {
        Ok(Ok(answer)) => serde_json::from_slice(&answer.payload).map_err(CancelError::Reply),
        Ok(Err(error))
            if error.kind() != async_nats::RequestErrorKind::NoResponders
                && error.kind() != async_nats::RequestErrorKind::TimedOut =>
        {
            Err(CancelError::Request(error))
        }
        // Nobody holds it: finished, or not running at all.
        Ok(Err(_)) | Err(_) => {
            let js = async_nats::jetstream::new(client.clone());
            let finished = match js.get_key_value(subjects::RUNS_BUCKET).await {
                Ok(store) => match store.get(subjects::run_record_key(run_id, driver)).await {
                    Ok(Some(bytes)) => serde_json::from_slice::<super::records::RunRecord>(&bytes)
                        .map(|record| record.finished.is_some())
                        .unwrap_or(false),
                    _ => false,
                },
                Err(_) => false,
            };
            let state = if finished { CancelState::Finished } else { CancelState::NotRunning };
            Ok(CancelReply::new(run_id, driver, state))
        }
    }
}

/// The runs this process holds, by run id, from their start until their message is
/// acknowledged: what a cancel request can reach while they reconcile.
#[derive(Clone, Default)]
pub(crate) struct InFlight {
    runs: Arc<Mutex<HashMap<String, Held>>>,
}

/// A run held, and whether it is still reconciling.
struct Held {
    cancel: RunCancellation,
    /// Its ending is decided: it stores its result, and nothing cancels it any more.
    finishing: bool,
}

impl InFlight {
    /// Holds `run_id` with `cancel` until the guard goes.
    pub(crate) fn enter(&self, run_id: &str, cancel: RunCancellation) -> InFlightGuard {
        self.lock().insert(run_id.to_owned(), Held { cancel, finishing: false });
        InFlightGuard { in_flight: self.clone(), run_id: run_id.to_owned() }
    }

    /// Cancels `run_id` for `reason` if this process holds it and it still reconciles.
    pub(crate) fn cancel(&self, run_id: &str, reason: CancelReason) -> bool {
        match self.lock().get(run_id) {
            Some(held) if !held.finishing => {
                held.cancel.cancel(reason);
                true
            }
            _ => false,
        }
    }

    /// Whether this process holds `run_id`, reconciling or finishing.
    pub(crate) fn holds(&self, run_id: &str) -> bool {
        self.lock().contains_key(run_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A run held by this process; it is forgotten when this goes.
pub(crate) struct InFlightGuard {
    in_flight: InFlight,
    run_id: String,
}

impl InFlightGuard {
    /// The run's ending is decided: a cancel request no longer reaches it (its asker
    /// finds its record), while it stays held until its message is acknowledged.
    pub(crate) fn finishing(&self) {
        if let Some(held) = self.in_flight.lock().get_mut(&self.run_id) {
            held.finishing = true;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.run_id);
    }
}

/// Answers the cancel requests of `driver` for the runs in `in_flight`, until aborted.
pub(crate) async fn listen(
    client: async_nats::Client,
    driver: String,
    in_flight: InFlight,
    backoff: Backoff,
) {
    let subject = subjects::cancel(&driver, "*");
    let prefix = subjects::cancel(&driver, "");
    let mut requests = backoff
        .retry(
            || client.subscribe(subject.clone()),
            |error| tracing::warn!(%error, %subject, "cannot listen for cancel requests; retrying"),
        )
        .await;
    while let Some(request) = requests.next().await {
        let Some(run_id) = request.subject.as_str().strip_prefix(&prefix) else { continue };
        if !in_flight.cancel(run_id, CancelReason::Requested) {
            continue; // another replica holds it, or nobody does: the asker finds out
        }
        tracing::info!(%run_id, "cancel requested");
        if let Some(reply) = request.reply {
            let answer = CancelReply::new(run_id, &driver, CancelState::Cancelling);
            if let Ok(payload) = serde_json::to_vec(&answer) {
                if let Err(error) = client.publish(reply, payload.into()).await {
                    tracing::warn!(%error, %run_id, "cannot answer a cancel request");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_run_in_flight_can_be_cancelled_and_only_while_held() {
        let in_flight = InFlight::default();
        let cancel = RunCancellation::new();
        let guard = in_flight.enter("r-1", cancel.clone());
        assert!(!in_flight.cancel("r-2", CancelReason::Requested));
        assert!(in_flight.holds("r-1"));
        assert!(in_flight.cancel("r-1", CancelReason::Requested));
        assert_eq!(cancel.reason(), Some(CancelReason::Requested));
        guard.finishing();
        assert!(in_flight.holds("r-1"), "held until its message is acknowledged");
        assert!(!in_flight.cancel("r-1", CancelReason::Requested), "a finishing run is not cancelled");
        drop(guard);
        assert!(!in_flight.holds("r-1"));
        assert!(!in_flight.cancel("r-1", CancelReason::Requested));
    }
}
