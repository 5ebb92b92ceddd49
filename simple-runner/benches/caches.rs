//! A run's caches in the object store, beside the object store alone, on a nats-server
//! of its own and the real engine.
//!
//! ```text
//! cargo bench -p simple-runner --bench caches            # 64 MiB, 3 samples each
//! cargo bench -p simple-runner --bench caches -- quick   # 16 MiB, 2 samples each
//! ```
//!
//! Caches:
//!
//! - **put**: a run's cache of `SIZE` bytes of random data saved (engine → tar → store,
//!   the time its log line gives) beside the object store's own `put` of the same
//!   entry's bytes from a local file; **get**: that entry restored (store → engine)
//!   beside the object store's own `get` of it, read to the end. Throughput in MiB/s,
//!   ratios ours ÷ raw: higher is better.
//! - **warm**: a run whose step makes `SIZE` bytes and works on them for a while (it
//!   downloads nothing: the data is made where it is used), without a cache, beside the
//!   same run with a warm cache of that data, whose step then has nothing to make.
//!   Seconds of the whole run; ratio warm ÷ cold: lower is better.
//!
//! The peak resident memory of this process (VmHWM) is printed for our puts and gets
//! and for the raw ones.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context};
use conveyor_sdk::testing::NatsServer;
use conveyor_sdk::{LogHandle, Resource, Run};
use serde_json::{json, Value};
use simple_runner::engine::image::PullProgress;
use simple_runner::{CommandRunner, ContainerSettings, Engine, PipelineSpec, Settings};

const IMAGE: &str = "conveyor-test/busybox:latest";
const BUCKET: &str = "conveyor_caches";

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

/// Runs `spec` as resource `name`: seconds, and the log.
async fn run(runner: &CommandRunner, name: &str, spec: Value) -> (f64, Vec<String>) {
    let decoded: PipelineSpec = serde_json::from_value(spec.clone()).expect("a valid spec");
    let (log, memory) = LogHandle::memory();
    let run = Run::new(Resource::new(name, "pipeline", spec), decoded)
        .with_log(log)
        .with_run_id(uuid::Uuid::new_v4().to_string());
    let started = Instant::now();
    let report = runner.execute(&run, PullProgress::Log(run.log())).await;
    let seconds = started.elapsed().as_secs_f64();
    runner.finish_removals().await;
    let lines = memory.lines();
    assert!(report.succeeded(), "{}: {lines:#?}", report.message());
    (seconds, lines)
}

/// The seconds a log line `cache KEY: WHAT … in 1.23s` gives.
fn logged_seconds(lines: &[String], key: &str, what: &str) -> f64 {
    let start = format!("cache {key}: {what}");
    let line =
        lines.iter().find(|l| l.starts_with(&start)).unwrap_or_else(|| panic!("no {start:?}: {lines:#?}"));
    let seconds = line.rsplit(" in ").next().and_then(|s| s.strip_suffix('s')).and_then(|s| s.parse().ok());
    seconds.unwrap_or_else(|| panic!("no time in {line:?}"))
}

/// Forgets the peak resident memory so far: the next [`peak_rss_mib`] is from now on.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib >> 10
}

