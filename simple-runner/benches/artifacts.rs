//! A run's artifacts against the object store underneath them, on a nats-server of its own
//! and the local engine.
//!
//! ```text
//! cargo bench -p simple-runner --bench artifacts            # 256 MB, 3 samples
//! cargo bench -p simple-runner --bench artifacts -- quick   # 32 MB, 2 samples
//! ```
//!
//! Artifacts: a run whose step writes a file of random bytes keeps it as an artifact;
//! the put is the time its log gives for keeping it (the engine's tar of the path,
//! re-rooted, streamed into the store, SHA-256 and all), the get is
//! `ArtifactStore::fetch` of it into nothing. Raw is the object store itself
//! (`async-nats`' `put` from a file, `get` read to its end into nothing) moving the very
//! bytes of the artifact, in the same bucket, in the same run. Figures are medians;
//! ratios are times, ours ÷ raw: lower is better, 1 is no cost.

use std::time::{Duration, Instant};

use conveyor_sdk::artifacts::{ArtifactKey, ArtifactStore, BUCKET};
use conveyor_sdk::testing::NatsServer;
use conveyor_sdk::{LogHandle, Resource, Run};
use serde_json::json;
use simple_runner::engine::image::PullProgress;
use simple_runner::settings::files::FileSettings;
use simple_runner::{CommandRunner, ContainerSettings, Engine, Settings};

const DRIVER: &str = "files-bench";
const IMAGE: &str = "conveyor-test/busybox:latest";

/// The median of `samples`, in seconds.
fn median(samples: &[Duration]) -> f64 {
    let mut sorted: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}: run `bash scripts/services.sh`"));
    let engine = Engine::connect().await.unwrap_or_else(|e| panic!("{e}: run `bash scripts/services.sh`"));
    artifact_put_and_get(&nats, engine, quick).await;
}

/// The artifact half: put and get of an artifact against raw put and get of its bytes.
async fn artifact_put_and_get(nats: &NatsServer, engine: Engine, quick: bool) {
    let (size, samples) = if quick { (32_000_000u64, 2) } else { (256_000_000, 3) };
    let client = async_nats::connect(nats.url()).await.expect("connect to the bench's nats-server");
    let js = async_nats::jetstream::new(client);
    let settings = Settings {
        name: DRIVER.to_owned(),
        container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
        files: FileSettings { artifact_max_size: 2 * size, ..FileSettings::default() },
        ..Settings::default()
    };
    let runner = CommandRunner::new(engine, settings).with_jetstream(js.clone());
    let bytes = tempfile::NamedTempFile::new().expect("a temporary file");
    let (mut ours_put, mut ours_get, mut raw_put, mut raw_get) = (vec![], vec![], vec![], vec![]);
    println!("artifact of {} MB, {samples} samples", size / 1_000_000);
    for _ in 0..samples {
        let (run_id, took) = artifact_kept(&runner, size).await;
        ours_put.push(took);
        // The runner made the bucket; raw puts and gets go to the same one.
        let store = ArtifactStore::open(&js, BUCKET).await.expect("the artifact bucket");
        let raw = js.get_object_store(BUCKET).await.expect("the artifact bucket");
        let key = ArtifactKey::new(DRIVER, &run_id, "blob").expect("a key");
        let started = Instant::now();
        store.fetch(&key, &mut tokio::io::sink()).await.expect("fetch the artifact");
        ours_get.push(started.elapsed());

        let mut file = tokio::fs::File::create(bytes.path()).await.expect("the temporary file");
        store.fetch(&key, &mut file).await.expect("fetch the artifact into a file");
        let mut file = tokio::fs::File::open(bytes.path()).await.expect("the temporary file");
        let started = Instant::now();
        raw.put("bench/raw", &mut file).await.expect("raw put");
        raw_put.push(started.elapsed());
        let started = Instant::now();
        let mut object = raw.get("bench/raw").await.expect("raw get");
        tokio::io::copy(&mut object, &mut tokio::io::sink()).await.expect("raw get read to its end");
        raw_get.push(started.elapsed());
        store.delete(&key).await.expect("delete the artifact");
        raw.delete("bench/raw").await.expect("delete the raw object");
    }
    let stored = std::fs::metadata(bytes.path()).map(|m| m.len()).unwrap_or(size);
    for (what, ours, raw) in [("put", &ours_put, &raw_put), ("get", &ours_get, &raw_get)] {
        let (ours, raw) = (median(ours), median(raw));
        let rate = |secs: f64| stored as f64 / secs / 1e6;
        println!(
            "  {what}: ours {ours:.2} s ({:.0} MB/s), raw object store {raw:.2} s ({:.0} MB/s), ours ÷ raw {:.2}",
            rate(ours),
            rate(raw),
            ours / raw
        );
    }
}

/// Runs a pipeline that writes `size` random bytes into a file and keeps it as the
/// artifact `blob`: its run id and how long keeping it took, as its log says.
async fn artifact_kept(runner: &CommandRunner, size: u64) -> (String, Duration) {
    use conveyor_sdk::validate::SpecValidator;
    use conveyor_sdk::Driver;
    let resource = Resource::new(
        "artifact-bench",
        "pipeline",
        json!({
            "image": IMAGE,
            "steps": [{"name": "make", "command": format!("head -c {size} /dev/urandom > blob")}],
            "artifacts": [{"name": "blob", "paths": ["blob"]}]
        }),
    );
    let spec =
        SpecValidator::new(&runner.resources()).expect("the definition").decode(&resource).expect("the spec");
    let (log, memory) = LogHandle::memory();
    let run = Run::new(resource, spec).with_log(log);
    let report = runner.execute(&run, PullProgress::Log(run.log())).await;
    runner.finish_removals().await;
    let lines = memory.lines();
    assert!(report.succeeded(), "{}: {lines:?}", report.message());
    let kept = lines.iter().find(|l| l.starts_with("artifact blob kept: ")).expect("the artifact's line");
    let seconds = kept.rsplit("in ").next().and_then(|s| s.strip_suffix('s')).and_then(|s| s.parse().ok());
    let seconds: f64 = seconds.unwrap_or_else(|| panic!("no time in {kept:?}"));
    (run.run_id().to_owned(), Duration::from_secs_f64(seconds))
}
