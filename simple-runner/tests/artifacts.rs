//! A run's artifacts: kept after its steps in the NATS object store, under its run id,
//! and fetched by `simple-runner artifact get`. Each run goes through
//! `CommandRunner::execute` on the real engine with a driver name of its own and a
//! real nats-server (`conveyor_sdk::testing`); the command line is the built binary.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use common::*;
use conveyor_sdk::artifacts::{ArtifactStore, BUCKET};
use conveyor_sdk::testing::{create_replicated_server_streams, NatsCluster, NatsServer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use simple_runner::report::RunReport;
use simple_runner::settings::files::FileSettings;
use simple_runner::{CommandRunner, Settings};

async fn nats() -> NatsServer {
    NatsServer::start()
        .await
        .unwrap_or_else(|e| panic!("{e}: is nats-server installed? run `bash scripts/services.sh`"))
}

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    async_nats::jetstream::new(client)
}

/// A runner of a driver of its own keeping artifacts on `url`'s NATS.
async fn runner_on(url: &str, settings: Settings) -> CommandRunner {
    CommandRunner::new(engine().await, settings).with_jetstream(jetstream(url).await)
}

/// A spec of the test image with one step, `command`, and `artifacts`.
fn spec(command: &str, artifacts: Value) -> Value {
    json!({"image": TEST_IMAGE, "steps": [{"name": "build", "command": command}], "artifacts": artifacts})
}

/// The artifacts the result's data lists: name to (size, sha256).
fn listed(report: RunReport) -> BTreeMap<String, (u64, String)> {
    let data = report.into_result().data;
    let Some(artifacts) = data.get("artifacts") else { return BTreeMap::new() };
    let artifacts = artifacts.as_array().unwrap_or_else(|| panic!("artifacts is a list: {data}"));
    artifacts
        .iter()
        .map(|a| {
            let size = a["size"].as_u64().unwrap_or_else(|| panic!("a size: {a}"));
            (a["name"].as_str().unwrap().to_owned(), (size, a["sha256"].as_str().unwrap().to_owned()))
        })
        .collect()
}