/// The object store's own put of entry `name`'s bytes (copied to a local file first)
/// as `raw-<name>`, and its own get of it: seconds each.
async fn raw_put_get(js: &Context, name: &str, dir: &std::path::Path) -> (f64, f64) {
    let store = js.get_object_store(BUCKET).await.expect("the bucket");
    let path = dir.join("entry.tar");
    let mut object = store.get(name).await.expect("the entry");
    let mut file = tokio::fs::File::create(&path).await.expect("a local file");
    tokio::io::copy(&mut object, &mut file).await.expect("the entry, read");
    drop(file);

    let mut file = tokio::fs::File::open(&path).await.expect("the local file");
    let raw = format!("raw-{name}");
    let started = Instant::now();
    store.put(raw.as_str(), &mut file).await.expect("the raw put");
    let put = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut object = store.get(&raw).await.expect("the raw object");
    tokio::io::copy(&mut object, &mut tokio::io::sink()).await.expect("the raw get");
    let get = started.elapsed().as_secs_f64();
    store.delete(&raw).await.expect("the raw object removed");
    (put, get)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (size, samples): (u64, usize) = if quick { (16 << 20, 2) } else { (64 << 20, 3) };
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}: run scripts/services.sh"));
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    let js = jetstream::new(client);
    let engine = Engine::connect().await.unwrap_or_else(|e| panic!("{e}: run scripts/services.sh"));
    let settings = Settings {
        name: format!("files-bench-{}", uuid::Uuid::new_v4().simple()),
        container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
        ..Settings::default()
    };
    let runner = CommandRunner::new(engine, settings.clone()).with_jetstream(js.clone());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mib = size as f64 / f64::from(1 << 20);
    println!("caches of {mib:.0} MiB of random data, {samples} samples each, medians");

    // Put and get.
    let (mut ours_put, mut ours_get, mut raw_put, mut raw_get) = (vec![], vec![], vec![], vec![]);
    let (mut ours_peak, mut raw_peak) = (0, 0);
    for sample in 0..samples {
        let key = format!("bench-{sample}");
        let spec = json!({
            "image": IMAGE,
            "caches": [{"key": key, "paths": ["data"]}],
            "steps": [{"name": "make", "command": format!("[ -f data/blob ] || {{ mkdir -p data && head -c {size} /dev/urandom > data/blob; }}")}]
        });
        reset_peak_rss();
        let (_, saved) = run(&runner, "bench", spec.clone()).await;
        ours_put.push(logged_seconds(&saved, &key, "saved"));
        let (_, restored) = run(&runner, "bench", spec).await;
        ours_get.push(logged_seconds(&restored, &key, "restored"));
        ours_peak = ours_peak.max(peak_rss_mib());
        let name = format!("resource/{}/bench/{key}", settings.name);
        reset_peak_rss();
        let (put, get) = raw_put_get(&js, &name, dir.path()).await;
        raw_peak = raw_peak.max(peak_rss_mib());
        raw_put.push(put);
        raw_get.push(get);
    }
    let rate = |seconds: &[f64]| mib / median(seconds);
    println!("{:<8} {:>12} {:>12} {:>14}", "", "ours MiB/s", "raw MiB/s", "ours ÷ raw");
    for (what, ours, raw) in [("put", &ours_put, &raw_put), ("get", &ours_get, &raw_get)] {
        let (ours, raw) = (rate(ours), rate(raw));
        println!("{what:<8} {ours:>12.1} {raw:>12.1} {:>14.2}", ours / raw);
    }
    println!("peak RSS of this process: {ours_peak} MiB during our puts and gets, {raw_peak} MiB during the raw ones");

    // The time a warm cache saves a run whose step makes its data.
    let make = format!(
        "mkdir -p data && head -c {size} /dev/urandom > data/blob && i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo made"
    );
    let cold_spec = json!({"image": IMAGE, "steps": [{"name": "make", "command": make}]});
    let warm_spec = json!({
        "image": IMAGE,
        "caches": [{"key": "warm", "paths": ["data"]}],
        "steps": [{"name": "make", "command": format!("if [ -f data/blob ]; then echo warm; else {make}; fi")}]
    });
    let (_, first) = run(&runner, "warm", warm_spec.clone()).await;
    assert!(first.iter().any(|l| l.starts_with("cache warm: saved")), "{first:#?}");
    let (mut cold, mut warm) = (vec![], vec![]);
    for _ in 0..samples {
        cold.push(run(&runner, "warm", cold_spec.clone()).await.0);
        let (seconds, lines) = run(&runner, "warm", warm_spec.clone()).await;
        assert!(lines.iter().any(|l| l == "warm"), "{lines:#?}");
        warm.push(seconds);
    }
    let (cold, warm) = (median(&cold), median(&warm));
    println!(
        "warm cache: run {warm:.2}s, without a cache {cold:.2}s: {:.2}s saved, warm ÷ cold {:.2}",
        cold - warm,
        warm / cold
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
