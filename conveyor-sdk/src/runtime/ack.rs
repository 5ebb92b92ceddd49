//! Acknowledging a message: the final acknowledgement (which one is
//! [`Outcome::ack`](super::outcome::Outcome::ack)'s to say), and the keep-alive that
//! holds a message while its run is in progress.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};

/// Acknowledges `message` as `kind` says, without waiting for JetStream to confirm
/// it: the run's result and record are stored by then, so an acknowledgement lost on
/// the way (a NATS node went away, the consumer is electing its leader) only means a
/// delivery again after the ack wait, which finds the run's record and is acknowledged
/// without running again. Waiting would cost every run a round trip.
pub(crate) async fn acknowledge(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, "acknowledging a message failed; JetStream will deliver it again");
    }
}

/// Tells JetStream that the run of `message` is in progress.
pub(crate) async fn progress(message: &Message) {
    if let Err(error) = message.ack_with(AckKind::Progress).await {
        tracing::debug!(%error, "a progress acknowledgement failed");
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
