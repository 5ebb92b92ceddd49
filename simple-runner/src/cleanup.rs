//! Containers left by a serving runner that is gone: found by label, removed by the
//! periodic sweep of another runner of the same driver.
//!
//! A container is an orphan only when all of this holds ([`verdict`]): it is labelled
//! with the driver, with [`labels::MODE`] `serve` (a local `simple-runner run`
//! labels its containers `run`, and those are never touched), with an owner
//! ([`labels::INSTANCE`]) other than the sweeping runner, and that owner has no
//! record in the liveness bucket ([`crate::liveness`]). If the containers or the
//! bucket cannot be read, the sweep removes nothing that round. A removal that fails
//! is tried again by the next sweep: the container is still listed.
//!
//! The containers are listed before the records are read: a runner writes its record
//! before it makes a container, so a container listed has its owner's record written
//! by the time the records are read, unless that record has expired since.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use tokio_util::sync::CancellationToken;

use conveyor_sdk::error_text;

use crate::docker::{labels, Engine};
use crate::error::EngineError;
use crate::liveness::{live_records, record_key, LivenessError};
use crate::settings::Mode;

/// What a sweep makes of one container.
///
/// ```
/// use std::collections::{HashMap, HashSet};
/// use simple_runner::cleanup::{verdict, Verdict};
///
/// let labels = HashMap::from([
///     ("conveyor.driver".to_owned(), "command-runner".to_owned()),
///     ("conveyor.mode".to_owned(), "serve".to_owned()),
///     ("conveyor.instance".to_owned(), "gone".to_owned()),
/// ]);
/// assert_eq!(verdict(&labels, "command-runner", "me", &HashSet::new()), Verdict::Orphan);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Another driver's: not looked at.
    OtherDriver,
    /// Not made by a serving runner (a local `simple-runner run`, or no mode label):
    /// never removed by a sweep.
    NotServed,
    /// A serving runner's container without an owner label: kept, as no one can say
    /// whether its owner lives.
    NoOwner,
    /// The sweeping runner's own.
    Own,
    /// Its owner has a liveness record: kept.
    OwnerAlive,
    /// Its owner has no liveness record: removed.
    Orphan,
}

/// The verdict on a container labelled `container_labels`, for a sweep by runner
/// `instance` of `driver` while the records `live` (keys of
/// [`crate::liveness::live_records`]) exist.
///
/// ```
/// use std::collections::{HashMap, HashSet};
/// use simple_runner::cleanup::{verdict, Verdict};
/// use simple_runner::liveness::record_key;
///
/// let labels = HashMap::from([
///     ("conveyor.driver".to_owned(), "command-runner".to_owned()),
///     ("conveyor.mode".to_owned(), "serve".to_owned()),
///     ("conveyor.instance".to_owned(), "other".to_owned()),
/// ]);
/// let live = HashSet::from([record_key("command-runner", "other")]);
/// assert_eq!(verdict(&labels, "command-runner", "me", &live), Verdict::OwnerAlive);
/// ```
pub fn verdict(
    container_labels: &HashMap<String, String>,
    driver: &str,
    instance: &str,
    live: &HashSet<String>,
) -> Verdict {
    let label = |name: &str| container_labels.get(name).map(String::as_str);
    if label(labels::DRIVER) != Some(driver) {
        return Verdict::OtherDriver;
    }
    if label(labels::MODE) != Some(Mode::Serve.label()) {
        return Verdict::NotServed;
    }
    match label(labels::INSTANCE) {
        None | Some("") => Verdict::NoOwner,
        Some(owner) if owner == instance => Verdict::Own,
        Some(owner) if live.contains(&record_key(driver, owner)) => Verdict::OwnerAlive,
        Some(_) => Verdict::Orphan,
    }
}

/// What one sweep did.
///
/// ```no_run
/// # async fn demo(engine: simple_runner::Engine, bucket: async_nats::jetstream::kv::Store) -> Result<(), simple_runner::cleanup::SweepError> {
/// let sweep = simple_runner::cleanup::sweep(&engine, &bucket, "command-runner", "me").await?;
/// println!("removed {}, {} to try again", sweep.removed.len(), sweep.failed.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Sweep {
    /// Every container of the driver with its verdict.
    pub verdicts: Vec<(String, Verdict)>,
    /// The orphans removed.
    pub removed: Vec<String>,
    /// The orphans whose removal failed, tried again by the next sweep.
    pub failed: Vec<String>,
}

impl Sweep {
    /// How many containers had `verdict`.
    ///
    /// ```
    /// use simple_runner::cleanup::{Sweep, Verdict};
    ///
    /// assert_eq!(Sweep::default().count(Verdict::OwnerAlive), 0);
    /// ```
    pub fn count(&self, verdict: Verdict) -> usize {
        self.verdicts.iter().filter(|(_, v)| *v == verdict).count()
    }
}

