//! One call of a driver's reconcile: a panic caught, the run's deadline kept, open to
//! cancellation, and what came of it named ([`Returned`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::driver::{CancelReason, RunCancellation};
use crate::{DriverResult, ReconcileError};

/// How a call of reconcile ended.
#[derive(Debug)]
pub(crate) enum Returned {
    /// It returned a result.
    Result(DriverResult),
    /// It returned an error.
    Error(ReconcileError),
    /// It panicked, saying this.
    Panicked(String),
    /// It was cancelled and had not returned when its time to clean up was over: it
    /// is abandoned (dropped).
    Abandoned,
}

impl Returned {
    /// The result it returned, if it returned one.
    pub(crate) fn result(&self) -> Option<&DriverResult> {
        match self {
            Returned::Result(result) => Some(result),
            _ => None,
        }
    }
}

/// Runs `reconciling` until it returns or panics. When `deadline` passes first, the
/// run is cancelled with [`CancelReason::Deadline`]; once cancelled (for any reason),
/// it has `cancel_timeout` to return before it is abandoned.
pub(crate) async fn call(
    reconciling: impl Future<Output = Result<DriverResult, ReconcileError>>,
    deadline: Duration,
    cancel: &RunCancellation,
    cancel_timeout: Duration,
) -> Returned {
    let reconciling = AssertUnwindSafe(reconciling).catch_unwind();
    tokio::pin!(reconciling);
    let expiry = async {
        match Instant::now().checked_add(deadline) {
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
        Some(joined) => joined,
        None => match tokio::time::timeout(cancel_timeout, &mut reconciling).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!("reconcile did not return in time after cancellation; abandoning it");
                return Returned::Abandoned;
            }
        },
    };
    match joined {
        Ok(Ok(result)) => Returned::Result(result),
        Ok(Err(error)) => Returned::Error(error),
        Err(panic) => Returned::Panicked(panic_text(panic)),
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
    use tokio::time::sleep;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const CLEAN_UP: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_result_is_returned_as_it_was() {
        let cancel = RunCancellation::new();
        let returned = call(async { Ok(DriverResult::success("done")) }, MINUTE, &cancel, CLEAN_UP).await;
        assert!(matches!(returned, Returned::Result(r) if r.success && r.message == "done"));
        assert_eq!(cancel.reason(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_is_returned_as_it_was() {
        let cancel = RunCancellation::new();
        let returned = call(async { Err(ReconcileError::from("broken")) }, MINUTE, &cancel, CLEAN_UP).await;
        assert!(matches!(&returned, Returned::Error(e) if e.error().to_string() == "broken"), "{returned:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_caught_with_its_message() {
        let cancel = RunCancellation::new();
        let returned = call(
            async {
                if cancel.is_cancelled() {
                    return Ok(DriverResult::success("unreachable"));
                }
                panic!("at the {}", "disco")
            },
            MINUTE,
            &cancel,
            CLEAN_UP,
        )
        .await;
        assert!(matches!(&returned, Returned::Panicked(text) if text == "at the disco"), "{returned:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_cancels_the_run_which_may_still_return() {
        let cancel = RunCancellation::new();
        let token = cancel.token().clone();
        let start = Instant::now();
        let returned = call(
            async move {
                token.cancelled().await;
                sleep(Duration::from_secs(3)).await;
                Ok(DriverResult::failure("stopped"))
            },
            MINUTE,
            &cancel,
            CLEAN_UP,
        )
        .await;
        assert_eq!(cancel.reason(), Some(CancelReason::Deadline(MINUTE)));
        assert!(matches!(returned.result(), Some(r) if r.message == "stopped"), "{returned:?}");
        assert_eq!(start.elapsed(), MINUTE + Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_run_that_does_not_return_in_time_is_abandoned() {
        let cancel = RunCancellation::new();
        let start = Instant::now();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(5)).await;
            canceller.cancel(CancelReason::Requested);
        });
        let returned = call(std::future::pending(), MINUTE, &cancel, CLEAN_UP).await;
        assert!(matches!(returned, Returned::Abandoned), "{returned:?}");
        assert_eq!(cancel.reason(), Some(CancelReason::Requested));
        assert_eq!(start.elapsed(), Duration::from_secs(5) + CLEAN_UP);
    }

    #[test]
    fn panic_payloads_become_text() {
        assert_eq!(panic_text(Box::new("static")), "static");
        assert_eq!(panic_text(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_text(Box::new(7)), "(no message)");
    }
}
