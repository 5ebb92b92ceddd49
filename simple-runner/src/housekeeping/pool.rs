//! Warm containers: started, never used run containers kept ready per image and
//! settings ([`WarmSettings`]), so that a run starts without waiting for a container
//! to be created and started.
//!
//! A warm container is made as a run's would be, with nothing of a run in it: no
//! environment (a step gets the run's environment and secrets through the step, see
//! `steps/mod.rs`), and only its owner's labels: `conveyor.driver`, `conveyor.instance`,
//! `conveyor.mode` (`serve`: only serving runners keep warm containers),
//! `conveyor.warm`, and `conveyor.installation` (from its settings, as every
//! container). The sweep of another replica of the installation thus removes it once
//! its owner's liveness record is gone ([`cleanup`](super::cleanup)). It carries the
//! run's limits from its creation, so an idle one counts against the host as a run
//! would.
//!
//! A run takes one only if it is still running and made of the image the run's tag
//! names now; it is never given back: its run's container guard removes it after the
//! run, whatever the outcome, and a new one is started in the background to take its
//! place. Warm containers are removed when the pool closes (at shutdown), when their
//! image's tag has moved to another image, when their image and settings have not
//! been run for [`WarmSettings::idle`], and when more than
//! [`WarmSettings::max_images`] are warm (the least recently run first).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Engine;
use crate::pod::down::{PodGuard, Removals};
use crate::pod::labels;
use crate::settings::{ContainerSettings, Mode, Settings, WarmSettings};
use crate::steps::session::Session;

/// What a warm container must match to serve a run: what its creation fixed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    image: String,
    workdir: Option<String>,
    network: String,
    memory_bytes: Option<i64>,
    nano_cpus: Option<i64>,
    pids_limit: i64,
    user: Option<String>,
    read_only: bool,
    platform: Option<String>,
}

impl PoolKey {
    /// The key of a run of `image` in `workdir` with the container settings `run`.
    pub(crate) fn new(image: &str, workdir: Option<&str>, run: &ContainerSettings) -> Self {
        Self {
            image: image.to_owned(),
            workdir: workdir.map(str::to_owned),
            network: run.network.clone(),
            memory_bytes: run.memory_bytes,
            nano_cpus: run.cpus.map(|c| (c * 1e9) as i64),
            pids_limit: run.pids_limit,
            user: run.user.clone(),
            read_only: run.read_only,
            platform: run.platform.clone(),
        }
    }
}

/// A warm container taken by a run.
pub(crate) struct Warm {
    /// Its id.
    pub(crate) id: String,
    /// It, removed when this goes.
    pub(crate) guard: PodGuard,
    /// Its shell, attached.
    pub(crate) session: Session,
}

/// The ready containers of one key.
struct Entry {
    image: String,
    /// The image the containers are made of; a run whose tag names another drains them.
    image_id: String,
    settings: ContainerSettings,
    workdir: Option<String>,
    ready: VecDeque<Warm>,
    /// Containers being made.
    filling: usize,
    last_used: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<PoolKey, Entry>,
    closed: bool,
    expiring: bool,
}

impl State {
    fn ready(&self) -> usize {
        self.entries.values().map(|e| e.ready.len()).sum()
    }
}

struct Inner {
    engine: Engine,
    removals: Removals,
    warm: WarmSettings,
    labels: HashMap<String, String>,
    state: Mutex<State>,
    tasks: TaskTracker,
    stop: CancellationToken,
    ready: watch::Sender<usize>,
}

/// The warm containers of one runner; cheap to clone, clones share them. Off (every
/// run starts cold) unless the settings ask for warm containers and the runner serves.
#[derive(Clone)]
pub(crate) struct WarmPool {
    inner: Option<Arc<Inner>>,
    ready: watch::Receiver<usize>,
}

impl WarmPool {
    pub(crate) fn new(engine: Engine, removals: Removals, settings: &Settings) -> Self {
        let (sender, ready) = watch::channel(0);
        let inner = keeps_warm(settings).then(|| {
            Arc::new(Inner {
                engine,
                removals,
                warm: settings.warm.clone(),
                labels: warm_labels(settings),
                state: Mutex::new(State::default()),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
                ready: sender,
            })
        });
        Self { inner, ready }
    }

    /// How many warm containers are ready, as it changes.
    pub(crate) fn ready(&self) -> watch::Receiver<usize> {
        self.ready.clone()
    }

