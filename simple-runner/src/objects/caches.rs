//! A run's caches: restored before its first step, saved after it succeeded, in the
//! JetStream object store bucket [`BUCKET`].
//!
//! An entry is one object of the bucket: a tar of the cache's paths, each at its place
//! under the workspace's root (`tar.rs`), unpacked in one go at the root to restore it.
//! It streams both ways, engine to store and store to engine: no entry is ever held in
//! memory. Its name is its scope and its key (`resource/<driver>/<resource>/<key>`, or
//! `shared/<driver>/<key>` for a cache the spec shares), so that a resource sees only
//! its own entries and its driver's shared ones. How an entry is written so that it is
//! seen only whole and never overwritten: `entry.rs`. What a key may be: `key.rs`.
//!
//! Nothing here fails a run: a cache that cannot be restored or saved is a warning in
//! the run's log with its reason, and the steps run as without it. Only a spec that
//! asks for what no cache can be (an odd key, a path outside the workspace) is refused
//! before the run starts ([`violations`]).

mod entry;
mod key;
mod tar;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::ObjectInfo;
use async_nats::jetstream::Context;
use conveyor_sdk::validate::Violation;
use conveyor_sdk::{error_text, LogHandle, Run};
use futures_util::TryStreamExt;
use tokio_util::io::SyncIoBridge;

use crate::objects::store::{self, Bucket};
use crate::pod::DEFAULT_WORKSPACE;
use crate::settings::Settings;
use crate::spec::{Cache, PipelineSpec};
use crate::workspace::{Workspace, WorkspaceError, WorkspacePath};

/// The object store bucket of the caches of every runner of an installation.
pub(crate) const BUCKET: &str = "conveyor_caches";

/// What the bucket holds, as its description says.
const DESCRIPTION: &str =
    "simple-runner caches: one object per entry, a tar of its paths under the workspace";

/// How many bytes the pipe from the tar's thread to the store holds.
const PIPE: usize = 256 * 1024;

/// The longest an entry is not restored before its `max_age`: so that it is not
/// removed from under a restore. A tenth of the `max_age` when that is shorter.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10 * 60);

/// The metadata of an entry: its key, its paths (a JSON array, relative to the
/// workspace), the run that saved it.
const META_KEY: &str = "key";
const META_PATHS: &str = "paths";
const META_RUN: &str = "run_id";

/// Every way the caches of `spec` ask for what no cache can be, with its JSON Pointer:
/// a key or restore key with a character other than letters, digits and `._-`, or a
/// template other than `{{ checksum "FILE" }}`, or whose file is outside the
/// workspace; a path outside the workspace (`..`, absolute elsewhere) or the workspace
/// itself; two caches of one key and scope.
pub(crate) fn violations(spec: &PipelineSpec) -> Vec<Violation> {
    let root = spec.workdir.as_deref().unwrap_or(DEFAULT_WORKSPACE);
    let mut violations = Vec::new();
    for (i, cache) in spec.caches.iter().enumerate() {
        let at = format!("/spec/caches/{i}");
        if let Err(error) = key::check(&cache.key, root) {
            violations.push(Violation { path: format!("{at}/key"), message: error.to_string() });
        } else if let Some(first) =
            spec.caches[..i].iter().position(|c| c.key == cache.key && c.shared == cache.shared)
        {
            violations.push(Violation {
                path: format!("{at}/key"),
                message: format!(
                    "{:?} is already the key of /spec/caches/{first}: one key, one entry",
                    cache.key
                ),
            });
        }
        for (j, prefix) in cache.restore_keys.iter().enumerate() {
            if let Err(error) = key::check(prefix, root) {
                violations
                    .push(Violation { path: format!("{at}/restore_keys/{j}"), message: error.to_string() });
            }
        }
        for (j, path) in cache.paths.iter().enumerate() {
            let message = match WorkspacePath::parse(root, path) {
                Ok(parsed) if parsed.as_str().is_empty() => {
                    format!("{path:?} is the workspace itself: name the paths in it to keep")
                }
                Ok(_) => continue,
                Err(error) => error.to_string(),
            };
            violations.push(Violation { path: format!("{at}/paths/{j}"), message });
        }
    }
    violations
}

/// What a restore or a save works with.
struct Caches<'a> {
    bucket: Bucket,
    workspace: &'a Workspace,
    run: &'a Run<PipelineSpec>,
    settings: &'a Settings,
}

