//! A run's caches: restored before its first step and saved after a successful run, in
//! the object store of a real nats-server (a cluster of three for the replicas), each
//! run through `CommandRunner::execute` on the real engine with a driver name of its
//! own and no network.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, Context};
use common::*;
use regex::Regex;
use serde_json::{json, Value};
use simple_runner::report::RunReport;
use simple_runner::{CommandRunner, Settings};

/// The bucket the caches are kept in.
const BUCKET: &str = "conveyor_caches";

/// Runs take it to read, the memory test to write: that test measures this process's
/// memory, which the others would add to.
static MEMORY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn nats() -> (conveyor_sdk::testing::NatsServer, Context) {
    let nats = conveyor_sdk::testing::NatsServer::start()
        .await
        .unwrap_or_else(|e| panic!("{e}: run `bash scripts/services.sh` (it installs nats-server)"));
    let js = jetstream_at(&nats.url()).await;
    (nats, js)
}

async fn jetstream_at(url: &str) -> Context {
    let client = async_nats::connect(url).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    jetstream::new(client)
}

async fn runner_with(settings: Settings, js: &Context) -> CommandRunner {
    CommandRunner::new(engine().await, settings).with_jetstream(js.clone())
}

/// Runs `spec` as resource `name` with `runner`, as `run_here` does: its report and log
/// lines, once nothing of it is left on the engine.
async fn run_as(runner: &CommandRunner, name: &str, spec: Value) -> (RunReport, Vec<String>) {
    let _reading = MEMORY.read().await;
    let (report, lines, _) = run_named(runner, name, spec).await;
    (report, lines)
}

/// A run of resource `deps` with one cache of `key` over `deps`, whose step prints what
/// `deps/a.txt` holds and then writes `content` into it.
fn deps_run(key: &str, restore_keys: &[&str], content: &str) -> Value {
    json!({
        "image": TEST_IMAGE,
        "caches": [{"key": key, "paths": ["deps"], "restore_keys": restore_keys}],
        "steps": [{
            "name": "use",
            "command": format!("echo \"found: $(cat deps/a.txt 2>/dev/null || echo nothing)\"; mkdir -p deps; echo {content} > deps/a.txt")
        }]
    })
}

/// The line of `log` that starts with `start`.
fn line<'a>(log: &'a [String], start: &str) -> &'a str {
    log.iter()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?}: {log:#?}"))
}

fn assert_matches(text: &str, pattern: &str) {
    let regex = Regex::new(pattern).unwrap();
    assert!(regex.is_match(text), "{text:?} does not match {pattern:?}");
}

/// How many messages the bucket's stream holds: chunks and records.
async fn messages_in_bucket(js: &Context) -> u64 {
    let mut stream = js.get_stream(format!("OBJ_{BUCKET}")).await.expect("the bucket's stream");
    stream.info().await.expect("the bucket's stream info").state.messages
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_cache_saved_by_one_run_is_restored_by_the_next_with_its_size_in_the_log() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    let spec = json!({
        "image": TEST_IMAGE,
        "caches": [{"key": "deps-v1", "paths": ["deps", "nested/dir", "empty"]}],
        "steps": [{
            "name": "build",
            "command": "if [ -f deps/a.txt ]; then echo \"found $(cat deps/a.txt) $(cat nested/dir/b.txt)\"; \
                        [ -f empty ] && [ ! -s empty ] && echo 'the empty file is back'; \
                        else mkdir -p deps nested/dir && echo hello > deps/a.txt && echo deep > nested/dir/b.txt && : > empty; fi"
        }]
    });
    let (report, first) = run_as(&runner, "deps", spec.clone()).await;
    assert!(report.succeeded(), "{}: {first:#?}", report.message());
    assert!(has(&first, "cache deps-v1: no entry"), "{first:#?}");
    assert_matches(
        line(&first, "cache deps-v1: saved"),
        r"^cache deps-v1: saved \d+\.\d KiB \(3 paths\) in \d+\.\d\ds$",
    );
    let saved = first.iter().position(|l| l.starts_with("cache deps-v1: saved")).unwrap();
    let step_end = first.iter().position(|l| l.starts_with("<== step 1/1 build")).unwrap();
    assert!(saved > step_end, "saved after the steps: {first:#?}");

    let (report, second) = run_as(&runner, "deps", spec).await;
    assert!(report.succeeded(), "{}: {second:#?}", report.message());
    let restored = line(&second, "cache deps-v1: restored");
    assert_matches(restored, r"^cache deps-v1: restored \d+\.\d KiB \(3 paths\) in \d+\.\d\ds$");
    let restored_at = second.iter().position(|l| l == restored).unwrap();
    let step_start = second.iter().position(|l| l.starts_with("==> step 1/1 build")).unwrap();
    assert!(restored_at < step_start, "restored before the first step: {second:#?}");
    assert!(has(&second, "found hello deep"), "the second run sees the files: {second:#?}");
    assert!(has(&second, "the empty file is back"), "{second:#?}");
    assert!(
        has(&second, "cache deps-v1: not saved: an entry of this key exists (entries are never overwritten)"),
        "{second:#?}"
    );
}