    /// A warm container for a run of `key` whose image is `image_id` now, if one is
    /// ready and still running; the containers of another image are removed.
    pub(crate) async fn take(&self, key: &PoolKey, image_id: &str) -> Option<Warm> {
        let inner = self.inner.as_ref()?;
        loop {
            let (candidate, stale) = {
                let mut state = inner.lock();
                let entry = state.entries.get_mut(key)?;
                entry.last_used = Instant::now();
                let stale = entry.renew(image_id);
                let candidate = entry.ready.pop_front();
                inner.publish(&state);
                (candidate, stale)
            };
            drop(stale);
            let warm = candidate?;
            if inner.usable(&warm.id, image_id).await {
                return Some(warm);
            }
            tracing::info!(container = %warm.id, "a warm container is no longer usable: removing it");
        }
    }

    /// Tops up the warm containers of `key` (image `image`, which is `image_id` now)
    /// in the background, after a run of it took one or started cold.
    pub(crate) fn refill(
        &self,
        key: &PoolKey,
        image: &str,
        image_id: &str,
        settings: &ContainerSettings,
        workdir: Option<&str>,
    ) {
        let Some(inner) = &self.inner else { return };
        let (need, dropped) = {
            let mut state = inner.lock();
            if state.closed {
                return;
            }
            if !std::mem::replace(&mut state.expiring, true) {
                inner.tasks.spawn(expire_every(inner.clone()));
            }
            let entry = state.entries.entry(key.clone()).or_insert_with(|| Entry {
                image: image.to_owned(),
                image_id: image_id.to_owned(),
                settings: settings.clone(),
                workdir: workdir.map(str::to_owned),
                ready: VecDeque::new(),
                filling: 0,
                last_used: Instant::now(),
            });
            entry.last_used = Instant::now();
            let mut dropped = entry.renew(image_id);
            let need = inner.warm.per_image.saturating_sub(entry.ready.len() + entry.filling);
            entry.filling += need;
            for evicted in least_recently_used(&state.entries, inner.warm.max_images.max(1)) {
                if let Some(entry) = state.entries.remove(&evicted) {
                    dropped.extend(entry.ready);
                }
            }
            inner.publish(&state);
            (need, dropped)
        };
        drop(dropped);
        for _ in 0..need {
            inner.tasks.spawn(fill(inner.clone(), key.clone()));
        }
    }

    /// Removes every warm container and waits until the containers being made are
    /// made and removed; from then on every run starts cold.
    pub(crate) async fn close(&self) {
        let Some(inner) = &self.inner else { return };
        let dropped: Vec<Entry> = {
            let mut state = inner.lock();
            state.closed = true;
            let dropped = state.entries.drain().map(|(_, entry)| entry).collect();
            inner.publish(&state);
            dropped
        };
        drop(dropped);
        inner.stop.cancel();
        inner.tasks.close();
        inner.tasks.wait().await;
    }
}

/// Whether a runner with `settings` keeps warm containers: it asks for some, and it
/// serves, so that its containers are reaped if it dies.
fn keeps_warm(settings: &Settings) -> bool {
    settings.warm.per_image > 0 && settings.mode == Mode::Serve
}

/// The labels of a warm container: its owner's, none of a run.
fn warm_labels(settings: &Settings) -> HashMap<String, String> {
    HashMap::from([
        (labels::DRIVER.to_owned(), settings.name.clone()),
        (labels::INSTANCE.to_owned(), settings.instance.clone()),
        (labels::MODE.to_owned(), settings.mode.label().to_owned()),
        (labels::WARM.to_owned(), "true".to_owned()),
    ])
}

impl Entry {
    /// Takes note that the image's tag names `image_id` now: the ready containers of
    /// another image are returned, to be removed.
    fn renew(&mut self, image_id: &str) -> Vec<Warm> {
        if self.image_id == image_id {
            return Vec::new();
        }
        self.image_id = image_id.to_owned();
        self.ready.drain(..).collect()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere cannot
        // leave it half-changed.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, state: &State) {
        let ready = state.ready();
        self.ready.send_replace(ready);
        self.engine.metrics().warm_ready(ready);
    }

