//! The pod down: run containers are removed on every path: in the background after a
//! result, so that it is not delayed, at once when a run is cancelled, and when a run
//! is abandoned half-way.

use std::time::Duration;

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
    pub(crate) fn guard(&self, id: String) -> ContainerGuard {
        ContainerGuard { removals: self.clone(), id: Some(id) }
    }

    /// Waits until every removal begun so far has ended.
    pub(crate) async fn finish(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}

/// A run container, removed in the background when dropped, whether after its run
/// or when its run is abandoned half-way: once it has exited by itself (its session
/// gone, its shell ends), or after [`EXIT_WAIT`].
pub(crate) struct ContainerGuard {
    removals: Removals,
    id: Option<String>,
}

impl ContainerGuard {
    /// Stops and removes the container now; if the engine does not remove it, the
    /// background tries again.
    pub(crate) async fn remove_now(mut self, grace: Duration) {
        if let Some(id) = &self.id {
            let engine = &self.removals.engine;
            engine.stop(id, grace).await;
            if engine.remove(id).await {
                self.id = None;
            }
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let (Some(id), Ok(handle)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            let engine = self.removals.engine.clone();
            // Its session goes with the run, so its shell reads the end of its input
            // and the container exits by itself. The removal's diagnostics belong to
            // the run that had the container.
            self.removals.tasks.spawn_on(
                async move {
                    engine.remove_once_exited(&id, EXIT_WAIT).await;
                }
                .instrument(tracing::Span::current()),
                &handle,
            );
        }
    }
}