#[tokio::test]
async fn an_entry_is_never_overwritten() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    let (report, first) = run_as(&runner, "deps", deps_run("fixed", &[], "one")).await;
    assert!(report.succeeded() && first.iter().any(|l| l.starts_with("cache fixed: saved")), "{first:#?}");
    let (_, second) = run_as(&runner, "deps", deps_run("fixed", &[], "two")).await;
    assert!(has(&second, "found: one"), "{second:#?}");
    assert!(
        second.iter().any(|l| l.starts_with("cache fixed: not saved: an entry of this key exists")),
        "{second:#?}"
    );
    let (_, third) = run_as(&runner, "deps", deps_run("fixed", &[], "three")).await;
    assert!(has(&third, "found: one"), "the first entry is still the one: {third:#?}");
}

#[tokio::test]
async fn restore_keys_take_the_newest_entry_of_the_first_prefix_that_has_one() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    for (key, content) in [("app-1", "first"), ("app-2", "second"), ("other-1", "third")] {
        let (report, log) = run_as(&runner, "deps", deps_run(key, &[], content)).await;
        assert!(report.succeeded(), "{}: {log:#?}", report.message());
    }
    let (_, log) = run_as(&runner, "deps", deps_run("app-3", &["none-", "app-"], "x")).await;
    assert!(has(&log, "found: second"), "the newest of app-: {log:#?}");
    assert_matches(
        line(&log, "cache app-3: restored"),
        r"^cache app-3: restored from app-2 \(restore key app-\) \d+\.\d KiB \(1 path\) in ",
    );
    assert!(
        log.iter().any(|l| l.starts_with("cache app-3: saved")),
        "a restore key's entry does not stop the save: {log:#?}"
    );

    let (_, log) = run_as(&runner, "deps", deps_run("app-4", &["other-", "app-"], "x")).await;
    assert!(has(&log, "found: third"), "the first prefix that has an entry wins: {log:#?}");
    let (_, log) = run_as(&runner, "deps", deps_run("new-1", &["none-", "nothing-"], "x")).await;
    assert!(has(&log, "cache new-1: no entry, nor one under the restore keys none-, nothing-"), "{log:#?}");
    assert!(has(&log, "found: nothing"), "{log:#?}");
}

