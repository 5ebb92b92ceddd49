//! The newest version of a resource wins ([`Config::supersede`](super::Config::supersede)).
//!
//! The key-value bucket `conveyor_resources` keeps, for each resource (driver, type,
//! name), the newest event a replica of the driver took on: its run, resource id,
//! version, place in the stream and the replica that holds it. A run claims its
//! resource before it validates and reconciles:
//!
//! - newer than what is kept (or nothing is kept): it writes itself there, with the
//!   key's revision, so that of two replicas claiming at once one wins and the other
//!   reads again. The older run, if it is still in flight, is cancelled (an update:
//!   superseded; a delete: deleted) and waited for; a deletion in progress, or an
//!   older run under any other event (a create after a deletion), is only waited for.
//!   Then this run goes on.
//! - older than what is kept: it does not run, and says which run superseded it.
//! - the same run (delivered again): it goes on.
//!
//! The kept event names the replica (its instance) that took it on. A newer run asks
//! that replica, on `conveyor.supersede.<driver>.<instance>`, whether it still holds
//! the older run, and to cancel it; the replica answers until the run's message is
//! acknowledged. A replica that is gone has no responder, so the question is answered
//! at once. A run claims after it is held in flight, so a newer run that claims after
//! it always finds it held.

use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::Context;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::cancel::{InFlight, CANCEL_ANSWER_WAIT};
use super::records::Bucket;
use crate::driver::CancelReason;
use crate::protocol::{subjects, DriverMessage, Event};
use crate::report::error_text;

/// The newest event taken on of one resource, as kept in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Latest {
    /// Its run.
    pub(crate) run_id: String,
    /// The event's name.
    pub(crate) event: String,
    /// The resource's id: a resource deleted and created again has a new one.
    pub(crate) resource_id: String,
    /// The resource's version, when it is a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<u64>,
    /// The message's place in the stream: the order the server published events in.
    pub(crate) sequence: u64,
    /// The replica that took it on.
    pub(crate) instance: String,
}

impl Latest {
    /// What `delivery`, at `sequence` of the stream, taken on by `instance`, is.
    pub(crate) fn of(delivery: &DriverMessage, sequence: u64, instance: &str) -> Self {
        Self {
            run_id: delivery.run_id.clone(),
            event: delivery.event.as_str().to_owned(),
            resource_id: delivery.payload.id.clone(),
            version: delivery.payload.version(),
            sequence,
            instance: instance.to_owned(),
        }
    }

    /// Whether this is a newer event of the resource than `kept`: by version when both
    /// have one and the resource is the same, else by the order of the stream.
    fn is_newer_than(&self, kept: &Latest) -> bool {
        match (self.version, kept.version) {
            (Some(mine), Some(theirs)) if self.resource_id == kept.resource_id && mine != theirs => {
                mine > theirs
            }
            _ => self.sequence > kept.sequence,
        }
    }

    /// Whether this is a deletion.
    fn is_delete(&self) -> bool {
        self.event == Event::Delete.as_str()
    }

    /// Why a run of an older event is cancelled for this one: an update supersedes
    /// it, a deletion ends it; any other event (a create after a deletion, a pipeline
    /// step) waits for it instead.
    fn reason(&self) -> Option<CancelReason> {
        match self.event.as_str() {
            "delete" => Some(CancelReason::Deleted { run_id: self.run_id.clone() }),
            "update" => Some(CancelReason::Superseded { run_id: self.run_id.clone(), version: self.version }),
            _ => None,
        }
    }

    /// What the result of an older event that arrives after this one says.
    pub(crate) fn superseded_text(&self) -> String {
        match (self.is_delete(), self.version) {
            (true, _) => format!("superseded by run {}: the resource was deleted", self.run_id),
            (false, Some(version)) => format!("superseded by run {} (version {version})", self.run_id),
            (false, None) => format!("superseded by run {}", self.run_id),
        }
    }
}

/// What a run's claim on its resource came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The run is the newest: it goes on. `older` is the event it took over from.
    Newest {
        /// The older event, when one of another run was kept.
        older: Option<Latest>,
    },
    /// A newer event was taken on already: the run must not run.
    Older(Latest),
}