    /// Whether container `id` is running and made of image `image_id`.
    async fn usable(&self, id: &str, image_id: &str) -> bool {
        match self.engine.docker().inspect_container(id, None).await {
            Ok(inspected) => {
                let running = inspected.state.and_then(|s| s.running).unwrap_or(false);
                running && inspected.image.as_deref() == Some(image_id)
            }
            Err(error) => {
                tracing::debug!(%error, container = id, "inspecting a warm container failed");
                false
            }
        }
    }
}

/// Makes one warm container for `key` and adds it to the pool, unless the pool has
/// closed, the key has gone or its image changed meanwhile: then it is removed.
async fn fill(inner: Arc<Inner>, key: PoolKey) {
    let plan = {
        let state = inner.lock();
        state.entries.get(&key).map(|e| (e.image.clone(), e.settings.clone(), e.workdir.clone()))
    };
    let made = match plan {
        Some((image, settings, workdir)) => make(&inner, &image, &settings, workdir.as_deref()).await,
        None => None,
    };
    let mut state = inner.lock();
    let closed = state.closed;
    let Some(entry) = state.entries.get_mut(&key) else { return };
    entry.filling = entry.filling.saturating_sub(1);
    if let Some((warm, image_id)) = made {
        if !closed && image_id == entry.image_id {
            entry.ready.push_back(warm);
            inner.publish(&state);
        }
    }
}

/// A started, attached warm container and the id of its image; `None` (traced) when
/// the engine refuses. A container made is removed on every path but success.
async fn make(
    inner: &Inner,
    image: &str,
    settings: &ContainerSettings,
    workdir: Option<&str>,
) -> Option<(Warm, String)> {
    let name = format!("conveyor-warm-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let started = inner
        .engine
        .start_run_container(image, &name, workdir, Vec::new(), inner.labels.clone(), settings)
        .await;
    let container = match started {
        Ok(container) => container,
        Err(error) => {
            tracing::warn!(error = %conveyor_sdk::error_text(&error), image, "cannot make a warm container");
            return None;
        }
    };
    let guard = inner.removals.guard(container.id.clone());
    let image_id = match inner.engine.docker().inspect_container(&container.id, None).await {
        Ok(inspected) => inspected.image?,
        Err(error) => {
            tracing::warn!(%error, container = %container.id, "cannot inspect a new warm container");
            return None;
        }
    };
    match Session::attach(inner.engine.docker(), &container.id).await {
        Ok(session) => Some((Warm { id: container.id, guard, session }, image_id)),
        Err(error) => {
            tracing::warn!(error = %conveyor_sdk::error_text(&error), "cannot attach to a new warm container");
            None
        }
    }
}

/// Every so often, removes the containers of keys not run for `idle`, until the pool
/// closes.
async fn expire_every(inner: Arc<Inner>) {
    let period = (inner.warm.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = inner.stop.cancelled() => return,
        }
        let dropped: Vec<Entry> = {
            let mut state = inner.lock();
            let now = Instant::now();
            let idle = expired(&state.entries, now, inner.warm.idle);
            let dropped: Vec<Entry> = idle.iter().filter_map(|key| state.entries.remove(key)).collect();
            inner.publish(&state);
            dropped
        };
        if !dropped.is_empty() {
            tracing::debug!(images = dropped.len(), "removing the warm containers of images not run lately");
        }
    }
}

/// The keys not used for `idle` at `now`.
fn expired(entries: &HashMap<PoolKey, Entry>, now: Instant, idle: Duration) -> Vec<PoolKey> {
    let mut keys: Vec<PoolKey> = entries
        .iter()
        .filter(|(_, entry)| now.saturating_duration_since(entry.last_used) >= idle)
        .map(|(key, _)| key.clone())
        .collect();
    keys.sort_by(|a, b| a.image.cmp(&b.image));
    keys
}

