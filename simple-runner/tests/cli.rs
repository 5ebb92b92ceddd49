//! The command line, as a user runs it.

mod common;

use std::process::Command;

use common::RemovesOnDrop;

fn simple_runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_simple-runner"))
}

fn write(spec: serde_json::Value) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), spec.to_string()).unwrap();
    file
}

#[test]
fn schema_prints_the_definition_it_registers() {
    let output = simple_runner().arg("schema").output().unwrap();
    assert!(output.status.success());
    let definition: conveyor_sdk::ResourceDefinition = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(definition.name, "pipeline");
    assert_eq!(definition.schema["required"], serde_json::json!(["steps"]));
}

#[test]
fn run_executes_the_example_pipeline_and_exits_zero() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pipeline.json");
    let output = simple_runner().args(["run", example, "--network", "none"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "==> step 1/3 print-working-directory: pwd");
    assert_eq!(lines[1], "/", "the image's own working directory");
    assert!(lines.contains(&"NAME=\"Conveyor test image\""), "{stdout}");
    assert_eq!(lines.last(), Some(&"result: success: 3 steps succeeded"));
}

#[test]
fn run_exits_non_zero_when_a_step_fails() {
    let file = write(serde_json::json!({"name": "failing", "resource": "pipeline", "spec": {
        "image": "conveyor-test/busybox:latest",
        "steps": [{"name": "broken", "command": "echo about to fail; exit 7"}]
    }}));
    let output = simple_runner().args(["run", "--network", "none"]).arg(file.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("about to fail"));
    assert!(stdout.contains("result: failure: step broken failed with exit code 7"), "{stdout}");
}

#[test]
fn run_refuses_an_invalid_resource_with_every_violation() {
    let file =
        write(serde_json::json!({"name": "bad", "resource": "pipeline", "spec": {"steps": [{"name": 5}]}}));
    let output = simple_runner().arg("run").arg(file.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/spec/steps/0: \"command\" is a required property"), "{stderr}");
    assert!(stderr.contains("/spec/steps/0/name"), "{stderr}");

    let output = simple_runner().args(["run", "/no/such/file.json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read /no/such/file.json"));
}

#[tokio::test]
async fn serve_takes_runs_from_nats_and_exits_cleanly_on_sigterm() {
    use conveyor_sdk::testing::{Harness, NatsServer};
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let harness = Harness::start(&nats.url()).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = format!("cli-serve-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let _cleanup = RemovesOnDrop(driver.clone());
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["serve", "--network", "none", "--concurrency", "2", "--name", &driver])
        .env("CONVEYOR_NATS_URL", nats.url())
        .env("CONVEYOR_API_URL", format!("http://127.0.0.1:{closed}"))
        .env_remove("CONVEYOR_WARM")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    harness.wait_for_pull_requests(&driver, 1, std::time::Duration::from_secs(30)).await.unwrap();

    let mut seed: conveyor_sdk::Resource =
        serde_json::from_str(include_str!("../../conveyor-sdk/tests/fixtures/resource.seed.json")).unwrap();
    seed.spec["image"] = serde_json::json!("conveyor-test/busybox:latest");
    let run = harness.create(seed).await.unwrap();
    let result = harness.result_of_driver(&run.run_id, &driver, std::time::Duration::from_secs(30)).await;
    let result = result.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    // By default a serving runner keeps a warm container of the image it ran.
    let engine = simple_runner::Engine::connect().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while warm_containers(&engine, &driver).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no warm container after the run");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let pid = serve.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status =
        tokio::time::timeout(std::time::Duration::from_secs(30), serve.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    // The run's container and the warm one went before the process exited.
    let left = engine.containers_of(&driver).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The warm containers of `driver` on the engine.
async fn warm_containers(engine: &simple_runner::Engine, driver: &str) -> usize {
    let containers = engine.containers_of(driver).await.unwrap();
    containers
        .iter()
        .filter(|(_, labels)| labels.get("conveyor.warm").map(String::as_str) == Some("true"))
        .count()
}

#[tokio::test]
async fn serve_logs_json_with_the_runs_fields_and_serves_its_metrics() {
    use conveyor_sdk::testing::{Harness, NatsServer};
    use tokio::io::AsyncBufReadExt;
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let harness = Harness::start(&nats.url()).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["serve", "--network", "none", "--log-format", "json", "--metrics-listen", "127.0.0.1:0"])
        .env("CONVEYOR_NATS_URL", nats.url())
        .env("CONVEYOR_API_URL", format!("http://127.0.0.1:{closed}"))
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(serve.stderr.take().unwrap()).lines();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = lines_tx.send(line.clone());
            all.push(line);
        }
        all
    });
    // The endpoint says where it listens.
    let addr: std::net::SocketAddr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let line = lines_rx.recv().await.expect("simple-runner ended before serving its metrics");
            let object: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if let Some(addr) = object["fields"]["addr"].as_str() {
                return addr.parse().unwrap();
            }
        }
    })
    .await
    .expect("no line said where the metrics are served");
    harness.wait_for_pull_requests("command-runner", 1, std::time::Duration::from_secs(30)).await.unwrap();

    let mut seed: conveyor_sdk::Resource =
        serde_json::from_str(include_str!("../../conveyor-sdk/tests/fixtures/resource.seed.json")).unwrap();
    seed.spec["image"] = serde_json::json!("conveyor-test/busybox:latest");
    let name = seed.name.clone();
    let run = harness.create(seed).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // This process's reqwest has no crypto provider of its own (see the SDK README).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        if text.contains("conveyor_runs_finished_total{outcome=\"success\"} 1")
            && text.contains("simple_runner_container_start_seconds_count 1")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the run is not in the metrics:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let pid = serve.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status =
        tokio::time::timeout(std::time::Duration::from_secs(30), serve.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let lines = reading.await.unwrap();
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let of_run: Vec<&serde_json::Value> =
        objects.iter().filter(|o| o["span"]["run_id"] == run.run_id.as_str()).collect();
    assert!(
        of_run.iter().any(|o| o["fields"]["message"] == "reconciled"),
        "no line of the run says it was reconciled: {lines:#?}"
    );
    for object in of_run {
        assert_eq!(object["span"]["driver"], "command-runner", "{object}");
        assert_eq!(object["span"]["resource_type"], "pipeline", "{object}");
        assert_eq!(object["span"]["resource_name"], name.as_str(), "{object}");
    }
}