/// The bucket of the newest events of one runtime; without one (turned off, or it
/// could not be created), every run is the newest.
#[derive(Clone)]
pub(crate) struct Supersede {
    store: Option<Store>,
    driver: String,
    instance: String,
    /// What reaches the runs of older events: the connection, to ask other replicas;
    /// this process's runs.
    runs: Option<(async_nats::Client, InFlight)>,
}

impl Supersede {
    /// Opens the bucket when `on`, creating it (keys kept for `ttl`, with the replicas
    /// of `replicas`) when missing.
    pub(crate) async fn open(
        js: &Context,
        on: bool,
        driver: &str,
        instance: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Self {
        let bucket = Bucket {
            name: subjects::RESOURCES_BUCKET,
            description: "Conveyor drivers: the newest event taken on of each resource",
            without: "runs of one resource may overlap, and an older event delivered late runs",
        };
        let store = match on {
            true => bucket.open(js, ttl, replicas).await,
            false => None,
        };
        Self { store, driver: driver.to_owned(), instance: instance.to_owned(), runs: None }
    }

    /// Reaches the runs of older events through `client` and `in_flight`.
    pub(crate) fn reaching(mut self, client: async_nats::Client, in_flight: InFlight) -> Self {
        self.runs = Some((client, in_flight));
        self
    }

    /// Claims `delivery`'s resource for it (see the module's documentation). When the
    /// bucket cannot be read or written, the run goes on, saying so in the diagnostics.
    pub(crate) async fn claim(&self, delivery: &DriverMessage, sequence: u64) -> Claim {
        let Some(store) = &self.store else { return Claim::Newest { older: None } };
        let resource = &delivery.payload;
        let key = subjects::resource_key(&self.driver, &resource.resource, &resource.name);
        let mine = Latest::of(delivery, sequence, &self.instance);
        let Ok(value) = serde_json::to_vec(&mine).map(bytes::Bytes::from) else {
            return Claim::Newest { older: None };
        };
        // A resource's first event is most often a create: writing it where nothing is
        // kept settles the claim in one round trip, without reading first.
        if delivery.event == Event::Create {
            match store.create(key.as_str(), value.clone()).await {
                Ok(_) => return Claim::Newest { older: None },
                Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {}
                Err(error) => return unclaimed(&error_text(&error)),
            }
        }
        // Each pass either settles or sees another replica's write: a few passes at most.
        for _ in 0..8 {
            let entry = match store.entry(key.as_str()).await {
                Ok(entry) => entry,
                Err(error) => return unclaimed(&error_text(&error)),
            };
            let kept = entry.as_ref().filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
            let kept = kept.map(|e| (e.revision, serde_json::from_slice::<Latest>(&e.value)));
            match kept {
                Some((_, Ok(kept))) if kept.run_id == mine.run_id => return Claim::Newest { older: None },
                Some((_, Ok(kept))) if !mine.is_newer_than(&kept) => return Claim::Older(kept),
                Some((revision, kept)) => match store.update(key.as_str(), value.clone(), revision).await {
                    Ok(_) => return Claim::Newest { older: kept.ok() },
                    Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(error) => return unclaimed(&error_text(&error)),
                },
                None => match store.create(key.as_str(), value.clone()).await {
                    Ok(_) => return Claim::Newest { older: None },
                    Err(error) if error.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(error) => return unclaimed(&error_text(&error)),
                },
            }
        }
        unclaimed("other replicas kept writing the resource's newest event")
    }

    /// Ends the run of the `older` event `newer` took over from, if it is still in
    /// flight anywhere: cancels it (a deletion is only waited for) and waits, for at
    /// most `budget`, until it has ended. The older run, when one was cancelled or
    /// waited for.
    pub(crate) async fn end_older(
        &self,
        older: &Latest,
        newer: &Latest,
        budget: Duration,
        stop: &CancellationToken,
    ) -> Option<String> {
        let Some((client, in_flight)) = &self.runs else { return None };
        // A deletion in progress is never cut short.
        let reason = newer.reason().filter(|_| !older.is_delete());
        let here = in_flight.holds(&older.run_id);
        if here {
            if let Some(reason) = &reason {
                in_flight.cancel(&older.run_id, reason.clone());
            }
        } else if older.instance == self.instance {
            return None; // it ended here
        } else if !self.held_by(client, older, reason.as_ref()).await {
            return None; // its replica is gone or ended it: delivered again, it will be refused
        }
        tracing::info!(older_run = ?older.run_id, cancelled = reason.is_some(), "waiting for the run of the older event to end");
        let ended = async {
            let mut pauses = Backoff::new(Duration::from_millis(20), Duration::from_millis(500)).delays();
            loop {
                let held = match here {
                    true => in_flight.holds(&older.run_id),
                    false => self.held_by(client, older, None).await,
                };
                if !held {
                    return;
                }
                tokio::time::sleep(pauses.next().unwrap_or(Duration::from_millis(500))).await;
            }
        };
        tokio::select! {
            () = ended => {}
            () = tokio::time::sleep(budget) => {
                tracing::warn!(older_run = ?older.run_id, ?budget, "the older run did not end in time; going on");
            }
            () = stop.cancelled() => {}
        }
        Some(older.run_id.clone())
    }

    /// Whether the replica that took on `older` still holds its run, cancelling it for
    /// `reason` when one is given. A replica that is gone (no responder) or does not
    /// answer within [`CANCEL_ANSWER_WAIT`] holds nothing.
    async fn held_by(
        &self,
        client: &async_nats::Client,
        older: &Latest,
        reason: Option<&CancelReason>,
    ) -> bool {
        let question = Question { run_id: older.run_id.clone(), reason: reason.and_then(Why::of) };
        let Ok(body) = serde_json::to_vec(&question) else { return false };
        let request = client.request(subjects::supersede(&self.driver, &older.instance), body.into());
        match tokio::time::timeout(CANCEL_ANSWER_WAIT, request).await {
            Ok(Ok(answer)) => serde_json::from_slice::<Answer>(&answer.payload).is_ok_and(|a| a.held),
            _ => false,
        }
    }
}

/// What one replica asks another of a run it took on: does it still hold it, and if a
/// reason is given, cancel it for that.
#[derive(Debug, Serialize, Deserialize)]
struct Question {
    run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Why>,
}

/// Why a run of an older event is cancelled, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
enum Why {
    /// An update: [`CancelReason::Superseded`].
    Superseded { run_id: String, version: Option<u64> },
    /// A deletion: [`CancelReason::Deleted`].
    Deleted { run_id: String },
}

impl Why {
    /// `reason` on the wire, when it is one a newer event gives.
    fn of(reason: &CancelReason) -> Option<Self> {
        match reason {
            CancelReason::Deleted { run_id } => Some(Why::Deleted { run_id: run_id.clone() }),
            CancelReason::Superseded { run_id, version } => {
                Some(Why::Superseded { run_id: run_id.clone(), version: *version })
            }
            _ => None,
        }
    }
}

impl From<Why> for CancelReason {
    fn from(why: Why) -> Self {
        match why {
            Why::Superseded { run_id, version } => CancelReason::Superseded { run_id, version },
            Why::Deleted { run_id } => CancelReason::Deleted { run_id },
        }
    }
}

/// The answer: whether the run is still held.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    held: bool,
}

