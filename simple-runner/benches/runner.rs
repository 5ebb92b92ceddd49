//! simple-runner against raw Docker work in the same run, on a nats-server of its own.
//!
//! ```text
//! cargo bench -p simple-runner --bench runner            # 30 samples each
//! cargo bench -p simple-runner --bench runner -- quick   # 5 samples, 20,000 lines
//! cargo bench -p simple-runner --bench runner -- logs    # the log lines of a step alone
//! ```
//!
//! Arguments naming parts (`step`, `runs`, `logs`) pick those; none picks all.
//! Containers have no network. Prints medians and their ratios.

use std::collections::{HashMap, VecDeque};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::RemoveContainerOptions;
use conveyor_sdk::testing::{Harness, NatsServer};
use conveyor_sdk::{CancellationToken, Config, LogHandle, Resource, Runtime};
use futures_util::StreamExt;
use serde_json::json;
use simple_runner::{CommandRunner, ContainerSettings, Engine, Settings};

const IMAGE: &str = "conveyor-test/busybox:latest";

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn container_body() -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(IMAGE.into()),
        entrypoint: Some(vec!["/bin/sh".into()]),
        cmd: Some(vec![]),
        open_stdin: Some(true),
        host_config: Some(HostConfig {
            init: Some(true),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A raw bollard exec of `command`, output drained, exit code read.
async fn raw_exec(docker: &bollard::Docker, container: &str, command: &str) -> i64 {
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), command.to_owned()]),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await.expect("create exec");
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, Some(StartExecOptions::default())).await.expect("start exec")
    {
        while output.next().await.is_some() {}
    }
    docker.inspect_exec(&exec.id).await.expect("inspect exec").exit_code.unwrap_or(-1)
}

async fn raw_container(docker: &bollard::Docker) -> String {
    let created = docker.create_container(None, container_body()).await.expect("create");
    docker.start_container(&created.id, None).await.expect("start");
    created.id
}

async fn raw_remove(docker: &bollard::Docker, id: &str) {
    let options = RemoveContainerOptions { force: true, ..Default::default() };
    docker.remove_container(id, Some(options)).await.expect("remove");
}

fn seconds_since_epoch(timestamp: &str) -> f64 {
    // 2026-11-23T21:30:46.123456789Z → seconds of the day are enough within one run.
    let time = &timestamp[11..29];
    let h: f64 = time[0..2].parse().unwrap_or(0.0);
    let m: f64 = time[3..5].parse().unwrap_or(0.0);
    let s: f64 = time[6..].parse().unwrap_or(0.0);
    h * 3600.0 + m * 60.0 + s
}

fn now_seconds_of_day() -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    now % 86_400.0
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (samples, lines) = if quick { (5, 20_000) } else { (30, 200_000) };
    // Arguments naming parts (`step`, `runs`, `logs`) pick those; none picks all.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parts = ["step", "runs", "logs"];
    let picked =
        |part: &str| !args.iter().any(|a| parts.contains(&a.as_str())) || args.iter().any(|a| a == part);
    let engine = Engine::connect().await.expect("Docker (run scripts/services.sh)");
    let docker = engine.docker().clone();
    docker.inspect_image(IMAGE).await.expect("the test image (run scripts/services.sh)");

    if picked("step") {
        one_step(&docker, samples).await;
    }

    // Whole runs through NATS, from message to result.
    let nats = NatsServer::start().await.expect("nats-server (run scripts/services.sh)");
    let harness = Harness::start(&nats.url()).await.expect("harness");
    let settings = Settings {
        container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
        ..Settings::default()
    };
    let runner = CommandRunner::new(engine.clone(), settings);
    let stop = CancellationToken::new();
    let config = Config::default().nats_url(nats.url()).concurrency(1);
    let serving =
        tokio::spawn(Runtime::with_config(runner.clone(), config).run_until(stop.clone().cancelled_owned()));
    harness
        .wait_for_pull_requests("command-runner", 1, Duration::from_secs(30))
        .await
        .expect("runner serving");
    if picked("runs") {
        runs(&harness, &docker, samples).await;
    }
    if picked("logs") {
        log_lines(&harness, lines).await;
    }

    stop.cancel();
    serving.await.expect("join").expect("runtime");
    runner.finish_removals().await;
    let left: HashMap<String, Vec<String>> =
        HashMap::from([("label".to_owned(), vec!["conveyor.driver=command-runner".to_owned()])]);
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(left),
        ..Default::default()
    };
    let left = docker.list_containers(Some(options)).await.map(|l| l.len()).unwrap_or(0);
    println!("containers left by simple-runner: {left}");
}

/// 1. One step: the runner's step (through the container's shell, output to a log)
///    against a raw bollard exec of the same command, in one container.
async fn one_step(docker: &bollard::Docker, samples: usize) {
    let container = raw_container(docker).await;
    let (log, _lines) = LogHandle::memory();
    let mut session =
        simple_runner::steps::session::Session::attach(docker, &container).await.expect("attach");
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let t = Instant::now();
        raw_exec(docker, &container, "true").await;
        raw.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let script = "set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\ntrue";
        session.run(script, &[], &log).await.expect("step");
        ours.push(t.elapsed().as_secs_f64());
    }
    drop(session);
    raw_remove(docker, &container).await;
    let (o, r) = (median(ours), median(raw));
    println!(
        "per-step exec of `true`: raw bollard {:.1} ms, simple-runner {:.1} ms, ratio {:.2}",
        r * 1e3,
        o * 1e3,
        o / r
    );
}

