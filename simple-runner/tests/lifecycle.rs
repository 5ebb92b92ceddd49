//! A run's end as CI users expect it: a timeout that covers the whole run, a cancel
//! that stops the step and leaves no container, on the real Docker engine.

mod common;

use std::time::Duration;

use conveyor_sdk::protocol::CancelState;
use conveyor_sdk::runtime::cancel_run;
use serde_json::json;
use simple_runner::{CommandRunner, ContainerSettings, Settings, DRIVER_NAME};
use tokio::net::TcpListener;

use common::*;

/// A step that says when it got SIGTERM, and when it is going.
const TRAPPING: &str = "trap 'echo got TERM; exit 143' TERM; echo started; sleep 600 & wait";

#[tokio::test]
async fn a_cancelled_run_stops_its_step_removes_its_container_and_fails_once_saying_cancelled() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let run = harness
        .create(pipeline(
            "cancel-me",
            json!({"image": TEST_IMAGE, "steps": [
                {"name": "long", "command": TRAPPING},
                {"name": "never", "command": "echo never"}
            ]}),
        ))
        .await
        .unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    let reply = cancel_run(harness.client(), DRIVER_NAME, &run.run_id).await.unwrap();
    assert_eq!(reply.state, CancelState::Cancelling);

    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "cancelled");
    assert_eq!(result.data["steps"][0]["name"], "long");
    assert_eq!(result.data["steps"][0]["exit_code"], 143, "{}", result.data);
    let lines = lines(&harness, &run.run_id);
    assert!(lines.contains(&"got TERM".to_owned()), "the step got SIGTERM: {lines:?}");
    assert!(!lines.contains(&"never".to_owned()), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("the run was cancelled on request"), "{lines:?}");
    assert_no_container_left(&engine, &run.run_id).await;
    assert_eq!(harness.results(&run.run_id).len(), 1);
    let again = cancel_run(harness.client(), DRIVER_NAME, &run.run_id).await.unwrap();
    assert_eq!(again.state, CancelState::Finished);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_step_that_ignores_sigterm_is_killed_after_the_stop_grace() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let settings = Settings {
        container: ContainerSettings { stop_grace: Duration::from_secs(1), ..settings().container },
        ..settings()
    };
    let serving = serve(CommandRunner::new(engine.clone(), settings), config(&nats), &harness).await;

    let stubborn = "trap '' TERM; echo started; while :; do sleep 1; done";
    let run = harness
        .create(pipeline(
            "stubborn",
            json!({"image": TEST_IMAGE, "timeout": "2s", "steps": [
                {"name": "stubborn", "command": stubborn}
            ]}),
        ))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "timed out after 2s during step stubborn");
    assert_eq!(result.data["steps"][0]["exit_code"], serde_json::Value::Null, "killed, no exit reported");
    let lines = lines(&harness, &run.run_id);
    let stopping =
        "<== step 1/1 stubborn: the run's timeout of 2s is over; stopping it (SIGTERM, SIGKILL after 1s)";
    assert!(lines.contains(&stopping.to_owned()), "{lines:?}");
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_run_timeout_covers_the_image_pull() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    // A registry on loopback that accepts connections and never answers: the pull hangs.
    let registry = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = registry.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = registry.accept().await {
            held.push(socket);
        }
    });
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let image = format!("127.0.0.1:{port}/conveyor-test/hangs:1");
    let run = harness
        .create(pipeline(
            "slow-pull",
            json!({"image": image, "timeout": "2s", "steps": [
                {"name": "never", "command": "true"}
            ]}),
        ))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "timed out after 2s before the steps began");
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
    silent.abort();
}

#[tokio::test]
async fn the_operator_run_timeout_caps_a_specs_timeout() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let settings = Settings { run_timeout: Duration::from_secs(1), ..settings() };
    let serving = serve(CommandRunner::new(engine.clone(), settings), config(&nats), &harness).await;

    let run = harness
        .create(pipeline(
            "greedy",
            json!({"image": TEST_IMAGE, "timeout": "1h", "steps": [
                {"name": "sleepy", "command": "sleep 600"}
            ]}),
        ))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert_eq!(result.message, "timed out after 1s during step sleepy");
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}

#[test]
fn a_local_run_times_out_as_a_served_one_does() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let resource = json!({"name": "local-slow", "resource": "pipeline", "spec": {
        "image": TEST_IMAGE, "steps": [{"name": "sleepy", "command": TRAPPING}]
    }});
    std::fs::write(file.path(), resource.to_string()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["run", "--network", "none", "--run-timeout", "2s"])
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("got TERM"), "{stdout}");
    assert!(stdout.contains("result: failure: timed out after 2s during step sleepy"), "{stdout}");
}