#[tokio::test]
async fn a_checksum_key_follows_its_files_content() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    let spec = |version: &str| {
        json!({
            "image": TEST_IMAGE,
            "caches": [
                {"key": "lock", "paths": ["lock.txt"]},
                {"key": "deps-{{ checksum \"lock.txt\" }}", "paths": ["deps"], "restore_keys": ["deps-"]}
            ],
            "steps": [{
                "name": "lock",
                "command": format!("echo \"deps: $(cat deps/a.txt 2>/dev/null || echo none)\"; mkdir -p deps; echo {version} > deps/a.txt; echo {version} > lock.txt")
            }]
        })
    };
    // The first run has no lock file to work the key out of before its step; it saves
    // both caches, the second keyed by the file its step wrote.
    let (report, first) = run_as(&runner, "locked", spec("v1")).await;
    assert!(report.succeeded(), "{}: {first:#?}", report.message());
    let v1 = sha256_hex(b"v1\n");
    assert!(
        first.iter().any(|l| l.starts_with("warning: cache deps-{{ checksum \"lock.txt\" }}: not restored: the file of {{ checksum \"lock.txt\" }}: it does not exist")),
        "{first:#?}"
    );
    assert!(first.iter().any(|l| l.starts_with(&format!("cache deps-{v1}: saved"))), "{first:#?}");
    // The second run restores the lock file first, then the entry keyed by it.
    let (_, second) = run_as(&runner, "locked", spec("v2")).await;
    assert!(second.iter().any(|l| l.starts_with(&format!("cache deps-{v1}: restored "))), "{second:#?}");
    assert!(has(&second, "deps: v1"), "{second:#?}");
    assert!(
        second.iter().any(|l| l.starts_with(&format!("cache deps-{}: saved", sha256_hex(b"v2\n")))),
        "the file changed, so did the key: {second:#?}"
    );
}

#[tokio::test]
async fn a_resources_own_entries_are_not_seen_by_another_resource_and_shared_ones_are() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    let spec = json!({
        "image": TEST_IMAGE,
        "caches": [
            {"key": "own", "paths": ["own"]},
            {"key": "common", "paths": ["common"], "shared": true}
        ],
        "steps": [{"name": "fill", "command": "if [ -f own/own.txt ]; then echo seen-own; fi; if [ -f common/common.txt ]; then echo seen-common; fi; mkdir -p own common; echo 1 > own/own.txt; echo 2 > common/common.txt"}]
    });
    let (report, log) = run_as(&runner, "first-resource", spec.clone()).await;
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    assert_eq!(log.iter().filter(|l| l.contains(": saved ")).count(), 2, "{log:#?}");
    let (_, other) = run_as(&runner, "second-resource", spec).await;
    assert!(has(&other, "cache own: no entry"), "another resource's own entry is not seen: {other:#?}");
    assert!(other.iter().any(|l| l.starts_with("cache common: restored")), "a shared entry is: {other:#?}");
    assert!(has(&other, "seen-common") && !has(&other, "seen-own"), "{other:#?}");
    assert!(other.iter().any(|l| l.starts_with("cache own: saved")), "its own entry is its own: {other:#?}");

    let mut elsewhere = own_settings();
    elsewhere.name = format!("{}-other", elsewhere.name);
    let other_driver = runner_with(elsewhere, &js).await;
    let (_, log) = run_as(
        &other_driver,
        "first-resource",
        json!({
            "image": TEST_IMAGE,
            "caches": [{"key": "common", "paths": ["common"], "shared": true}],
            "steps": [{"name": "look", "command": "true"}]
        }),
    )
    .await;
    assert!(has(&log, "cache common: no entry"), "shared entries are the driver's: {log:#?}");
}

