//! A run's image: made present on the engine as the pull policy says, with the pull's
//! progress told to whoever watches it.

use std::collections::HashMap;

use bollard::query_parameters::CreateImageOptions;
use conveyor_sdk::LogHandle;
use futures_util::StreamExt;

use crate::docker::{docker_error, Engine};
use crate::error::EngineError;
use crate::spec::PullPolicy;

/// What a pull tells whoever watches it.
///
/// ```
/// use simple_runner::image::PullUpdate;
///
/// fn describe(update: &PullUpdate) -> &str {
///     match update {
///         PullUpdate::Line(text) => text,
///         PullUpdate::Tick => "…",
///         PullUpdate::Finished => "done",
///         _ => "",
///     }
/// }
/// assert_eq!(describe(&PullUpdate::Line("pulling image alpine".into())), "pulling image alpine");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullUpdate {
    /// A line worth reading: the pull starts, or a layer reaches a new stage.
    Line(String),
    /// A layer's status changed, shown or not: the pull is alive.
    Tick,
    /// The image is there, or will not be: nothing more comes.
    Finished,
}

/// Where a pull's progress goes.
///
/// ```
/// use std::sync::Mutex;
/// use simple_runner::image::{PullProgress, PullUpdate};
///
/// let (log, _lines) = conveyor_sdk::LogHandle::memory();
/// let to_the_log = PullProgress::Log(&log);
///
/// let seen = Mutex::new(Vec::new());
/// let record = |update: PullUpdate| seen.lock().unwrap().push(update);
/// let to_a_function = PullProgress::Callback(&record);
/// ```
pub enum PullProgress<'a> {
    /// Condensed lines in the run's log.
    Log(&'a LogHandle),
    /// Every update to a function, e.g. one that draws a spinner on a terminal.
    Callback(&'a (dyn Fn(PullUpdate) + Send + Sync)),
}

impl PullProgress<'_> {
    async fn line(&self, text: String) {
        match self {
            PullProgress::Log(log) => log.log(text).await,
            PullProgress::Callback(callback) => callback(PullUpdate::Line(text)),
        }
    }

    fn update(&self, update: PullUpdate) {
        if let PullProgress::Callback(callback) = self {
            callback(update);
        }
    }
}

impl Engine {
    /// Makes sure the engine has `image`, pulling it as `policy` says; `progress` hears
    /// [`PullUpdate::Finished`] last, whether a pull was needed or not.
    ///
    /// ```no_run
    /// use simple_runner::image::PullProgress;
    /// use simple_runner::PullPolicy;
    ///
    /// # async fn demo(engine: simple_runner::Engine) -> Result<(), simple_runner::EngineError> {
    /// let log = conveyor_sdk::LogHandle::stdout();
    /// engine.ensure_image("alpine:3.20", PullPolicy::IfNotPresent, PullProgress::Log(&log)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: PullProgress<'_>,
    ) -> Result<(), EngineError> {
        let ensured = self.ensure_image_with(image, policy, &progress).await;
        progress.update(PullUpdate::Finished);
        ensured
    }

    async fn ensure_image_with(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: &PullProgress<'_>,
    ) -> Result<(), EngineError> {
        let present = match self.docker().inspect_image(image).await {
            Ok(_) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
            Err(e) => return Err(docker_error(format!("cannot inspect image {image}"))(e)),
        };
        match (policy, present) {
            (PullPolicy::Never, false) => Err(EngineError::ImageMissing(image.to_owned())),
            (PullPolicy::Never, true) | (PullPolicy::IfNotPresent, true) => Ok(()),
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, false) => {
                let pulled = self.pull(image, progress).await;
                self.metrics().pull_finished(pulled.is_ok());
                pulled
            }
        }
    }

    async fn pull(&self, image: &str, progress: &PullProgress<'_>) -> Result<(), EngineError> {
        progress.line(format!("pulling image {image}")).await;
        let options = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let mut stream = self.docker().create_image(Some(options), None, None);
        // Only changes of a layer's status, not every progress tick.
        let mut last_status: HashMap<String, String> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|source| EngineError::Pull { image: image.to_owned(), source })?;
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::PullRefused { image: image.to_owned(), message });
            }
            let Some(status) = info.status else { continue };
            let key = info.id.clone().unwrap_or_default();
            if last_status.get(&key) == Some(&status) {
                continue;
            }
            last_status.insert(key.clone(), status.clone());
            progress.update(PullUpdate::Tick);
            if status.starts_with("Downloading") || status.starts_with("Extracting") || status == "Waiting" {
                continue;
            }
            let line = if key.is_empty() { status } else { format!("{key}: {status}") };
            progress.line(line).await;
        }
        Ok(())
    }
}