/// Answers the questions of other replicas about the runs this one (`instance` of
/// `driver`) holds in `in_flight`, until aborted.
pub(crate) async fn answer(
    client: async_nats::Client,
    driver: String,
    instance: String,
    in_flight: InFlight,
    backoff: Backoff,
) {
    let subject = subjects::supersede(&driver, &instance);
    let mut questions = backoff
        .retry(
            || client.subscribe(subject.clone()),
            |error| tracing::warn!(%error, %subject, "cannot answer whether older runs are held; retrying"),
        )
        .await;
    while let Some(message) = questions.next().await {
        let Some(reply) = message.reply else { continue };
        let held = match serde_json::from_slice::<Question>(&message.payload) {
            Ok(Question { run_id, reason }) => {
                if let Some(why) = reason {
                    in_flight.cancel(&run_id, why.into());
                }
                in_flight.holds(&run_id)
            }
            Err(_) => false,
        };
        let Ok(payload) = serde_json::to_vec(&Answer { held }) else { continue };
        if let Err(error) = client.publish(reply, payload.into()).await {
            tracing::warn!(%error, "cannot answer whether an older run is held");
        }
    }
}

/// The claim when the bucket cannot be used: the run goes on.
fn unclaimed(reason: &str) -> Claim {
    tracing::warn!(%reason, "cannot tell whether a newer event of the resource was taken on; running this one");
    Claim::Newest { older: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(run_id: &str, event: &str, resource_id: &str, version: Option<u64>, sequence: u64) -> Latest {
        Latest {
            run_id: run_id.into(),
            event: event.into(),
            resource_id: resource_id.into(),
            version,
            sequence,
            instance: "a".into(),
        }
    }

    #[test]
    fn a_higher_version_of_the_same_resource_is_newer_whatever_the_stream_order() {
        let v2 = latest("r2", "update", "id-1", Some(2), 10);
        let v3_published_first = latest("r3", "update", "id-1", Some(3), 9);
        assert!(v3_published_first.is_newer_than(&v2));
        assert!(!v2.is_newer_than(&v3_published_first));
    }

    #[test]
    fn without_comparable_versions_the_later_message_in_the_stream_is_newer() {
        let update = latest("r2", "update", "id-1", Some(2), 10);
        let delete_of_the_same_version = latest("r3", "delete", "id-1", Some(2), 11);
        assert!(delete_of_the_same_version.is_newer_than(&update));
        let recreated = latest("r4", "create", "id-2", Some(1), 12);
        assert!(recreated.is_newer_than(&delete_of_the_same_version));
        let late_delete_of_the_old_resource = latest("r3", "delete", "id-1", Some(2), 11);
        assert!(!late_delete_of_the_old_resource.is_newer_than(&recreated));
        let unversioned = latest("r5", "create", "id-2", None, 13);
        assert!(unversioned.is_newer_than(&recreated));
    }

    #[test]
    fn an_update_supersedes_with_its_run_and_version_and_a_delete_says_the_resource_was_deleted() {
        let update = latest("r2", "update", "id-1", Some(2), 10);
        assert_eq!(update.reason(), Some(CancelReason::Superseded { run_id: "r2".into(), version: Some(2) }));
        assert_eq!(update.superseded_text(), "superseded by run r2 (version 2)");
        let delete = latest("r3", "delete", "id-1", Some(2), 11);
        assert_eq!(delete.reason(), Some(CancelReason::Deleted { run_id: "r3".into() }));
        assert_eq!(delete.superseded_text(), "superseded by run r3: the resource was deleted");
        let recreated = latest("r4", "create", "id-2", Some(1), 12);
        assert_eq!(recreated.reason(), None, "a create waits for an older run instead");
    }

    #[test]
    fn a_question_carries_why_the_run_is_cancelled_and_reads_back_as_the_same_reason() {
        for reason in [
            CancelReason::Superseded { run_id: "r2".into(), version: Some(2) },
            CancelReason::Superseded { run_id: "r2".into(), version: None },
            CancelReason::Deleted { run_id: "r3".into() },
        ] {
            let question = Question { run_id: "r1".into(), reason: Why::of(&reason) };
            let read: Question = serde_json::from_slice(&serde_json::to_vec(&question).unwrap()).unwrap();
            assert_eq!(read.reason.map(CancelReason::from), Some(reason));
        }
        assert_eq!(Why::of(&CancelReason::Requested), None, "only a newer event's reason is asked for");
        let probe: Question = serde_json::from_str(r#"{"run_id":"r1"}"#).unwrap();
        assert!(probe.reason.is_none(), "without a reason the question only asks whether it is held");
    }
}
