//! How a message ends: the acknowledgement each ending calls for, and the
//! keep-alive that holds a message while its run is in progress.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::AckKind;

/// How the handling of one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The run's result is stored.
    Finished,
    /// The run was given up after too many deliveries; its failure result is stored.
    GivenUp,
    /// The message is not a `DriverMessage`: no later delivery can do better.
    Undecodable,
    /// The run's log or result could not be stored; a later delivery may succeed.
    Failed,
    /// A shutdown cancelled the run before it had a result.
    Cancelled,
    /// The run asked to be tried again after this delay.
    Retry(Duration),
}

/// The acknowledgement for `ending`:
///
/// - a stored result: ack;
/// - a given-up run, or a message that cannot be a run: terminate (never again);
/// - a run whose log or result could not be stored: nak, delivered again after
///   `nak_delay`;
/// - a run cancelled by shutdown: nak without delay, so that another process of the
///   driver may take it at once;
/// - a run that asked to be tried again: nak with the delay it asked for.
pub(crate) fn ack_kind(ending: Ending, nak_delay: Duration) -> AckKind {
    match ending {
        Ending::Finished => AckKind::Ack,
        Ending::GivenUp | Ending::Undecodable => AckKind::Term,
        Ending::Failed => AckKind::Nak(Some(nak_delay)),
        Ending::Cancelled => AckKind::Nak(None),
        Ending::Retry(delay) => AckKind::Nak(Some(delay)),
    }
}

/// How often a run in progress tells JetStream so: three times per ack wait, so that
/// one lost progress acknowledgement does not lead to a redelivery.
pub(crate) fn progress_interval(ack_wait: Duration) -> Duration {
    ack_wait / 3
}

/// Runs `work`, calling `progress` every `every` until it completes.
pub(crate) async fn keep_alive<F, P>(every: Duration, work: F, mut progress: impl FnMut() -> P) -> F::Output
where
    F: Future,
    P: Future<Output = ()>,
{
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => progress().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use tokio::time::{sleep, Instant};

    use super::*;

    #[test]
    fn a_stored_result_is_acked() {
        assert!(matches!(ack_kind(Ending::Finished, Duration::from_secs(5)), AckKind::Ack));
    }

    #[test]
    fn given_up_and_undecodable_messages_are_terminated() {
        assert!(matches!(ack_kind(Ending::GivenUp, Duration::from_secs(5)), AckKind::Term));
        assert!(matches!(ack_kind(Ending::Undecodable, Duration::from_secs(5)), AckKind::Term));
    }

    #[test]
    fn a_run_that_could_not_be_stored_is_delivered_again_after_the_nak_delay() {
        let kind = ack_kind(Ending::Failed, Duration::from_millis(1500));
        assert!(matches!(kind, AckKind::Nak(Some(d)) if d == Duration::from_millis(1500)), "{kind:?}");
    }

    #[test]
    fn a_run_cancelled_by_shutdown_is_delivered_again_at_once() {
        assert!(matches!(ack_kind(Ending::Cancelled, Duration::from_secs(5)), AckKind::Nak(None)));
    }

    #[test]
    fn a_run_that_asked_to_be_retried_is_delivered_again_after_its_delay() {
        let kind = ack_kind(Ending::Retry(Duration::from_secs(30)), Duration::from_secs(5));
        assert!(matches!(kind, AckKind::Nak(Some(d)) if d == Duration::from_secs(30)), "{kind:?}");
    }

    #[test]
    fn progress_is_reported_three_times_per_ack_wait() {
        assert_eq!(progress_interval(Duration::from_secs(30)), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_reports_progress_each_interval_until_the_work_ends() {
        let start = Instant::now();
        let reported = Cell::new(Vec::new());
        let out = keep_alive(
            Duration::from_secs(10),
            async {
                sleep(Duration::from_secs(35)).await;
                "done"
            },
            || {
                let mut at = reported.take();
                at.push(start.elapsed());
                reported.set(at);
                async {}
            },
        )
        .await;
        assert_eq!(out, "done");
        assert_eq!(reported.take(), [10, 20, 30].map(Duration::from_secs));
        assert_eq!(start.elapsed(), Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_reports_nothing_for_work_shorter_than_an_interval() {
        let reported = Cell::new(0);
        keep_alive(Duration::from_secs(10), sleep(Duration::from_millis(9_999)), || {
            reported.set(reported.get() + 1);
            async {}
        })
        .await;
        assert_eq!(reported.get(), 0);
    }
}