impl Caches<'_> {
    fn log(&self) -> &LogHandle {
        self.run.log()
    }

    /// The prefix of the names of the entries of `cache`: its scope.
    fn scope(&self, cache: &Cache) -> String {
        let driver = escape(&self.settings.name);
        match cache.shared {
            true => format!("shared/{driver}/"),
            false => format!("resource/{driver}/{}/", escape(&self.run.resource().name)),
        }
    }

    /// Whether an entry is far enough from its `max_age` to be restored.
    fn fresh(&self, info: &ObjectInfo) -> bool {
        let max_age = self.bucket.max_age;
        let Some(saved) = info.modified else { return true };
        if max_age.is_zero() {
            return true;
        }
        let margin = EXPIRY_MARGIN.min(max_age / 10);
        let left = (saved + max_age) - time::OffsetDateTime::now_utc();
        left > margin
    }
}

/// A resource's or driver's name in an entry's name: `/` and `%` escaped.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// Restores the caches of `run` into `workspace`: each from the entry of its key, else
/// from the newest entry whose key starts with its first restore key that has one.
/// What cannot be restored is a warning in the run's log; without a store
/// (`store` is `None`), one warning says so.
pub(crate) async fn restore(
    store: Option<&Context>,
    workspace: &Workspace,
    run: &Run<PipelineSpec>,
    settings: &Settings,
) {
    let Some(caches) = open(store, workspace, run, settings, "restored").await else { return };
    for cache in &run.spec().caches {
        caches.restore_one(cache).await;
    }
}

/// Saves the caches of `run` from `workspace` whose keys are new; what cannot be saved
/// is a warning in the run's log.
pub(crate) async fn save(
    store: Option<&Context>,
    workspace: &Workspace,
    run: &Run<PipelineSpec>,
    settings: &Settings,
) {
    if store.is_none() {
        // Said when they were to be restored.
        return;
    }
    let Some(caches) = open(store, workspace, run, settings, "saved").await else { return };
    for cache in &run.spec().caches {
        caches.save_one(cache).await;
    }
}

/// The bucket of the caches of `run`, when it has any; `None` when it has none or the
/// bucket cannot be had, which the log then says (`what`: what is not done).
async fn open<'a>(
    store: Option<&Context>,
    workspace: &'a Workspace,
    run: &'a Run<PipelineSpec>,
    settings: &'a Settings,
    what: &str,
) -> Option<Caches<'a>> {
    if run.spec().caches.is_empty() {
        return None;
    }
    let log = run.log();
    let Some(js) = store else {
        log.log("warning: caches: this runner has no object store (no NATS): no cache is restored or saved")
            .await;
        return None;
    };
    match store::open(js, BUCKET, DESCRIPTION, settings.files.cache_ttl).await {
        Ok(bucket) => Some(Caches { bucket, workspace, run, settings }),
        Err(why) => {
            log.log(format!("warning: caches: none {what}: {why}")).await;
            None
        }
    }
}