#[tokio::test]
async fn an_entry_over_the_runners_limit_is_not_saved_and_leaves_nothing_in_the_store() {
    let (_nats, js) = nats().await;
    let mut settings = own_settings();
    settings.files.cache_max_size = 256 * 1024;
    let runner = runner_with(settings, &js).await;
    let (report, log) = run_as(&runner, "big", json!({
        "image": TEST_IMAGE,
        "caches": [{"key": "big", "paths": ["big"]}, {"key": "small", "paths": ["small"]}],
        "steps": [{"name": "fill", "command": "mkdir big small && head -c 2000000 /dev/urandom > big/blob && echo s > small/s"}]
    }))
    .await;
    assert!(report.succeeded(), "a cache never fails a run: {}: {log:#?}", report.message());
    assert!(
        has(&log, "warning: cache big: not saved: it is bigger than the runner's cache limit (256k, --cache-max-size)"),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.starts_with("cache small: saved")), "{log:#?}");
    let info = js
        .get_object_store(BUCKET)
        .await
        .unwrap()
        .info("resource/".to_owned() + &runner.settings().name + "/big/small")
        .await;
    assert!(info.is_ok(), "the small one is there");
    // The small entry: one chunk and one record; of the big one, nothing.
    assert_eq!(messages_in_bucket(&js).await, 2, "the big entry's chunks were purged");
}

#[tokio::test]
async fn a_full_bucket_is_a_warning_and_the_run_succeeds() {
    let (_nats, js) = nats().await;
    js.create_object_store(jetstream::object_store::Config {
        bucket: BUCKET.into(),
        max_bytes: 300 * 1024,
        ..Default::default()
    })
    .await
    .expect("a small bucket");
    let runner = runner_with(own_settings(), &js).await;
    let (report, log) = run_as(
        &runner,
        "full",
        json!({
            "image": TEST_IMAGE,
            "caches": [{"key": "big", "paths": ["big"]}],
            "steps": [{"name": "fill", "command": "mkdir big && head -c 1000000 /dev/urandom > big/blob"}]
        }),
    )
    .await;
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    let warning = line(&log, "warning: cache big: not saved: the object store did not take it");
    assert!(
        warning.contains("maximum bytes exceeded") || warning.contains("insufficient resources"),
        "{warning}"
    );
    assert_eq!(messages_in_bucket(&js).await, 0, "what was written of it was purged");
}

