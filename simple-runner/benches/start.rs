//! How fast a run starts and how many runs go through: simple-runner, cold and warm,
//! against raw bollard and a driver over the docker CLI doing the same work, in the
//! same run, on a nats-server of its own.
//!
//! ```text
//! cargo bench -p simple-runner --bench start            # 30 latency samples, 200 runs
//! cargo bench -p simple-runner --bench start -- quick   # 10 samples, 40 runs
//! ```
//!
//! 1. Latency: resource event → result of a one-step `true` run, one at a time; raw
//!    bollard create+start+wait(+remove) of a container running `true`, and
//!    `docker run --rm IMAGE true`, interleaved with simple-runner's runs.
//! 2. Throughput: every run published at once, 8 at a time; raw bollard
//!    create+start+wait+remove 8 in flight, and 8 `docker run --rm` in parallel. Each
//!    contender runs twice, in the order A B C D D C B A, so that a drift of the
//!    engine over the minutes weighs on all alike; the mean of its two is reported.
//!
//! Containers have no network. Ratios are ours ÷ raw: for latency lower is better,
//! for throughput higher is better.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{RemoveContainerOptions, WaitContainerOptions};
use conveyor_sdk::testing::{Harness, NatsServer};
use conveyor_sdk::{CancellationToken, Config, Resource, Runtime};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use simple_runner::{CommandRunner, ContainerSettings, Engine, Mode, Settings, WarmSettings};

const IMAGE: &str = "conveyor-test/busybox:latest";
const DRIVER: &str = "start-bench";

/// Median and 90th percentile, in milliseconds.
fn summary(samples: &[f64]) -> (f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize] * 1e3;
    (at(0.5), at(0.9))
}

/// Raw bollard: a container running `true`, created, started and waited for; the
/// time to its exit and the time with its removal.
async fn raw_run(docker: &bollard::Docker) -> (f64, f64) {
    let t = Instant::now();
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["true".into()]),
        host_config: Some(HostConfig {
            init: Some(true),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker.create_container(None, body).await.expect("create (run scripts/services.sh)");
    docker.start_container(&created.id, None).await.expect("start");
    let waited: Vec<_> =
        docker.wait_container(&created.id, None::<WaitContainerOptions>).try_collect().await.expect("wait");
    assert_eq!(waited.last().map(|w| w.status_code), Some(0));
    let exited = t.elapsed().as_secs_f64();
    let options = RemoveContainerOptions { force: true, ..Default::default() };
    docker.remove_container(&created.id, Some(options)).await.expect("remove");
    (exited, t.elapsed().as_secs_f64())
}

/// A driver over the docker CLI: `docker run --rm` of `true`.
async fn cli_run() -> f64 {
    let t = Instant::now();
    let status = tokio::process::Command::new("docker")
        .args(["run", "--rm", "--init", "--network", "none", IMAGE, "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("the docker CLI (run scripts/services.sh)");
    assert!(status.success(), "docker run failed");
    t.elapsed().as_secs_f64()
}

/// A one-step `true` run through simple-runner: resource event → result.
async fn our_run(harness: &Harness) -> f64 {
    let t = Instant::now();
    let run = harness.create(one_step()).await.expect("dispatch");
    let result = harness.result(&run.run_id).await.expect("result");
    assert!(result.driverresult.success, "{}", result.driverresult.message);
    t.elapsed().as_secs_f64()
}

fn one_step() -> Resource {
    Resource::new("start", "pipeline", json!({"image": IMAGE, "steps": [{"name": "one", "command": "true"}]}))
}

/// simple-runner serving with `warm` warm containers per image, `concurrency` runs at
/// once.
struct Served {
    runner: CommandRunner,
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<Result<(), conveyor_sdk::runtime::Error>>,
}

impl Served {
    async fn start(
        engine: &Engine,
        nats: &NatsServer,
        harness: &Harness,
        warm: usize,
        concurrency: usize,
    ) -> Self {
        let settings = Settings {
            name: DRIVER.into(),
            mode: Mode::Serve,
            warm: WarmSettings { per_image: warm, ..WarmSettings::default() },
            container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
            ..Settings::default()
        };
        let runner = CommandRunner::new(engine.clone(), settings);
        let stop = CancellationToken::new();
        let config = Config::default().nats_url(nats.url()).concurrency(concurrency);
        let serving = tokio::spawn(
            Runtime::with_config(runner.clone(), config).run_until(stop.clone().cancelled_owned()),
        );
        harness.wait_for_pull_requests(DRIVER, 1, Duration::from_secs(30)).await.expect("runner serving");
        Self { runner, stop, serving }
    }

    /// Waits until `n` warm containers are ready.
    async fn warm(&self, n: usize) {
        let mut ready = self.runner.warm_containers();
        let waited = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r >= n)).await;
        assert!(waited.is_ok_and(|r| r.is_ok()), "no warm container within 30 s");
    }

    async fn finish(self) {
        self.stop.cancel();
        self.serving.await.expect("join").expect("runtime");
        self.runner.finish_removals().await;
    }
}

/// Who does the throughput round's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Raw,
    Cli,
    /// simple-runner with this many warm containers per image.
    Ours(usize),
}

