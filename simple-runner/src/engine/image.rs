//! A run's image: made present on the engine as the pull policy says, with the pull's
//! progress told to whoever watches it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use conveyor_sdk::LogHandle;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::engine::error::EngineError;
use crate::engine::{docker_error, Engine};
use crate::spec::PullPolicy;

/// How often at most a layer's download or extraction progress becomes a line.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// What a pull needs besides the image: a platform, and the registry's credentials.
///
/// ```
/// use simple_runner::engine::image::PullOptions;
///
/// let options = PullOptions { platform: Some("linux/amd64".into()), ..PullOptions::default() };
/// assert!(options.credentials.is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to pull, e.g. `linux/arm64` (default: the engine's).
    pub platform: Option<String>,
    /// The credentials of the image's registry (default: none, an anonymous pull).
    pub credentials: Option<DockerCredentials>,
}

/// What a pull tells whoever watches it.
///
/// ```
/// use simple_runner::engine::image::PullUpdate;
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
/// use simple_runner::engine::image::{PullProgress, PullUpdate};
///
/// let (log, _lines) = conveyor_sdk::LogHandle::memory();
/// let to_the_log = PullProgress::Log(&log);
///
/// let seen = Mutex::new(Vec::new());
/// let record = |update: PullUpdate| seen.lock().unwrap().push(update);
/// let to_a_function = PullProgress::Callback(&record);
/// ```
#[derive(Clone, Copy)]
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
    /// Makes sure the engine has `image`, pulling it as `policy` says with `options`;
    /// returns the id of the image present (`sha256:…`), which changes when the tag is
    /// moved to another image. `progress` hears [`PullUpdate::Finished`] last, whether
    /// a pull was needed or not.
    ///
    /// ```no_run
    /// use simple_runner::engine::image::{PullOptions, PullProgress};
    /// use simple_runner::PullPolicy;
    ///
    /// # async fn demo(engine: simple_runner::Engine) -> Result<(), simple_runner::EngineError> {
    /// let log = conveyor_sdk::LogHandle::stdout();
    /// let options = PullOptions::default();
    /// let id = engine.ensure_image("alpine:3.20", PullPolicy::IfNotPresent, &options, PullProgress::Log(&log)).await?;
    /// assert!(id.starts_with("sha256:"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        options: &PullOptions,
        progress: PullProgress<'_>,
    ) -> Result<String, EngineError> {
        let ensured = self.ensure_image_with(image, policy, options, &progress).await;
        progress.update(PullUpdate::Finished);
        ensured
    }

    async fn ensure_image_with(
        &self,
        image: &str,
        policy: PullPolicy,
        options: &PullOptions,
        progress: &PullProgress<'_>,
    ) -> Result<String, EngineError> {
        let present = match self.docker().inspect_image(image).await {
            // An image of another platform is not the one asked for.
            Ok(found)
                if options.platform.as_deref().is_none_or(|wanted| {
                    is_platform(
                        wanted,
                        found.os.as_deref(),
                        found.architecture.as_deref(),
                        found.variant.as_deref(),
                    )
                }) =>
            {
                Some(found.id.unwrap_or_default())
            }
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => None,
            Err(e) => return Err(docker_error(format!("cannot inspect image {image}"))(e)),
        };
        match (policy, present) {
            (PullPolicy::Never, None) => Err(EngineError::ImageMissing(match &options.platform {
                Some(platform) => format!("{image} for {platform}"),
                None => image.to_owned(),
            })),
            (PullPolicy::Never, Some(id)) | (PullPolicy::IfNotPresent, Some(id)) => Ok(id),
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, None) => {
                let pulled = self.pull(image, options, progress).await;
                self.metrics().pull_finished(pulled.is_ok());
                pulled?;
                let found = self
                    .docker()
                    .inspect_image(image)
                    .await
                    .map_err(docker_error(format!("cannot inspect image {image} after its pull")))?;
                Ok(found.id.unwrap_or_default())
            }
        }
    }

    async fn pull(
        &self,
        image: &str,
        options: &PullOptions,
        progress: &PullProgress<'_>,
    ) -> Result<(), EngineError> {
        match &options.platform {
            Some(platform) => progress.line(format!("pulling image {image} for {platform}")).await,
            None => progress.line(format!("pulling image {image}")).await,
        }
        let request = CreateImageOptions {
            from_image: Some(image.to_owned()),
            platform: options.platform.clone().unwrap_or_default(),
            ..Default::default()
        };
        let mut stream = self.docker().create_image(Some(request), None, options.credentials.clone());
        let mut layers = LayerProgress::new(PROGRESS_INTERVAL);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|source| EngineError::Pull { image: image.to_owned(), source })?;
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::PullRefused { image: image.to_owned(), message });
            }
            let Some(status) = info.status else { continue };
            let layer = info.id.unwrap_or_default();
            let amounts = info.progress_detail.and_then(|d| Some((d.current?, d.total?)));
            let (changed, line) = layers.update(&layer, &status, amounts, Instant::now());
            if changed {
                progress.update(PullUpdate::Tick);
            }
            if let Some(line) = line {
                progress.line(line).await;
            }
        }
        Ok(())
    }
}

