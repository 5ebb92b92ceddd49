//! Containers and workspace volumes left by a serving runner that is gone: found by
//! label, removed by the periodic sweep of another runner of the same installation and
//! driver.
//!
//! A container (or a volume: they carry the same labels) is an orphan only when all of this holds ([`verdict`]): it is labelled
//! with the driver, with [`labels::MODE`] `serve` (a local `simple-runner run`
//! labels its containers `run`, and those are never touched), with the sweeping
//! runner's installation ([`labels::INSTALLATION`], see
//! [`installation`](super::installation)), with an owner ([`labels::INSTANCE`]) other
//! than the sweeping runner, and that owner has no record in the liveness bucket
//! ([`liveness`](super::liveness)). If the containers or the bucket cannot be read,
//! the sweep removes nothing that round. A removal that fails is tried again by the
//! next sweep: the container is still listed.
//!
//! The installation matters because the liveness records are those of one NATS: a
//! runner of the same driver name on the same Docker engine but serving another
//! installation (its own NATS) has no record here, yet is alive. Its containers carry
//! another installation's identity and are left alone, and so are the containers
//! without the label, made by versions that did not set it: no sweep removes those.
//!
//! The containers and volumes are listed before the records are read: a runner writes
//! its record before it makes a container or a volume, so one listed has its owner's
//! record written by the time the records are read, unless that record has expired
//! since. A pod's volume is removed after its containers, in the same sweep: no
//! container uses it any more.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use tokio_util::sync::CancellationToken;

use conveyor_sdk::error_text;

use crate::engine::error::EngineError;
use crate::engine::Engine;
use crate::housekeeping::liveness::{live_records, record_key, LivenessError};
use crate::pod::labels;
use crate::settings::Mode;

/// Who sweeps: the containers a sweep may remove are those of this installation and
/// driver, and never this runner's own.
///
/// ```
/// use simple_runner::housekeeping::cleanup::Scope;
///
/// let scope = Scope {
///     installation: "5f0c…".into(),
///     driver: "command-runner".into(),
///     instance: "me".into(),
/// };
/// assert_eq!(scope.driver, "command-runner");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The sweeping runner's installation ([`identify`](super::installation::identify)).
    pub installation: String,
    /// The driver's name.
    pub driver: String,
    /// The sweeping runner's identity ([`crate::Settings::instance`]).
    pub instance: String,
}

/// What a sweep makes of one container.
///
/// ```
/// use std::collections::{HashMap, HashSet};
/// use simple_runner::housekeeping::cleanup::{verdict, Scope, Verdict};
///
/// let labels = HashMap::from([
///     ("conveyor.driver".to_owned(), "command-runner".to_owned()),
///     ("conveyor.mode".to_owned(), "serve".to_owned()),
///     ("conveyor.installation".to_owned(), "prod".to_owned()),
///     ("conveyor.instance".to_owned(), "gone".to_owned()),
/// ]);
/// let scope = Scope { installation: "prod".into(), driver: "command-runner".into(), instance: "me".into() };
/// assert_eq!(verdict(&labels, &scope, &HashSet::new()), Verdict::Orphan);
/// let staging = Scope { installation: "staging".into(), ..scope };
/// assert_eq!(verdict(&labels, &staging, &HashSet::new()), Verdict::OtherInstallation);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Another driver's: not looked at.
    OtherDriver,
    /// Not made by a serving runner (a local `simple-runner run`, or no mode label):
    /// never removed by a sweep.
    NotServed,
    /// A serving runner's container without an installation label, made by a version
    /// that did not set it: kept, as no sweep can say whose it is.
    NoInstallation,
    /// A container of another installation (another NATS), whose runners this sweep
    /// cannot see: kept.
    OtherInstallation,
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

/// The verdict on a container labelled `container_labels`, for a sweep of `scope`
/// while the records `live` (keys of [`live_records`]) exist.
///
/// ```
/// use std::collections::{HashMap, HashSet};
/// use simple_runner::housekeeping::cleanup::{verdict, Scope, Verdict};
/// use simple_runner::housekeeping::liveness::record_key;
///
/// let labels = HashMap::from([
///     ("conveyor.driver".to_owned(), "command-runner".to_owned()),
///     ("conveyor.mode".to_owned(), "serve".to_owned()),
///     ("conveyor.installation".to_owned(), "prod".to_owned()),
///     ("conveyor.instance".to_owned(), "other".to_owned()),
/// ]);
/// let scope = Scope { installation: "prod".into(), driver: "command-runner".into(), instance: "me".into() };
/// let live = HashSet::from([record_key("command-runner", "other")]);
/// assert_eq!(verdict(&labels, &scope, &live), Verdict::OwnerAlive);
/// ```
pub fn verdict(container_labels: &HashMap<String, String>, scope: &Scope, live: &HashSet<String>) -> Verdict {
    let label = |name: &str| container_labels.get(name).map(String::as_str);
    if label(labels::DRIVER) != Some(scope.driver.as_str()) {
        return Verdict::OtherDriver;
    }
    if label(labels::MODE) != Some(Mode::Serve.label()) {
        return Verdict::NotServed;
    }
    match label(labels::INSTALLATION) {
        None | Some("") => return Verdict::NoInstallation,
        Some(installation) if installation != scope.installation => return Verdict::OtherInstallation,
        Some(_) => {}
    }
    match label(labels::INSTANCE) {
        None | Some("") => Verdict::NoOwner,
        Some(owner) if owner == scope.instance => Verdict::Own,
        Some(owner) if live.contains(&record_key(&scope.driver, owner)) => Verdict::OwnerAlive,
        Some(_) => Verdict::Orphan,
    }
}