/// simple-runner's throughput: `runs` runs published at once, served 8 at a time;
/// runs/s to the last result, and until the last container is removed.
async fn ours_throughput(
    engine: &Engine,
    nats: &NatsServer,
    harness: &Harness,
    warm: usize,
    runs: usize,
) -> (f64, f64) {
    let served = Served::start(engine, nats, harness, warm, 8).await;
    our_run(harness).await;
    if warm > 0 {
        served.warm(1).await;
    }
    let t = Instant::now();
    let mut dispatched = Vec::with_capacity(runs);
    for _ in 0..runs {
        dispatched.push(harness.create(one_step()).await.expect("dispatch"));
    }
    for run in &dispatched {
        let result = harness.result_within(&run.run_id, Duration::from_secs(300)).await.expect("result");
        assert!(result.driverresult.success, "{}", result.driverresult.message);
    }
    let to_results = runs as f64 / t.elapsed().as_secs_f64();
    served.finish().await;
    (to_results, runs as f64 / t.elapsed().as_secs_f64())
}

async fn containers_left(engine: &Engine) -> usize {
    engine.containers_of(DRIVER).await.map(|c| c.len()).unwrap_or(usize::MAX)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (samples, runs) = if quick { (10, 40) } else { (30, 200) };
    let engine = Engine::connect().await.expect("Docker (run scripts/services.sh)");
    let docker = engine.docker().clone();
    docker.inspect_image(IMAGE).await.expect("the test image (run scripts/services.sh)");
    let nats = NatsServer::start().await.expect("nats-server (run scripts/services.sh)");
    let harness = Harness::start(&nats.url()).await.expect("harness");

    // 1. Latency, one run at a time.
    let (mut raw_exit, mut raw_removed, mut cli, mut cold, mut warm) =
        (vec![], vec![], vec![], vec![], vec![]);
    let served = Served::start(&engine, &nats, &harness, 0, 1).await;
    our_run(&harness).await; // the first run of the process pays for its connections
    for _ in 0..samples {
        let (exited, removed) = raw_run(&docker).await;
        raw_exit.push(exited);
        raw_removed.push(removed);
        cli.push(cli_run().await);
        cold.push(our_run(&harness).await);
        served.runner.finish_removals().await; // the next sample starts on a quiet engine
    }
    served.finish().await;
    let served = Served::start(&engine, &nats, &harness, 1, 1).await;
    our_run(&harness).await;
    for _ in 0..samples {
        served.warm(1).await;
        warm.push(our_run(&harness).await);
    }
    served.finish().await;

    let (raw_p50, raw_p90) = summary(&raw_exit);
    let (rm_p50, rm_p90) = summary(&raw_removed);
    let (cli_p50, cli_p90) = summary(&cli);
    let (cold_p50, cold_p90) = summary(&cold);
    let (warm_p50, warm_p90) = summary(&warm);
    println!("run latency, one-step `true`, {samples} samples each (median / p90, ms; ratios ours ÷ raw, lower is better):");
    println!("  raw bollard create+start+wait         {raw_p50:7.1} / {raw_p90:7.1}");
    println!("  raw bollard create+start+wait+remove  {rm_p50:7.1} / {rm_p90:7.1}");
    println!("  docker CLI `docker run --rm`           {cli_p50:7.1} / {cli_p90:7.1}");
    println!(
        "  simple-runner cold, event → result    {cold_p50:7.1} / {cold_p90:7.1}   ÷ raw create+start+wait {:.2}, ÷ CLI {:.2}",
        cold_p50 / raw_p50,
        cold_p50 / cli_p50
    );
    println!(
        "  simple-runner warm, event → result    {warm_p50:7.1} / {warm_p90:7.1}   ÷ raw create+start+wait {:.2}, ÷ CLI {:.2}",
        warm_p50 / raw_p50,
        warm_p50 / cli_p50
    );

    // 2. Throughput: `runs` runs at once, 8 at a time. The engine drifts over minutes,
    // so each contender runs twice, in the order A B C D D C B A, and gets the mean.
    let order = [Contender::Raw, Contender::Cli, Contender::Ours(1), Contender::Ours(0)];
    let rounds: Vec<Contender> = order.iter().chain(order.iter().rev()).copied().collect();
    let mut rates: Vec<(Contender, f64, f64)> = Vec::new();
    for contender in rounds {
        let (to_results, to_removed) = match contender {
            Contender::Raw => {
                let t = Instant::now();
                futures_util::stream::iter(0..runs)
                    .for_each_concurrent(8, |_| async {
                        let _ = raw_run(&docker).await;
                    })
                    .await;
                let rate = runs as f64 / t.elapsed().as_secs_f64();
                (rate, rate)
            }
            Contender::Cli => {
                let t = Instant::now();
                futures_util::stream::iter(0..runs)
                    .for_each_concurrent(8, |_| async {
                        let _ = cli_run().await;
                    })
                    .await;
                let rate = runs as f64 / t.elapsed().as_secs_f64();
                (rate, rate)
            }
            Contender::Ours(warm) => ours_throughput(&engine, &nats, &harness, warm, runs).await,
        };
        rates.push((contender, to_results, to_removed));
    }
    let mean = |contender: Contender, removed: bool| {
        let of: Vec<f64> = rates
            .iter()
            .filter(|(c, _, _)| *c == contender)
            .map(|(_, results, gone)| if removed { *gone } else { *results })
            .collect();
        of.iter().sum::<f64>() / of.len() as f64
    };
    let rounds_of = |contender: Contender| {
        let of: Vec<String> =
            rates.iter().filter(|(c, _, _)| *c == contender).map(|(_, r, _)| format!("{r:.2}")).collect();
        of.join(", ")
    };
    let (raw_rate, cli_rate) = (mean(Contender::Raw, false), mean(Contender::Cli, false));
    println!("run throughput, {runs} one-step runs published at once, 8 at a time, each twice (A B C D D C B A); mean of the two (runs/s; ratios ours ÷ raw, higher is better):");
    println!(
        "  raw bollard create+start+wait+remove, 8 in flight  {raw_rate:6.2}  (rounds: {})",
        rounds_of(Contender::Raw)
    );
    println!(
        "  docker CLI `docker run --rm`, 8 in parallel        {cli_rate:6.2}  (rounds: {})",
        rounds_of(Contender::Cli)
    );
    for warm in [1, 0] {
        let ours = Contender::Ours(warm);
        let (to_results, to_removed) = (mean(ours, false), mean(ours, true));
        println!(
            "  simple-runner --warm {warm}: to the last result {to_results:6.2} (÷ raw {:.2}, ÷ CLI {:.2}; rounds: {}); until its last container is removed {to_removed:6.2} (÷ raw {:.2})",
            to_results / raw_rate,
            to_results / cli_rate,
            rounds_of(ours),
            to_removed / raw_rate
        );
    }
    println!("containers left by simple-runner: {}", containers_left(&engine).await);
}
