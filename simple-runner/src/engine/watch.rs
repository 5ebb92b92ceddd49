//! A watch on a container a run uses: how it ended, learnt from the engine's wait
//! endpoint; only a container found killed is looked at again, for half a second, to
//! tell a removal (Podman kills before it removes) from a kill.

use std::time::Duration;

use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::WaitContainerOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::ContainerEnd;

/// How long a watch waits before it asks the engine again, when its wait on a
/// container that still runs broke off.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A watch on a container a run uses: it learns, from the engine's wait endpoint, when
/// the container stops or goes, whoever did it, and how. The watch ends when this is
/// dropped.
pub(crate) struct ContainerWatch {
    end: watch::Receiver<Option<ContainerEnd>>,
    watching: Option<JoinHandle<()>>,
}

impl ContainerWatch {
    /// Watches `container` from now on.
    pub(crate) fn start(docker: Docker, container: String) -> Self {
        let (sender, end) = watch::channel(None);
        let watching = tokio::spawn(watch_container(docker, container, sender));
        Self { end, watching: Some(watching) }
    }

    /// A watch that learns how its container ended from `end`.
    #[cfg(test)]
    pub(crate) fn of(end: watch::Receiver<Option<ContainerEnd>>) -> Self {
        Self { end, watching: None }
    }

    /// How the container ended, once it has; at once if it had already. Cancel-safe.
    pub(crate) async fn ended(&mut self) -> ContainerEnd {
        if let Ok(end) = self.end.wait_for(Option::is_some).await {
            if let Some(end) = end.as_ref() {
                return end.clone();
            }
        }
        // The watch itself ended without a word: nothing more will be learnt.
        std::future::pending().await
    }

    /// How the container ended, if it did within `within`.
    pub(crate) async fn ended_within(&mut self, within: Duration) -> Option<ContainerEnd> {
        tokio::time::timeout(within, self.ended()).await.ok()
    }
}

impl Drop for ContainerWatch {
    fn drop(&mut self) {
        if let Some(watching) = &self.watching {
            watching.abort();
        }
    }
}

/// Waits until `container` is no longer running, then tells `end` how it ended.
async fn watch_container(docker: Docker, container: String, end: watch::Sender<Option<ContainerEnd>>) {
    loop {
        let waited = docker.wait_container(&container, None::<WaitContainerOptions>).next().await;
        let broke_off = match waited {
            // It exited; the engine reports an exit code other than 0 as an error.
            Some(Ok(_)) | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => None,
            Some(Err(error)) => Some(error.to_string()),
            None => Some("the engine closed the wait".to_owned()),
        };
        let inspected = docker.inspect_container(&container, None).await;
        let state = match inspected {
            Ok(inspected) => inspected.state.unwrap_or_default(),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                end.send_replace(Some(ContainerEnd::Removed));
                return;
            }
            Err(error) => {
                let reason = broke_off.unwrap_or_else(|| error.to_string());
                end.send_replace(Some(ContainerEnd::EngineLost { reason }));
                return;
            }
        };
        if state.status == Some(ContainerStateStatusEnum::REMOVING) {
            end.send_replace(Some(ContainerEnd::Removed));
            return;
        }
        if state.running == Some(true) {
            // The wait broke off while the container runs on: wait again.
            tracing::debug!(container, reason = ?broke_off, "the wait on a run container broke off; waiting again");
            tokio::time::sleep(WATCH_RETRY).await;
            continue;
        }
        let exited = ContainerEnd::Exited {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
        };
        let killed = matches!(exited, ContainerEnd::Exited { exit_code: 129.., oom_killed: false });
        if killed && removed_soon(&docker, &container).await {
            end.send_replace(Some(ContainerEnd::Removed));
            return;
        }
        end.send_replace(Some(exited));
        return;
    }
}

/// How long a killed container is watched for its removal: Podman's `rm -f` kills the
/// container, then removes it, with no `removing` state in between.
const REMOVAL_WATCH: Duration = Duration::from_millis(500);

/// Whether `container`, just found killed, is gone or being removed within
/// [`REMOVAL_WATCH`]: then it was removed from outside, not only killed.
async fn removed_soon(docker: &Docker, container: &str) -> bool {
    let deadline = tokio::time::Instant::now() + REMOVAL_WATCH;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match docker.inspect_container(container, None).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return true,
            Ok(inspected) => {
                let status = inspected.state.and_then(|state| state.status);
                if status == Some(ContainerStateStatusEnum::REMOVING) {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}
