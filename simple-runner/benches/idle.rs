//! The memory of an idle `simple-runner serve`, with and without warm containers, on
//! a nats-server and a dev server of its own.
//!
//! ```text
//! cargo bench -p simple-runner --bench idle
//! ```
//!
//! For `--warm 2` and `--warm 0`: one run of the test image (so the pool has an image
//! to keep warm), then 10 s idle; then the process's own resident memory (VmRSS, from
//! `/proc/<pid>/status`) and, separately, each warm container's (`docker stats`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use conveyor_sdk::testing::{DevServer, NatsServer};
use conveyor_sdk::Resource;
use serde_json::json;
use simple_runner::Engine;

const IMAGE: &str = "conveyor-test/busybox:latest";
const IDLE: Duration = Duration::from_secs(10);

/// A field of `/proc/<pid>/status`, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the runner's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

async fn warm_containers(engine: &Engine, driver: &str) -> Vec<String> {
    let containers = engine.containers_of(driver).await.expect("list containers");
    containers
        .into_iter()
        .filter(|(_, labels)| labels.get("conveyor.warm").map(String::as_str) == Some("true"))
        .map(|(id, _)| id)
        .collect()
}

async fn measure(engine: &Engine, dev: &DevServer, nats: &NatsServer, warm: usize) {
    let driver = format!("idle-bench-{warm}");
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["serve", "--network", "none", "--warm", &warm.to_string(), "--name", &driver])
        .env("CONVEYOR_NATS_URL", nats.url())
        .env("CONVEYOR_API_URL", dev.url())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("simple-runner");
    let pid = serve.id().expect("pid");
    let harness = dev.harness();
    harness.wait_for_pull_requests(&driver, 1, Duration::from_secs(30)).await.expect("serving");
    let resource = Resource::new(
        "idle",
        "pipeline",
        json!({"image": IMAGE, "steps": [{"name": "one", "command": "true"}]}),
    );
    let run = harness.create(resource).await.expect("dispatch");
    let result =
        harness.result_of_driver(&run.run_id, &driver, Duration::from_secs(30)).await.expect("result");
    assert!(result.driverresult.success, "{}", result.driverresult.message);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while warm_containers(engine, &driver).await.len() < warm {
        assert!(tokio::time::Instant::now() < deadline, "never {warm} warm containers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(IDLE).await;

    let (rss, anon, file) =
        (status_kb(pid, "VmRSS:"), status_kb(pid, "RssAnon:"), status_kb(pid, "RssFile:"));
    println!(
        "simple-runner serve --warm {warm}, idle {}s: RSS {:.1} MB (anonymous {:.1} MB, file-backed {:.1} MB)",
        IDLE.as_secs(),
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    let ids = warm_containers(engine, &driver).await;
    if !ids.is_empty() {
        let stats = tokio::process::Command::new("docker")
            .args(["stats", "--no-stream", "--format", "{{.Name}}: {{.MemUsage}}"])
            .args(&ids)
            .output()
            .await
            .expect("docker stats");
        for line in String::from_utf8_lossy(&stats.stdout).lines() {
            println!("  warm container {line}");
        }
    }

    let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    let exited = tokio::time::timeout(Duration::from_secs(30), serve.wait()).await;
    assert!(exited.is_ok_and(|s| s.is_ok_and(|s| s.success())), "simple-runner did not exit cleanly");
    let left = engine.containers_of(&driver).await.map(|c| c.len()).unwrap_or(usize::MAX);
    println!("  containers left after SIGTERM: {left}");
}

#[tokio::main]
async fn main() {
    let engine = Engine::connect().await.expect("Docker (run scripts/services.sh)");
    engine.docker().inspect_image(IMAGE).await.expect("the test image (run scripts/services.sh)");
    let nats = NatsServer::start().await.expect("nats-server (run scripts/services.sh)");
    let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let dev = DevServer::start(&nats.url(), listen).await.expect("dev server");
    for warm in [2, 0] {
        measure(&engine, &dev, &nats, warm).await;
    }
}
