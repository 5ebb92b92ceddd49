//! Volumes: a pod's workspace, made for its run and removed after it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};

use super::error::EngineError;
use super::{docker_error, Engine};
use crate::pod::labels;

/// How often a volume still in use by a container being removed is asked to go again.
const IN_USE_TRIES: u32 = 10;

/// How long the runner waits between those tries.
const IN_USE_RETRY: Duration = Duration::from_millis(200);

impl Engine {
    /// Creates the volume `name` labelled `labels`.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine) -> Result<(), simple_runner::EngineError> {
    /// engine.create_volume("conveyor-demo-workspace", Default::default()).await?;
    /// engine.remove_volume("conveyor-demo-workspace").await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let request =
            VolumeCreateRequest { name: Some(name.to_owned()), labels: Some(labels), ..Default::default() };
        self.docker()
            .create_volume(request)
            .await
            .map_err(docker_error(format!("cannot create the volume {name}")))?;
        Ok(())
    }

    /// Removes a volume; returns whether it is gone (one already gone is fine). A volume
    /// still in use, by a container whose removal has not finished, is asked again for
    /// up to 2 s.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine) {
    /// if !engine.remove_volume("conveyor-demo-workspace").await {
    ///     eprintln!("the volume is still there");
    /// }
    /// # }
    /// ```
    pub async fn remove_volume(&self, name: &str) -> bool {
        let options = RemoveVolumeOptions { force: true };
        for _ in 1..IN_USE_TRIES {
            match self.docker().remove_volume(name, Some(options.clone())).await {
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    return true
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                    tokio::time::sleep(IN_USE_RETRY).await;
                }
                Err(error) => {
                    tracing::warn!(%error, volume = name, "removing the volume failed");
                    return false;
                }
            }
        }
        match self.docker().remove_volume(name, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => true,
            Err(error) => {
                tracing::warn!(%error, volume = name, "removing the volume failed: it is still in use");
                false
            }
        }
    }

    /// The volumes of driver `driver`: name and labels.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine) -> Result<(), simple_runner::EngineError> {
    /// for (name, labels) in engine.volumes_of("command-runner").await? {
    ///     println!("{name}: run {:?}", labels.get(simple_runner::pod::labels::RUN_ID));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn volumes_of(
        &self,
        driver: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{}={driver}", labels::DRIVER)])]);
        let listed = self
            .docker()
            .list_volumes(Some(ListVolumesOptions { filters: Some(filters) }))
            .await
            .map_err(docker_error("cannot list volumes"))?;
        Ok(listed.volumes.unwrap_or_default().into_iter().map(|v| (v.name, v.labels)).collect())
    }
}