/// A run of `steps` through the harness, from dispatch to result, in seconds.
async fn run_once(harness: &Harness, steps: serde_json::Value) -> f64 {
    let resource = Resource::new("bench", "pipeline", json!({"image": IMAGE, "steps": steps}));
    let t = Instant::now();
    let run = harness.create(resource).await.expect("dispatch");
    let result = harness.result(&run.run_id).await.expect("result");
    assert!(result.driverresult.success, "{}", result.driverresult.message);
    t.elapsed().as_secs_f64()
}

/// 2 and 3: one-step runs against raw bollard, three-step runs against the docker CLI.
async fn runs(harness: &Harness, docker: &bollard::Docker, samples: usize) {
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let t = Instant::now();
        let id = raw_container(docker).await;
        raw_exec(docker, &id, "true").await;
        raw_remove(docker, &id).await;
        raw.push(t.elapsed().as_secs_f64());
        ours.push(run_once(harness, json!([{"name": "one", "command": "true"}])).await);
    }
    let (o, r) = (median(ours), median(raw));
    println!(
        "one-step run, message to result: raw bollard create+start+exec+remove {:.0} ms, simple-runner {:.0} ms, ratio {:.2}",
        r * 1e3,
        o * 1e3,
        o / r
    );

    let commands = ["pwd", "ls -l", "cat /etc/os-release"];
    let (mut ours, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let t = Instant::now();
        let out = Command::new("docker")
            .args(["run", "-d", "-i", "--init", "--network", "none", "--entrypoint", "/bin/sh", IMAGE])
            .output()
            .expect("docker run");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        for command in commands {
            Command::new("docker").args(["exec", &id, "sh", "-c", command]).output().expect("docker exec");
        }
        Command::new("docker").args(["rm", "-f", &id]).output().expect("docker rm");
        cli.push(t.elapsed().as_secs_f64());
        let steps: Vec<_> = commands.iter().map(|c| json!({"name": c, "command": c})).collect();
        ours.push(run_once(harness, json!(steps)).await);
    }
    let (o, c) = (median(ours), median(cli));
    println!(
        "three-step run: docker CLI (run -d, 3 × exec, rm -f) {:.0} ms, simple-runner {:.0} ms, ratio {:.2}",
        c * 1e3,
        o * 1e3,
        o / c
    );
}

/// 4. Log lines of a step, until all are stored by JetStream, against raw pipelined
///    publishing of the same lines.
async fn log_lines(harness: &Harness, lines: usize) {
    let (mut ours, mut raw, mut read, mut raw_read) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let resource = Resource::new(
            "chatty",
            "pipeline",
            json!({"image": IMAGE, "steps": [{"name": "count", "command": format!("seq 1 {lines}")}]}),
        );
        let mut results = harness.subscribe_results();
        let run = harness.create(resource).await.expect("dispatch");
        // The result is published once every line before it is stored: its arrival
        // is when the step's lines have all reached NATS.
        let stored = loop {
            let event = results.recv().await.expect("results");
            if event.run_id == run.run_id {
                break now_seconds_of_day();
            }
        };
        harness.result_within(&run.run_id, Duration::from_secs(600)).await.expect("result");
        let all_read = now_seconds_of_day();
        let first = harness.logs(&run.run_id).into_iter().find(|l| l.message == "1").expect("first line");
        let start = seconds_since_epoch(&first.timestamp);
        ours.push(lines as f64 / (stored - start));
        read.push(lines as f64 / (all_read - start));
        harness.jetstream().get_stream("logs-engine").await.expect("stream").purge().await.expect("purge");

        let payloads: Vec<bytes::Bytes> = (1..=lines)
            .map(|i| {
                let log = conveyor_sdk::Log {
                    runid: run.run_id.clone(),
                    driver: "raw".into(),
                    pipeline: None,
                    timestamp: "2026-11-23T21:30:46.123456789Z".into(),
                    message: i.to_string(),
                };
                serde_json::to_vec(&log).expect("encode").into()
            })
            .collect();
        let js = harness.jetstream();
        let t = Instant::now();
        let mut pending = VecDeque::new();
        for payload in payloads {
            pending.push_back(js.publish(format!("logs.{}", run.run_id), payload).await.expect("publish"));
            if pending.len() > 1024 {
                pending.pop_front().expect("ack").await.expect("ack");
            }
        }
        for ack in pending {
            ack.await.expect("ack");
        }
        raw.push(lines as f64 / t.elapsed().as_secs_f64());
        // The run's result is in: this waits until the harness has read every line.
        harness.result_within(&run.run_id, Duration::from_secs(600)).await.expect("result");
        raw_read.push(lines as f64 / t.elapsed().as_secs_f64());
        harness.jetstream().get_stream("logs-engine").await.expect("stream").purge().await.expect("purge");
    }
    let (o, r, a, ra) = (median(ours), median(raw), median(read), median(raw_read));
    println!(
        "log lines of a {lines}-line step, until stored: raw pipelined publish {r:.0} lines/s, simple-runner {o:.0} lines/s, ratio {:.2}",
        o / r
    );
    println!(
        "  until the harness (the server's side) has read them all: raw {ra:.0} lines/s, simple-runner {a:.0} lines/s, ratio {:.2}",
        a / ra
    );
}