/// Why a sweep removed nothing.
///
/// ```
/// fn explain(error: &simple_runner::cleanup::SweepError) -> String {
///     conveyor_sdk::error_text(error)
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    /// The containers could not be listed.
    #[error("cannot list the containers of the driver; no container removed this round")]
    Containers(#[source] EngineError),
    /// The liveness records could not be read.
    #[error("cannot tell which runners are alive; no container removed this round")]
    Liveness(#[source] LivenessError),
}

/// One sweep by runner `instance` of `driver`: every orphan ([`Verdict::Orphan`]) is
/// removed and counted (`simple_runner_orphans_reaped_total`).
///
/// ```no_run
/// # async fn demo(engine: simple_runner::Engine, bucket: async_nats::jetstream::kv::Store) -> Result<(), simple_runner::cleanup::SweepError> {
/// let sweep = simple_runner::cleanup::sweep(&engine, &bucket, "command-runner", "me").await?;
/// assert!(sweep.failed.is_empty());
/// # Ok(())
/// # }
/// ```
pub async fn sweep(
    engine: &Engine,
    bucket: &Store,
    driver: &str,
    instance: &str,
) -> Result<Sweep, SweepError> {
    // Containers first, then records: see the module's documentation.
    let containers = engine.containers_of(driver).await.map_err(SweepError::Containers)?;
    let live = live_records(bucket).await.map_err(SweepError::Liveness)?;
    let mut sweep = Sweep::default();
    for (id, container_labels) in containers {
        let verdict = verdict(&container_labels, driver, instance, &live);
        sweep.verdicts.push((id.clone(), verdict));
        if verdict != Verdict::Orphan {
            continue;
        }
        let owner = container_labels.get(labels::INSTANCE).map(String::as_str).unwrap_or("");
        let run_id = container_labels.get(labels::RUN_ID).map(String::as_str).unwrap_or("");
        if engine.remove(&id).await {
            engine.metrics().orphan_reaped();
            tracing::info!(container = %id, run_id, owner, "removed a container of a runner that is gone");
            sweep.removed.push(id);
        } else {
            tracing::warn!(
                container = %id,
                run_id,
                owner,
                "cannot remove a container of a runner that is gone; the next sweep tries again"
            );
            sweep.failed.push(id);
        }
    }
    Ok(sweep)
}

/// Sweeps every `interval`, the first time at once, until `stop` is cancelled. A
/// sweep that fails is reported and the next one comes at its time.
///
/// ```no_run
/// # async fn demo(engine: simple_runner::Engine, bucket: async_nats::jetstream::kv::Store) {
/// use std::time::Duration;
/// use conveyor_sdk::CancellationToken;
///
/// let stop = CancellationToken::new();
/// let sweeping = tokio::spawn(simple_runner::cleanup::sweep_every(
///     engine, bucket, "command-runner".into(), "me".into(), Duration::from_secs(30), stop.clone(),
/// ));
/// // … serve …
/// stop.cancel();
/// let _ = sweeping.await;
/// # }
/// ```
pub async fn sweep_every(
    engine: Engine,
    bucket: Store,
    driver: String,
    instance: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let swept = tokio::select! {
            swept = sweep(&engine, &bucket, &driver, &instance) => swept,
            () = stop.cancelled() => return,
        };
        if let Err(error) = swept {
            tracing::warn!(error = %error_text(&error), "the sweep for containers of runners that are gone failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(driver: &str, mode: Option<&str>, owner: Option<&str>) -> HashMap<String, String> {
        let mut labels = HashMap::from([(labels::DRIVER.to_owned(), driver.to_owned())]);
        if let Some(mode) = mode {
            labels.insert(labels::MODE.to_owned(), mode.to_owned());
        }
        if let Some(owner) = owner {
            labels.insert(labels::INSTANCE.to_owned(), owner.to_owned());
        }
        labels
    }

    #[test]
    fn only_served_containers_of_a_runner_without_a_record_are_orphans() {
        let live = HashSet::from([record_key("d", "alive")]);
        let of = |labels: HashMap<String, String>| verdict(&labels, "d", "me", &live);
        assert_eq!(of(container("d", Some("serve"), Some("gone"))), Verdict::Orphan);
        assert_eq!(of(container("d", Some("serve"), Some("alive"))), Verdict::OwnerAlive);
        assert_eq!(of(container("d", Some("serve"), Some("me"))), Verdict::Own);
        assert_eq!(of(container("d", Some("run"), Some("gone"))), Verdict::NotServed, "a local run");
        assert_eq!(of(container("d", None, Some("gone"))), Verdict::NotServed, "made before the mode label");
        assert_eq!(of(container("d", Some("SERVE"), Some("gone"))), Verdict::NotServed);
        assert_eq!(of(container("d", Some("serve"), None)), Verdict::NoOwner);
        assert_eq!(of(container("d", Some("serve"), Some(""))), Verdict::NoOwner);
        assert_eq!(of(container("other", Some("serve"), Some("gone"))), Verdict::OtherDriver);
    }

    #[test]
    fn a_record_of_another_driver_does_not_keep_a_container_alive() {
        let live = HashSet::from([record_key("other", "x")]);
        assert_eq!(verdict(&container("d", Some("serve"), Some("x")), "d", "me", &live), Verdict::Orphan);
    }
}