#[tokio::test]
async fn a_store_that_is_gone_is_a_warning_and_the_run_succeeds() {
    let (mut nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    nats.stop().await;
    let (report, log) = run_as(&runner, "gone", deps_run("k", &[], "x")).await;
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    assert!(
        log.iter()
            .any(|l| l
                .starts_with("warning: caches: none restored: the bucket conveyor_caches cannot be read")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("warning: caches: none saved: the bucket conveyor_caches cannot be read")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_runner_without_a_store_says_so_once() {
    let runner = CommandRunner::new(engine().await, own_settings());
    let (report, log) = run_as(&runner, "nostore", deps_run("k", &[], "x")).await;
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    let said: Vec<&String> = log.iter().filter(|l| l.contains("cache")).collect();
    assert_eq!(
        said,
        ["warning: caches: this runner has no object store (no NATS): no cache is restored or saved"],
        "{log:#?}"
    );
}

#[tokio::test]
async fn paths_and_keys_outside_the_rules_are_refused_before_the_run_with_their_json_paths() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    let (report, log) = run_as(
        &runner,
        "bad",
        json!({
            "image": TEST_IMAGE,
            "caches": [{"key": "a b", "paths": ["../etc", "/etc/passwd", "ok"]}],
            "steps": [{"name": "never", "command": "echo ran"}]
        }),
    )
    .await;
    assert!(matches!(report, RunReport::Refused(_)), "{}: {log:#?}", report.message());
    let message = report.message();
    for part in [
        "/spec/caches/0/key",
        "/spec/caches/0/paths/0",
        "climbs out of the workspace",
        "/spec/caches/0/paths/1",
        "outside the workspace",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert!(!has(&log, "ran"), "{log:#?}");
    assert!(js.get_stream(format!("OBJ_{BUCKET}")).await.is_err(), "nothing was written");
}

#[tokio::test]
async fn symbolic_links_and_missing_paths_are_skipped_saying_so() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    let (report, log) = run_as(&runner, "links", json!({
        "image": TEST_IMAGE,
        "caches": [{"key": "mixed", "paths": ["out", "through/passwd", "missing", "kept"]}],
        "steps": [{"name": "links", "command": "ln -s /etc out && ln -s /etc through && mkdir kept && ln -s /etc/passwd kept/inside && echo k > kept/k"}]
    }))
    .await;
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    assert!(
        has(&log, "warning: cache mixed: out is a symbolic link: nothing is read through one: out not saved"),
        "{log:#?}"
    );
    assert!(
        has(&log, "warning: cache mixed: through is a symbolic link: nothing is read through one: through/passwd not saved"),
        "{log:#?}"
    );
    assert!(has(&log, "warning: cache mixed: missing does not exist: not saved"), "{log:#?}");
    assert_matches(line(&log, "cache mixed: saved"), r"\(1 path\)");

    // The entry holds the link inside `kept` as a link: restored, it points where it
    // did, and nothing of /etc came with it.
    let (_, log) = run_as(
        &runner,
        "links",
        json!({
            "image": TEST_IMAGE,
            "caches": [{"key": "mixed", "paths": ["out", "through/passwd", "missing", "kept"]}],
            "steps": [{"name": "look", "command": "readlink kept/inside; ls -A; [ -e out ] || echo no-out"}]
        }),
    )
    .await;
    assert!(has(&log, "/etc/passwd"), "{log:#?}");
    assert!(has(&log, "no-out"), "{log:#?}");
}

#[tokio::test]
async fn an_entry_is_not_restored_through_a_symbolic_link_in_the_workspace() {
    let (_nats, js) = nats().await;
    let runner = runner_with(own_settings(), &js).await;
    // An entry of `x/deps`, saved while it was a directory …
    let (report, log) = run_as(
        &runner,
        "through",
        json!({
            "image": TEST_IMAGE,
            "caches": [{"key": "inner", "paths": ["x/deps"]}],
            "steps": [{"name": "dir", "command": "mkdir -p x/deps && echo planted > x/deps/planted.txt"}]
        }),
    )
    .await;
    assert!(report.succeeded() && log.iter().any(|l| l.starts_with("cache inner: saved")), "{log:#?}");
    // … and one of `x`, where `x/deps` is a link out of the workspace.
    let (_, log) = run_as(
        &runner,
        "through",
        json!({
            "image": TEST_IMAGE,
            "caches": [{"key": "outer", "paths": ["x"]}],
            "steps": [{"name": "link", "command": "mkdir -p x && ln -s /etc x/deps"}]
        }),
    )
    .await;
    assert!(log.iter().any(|l| l.starts_with("cache outer: saved")), "{log:#?}");
    // Restored one after the other, the second would write through the link.
    let (report, log) = run_as(&runner, "through", json!({
        "image": TEST_IMAGE,
        "caches": [{"key": "outer", "paths": ["x"]}, {"key": "inner", "paths": ["x/deps"]}],
        "steps": [{"name": "look", "command": "if [ -e /etc/planted.txt ]; then echo written-through; else echo clean; fi"}]
    }))
    .await;
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    assert!(log.iter().any(|l| l.starts_with("cache outer: restored")), "{log:#?}");
    assert!(
        has(&log, "warning: cache inner: not restored: x/deps is a symbolic link in the workspace: nothing is written through one"),
        "{log:#?}"
    );
    assert!(has(&log, "clean"), "nothing was written through the link: {log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_saved_on_one_replica_is_restored_on_another_after_the_first_node_is_gone() {
    use conveyor_sdk::testing::{create_replicated_server_streams, NatsCluster};
    let mut cluster = NatsCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{e}: run `bash scripts/services.sh` (it installs nats-server)"));
    create_replicated_server_streams(cluster.jetstream(), 3).await.unwrap_or_else(|e| panic!("{e}"));
    let urls = cluster.urls();
    let settings = own_settings();
    let (js_a, js_b) = (jetstream_at(&urls[0]).await, jetstream_at(&urls[2]).await);
    let replica_a = runner_with(settings.clone(), &js_a).await;
    let replica_b = runner_with(settings, &js_b).await;

    let (report, log) = run_as(&replica_a, "replicated", deps_run("across", &[], "from-a")).await;
    assert!(report.succeeded() && log.iter().any(|l| l.starts_with("cache across: saved")), "{log:#?}");
    let stream = js_b.get_stream(format!("OBJ_{BUCKET}")).await.expect("the bucket");
    assert_eq!(stream.cached_info().config.num_replicas, 3, "the bucket has the replicas of stream messages");

    cluster.kill(0).await;
    cluster.wait_for_leaders().await.unwrap_or_else(|e| panic!("{e}"));
    let (report, log) = run_as(&replica_b, "replicated", deps_run("across", &[], "from-b")).await;
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    assert!(log.iter().any(|l| l.starts_with("cache across: restored")), "{log:#?}");
    assert!(has(&log, "found: from-a"), "{log:#?}");
}

/// The peak resident memory of this process since the last reset, and the reset.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS (Linux 4.0 or newer)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_cache_streams_both_ways_without_the_runners_memory_growing_by_its_size() {
    const SIZE: u64 = 256 << 20;
    const BOUND: u64 = 64 << 20;
    let (_nats, js) = nats().await;
    let mut settings = own_settings();
    settings.files.cache_max_size = 1 << 30;
    let runner = runner_with(settings, &js).await;
    let spec = json!({
        "image": TEST_IMAGE,
        "caches": [{"key": "big", "paths": ["big"]}],
        "steps": [{"name": "make", "command": format!("if [ -f big/blob ]; then ls -l big/blob; else mkdir -p big && head -c {SIZE} /dev/urandom > big/blob; fi")}]
    });
    let _alone = MEMORY.write().await;
    reset_peak_rss();
    let before = peak_rss();
    let (report, log) = run_memory(&runner, spec.clone()).await;
    let saving = peak_rss().saturating_sub(before);
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    assert_matches(line(&log, "cache big: saved"), r"^cache big: saved 256\.\d MiB");

    reset_peak_rss();
    let before = peak_rss();
    let (report, log) = run_memory(&runner, spec).await;
    let restoring = peak_rss().saturating_sub(before);
    assert!(report.succeeded(), "{}: {log:#?}", report.message());
    assert_matches(line(&log, "cache big: restored"), r"^cache big: restored 256\.\d MiB");
    assert!(log.iter().any(|l| l.contains(&SIZE.to_string())), "the file is whole: {log:#?}");
    println!("{SIZE} bytes: peak RSS grew by {} MiB saving, {} MiB restoring", saving >> 20, restoring >> 20);
    assert!(saving < BOUND, "saving grew the peak RSS by {} MiB", saving >> 20);
    assert!(restoring < BOUND, "restoring grew the peak RSS by {} MiB", restoring >> 20);
}

/// [`run_as`] for the memory test, which holds the lock that `run_as` reads.
async fn run_memory(runner: &CommandRunner, spec: Value) -> (RunReport, Vec<String>) {
    let resource = pipeline("memory", spec.clone());
    let decoded: simple_runner::PipelineSpec = serde_json::from_value(spec).expect("a valid spec");
    let run_id = uuid::Uuid::new_v4().to_string();
    let (log, memory) = conveyor_sdk::LogHandle::memory();
    let run = conveyor_sdk::Run::new(resource, decoded).with_log(log).with_run_id(run_id.clone());
    let report = runner.execute(&run, simple_runner::engine::image::PullProgress::Log(run.log())).await;
    runner.finish_removals().await;
    assert_nothing_left_within(runner.engine(), &run_id, Duration::from_secs(20)).await;
    (report, memory.lines())
}