impl Caches<'_> {
    async fn note(&self, key: &str, text: impl AsRef<str>) {
        self.log().log(format!("cache {key}: {}", text.as_ref())).await;
    }

    async fn warn(&self, key: &str, text: impl AsRef<str>) {
        self.log().log(format!("warning: cache {key}: {}", text.as_ref())).await;
    }

    async fn restore_one(&self, cache: &Cache) {
        let key = match key::resolve(&cache.key, self.workspace).await {
            Ok(key) => key,
            Err(error) => return self.warn(&cache.key, format!("not restored: {error}")).await,
        };
        let scope = self.scope(cache);
        match entry::record(&self.bucket, &format!("{scope}{key}")).await {
            Ok(Some(record)) if !record.info.deleted && self.fresh(&record.info) => {
                return self.restore_entry(&key, &record.info, None).await;
            }
            Ok(_) => {}
            Err(why) => return self.warn(&key, format!("not restored: the object store: {why}")).await,
        }
        let mut listed: Option<Vec<ObjectInfo>> = None;
        let mut tried = Vec::new();
        for template in &cache.restore_keys {
            let prefix = match key::resolve(template, self.workspace).await {
                Ok(prefix) => prefix,
                Err(error) => {
                    self.warn(&key, format!("restore key {template:?} skipped: {error}")).await;
                    continue;
                }
            };
            if listed.is_none() {
                match entry::list(&self.bucket, &scope).await {
                    Ok(entries) => listed = Some(entries),
                    Err(why) => {
                        return self.warn(&key, format!("not restored: the object store: {why}")).await
                    }
                }
            }
            let newest = listed
                .iter()
                .flatten()
                .filter(|info| info.name[scope.len()..].starts_with(&prefix) && self.fresh(info))
                .max_by_key(|info| info.modified);
            if let Some(info) = newest {
                return self.restore_entry(&key, info, Some(&prefix)).await;
            }
            tried.push(prefix);
        }
        match tried.is_empty() {
            true => self.note(&key, "no entry").await,
            false => {
                self.note(&key, format!("no entry, nor one under the restore keys {}", tried.join(", ")))
                    .await
            }
        }
    }

    /// Unpacks entry `info` at the workspace's root, once every path it holds is checked
    /// to be free of symbolic links; `prefix`: the restore key it was found by.
    async fn restore_entry(&self, key: &str, info: &ObjectInfo, prefix: Option<&str>) {
        let root = self.workspace.root();
        let paths: Vec<String> = info
            .metadata
            .get(META_PATHS)
            .and_then(|paths| serde_json::from_str(paths).ok())
            .unwrap_or_default();
        if paths.is_empty() {
            return self.warn(key, format!("not restored: the entry {} names no path", info.name)).await;
        }
        for path in &paths {
            let parsed = match WorkspacePath::parse(root, path) {
                Ok(parsed) if !parsed.as_str().is_empty() => parsed,
                _ => {
                    return self
                        .warn(key, format!("not restored: the entry holds {path:?}, outside the workspace"))
                        .await
                }
            };
            match self.workspace.stat(&parsed).await {
                Ok(_) => {}
                Err(WorkspaceError::Symlink(link)) => {
                    let why = format!("not restored: {link} is a symbolic link in the workspace: nothing is written through one");
                    return self.warn(key, why).await;
                }
                Err(error) => return self.warn(key, format!("not restored: {}", error_text(&error))).await,
            }
        }
        let started = Instant::now();
        let object = match entry::read(&self.bucket, info).await {
            Ok(object) => object,
            Err(why) => return self.warn(key, format!("not restored: the object store: {why}")).await,
        };
        let read = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&read);
        let tar = object.inspect_ok(move |chunk| {
            counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        });
        let unpacked = self.workspace.put_tar(&WorkspacePath::root(), tar).await;
        let (size, seconds) = (read.load(Ordering::Relaxed), started.elapsed().as_secs_f64());
        if let Err(error) = unpacked {
            let why = format!(
                "restore broke off after {} of {}: {}; what it had unpacked stays in the workspace",
                size_text(size),
                size_text(info.size as u64),
                error_text(&error)
            );
            return self.warn(key, why).await;
        }
        let from = match prefix {
            Some(prefix) => {
                let found = info.metadata.get(META_KEY).map_or(info.name.as_str(), String::as_str);
                format!(" from {found} (restore key {prefix})")
            }
            None => String::new(),
        };
        let what =
            format!("restored{from} {} ({}) in {seconds:.2}s", size_text(size), paths_text(paths.len()));
        self.note(key, what).await;
    }

    async fn save_one(&self, cache: &Cache) {
        let key = match key::resolve(&cache.key, self.workspace).await {
            Ok(key) => key,
            Err(error) => return self.warn(&cache.key, format!("not saved: {error}")).await,
        };
        let name = format!("{}{key}", self.scope(cache));
        let replaces = match entry::record(&self.bucket, &name).await {
            Ok(Some(record)) if !record.info.deleted => {
                return self
                    .note(&key, "not saved: an entry of this key exists (entries are never overwritten)")
                    .await;
            }
            Ok(Some(deleted)) => deleted.sequence,
            Ok(None) => 0,
            Err(why) => return self.warn(&key, format!("not saved: the object store: {why}")).await,
        };
        let mut paths = Vec::new();
        for path in &cache.paths {
            let Ok(parsed) = WorkspacePath::parse(self.workspace.root(), path) else {
                self.warn(&key, format!("{path:?} is outside the workspace: not saved")).await;
                continue;
            };
            match self.workspace.stat(&parsed).await {
                Ok(Some(_)) => paths.push(parsed),
                Ok(None) => self.warn(&key, format!("{path} does not exist: not saved")).await,
                Err(error @ WorkspaceError::Symlink(_)) => {
                    self.warn(&key, format!("{error}: {path} not saved")).await
                }
                Err(error) => return self.warn(&key, format!("not saved: {}", error_text(&error))).await,
            }
        }
        if paths.is_empty() {
            return self.warn(&key, "not saved: none of its paths is there").await;
        }
        let started = Instant::now();
        let tars = paths
            .iter()
            .map(|path| {
                let tar = self.workspace.get_tar(path).map_err(|e| io::Error::other(error_text(&e)));
                tar::PathTar::new(path.split_last().0.as_str(), tar)
            })
            .collect();
        let (mut reader, writer) = tokio::io::duplex(PIPE);
        let writer = SyncIoBridge::new(writer);
        let joining = tokio::task::spawn_blocking(move || tar::join(tars, writer));
        let written = async move {
            match joining.await {
                Ok(joined) => joined.map(drop),
                Err(error) => Err(io::Error::other(error)),
            }
        };
        let listed: Vec<&str> = paths.iter().map(WorkspacePath::as_str).collect();
        let metadata = HashMap::from([
            (META_KEY.to_owned(), key.clone()),
            (META_PATHS.to_owned(), serde_json::to_string(&listed).unwrap_or_default()),
            (META_RUN.to_owned(), self.run.run_id().to_owned()),
        ]);
        let limit = self.settings.files.cache_max_size;
        let new = entry::NewEntry {
            name,
            description: format!("cache {key} of {}", self.run.resource().name),
            metadata,
            replaces,
            limit,
        };
        match entry::write(&self.bucket, new, &mut reader, written).await {
            Ok(info) => {
                let seconds = started.elapsed().as_secs_f64();
                let what = format!(
                    "saved {} ({}) in {seconds:.2}s",
                    size_text(info.size as u64),
                    paths_text(paths.len())
                );
                self.note(&key, what).await;
            }
            Err(entry::WriteError::TooBig { .. }) => {
                let limit = crate::spec::ByteSize::new(limit);
                self.warn(
                    &key,
                    format!(
                        "not saved: it is bigger than the runner's cache limit ({limit}, --cache-max-size)"
                    ),
                )
                .await;
            }
            Err(entry::WriteError::Exists) => {
                self.note(
                    &key,
                    "not saved: another run saved this key meanwhile (entries are never overwritten)",
                )
                .await;
            }
            Err(error) => self.warn(&key, format!("not saved: {error}")).await,
        }
    }
}

