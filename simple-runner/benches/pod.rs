//! A run as a pod: three steps in three images beside one service, simple-runner
//! against the docker CLI doing the same work in the same run, on a nats-server of its
//! own.
//!
//! ```text
//! cargo bench -p simple-runner --bench pod            # 15 samples each
//! cargo bench -p simple-runner --bench pod -- quick   # 5 samples
//! ```
//!
//! The run: the service `web` (`conveyor-test/httpd`, ready when something listens on
//! port 8080) and the steps `alpha` (`grep ^ID= /etc/os-release` in
//! `conveyor-test/alpha`), `fetch` (`wget -q -O - http://web:8080/` in
//! `conveyor-test/beta`) and `busybox` (`grep ^ID= /etc/os-release && pwd` in
//! `conveyor-test/busybox`).
//!
//! - simple-runner: resource event → result, then → its containers removed.
//! - The docker CLI: `docker volume create`; `docker run -d` of the service with the
//!   run's labels, no network but its own, `web` → 127.0.0.1 and the volume at
//!   `/workspace`; `docker exec … wget` until it answers; `docker run --rm --network
//!   container:…` of each step's image with the volume; then → `docker rm -f` of the
//!   service and `docker volume rm`.
//!
//! One sample of each in turn, one run at a time. A runner that does not start
//! services yet runs the steps in one container of the run's image: the bench says so
//! and lets the fetch step fail there (`|| true`), and its figure is then no pod's.
//! Ratios are ours ÷ the CLI's: lower is better.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListVolumesOptions;
use conveyor_sdk::testing::{Harness, NatsServer};
use conveyor_sdk::{CancellationToken, Config, Resource, Runtime};
use serde_json::{json, Value};
use simple_runner::{CommandRunner, ContainerSettings, Engine, Settings};

const DRIVER: &str = "pod-bench";
const SERVICE_IMAGE: &str = "conveyor-test/httpd:latest";
const PAGE: &str = "conveyor-test httpd";
/// The steps: name, image, command.
const STEPS: [(&str, &str, &str); 3] = [
    ("alpha", "conveyor-test/alpha:latest", "grep ^ID= /etc/os-release"),
    ("fetch", "conveyor-test/beta:latest", "wget -q -O - http://web:8080/"),
    ("busybox", "conveyor-test/busybox:latest", "grep ^ID= /etc/os-release && pwd"),
];

/// Count, median and mean, in milliseconds.
fn summary(samples: &[f64]) -> (usize, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    (sorted.len(), sorted[sorted.len() / 2] * 1e3, mean * 1e3)
}

/// The pod's resource; `fetch` is the fetch step's command.
fn resource(fetch: &str) -> Resource {
    let steps: Vec<Value> = STEPS
        .iter()
        .map(|(name, image, command)| {
            let command = if *name == "fetch" { fetch } else { command };
            json!({"name": name, "image": image, "command": command})
        })
        .collect();
    Resource::new(
        "pod",
        "pipeline",
        json!({
            "image": STEPS[0].1,
            "services": [{"name": "web", "image": SERVICE_IMAGE, "ready": {"tcp": 8080}}],
            "steps": steps,
        }),
    )
}

/// `docker ARGS`, which must succeed; its standard output.
async fn docker(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("the docker CLI (run scripts/services.sh)");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The docker CLI doing the pod's work: seconds until the last step is done, and
/// until the service and the volume are removed.
async fn cli_pod() -> (f64, f64) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let volume = format!("conveyor-pod-bench-{}", &run_id[..8]);
    let labels: Vec<String> = [
        ("conveyor.run_id", run_id.as_str()),
        ("conveyor.driver", DRIVER),
        ("conveyor.resource", "pod"),
        ("conveyor.instance", "docker-cli"),
        ("conveyor.mode", "run"),
        ("conveyor.installation", "pod-bench"),
    ]
    .iter()
    .flat_map(|(key, value)| ["--label".to_owned(), format!("{key}={value}")])
    .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mount = format!("{volume}:/workspace");

    let t = Instant::now();
    docker(&[&["volume", "create"][..], &labels[..], &[&volume]].concat()).await;
    let service = docker(
        &[
            &["run", "-d", "--init", "--security-opt", "no-new-privileges", "--network", "none"][..],
            &["--add-host", "web:127.0.0.1", "-v", &mount],
            &labels[..],
            &[SERVICE_IMAGE],
        ]
        .concat(),
    )
    .await;
    let service = service.trim();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = tokio::process::Command::new("docker")
            .args(["exec", service, "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"])
            .output()
            .await
            .expect("the docker CLI");
        if probe.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the service did not answer within 30 s");
    }
    let network = format!("container:{service}");
    for (name, image, command) in STEPS {
        let out = docker(
            &[
                &["run", "--rm", "--init", "--security-opt", "no-new-privileges", "--network", &network][..],
                &["-v", &mount, "-w", "/workspace"],
                &labels[..],
                &[image, "sh", "-c", command],
            ]
            .concat(),
        )
        .await;
        assert!(name != "fetch" || out.contains(PAGE), "the CLI's fetch step printed {out:?}");
    }
    let steps_done = t.elapsed().as_secs_f64();
    docker(&["rm", "-f", service]).await;
    docker(&["volume", "rm", &volume]).await;
    (steps_done, t.elapsed().as_secs_f64())
}