/// What one sweep did.
///
/// ```no_run
/// # use simple_runner::housekeeping::cleanup::{Scope, SweepError};
/// # async fn demo(engine: simple_runner::Engine, bucket: async_nats::jetstream::kv::Store, scope: Scope) -> Result<(), SweepError> {
/// let sweep = simple_runner::housekeeping::cleanup::sweep(&engine, &bucket, &scope).await?;
/// println!("removed {}, {} to try again", sweep.removed.len(), sweep.failed.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Sweep {
    /// Every container of the driver with its verdict, whatever its installation.
    pub verdicts: Vec<(String, Verdict)>,
    /// The orphans removed.
    pub removed: Vec<String>,
    /// The orphans whose removal failed, tried again by the next sweep.
    pub failed: Vec<String>,
    /// Every volume of the driver (a pod's workspace) with its verdict.
    pub volume_verdicts: Vec<(String, Verdict)>,
    /// The orphan volumes removed.
    pub removed_volumes: Vec<String>,
}

impl Sweep {
    /// How many containers had `verdict`.
    ///
    /// ```
    /// use simple_runner::housekeeping::cleanup::{Sweep, Verdict};
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
/// fn explain(error: &simple_runner::housekeeping::cleanup::SweepError) -> String {
///     conveyor_sdk::error_text(error)
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    /// The containers or volumes could not be listed.
    #[error("cannot list the containers and volumes of the driver; nothing removed this round")]
    Containers(#[source] EngineError),
    /// The liveness records could not be read.
    #[error("cannot tell which runners are alive; no container removed this round")]
    Liveness(#[source] LivenessError),
}

/// One sweep of `scope`: every orphan ([`Verdict::Orphan`]) is removed and counted
/// (`simple_runner_orphans_reaped_total`); `bucket` is the liveness bucket of the
/// scope's installation.
///
/// ```no_run
/// # use simple_runner::housekeeping::liveness::Liveness;
/// # async fn demo(engine: simple_runner::Engine, liveness: Liveness) -> Result<(), Box<dyn std::error::Error>> {
/// use simple_runner::housekeeping::cleanup::{sweep, Scope};
/// use simple_runner::housekeeping::installation::identify;
///
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let scope = Scope {
///     installation: identify(&async_nats::jetstream::new(client)).await?,
///     driver: "command-runner".into(),
///     instance: "me".into(),
/// };
/// let swept = sweep(&engine, liveness.bucket(), &scope).await?;
/// assert!(swept.failed.is_empty());
/// # Ok(())
/// # }
/// ```
pub async fn sweep(engine: &Engine, bucket: &Store, scope: &Scope) -> Result<Sweep, SweepError> {
    // Containers and volumes first, then records: see the module's documentation.
    let containers = engine.containers_of(&scope.driver).await.map_err(SweepError::Containers)?;
    let volumes = engine.volumes_of(&scope.driver).await.map_err(SweepError::Containers)?;
    let live = live_records(bucket).await.map_err(SweepError::Liveness)?;
    let mut sweep = Sweep::default();
    let mut orphans = Vec::new();
    for (id, container_labels) in containers {
        let verdict = verdict(&container_labels, scope, &live);
        sweep.verdicts.push((id.clone(), verdict));
        if verdict == Verdict::Orphan {
            orphans.push((id, container_labels));
        }
    }
    // A pod's first container owns its network namespace, and Podman removes it only
    // after the containers that join it: one that is refused is asked again at the end.
    let mut refused = Vec::new();
    for (id, container_labels) in orphans {
        if engine.remove(&id).await {
            engine.metrics().orphan_reaped();
            let owner = container_labels.get(labels::INSTANCE).map(String::as_str).unwrap_or("");
            let run_id = container_labels.get(labels::RUN_ID).map(String::as_str).unwrap_or("");
            tracing::info!(container = %id, run_id, owner, "removed a container of a runner that is gone");
            sweep.removed.push(id);
        } else {
            refused.push((id, container_labels));
        }
    }
    for (id, container_labels) in refused {
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
    for (name, volume_labels) in volumes {
        let verdict = verdict(&volume_labels, scope, &live);
        sweep.volume_verdicts.push((name.clone(), verdict));
        if verdict != Verdict::Orphan {
            continue;
        }
        let owner = volume_labels.get(labels::INSTANCE).map(String::as_str).unwrap_or("");
        let run_id = volume_labels.get(labels::RUN_ID).map(String::as_str).unwrap_or("");
        if engine.remove_volume(&name).await {
            tracing::info!(volume = %name, run_id, owner, "removed a volume of a runner that is gone");
            sweep.removed_volumes.push(name);
        } else {
            tracing::warn!(volume = %name, run_id, owner, "cannot remove a volume of a runner that is gone; the next sweep tries again");
            sweep.failed.push(name);
        }
    }
    Ok(sweep)
}

/// Sweeps every `interval`, the first time at once, until `stop` is cancelled. A
/// sweep that fails is reported and the next one comes at its time.
///
/// ```no_run
/// # use simple_runner::housekeeping::cleanup::Scope;
/// # async fn demo(engine: simple_runner::Engine, bucket: async_nats::jetstream::kv::Store, scope: Scope) {
/// use std::time::Duration;
/// use conveyor_sdk::CancellationToken;
///
/// let stop = CancellationToken::new();
/// let sweeping = tokio::spawn(simple_runner::housekeeping::cleanup::sweep_every(
///     engine, bucket, scope, Duration::from_secs(30), stop.clone(),
/// ));
/// // … serve …
/// stop.cancel();
/// let _ = sweeping.await;
/// # }
/// ```
pub async fn sweep_every(
    engine: Engine,
    bucket: Store,
    scope: Scope,
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
            swept = sweep(&engine, &bucket, &scope) => swept,
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

    const HERE: &str = "installation-a";

    fn scope() -> Scope {
        Scope { installation: HERE.into(), driver: "d".into(), instance: "me".into() }
    }

    fn labelled(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// A container of driver `driver`, mode `mode`, installation `installation`, owner
    /// `owner`; a `None` is a label left out.
    fn container(
        driver: &str,
        mode: Option<&str>,
        installation: Option<&str>,
        owner: Option<&str>,
    ) -> HashMap<String, String> {
        let mut labels = labelled(&[(labels::DRIVER, driver)]);
        for (name, value) in
            [(labels::MODE, mode), (labels::INSTALLATION, installation), (labels::INSTANCE, owner)]
        {
            if let Some(value) = value {
                labels.insert(name.to_owned(), value.to_owned());
            }
        }
        labels
    }

    #[test]
    fn only_served_containers_of_this_installation_whose_runner_has_no_record_are_orphans() {
        let live = HashSet::from([record_key("d", "alive")]);
        let of = |labels: HashMap<String, String>| verdict(&labels, &scope(), &live);
        let here = Some(HERE);
        assert_eq!(of(container("d", Some("serve"), here, Some("gone"))), Verdict::Orphan);
        assert_eq!(of(container("d", Some("serve"), here, Some("alive"))), Verdict::OwnerAlive);
        assert_eq!(of(container("d", Some("serve"), here, Some("me"))), Verdict::Own);
        assert_eq!(of(container("d", Some("run"), here, Some("gone"))), Verdict::NotServed, "a local run");
        assert_eq!(of(container("d", Some("run"), None, Some("gone"))), Verdict::NotServed, "a local run");
        assert_eq!(
            of(container("d", None, here, Some("gone"))),
            Verdict::NotServed,
            "made before the mode label"
        );
        assert_eq!(of(container("d", Some("SERVE"), here, Some("gone"))), Verdict::NotServed);
        assert_eq!(of(container("d", Some("serve"), here, None)), Verdict::NoOwner);
        assert_eq!(of(container("d", Some("serve"), here, Some(""))), Verdict::NoOwner);
        assert_eq!(of(container("other", Some("serve"), here, Some("gone"))), Verdict::OtherDriver);
    }

    #[test]
    fn a_container_of_another_installation_is_never_an_orphan_whoever_owns_it() {
        // Its owner has no record here: records are those of this installation's NATS.
        let live = HashSet::from([record_key("d", "alive")]);
        let of = |labels: HashMap<String, String>| verdict(&labels, &scope(), &live);
        for owner in [Some("gone"), Some("alive"), Some("me"), None] {
            let other = container("d", Some("serve"), Some("installation-b"), owner);
            assert_eq!(of(other), Verdict::OtherInstallation, "owner {owner:?}");
        }
        let case = container("d", Some("serve"), Some("INSTALLATION-A"), Some("gone"));
        assert_eq!(of(case), Verdict::OtherInstallation, "identities are compared exactly");
    }

    #[test]
    fn a_served_container_without_an_installation_label_is_left_alone() {
        let live = HashSet::new();
        let of = |labels: HashMap<String, String>| verdict(&labels, &scope(), &live);
        assert_eq!(
            of(container("d", Some("serve"), None, Some("gone"))),
            Verdict::NoInstallation,
            "an older version's"
        );
        assert_eq!(of(container("d", Some("serve"), Some(""), Some("gone"))), Verdict::NoInstallation);
    }

    #[test]
    fn a_record_of_another_driver_does_not_keep_a_container_alive() {
        let live = HashSet::from([record_key("other", "x")]);
        let orphan = container("d", Some("serve"), Some(HERE), Some("x"));
        assert_eq!(verdict(&orphan, &scope(), &live), Verdict::Orphan);
    }
}
