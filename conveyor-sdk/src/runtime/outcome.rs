//! How a run ends, in one place: what it came to ([`Outcome`]), the acknowledgement
//! of its message that follows from that ([`Outcome::ack`]) and the label its metrics
//! count it under ([`Outcome::label`]).
//!
//! | outcome | stored | its message |
//! |---|---|---|
//! | `Success`, `Failure`, `InvalidSpec`, `TimedOut`, `CancelRequested`, `Superseded` | its result | ack |
//! | `GivenUp` (delivered or retried too often) | its failure result | term: never again |
//! | `AlreadyFinished` (its result was stored by an earlier delivery) | nothing more | ack |
//! | `Retried(delay)` (reconcile asked to try again) | its record's retry count | nak after `delay` |
//! | `NotStored` (its log or result could not be stored) | nothing | nak after the nak delay |
//! | `Cancelled` (by shutdown, before it had a result) | nothing | nak at once: another process may take it |

use std::time::Duration;

use async_nats::jetstream::AckKind;

/// What a run came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its successful result is stored.
    Success,
    /// Its failed result is stored (the driver's failure, error or panic).
    Failure,
    /// Its spec is invalid; its failure result is stored.
    InvalidSpec,
    /// Its deadline passed; its failure result is stored.
    TimedOut,
    /// Cancelled on request; its failure result is stored.
    CancelRequested,
    /// Cancelled by a newer event of its resource (an update or a deletion), or an
    /// event older than one already handled; its failure result is stored.
    Superseded,
    /// Delivered or retried too often; its failure result is stored and its message
    /// terminated.
    GivenUp,
    /// Delivered again after its result was stored: not run again.
    AlreadyFinished,
    /// It asked to be tried again after this delay.
    Retried(Duration),
    /// Its log or result could not be stored; a later delivery may succeed.
    NotStored,
    /// Cancelled by shutdown before it had a result; delivered again.
    Cancelled,
}

impl Outcome {
    /// Every outcome once, in the order of [`index`](Self::index).
    #[cfg(feature = "metrics")]
    pub(crate) const ALL: [Outcome; 11] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::InvalidSpec,
        Outcome::TimedOut,
        Outcome::CancelRequested,
        Outcome::GivenUp,
        Outcome::AlreadyFinished,
        Outcome::Retried(Duration::ZERO),
        Outcome::NotStored,
        Outcome::Cancelled,
        Outcome::Superseded,
    ];

    /// The outcome of a result the driver returned.
    pub(crate) fn of(result: &crate::DriverResult) -> Self {
        if result.success {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }

    /// The acknowledgement of the run's message.
    pub(crate) fn ack(self, nak_delay: Duration) -> AckKind {
        match self {
            Outcome::Success
            | Outcome::Failure
            | Outcome::InvalidSpec
            | Outcome::TimedOut
            | Outcome::CancelRequested
            | Outcome::Superseded
            | Outcome::AlreadyFinished => AckKind::Ack,
            Outcome::GivenUp => AckKind::Term,
            Outcome::Retried(delay) => AckKind::Nak(Some(delay)),
            Outcome::NotStored => AckKind::Nak(Some(nak_delay)),
            Outcome::Cancelled => AckKind::Nak(None),
        }
    }

    /// The value of the metrics' `outcome` label.
    #[cfg(feature = "metrics")]
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::InvalidSpec => "invalid_spec",
            Outcome::TimedOut => "timed_out",
            Outcome::CancelRequested => "cancel_requested",
            Outcome::GivenUp => "given_up",
            Outcome::AlreadyFinished => "already_finished",
            Outcome::Retried(_) => "retried",
            Outcome::NotStored => "not_stored",
            Outcome::Cancelled => "cancelled",
            Outcome::Superseded => "superseded",
        }
    }

    /// Its place in [`ALL`](Self::ALL).
    #[cfg(feature = "metrics")]
    pub(crate) fn index(self) -> usize {
        match self {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::InvalidSpec => 2,
            Outcome::TimedOut => 3,
            Outcome::CancelRequested => 4,
            Outcome::GivenUp => 5,
            Outcome::AlreadyFinished => 6,
            Outcome::Retried(_) => 7,
            Outcome::NotStored => 8,
            Outcome::Cancelled => 9,
            Outcome::Superseded => 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAK_DELAY: Duration = Duration::from_secs(5);

    #[test]
    fn a_stored_result_is_acked() {
        for outcome in [
            Outcome::Success,
            Outcome::Failure,
            Outcome::InvalidSpec,
            Outcome::TimedOut,
            Outcome::CancelRequested,
            Outcome::Superseded,
            Outcome::AlreadyFinished,
        ] {
            assert!(matches!(outcome.ack(NAK_DELAY), AckKind::Ack), "{outcome:?}");
        }
    }

    #[test]
    fn a_given_up_run_is_terminated() {
        assert!(matches!(Outcome::GivenUp.ack(NAK_DELAY), AckKind::Term));
    }

    #[test]
    fn a_run_that_could_not_be_stored_is_delivered_again_after_the_nak_delay() {
        let kind = Outcome::NotStored.ack(Duration::from_millis(1500));
        assert!(matches!(kind, AckKind::Nak(Some(d)) if d == Duration::from_millis(1500)), "{kind:?}");
    }

    #[test]
    fn a_run_cancelled_by_shutdown_is_delivered_again_at_once() {
        assert!(matches!(Outcome::Cancelled.ack(NAK_DELAY), AckKind::Nak(None)));
    }

    #[test]
    fn a_run_that_asked_to_be_retried_is_delivered_again_after_its_delay() {
        let kind = Outcome::Retried(Duration::from_secs(30)).ack(NAK_DELAY);
        assert!(matches!(kind, AckKind::Nak(Some(d)) if d == Duration::from_secs(30)), "{kind:?}");
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn every_outcome_has_its_own_place_and_label() {
        let labels: std::collections::HashSet<&str> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome:?}");
        }
        assert_eq!(
            Outcome::Retried(Duration::from_secs(9)).index(),
            Outcome::Retried(Duration::ZERO).index()
        );
    }
}