/// simple-runner's run of `resource`: seconds to its result, and until its containers
/// are removed.
async fn our_pod(harness: &Harness, runner: &CommandRunner, resource: Resource) -> (f64, f64) {
    let t = Instant::now();
    let run = harness.create(resource).await.expect("dispatch");
    let result = harness.result_within(&run.run_id, Duration::from_secs(120)).await.expect("result");
    assert!(result.driverresult.success, "{}", result.driverresult.message);
    let to_result = t.elapsed().as_secs_f64();
    runner.finish_removals().await;
    (to_result, t.elapsed().as_secs_f64())
}

/// Whether simple-runner ran the resource as a pod: the service answered the fetch
/// step, and the last step ran in its own image, in the shared workspace.
async fn runs_pods(harness: &Harness, runner: &CommandRunner) -> (bool, String) {
    let run = harness.create(resource(STEPS[1].2)).await.expect("dispatch");
    let result = harness.result_within(&run.run_id, Duration::from_secs(120)).await.expect("result");
    runner.finish_removals().await;
    let lines: Vec<String> = harness.logs(&run.run_id).into_iter().map(|l| l.message).collect();
    let said = |text: &str| lines.iter().any(|l| l.contains(text));
    let pod = result.driverresult.success && said(PAGE) && said("ID=busybox") && said("/workspace");
    let how = format!(
        "result {}: {:?}; step output seen: {}",
        if result.driverresult.success { "success" } else { "failure" },
        result.driverresult.message,
        lines
            .iter()
            .filter(|l| l.starts_with("ID=") || l.contains(PAGE))
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    (pod, how)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let samples = if quick { 5 } else { 15 };
    let engine = Engine::connect().await.expect("Docker (run scripts/services.sh)");
    let docker_api = engine.docker().clone();
    for image in STEPS.iter().map(|s| s.1).chain([SERVICE_IMAGE]) {
        docker_api.inspect_image(image).await.expect("the test images (run scripts/services.sh)");
    }
    let nats = NatsServer::start().await.expect("nats-server (run scripts/services.sh)");
    let harness = Harness::start(&nats.url()).await.expect("harness");
    let settings = Settings {
        name: DRIVER.into(),
        container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
        ..Settings::default()
    };
    let runner = CommandRunner::new(engine.clone(), settings);
    let stop = CancellationToken::new();
    let config = Config::default().nats_url(nats.url()).concurrency(1);
    let serving =
        tokio::spawn(Runtime::with_config(runner.clone(), config).run_until(stop.clone().cancelled_owned()));
    harness.wait_for_pull_requests(DRIVER, 1, Duration::from_secs(30)).await.expect("runner serving");

    // The first run of the process pays for its connections; it also tells whether
    // this runner starts services.
    let (pod, how) = runs_pods(&harness, &runner).await;
    let fetch = if pod { STEPS[1].2.to_owned() } else { format!("{} || true", STEPS[1].2) };
    cli_pod().await;

    let (mut cli_steps, mut cli_removed, mut ours, mut ours_removed) = (vec![], vec![], vec![], vec![]);
    for _ in 0..samples {
        let (steps_done, removed) = cli_pod().await;
        cli_steps.push(steps_done);
        cli_removed.push(removed);
        let (to_result, removed) = our_pod(&harness, &runner, resource(&fetch)).await;
        ours.push(to_result);
        ours_removed.push(removed);
    }

    stop.cancel();
    serving.await.expect("join").expect("runtime");
    runner.finish_removals().await;

    let (n, cli_median, cli_mean) = summary(&cli_steps);
    let (_, cli_rm_median, cli_rm_mean) = summary(&cli_removed);
    let (_, our_median, our_mean) = summary(&ours);
    let (_, our_rm_median, our_rm_mean) = summary(&ours_removed);
    println!(
        "pod run, 3 steps in 3 images beside 1 service, {n} samples each (median / mean, ms; ratios ours ÷ CLI, lower is better):"
    );
    println!("  docker CLI, to the last step done            {cli_median:7.1} / {cli_mean:7.1}");
    println!("  docker CLI, with the service and volume gone {cli_rm_median:7.1} / {cli_rm_mean:7.1}");
    println!(
        "  simple-runner, event → result                {our_median:7.1} / {our_mean:7.1}   ratio {:.2} / {:.2}",
        our_median / cli_median,
        our_mean / cli_mean
    );
    println!(
        "  simple-runner, with its containers removed   {our_rm_median:7.1} / {our_rm_mean:7.1}   ratio {:.2} / {:.2}",
        our_rm_median / cli_rm_median,
        our_rm_mean / cli_rm_mean
    );
    if pod {
        println!("simple-runner ran the resource as a pod ({how})");
    } else {
        println!(
            "simple-runner did NOT run the resource as a pod ({how}): its figures are of the steps in one \
             container of {}, its fetch step allowed to fail, and no pod's",
            STEPS[0].1
        );
    }
    let left = engine.containers_of(DRIVER).await.map(|c| c.len()).unwrap_or(usize::MAX);
    let filters = HashMap::from([("label".to_owned(), vec![format!("conveyor.driver={DRIVER}")])]);
    let volumes = docker_api
        .list_volumes(Some(ListVolumesOptions { filters: Some(filters) }))
        .await
        .map(|v| v.volumes.unwrap_or_default().len())
        .unwrap_or(usize::MAX);
    println!("containers left (both sides): {left}; volumes left: {volumes}");
}