/// The keys to evict so that at most `max` remain: the least recently used.
fn least_recently_used(entries: &HashMap<PoolKey, Entry>, max: usize) -> Vec<PoolKey> {
    let mut by_use: Vec<(&PoolKey, Instant)> = entries.iter().map(|(k, e)| (k, e.last_used)).collect();
    by_use.sort_by_key(|(_, used)| *used);
    let excess = by_use.len().saturating_sub(max);
    by_use.into_iter().take(excess).map(|(key, _)| key.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(image: &str, last_used: Instant) -> (PoolKey, Entry) {
        let settings = ContainerSettings::default();
        let key = PoolKey::new(image, None, &settings);
        let entry = Entry {
            image: image.to_owned(),
            image_id: "sha256:1".into(),
            settings,
            workdir: None,
            ready: VecDeque::new(),
            filling: 0,
            last_used,
        };
        (key, entry)
    }

    #[test]
    fn a_key_holds_everything_a_containers_creation_fixes() {
        let base = ContainerSettings::default();
        let key = PoolKey::new("img", Some("/src"), &base);
        assert_eq!(key, PoolKey::new("img", Some("/src"), &base.clone()));
        let differs = |settings: ContainerSettings| PoolKey::new("img", Some("/src"), &settings) != key;
        assert!(differs(ContainerSettings { memory_bytes: Some(1 << 30), ..base.clone() }));
        assert!(differs(ContainerSettings { cpus: Some(0.5), ..base.clone() }));
        assert!(differs(ContainerSettings { pids_limit: 10, ..base.clone() }));
        assert!(differs(ContainerSettings { user: Some("1000".into()), ..base.clone() }));
        assert!(differs(ContainerSettings { read_only: true, ..base.clone() }));
        assert!(differs(ContainerSettings { platform: Some("linux/arm64".into()), ..base.clone() }));
        assert!(differs(ContainerSettings { network: "bridge".into(), ..base.clone() }));
        assert_ne!(PoolKey::new("img", None, &base), key, "another workdir");
        assert_ne!(PoolKey::new("other", Some("/src"), &base), key, "another image");
        // What only matters once a run has its container does not.
        let grace =
            ContainerSettings { stop_grace: Duration::from_secs(9), max_pids: Some(5), ..base.clone() };
        assert_eq!(PoolKey::new("img", Some("/src"), &grace), key);
    }

    #[tokio::test(start_paused = true)]
    async fn images_not_run_for_the_idle_time_expire() {
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(100)).await;
        let entries: HashMap<PoolKey, Entry> =
            [entry("old", start), entry("new", Instant::now())].into_iter().collect();
        let expired = expired(&entries, Instant::now(), Duration::from_secs(60));
        assert_eq!(expired, vec![PoolKey::new("old", None, &ContainerSettings::default())]);
        assert!(super::expired(&entries, Instant::now(), Duration::from_secs(101)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_most_images_the_least_recently_run_go() {
        let mut entries = HashMap::new();
        for image in ["a", "b", "c"] {
            let (key, entry) = entry(image, Instant::now());
            entries.insert(key, entry);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let key = |image: &str| PoolKey::new(image, None, &ContainerSettings::default());
        assert_eq!(least_recently_used(&entries, 2), vec![key("a")]);
        assert_eq!(least_recently_used(&entries, 1), vec![key("a"), key("b")]);
        assert!(least_recently_used(&entries, 3).is_empty());
    }

    #[test]
    fn a_warm_container_of_a_runner_that_is_gone_is_an_orphan_to_the_sweep_of_its_installation_only() {
        use crate::housekeeping::cleanup::{verdict, Scope, Verdict};
        use std::collections::HashSet;
        let container =
            ContainerSettings { installation: Some("here".into()), ..ContainerSettings::default() };
        let settings =
            Settings { mode: Mode::Serve, instance: "gone".into(), container, ..Settings::default() };
        // As the engine labels it when it is made.
        let labels = crate::pod::with_installation(warm_labels(&settings), &settings.container);
        let scope = |installation: &str, instance: &str| Scope {
            installation: installation.into(),
            driver: settings.name.clone(),
            instance: instance.into(),
        };
        assert_eq!(verdict(&labels, &scope("here", "me"), &HashSet::new()), Verdict::Orphan);
        assert_eq!(verdict(&labels, &scope("here", "gone"), &HashSet::new()), Verdict::Own);
        assert_eq!(verdict(&labels, &scope("there", "me"), &HashSet::new()), Verdict::OtherInstallation);
    }

    #[test]
    fn only_a_serving_runner_with_warm_settings_keeps_warm_containers() {
        let warm = WarmSettings { per_image: 1, ..WarmSettings::default() };
        let on = |mode: Mode, warm: WarmSettings| keeps_warm(&Settings { mode, warm, ..Settings::default() });
        assert!(on(Mode::Serve, warm.clone()));
        assert!(!on(Mode::Run, warm), "a local run's containers are never reaped: none kept");
        assert!(!on(Mode::Serve, WarmSettings::default()));
    }
}
