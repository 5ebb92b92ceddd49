//! The pod down: a run's containers and its workspace volume are removed on every
//! path: in the background after a result, so that it is not delayed, at once when a
//! run is cancelled, and when a run is abandoned half-way.

use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::engine::Engine;

/// How long a container whose session has ended has to exit by itself before it is
/// removed anyway.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The background removals of one runner.
#[derive(Clone)]
pub(crate) struct Removals {
    engine: Engine,
    tasks: TaskTracker,
}

impl Removals {
    pub(crate) fn new(engine: Engine) -> Self {
        Self { engine, tasks: TaskTracker::new() }
    }

    /// Owns container `id` from now on: it is removed when the guard goes.
    pub(crate) fn guard(&self, id: String) -> PodGuard {
        PodGuard { removals: self.clone(), shells: vec![id], services: Vec::new(), volume: None }
    }

    /// A guard that owns nothing yet: a pod's, given its containers and volume as they
    /// are made.
    pub(crate) fn pod(&self) -> PodGuard {
        PodGuard { removals: self.clone(), shells: Vec::new(), services: Vec::new(), volume: None }
    }

    /// Waits until every removal begun so far has ended.
    pub(crate) async fn finish(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}

/// A run's containers and workspace volume, removed in the background when dropped,
/// whether after its run or when its run is abandoned half-way: a container whose
/// shell ends with its session once it has exited by itself (or after [`EXIT_WAIT`]),
/// a service's at once, then the volume.
pub(crate) struct PodGuard {
    removals: Removals,
    /// Containers kept alive by the session of a step: they exit when it goes. The
    /// first owns the pod's network namespace.
    shells: Vec<String>,
    /// Containers nothing ends but their removal: the services'.
    services: Vec<String>,
    /// The workspace volume, removed after the containers.
    volume: Option<String>,
}

impl PodGuard {
    /// Owns a step container too.
    pub(crate) fn add_shell(&mut self, id: String) {
        self.shells.push(id);
    }

    /// Owns a service's container too.
    pub(crate) fn add_service(&mut self, id: String) {
        self.services.push(id);
    }

    /// Owns the workspace volume.
    pub(crate) fn set_volume(&mut self, name: String) {
        self.volume = Some(name);
    }

    /// Stops and removes the containers and then the volume now; what the engine does
    /// not remove, the background tries again.
    pub(crate) async fn remove_now(mut self, grace: Duration) {
        let engine = self.removals.engine.clone();
        let stop_and_remove = |id: String| {
            let engine = engine.clone();
            async move {
                engine.stop(&id, grace).await;
                (engine.remove(&id).await, id)
            }
        };
        // The owner of the network namespace last: Podman keeps it while others join it.
        let owner = (!self.shells.is_empty()).then(|| self.shells.remove(0));
        let joined: Vec<String> = self.services.drain(..).chain(self.shells.drain(..)).collect();
        let mut removed = join_all(joined.into_iter().map(stop_and_remove)).await;
        if let Some(owner) = owner {
            removed.push(stop_and_remove(owner).await);
        }
        for (gone, id) in removed {
            if !gone {
                self.services.push(id);
            }
        }
        if self.services.is_empty() {
            if let Some(volume) = self.volume.take() {
                if !engine.remove_volume(&volume).await {
                    self.volume = Some(volume);
                }
            }
        }
    }
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        if self.shells.is_empty() && self.services.is_empty() && self.volume.is_none() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let engine = self.removals.engine.clone();
        let (shells, services, volume) =
            (std::mem::take(&mut self.shells), std::mem::take(&mut self.services), self.volume.take());
        // The sessions go with the run, so their shells read the end of their input and
        // their containers exit by themselves. The removal's diagnostics belong to the
        // run that had the pod.
        self.removals.tasks.spawn_on(
            async move {
                // The owner of the network namespace (the first) last: Podman keeps it
                // while others join it.
                let (owner, joined) = match shells.split_first() {
                    Some((owner, joined)) => (Some(owner), joined),
                    None => (None, &[][..]),
                };
                let exited = joined.iter().map(|id| engine.remove_once_exited(id, EXIT_WAIT));
                let ended = services.iter().map(|id| engine.remove(id));
                let (exited, ended) = futures_util::join!(join_all(exited), join_all(ended));
                let mut all_gone = exited.into_iter().chain(ended).all(|gone| gone);
                if let Some(owner) = owner {
                    all_gone &= engine.remove_once_exited(owner, EXIT_WAIT).await;
                }
                if let Some(volume) = volume {
                    if all_gone {
                        engine.remove_volume(&volume).await;
                    } else {
                        tracing::warn!(
                            volume,
                            "a container of the run is still there: its volume is left to the sweep"
                        );
                    }
                }
            }
            .instrument(tracing::Span::current()),
            &handle,
        );
    }
}