/// Whether an image of `os`, `architecture` and `variant` is of platform `wanted`
/// (`os/architecture[/variant]`).
fn is_platform(wanted: &str, os: Option<&str>, architecture: Option<&str>, variant: Option<&str>) -> bool {
    let mut parts = wanted.split('/');
    let (want_os, want_arch, want_variant) = (parts.next(), parts.next(), parts.next());
    want_os == os && want_arch == architecture && want_variant.is_none_or(|v| Some(v) == variant)
}

/// Which of a pull's status updates become lines: every change of a layer's stage,
/// and its download or extraction progress at most once per interval.
struct LayerProgress {
    interval: Duration,
    /// Per layer: its last status, and when its progress was last shown.
    layers: HashMap<String, (String, Option<Instant>)>,
}

impl LayerProgress {
    fn new(interval: Duration) -> Self {
        Self { interval, layers: HashMap::new() }
    }

    /// Takes one update of `layer` at `now`: whether it changed anything, and the
    /// line to show, if any.
    fn update(
        &mut self,
        layer: &str,
        status: &str,
        amounts: Option<(i64, i64)>,
        now: Instant,
    ) -> (bool, Option<String>) {
        let entry = self.layers.entry(layer.to_owned()).or_insert_with(|| (String::new(), None));
        let changed = entry.0 != status;
        let current_stage = stage(status);
        let in_progress = matches!(current_stage, "Downloading" | "Extracting");
        let stage_changed = current_stage != stage(&entry.0);
        entry.0 = status.to_owned();
        if status == "Waiting" || !changed {
            return (changed, None);
        }
        let text = |rest: String| if layer.is_empty() { rest } else { format!("{layer}: {rest}") };
        if !in_progress {
            return (true, Some(text(status.to_owned())));
        }
        let due = stage_changed || entry.1.is_none_or(|shown| now.duration_since(shown) >= self.interval);
        if !due {
            return (true, None);
        }
        entry.1 = Some(now);
        let line = match amounts {
            Some((current, total)) if total > 0 => format!(
                "{current_stage} {} of {} ({}%)",
                megabytes(current),
                megabytes(total),
                current.clamp(0, total) * 100 / total
            ),
            _ => current_stage.to_owned(),
        };
        (true, Some(text(line)))
    }
}

/// The first word of a status: `Downloading`, `Extracting`, `Pull complete`…
fn stage(status: &str) -> &str {
    match status.split_once(' ') {
        Some((first @ ("Downloading" | "Extracting"), _)) => first,
        _ => status,
    }
}

fn megabytes(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_of_a_platform_by_its_os_architecture_and_variant() {
        assert!(is_platform("linux/amd64", Some("linux"), Some("amd64"), None));
        assert!(is_platform("linux/arm64", Some("linux"), Some("arm64"), Some("v8")));
        assert!(is_platform("linux/arm64/v8", Some("linux"), Some("arm64"), Some("v8")));
        assert!(!is_platform("linux/arm64", Some("linux"), Some("amd64"), None));
        assert!(!is_platform("linux/arm/v7", Some("linux"), Some("arm"), Some("v6")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_layers_progress_is_shown_at_most_once_per_interval_and_every_stage_change() {
        let mut layers = LayerProgress::new(Duration::from_secs(2));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let dl = "Downloading [=>   ]";
        assert_eq!(
            layers.update("a1", "Pulling fs layer", None, at(0)).1.as_deref(),
            Some("a1: Pulling fs layer")
        );
        assert_eq!(layers.update("a1", "Waiting", None, at(0)).1, None);
        let first = layers.update("a1", dl, Some((1_000_000, 4_000_000)), at(10)).1;
        assert_eq!(first.as_deref(), Some("a1: Downloading 1.0 MB of 4.0 MB (25%)"));
        assert_eq!(
            layers.update("a1", "Downloading [==>  ]", Some((2_000_000, 4_000_000)), at(1000)).1,
            None
        );
        assert_eq!(
            layers.update("b2", "Downloading [=>  ]", Some((5, 10)), at(1000)).1.as_deref(),
            Some("b2: Downloading 0.0 MB of 0.0 MB (50%)")
        );
        let later = layers.update("a1", "Downloading [===> ]", Some((3_000_000, 4_000_000)), at(2100)).1;
        assert_eq!(later.as_deref(), Some("a1: Downloading 3.0 MB of 4.0 MB (75%)"));
        let extracting = layers.update("a1", "Extracting [=> ]", Some((1, 4)), at(2200)).1;
        assert_eq!(
            extracting.as_deref(),
            Some("a1: Extracting 0.0 MB of 0.0 MB (25%)"),
            "a new stage shows at once"
        );
        assert_eq!(
            layers.update("a1", "Pull complete", None, at(2300)).1.as_deref(),
            Some("a1: Pull complete")
        );
        let (changed, line) = layers.update("a1", "Pull complete", None, at(2400));
        assert!(!changed && line.is_none(), "a repeated status is nothing new");
    }
}