/// `simple-runner` with `args`, as a user runs it: its exit code, stdout and stderr.
async fn cli(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running simple-runner: {e}"));
    (output.status.code(), output.stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `simple-runner artifact get` of artifact `name` of run `run_id` of `driver` from the
/// NATS at `url`, into a file of `dir`: its content.
async fn get(url: &str, driver: &str, run_id: &str, name: &str, dir: &Path) -> Vec<u8> {
    let file = dir.join(format!("{name}.tar"));
    let file_arg = file.to_str().unwrap();
    let args = ["artifact", "get", "--nats-url", url, "--name", driver, run_id, name, "-o", file_arg];
    let (code, _, stderr) = cli(&args).await;
    assert_eq!(code, Some(0), "artifact get {run_id} {name}: {stderr}");
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The entries of a tar: name to (kind, content or link target).
fn entries(tar: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    let mut found = BTreeMap::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        let name = entry.path().unwrap().to_string_lossy().trim_end_matches('/').to_owned();
        let kind = entry.header().entry_type();
        let mut content = Vec::new();
        match entry.link_name().unwrap() {
            Some(target) => content.extend(target.to_string_lossy().as_bytes()),
            None => {
                entry.read_to_end(&mut content).unwrap();
            }
        }
        found.insert(name, (kind, content));
    }
    found
}

/// The artifacts of run `run_id` of `driver` in the store on `url`, by name.
async fn stored(url: &str, driver: &str, run_id: &str) -> Vec<String> {
    let js = jetstream(url).await;
    let store = ArtifactStore::open(&js, BUCKET).await.unwrap_or_else(|e| panic!("{e}"));
    let listed = store.list(driver, run_id).await.unwrap_or_else(|e| panic!("{e}"));
    listed.into_iter().map(|a| a.name).collect()
}

#[tokio::test]
async fn a_kept_artifact_is_listed_in_the_result_and_fetched_by_the_cli_byte_for_byte() {
    let nats = nats().await;
    let settings = own_settings();
    let driver = settings.name.clone();
    let runner = runner_on(&nats.url(), settings).await;
    let (report, log, run_id) = run_here(
        &runner,
        spec(
            "mkdir -p dist/sub && echo hello > dist/sub/greeting.txt && : > empty.txt \
             && ln -s /etc/passwd dist/passwd && mkdir -p target/release && printf binary > target/release/app",
            json!([
                {"name": "build", "paths": ["dist", "empty.txt", "target/release/app"]},
                {"name": "app", "paths": ["/workspace/target/release/app"]}
            ]),
        ),
    )
    .await;
    assert!(report.succeeded(), "{}: {log:?}", report.message());
    let kept = listed(report);
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["app", "build"]);
    assert!(log.iter().any(|l| l.starts_with("artifact build kept: ")), "{log:?}");

    let dir = tempfile::tempdir().unwrap();
    let tar = get(&nats.url(), &driver, &run_id, "build", dir.path()).await;
    assert_eq!(kept["build"], (tar.len() as u64, sha256(&tar)), "the result says what `artifact get` gives");
    let found = entries(&tar);
    assert_eq!(found["dist/sub/greeting.txt"], (tar::EntryType::Regular, b"hello\n".to_vec()));
    assert_eq!(found["empty.txt"], (tar::EntryType::Regular, Vec::new()), "an empty file is kept, empty");
    assert_eq!(found["target/release/app"].1, b"binary");
    assert_eq!(
        found["dist/passwd"],
        (tar::EntryType::Symlink, b"/etc/passwd".to_vec()),
        "a link inside is kept as a link, never followed"
    );
    assert!(!found.keys().any(|name| name.starts_with("release")), "named from the root: {found:?}");

    let app = get(&nats.url(), &driver, &run_id, "app", dir.path()).await;
    assert_eq!(kept["app"].1, sha256(&app));
    assert_eq!(entries(&app).keys().collect::<Vec<_>>(), ["target/release/app"]);

    let (code, stdout, stderr) =
        cli(&["artifact", "list", "--nats-url", &nats.url(), "--name", &driver, &run_id]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let stdout = String::from_utf8(stdout).unwrap();
    let names: Vec<&str> = stdout.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(names, ["app", "build"], "{stdout}");
    assert!(stdout.contains(&format!("build\t{}\t{}\t", kept["build"].0, kept["build"].1)), "{stdout}");

    let (code, _, stderr) =
        cli(&["artifact", "get", "--nats-url", &nats.url(), "--name", &driver, &run_id, "nope"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("has no artifact nope"), "{stderr}");
}

#[tokio::test]
async fn when_says_which_end_of_the_steps_keeps_an_artifact() {
    let nats = nats().await;
    let runner = runner_on(&nats.url(), own_settings()).await;
    let artifacts = json!([
        {"name": "on-success", "paths": ["out"]},
        {"name": "on-failure", "paths": ["out"], "when": "on_failure"},
        {"name": "always", "paths": ["out"], "when": "always"}
    ]);
    let (succeeded, log, _) = run_here(&runner, spec("echo ok > out", artifacts.clone())).await;
    assert!(succeeded.succeeded(), "{}: {log:?}", succeeded.message());
    assert_eq!(listed(succeeded).keys().collect::<Vec<_>>(), ["always", "on-success"]);

    let (failed, log, _) = run_here(&runner, spec("echo partial > out; exit 3", artifacts)).await;
    assert_eq!(failed.message(), "step build failed with exit code 3", "{log:?}");
    assert_eq!(listed(failed).keys().collect::<Vec<_>>(), ["always", "on-failure"]);
}

#[tokio::test]
async fn a_missing_path_fails_the_run_naming_it_unless_the_artifact_is_optional() {
    let nats = nats().await;
    let settings = own_settings();
    let driver = settings.name.clone();
    let runner = runner_on(&nats.url(), settings).await;

    let optional = json!([
        {"name": "coverage", "paths": ["coverage"], "optional": true},
        {"name": "some", "paths": ["out", "not-there"], "optional": true},
        {"name": "out", "paths": ["out"]}
    ]);
    let (report, log, _) = run_here(&runner, spec("echo ok > out", optional)).await;
    assert!(report.succeeded(), "{}: {log:?}", report.message());
    assert!(has(&log, "artifact coverage not kept: none of its paths exist (it is optional)"), "{log:?}");
    assert_eq!(listed(report).keys().collect::<Vec<_>>(), ["out", "some"]);

    let required = json!([
        {"name": "out", "paths": ["out"]},
        {"name": "binary", "paths": ["out", "target/release/app"]}
    ]);
    let (report, log, run_id) = run_here(&runner, spec("echo ok > out", required)).await;
    assert!(!report.succeeded());
    let message = report.message();
    assert_eq!(
        message,
        "artifact binary: /spec/artifacts/1/paths/1: \"target/release/app\" does not exist in the workspace"
    );
    assert!(has(&log, &message), "the log says it too: {log:?}");
    assert!(listed(report).is_empty());
    assert!(
        stored(&nats.url(), &driver, &run_id).await.is_empty(),
        "nothing was put before the paths were checked"
    );
}

#[tokio::test]
async fn a_run_over_the_size_cap_fails_and_leaves_none_of_its_artifacts() {
    let nats = nats().await;
    let files = FileSettings { artifact_max_size: 64 << 10, ..FileSettings::default() };
    let settings = Settings { files, ..own_settings() };
    let driver = settings.name.clone();
    let runner = runner_on(&nats.url(), settings).await;
    let artifacts = json!([{"name": "small", "paths": ["small"]}, {"name": "big", "paths": ["big"]}]);
    let command = "head -c 1000 /dev/urandom > small && head -c 100000 /dev/urandom > big";
    let (report, log, run_id) = run_here(&runner, spec(command, artifacts)).await;
    assert_eq!(
        report.message(),
        "artifact big not kept: the run's artifacts hold more than the runner's limit of 64k (--artifact-max-size)",
        "{log:?}"
    );
    assert!(listed(report).is_empty());
    assert!(stored(&nats.url(), &driver, &run_id).await.is_empty(), "the small one is deleted again");
}

#[tokio::test]
async fn paths_out_of_the_workspace_are_refused_and_nothing_is_read_through_a_symlink() {
    let nats = nats().await;
    let runner = runner_on(&nats.url(), own_settings()).await;
    let climbing = json!([{"name": "secrets", "paths": ["out", "../etc/passwd", "/etc/shadow"]}]);
    let (report, _, _) = run_here(&runner, spec("echo ok > out", climbing)).await;
    let RunReport::Refused(refusal) = &report else { panic!("not refused: {}", report.message()) };
    assert_eq!(
        refusal.to_string(),
        "invalid spec: /spec/artifacts/0/paths/1: \"../etc/passwd\" climbs out of the workspace; \
         /spec/artifacts/0/paths/2: \"/etc/shadow\" is outside the workspace /workspace"
    );

    let command = "ln -s /etc etc-link && ln -s /etc/passwd passwd-link";
    for (path, link) in [("etc-link/passwd", "etc-link"), ("passwd-link", "passwd-link")] {
        let artifacts = json!([{"name": "escape", "paths": [path], "optional": true}]);
        let (report, log, _) = run_here(&runner, spec(command, artifacts)).await;
        let refused =
            format!("artifact escape: /spec/artifacts/0/paths/0: {link} is a symbolic link: nothing is read through one");
        if report.message() == refused {
            continue;
        }
        // Podman resolves a link in a volume inside that volume: a link to a file out
        // of the workspace reads as missing there, so an optional artifact of it is
        // left out, and nothing is read through it either.
        assert!(
            is_podman(runner.engine()).await,
            "even an optional artifact: a link is no missing path: {log:?}"
        );
        assert!(report.succeeded(), "{}: {log:?}", report.message());
        assert!(listed(report).is_empty(), "nothing is kept through a link: {log:?}");
    }
}

#[tokio::test]
async fn without_an_object_store_a_run_fails_for_an_artifact_it_must_keep_and_says_so_for_an_optional_one() {
    let runner = CommandRunner::new(engine().await, own_settings());
    let (report, log, _) = run_here(
        &runner,
        spec("echo ok > out", json!([{"name": "out", "paths": ["out"], "optional": true}])),
    )
    .await;
    assert!(report.succeeded(), "{}", report.message());
    assert!(
        has(
            &log,
            "artifact out not kept (it is optional): the runner has no object store (a local run keeps artifacts with --nats-url)"
        ),
        "{log:?}"
    );

    let (report, _, _) =
        run_here(&runner, spec("echo ok > out", json!([{"name": "out", "paths": ["out"]}]))).await;
    assert_eq!(
        report.message(),
        "artifact out not kept: the runner has no object store (a local run keeps artifacts with --nats-url)"
    );

    let mut gone = nats().await;
    let url = gone.url();
    let runner = runner_on(&url, own_settings()).await;
    gone.stop().await;
    let (report, _, _) =
        run_here(&runner, spec("echo ok > out", json!([{"name": "out", "paths": ["out"]}]))).await;
    assert!(
        report.message().starts_with("artifact out not kept: the object store cannot be reached: "),
        "{}",
        report.message()
    );
}

#[tokio::test]
async fn an_artifact_put_through_one_node_is_fetched_by_the_cli_from_another_after_the_runner_and_its_node_are_gone(
) {
    let mut cluster = NatsCluster::start().await.unwrap_or_else(|e| panic!("{e}"));
    create_replicated_server_streams(cluster.jetstream(), 3).await.unwrap_or_else(|e| panic!("{e}"));
    let urls = cluster.urls();
    let settings = own_settings();
    let driver = settings.name.clone();
    let (kept, run_id) = {
        let runner = runner_on(&urls[0], settings).await;
        let command = "mkdir dist && head -c 300000 /dev/urandom > dist/app";
        let (report, log, run_id) =
            run_here(&runner, spec(command, json!([{"name": "app", "paths": ["dist"]}]))).await;
        assert!(report.succeeded(), "{}: {log:?}", report.message());
        (listed(report), run_id)
    };
    let stream =
        cluster.jetstream().get_stream(format!("OBJ_{BUCKET}")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stream.cached_info().config.num_replicas, 3, "as many replicas as the server's streams");

    cluster.kill(0).await;
    cluster.wait_for_leaders().await.unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let tar = get(&urls[2], &driver, &run_id, "app", dir.path()).await;
    assert_eq!(kept["app"], (tar.len() as u64, sha256(&tar)));
    assert_eq!(entries(&tar)["dist/app"].1.len(), 300_000);
}

/// Runs `command` to its end: its exit code, stdout, stderr and the most memory it
/// held at once (its peak RSS, as the kernel counts it for a child).
// The child is waited for with `wait4`, which std does not offer, for its usage.
#[allow(clippy::zombie_processes)]
fn run_measured(command: &mut std::process::Command) -> (i32, String, String, u64) {
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `usage` is a plain C struct the kernel fills; `pid` is our own child,
    // waited for here only.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    // Linux counts `ru_maxrss` in KiB.
    (code, out.join().unwrap(), err.join().unwrap(), usage.ru_maxrss as u64 * 1024)
}

/// The most memory the runner may hold while it moves an artifact of any size.
const MAX_RSS: u64 = 64 << 20;

#[tokio::test]
async fn a_500_mb_artifact_is_kept_and_fetched_with_under_64_mb_of_memory() {
    const SIZE: u64 = 500_000_000;
    let nats = nats().await;
    engine().await;
    let driver = unique_driver("artifacts-memory");
    let _removes = RemovesOnDrop(driver.clone());
    let resource = json!({"name": "big", "resource": "pipeline", "spec": spec(
        &format!("head -c {SIZE} /dev/urandom > big.bin"),
        json!([{"name": "big", "paths": ["big.bin"]}]),
    )});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.json");
    std::fs::write(&file, resource.to_string()).unwrap();

    let started = Instant::now();
    let url = nats.url();
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"));
    run.args(["run", "--network", "none", "--nats-url", &url, "--name", &driver]).arg(&file);
    let (code, stdout, stderr, peak) =
        tokio::task::spawn_blocking(move || run_measured(&mut run)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("artifact big: ")).unwrap_or_else(|| panic!("{stdout}"));
    let run_id = line.split_whitespace().rev().nth(4).expect("the run id in the fetch command");
    println!("kept {SIZE} bytes in {took:?} with a peak RSS of {} MiB", peak >> 20);
    assert!(peak < MAX_RSS, "the runner held {} MiB at its peak", peak >> 20);

    let out = dir.path().join("big.tar");
    let mut get = std::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"));
    get.args(["artifact", "get", "--nats-url", &url, "--name", &driver, run_id, "big", "-o"]).arg(&out);
    let started = Instant::now();
    let (code, _, stderr, peak) = tokio::task::spawn_blocking(move || run_measured(&mut get)).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    println!("fetched it in {:?} with a peak RSS of {} MiB", started.elapsed(), peak >> 20);
    assert!(peak < MAX_RSS, "artifact get held {} MiB at its peak", peak >> 20);
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(size > SIZE && size < SIZE + 4096, "a tar of the one file: {size} bytes");
}