/// `1 path`, `2 paths`.
fn paths_text(n: usize) -> String {
    match n {
        1 => "1 path".to_owned(),
        n => format!("{n} paths"),
    }
}

/// A size in bytes for a reader: `512 B`, `1.5 KiB`, `12.3 MiB`, `1.1 GiB`.
fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, factor) in UNITS {
        if bytes >= factor {
            return format!("{:.1} {unit}", bytes as f64 / factor as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(caches: serde_json::Value) -> PipelineSpec {
        serde_json::from_value(json!({"image": "busybox", "steps": [], "caches": caches})).unwrap()
    }

    fn paths(spec: &PipelineSpec) -> Vec<(String, String)> {
        violations(spec).into_iter().map(|v| (v.path, v.message)).collect()
    }

    #[test]
    fn good_caches_break_no_rule() {
        let spec = spec(json!([
            {"key": "cargo-{{ checksum \"Cargo.lock\" }}", "paths": ["target", "/workspace/.cargo/registry"], "restore_keys": ["cargo-"]},
            {"key": "cargo-{{ checksum \"Cargo.lock\" }}", "paths": ["x"], "shared": true}
        ]));
        assert_eq!(paths(&spec), []);
    }

    #[test]
    fn odd_keys_and_paths_outside_the_workspace_are_refused_with_their_json_paths() {
        let spec = spec(json!([
            {"key": "a b", "paths": ["../etc", "/etc/passwd", ".", "ok"], "restore_keys": ["ok-", "no/slash"]},
            {"key": "k-{{ checksum \"../secret\" }}", "paths": ["x"]},
            {"key": "same", "paths": ["x"]},
            {"key": "same", "paths": ["y"]}
        ]));
        let found = paths(&spec);
        let at: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            at,
            [
                "/spec/caches/0/key",
                "/spec/caches/0/restore_keys/1",
                "/spec/caches/0/paths/0",
                "/spec/caches/0/paths/1",
                "/spec/caches/0/paths/2",
                "/spec/caches/1/key",
                "/spec/caches/3/key"
            ],
            "{found:#?}"
        );
        assert!(found[0].1.contains("' '"), "{}", found[0].1);
        assert!(found[2].1.contains("climbs out"), "{}", found[2].1);
        assert!(found[3].1.contains("outside the workspace"), "{}", found[3].1);
        assert!(found[4].1.contains("the workspace itself"), "{}", found[4].1);
        assert!(found[5].1.contains("climbs out"), "{}", found[5].1);
    }

    #[test]
    fn a_spec_with_its_own_workdir_has_its_workspace_there() {
        let mut spec = spec(json!([{"key": "k", "paths": ["/src/target", "/workspace/target"]}]));
        spec.workdir = Some("/src".into());
        let found = paths(&spec);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "/spec/caches/0/paths/1");
    }

    #[test]
    fn names_and_sizes_read_well() {
        assert_eq!(escape("a/b%c"), "a%2Fb%25c");
        assert_eq!(size_text(0), "0 B");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(210 << 20), "210.0 MiB");
        assert_eq!(paths_text(1), "1 path");
    }
}
