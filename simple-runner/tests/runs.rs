//! Runs end to end: the runner serving on a real nats-server, steps in real containers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use simple_runner::CommandRunner;

#[tokio::test]
async fn the_seed_pipeline_runs_its_three_steps_and_leaves_no_container() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let mut seed: conveyor_sdk::Resource =
        serde_json::from_str(include_str!("../../conveyor-sdk/tests/fixtures/resource.seed.json")).unwrap();
    seed.spec["image"] = json!(TEST_IMAGE);
    let run = harness.create(seed).await.unwrap();
    let event = harness.result(&run.run_id).await.unwrap();

    let result = event.driverresult;
    assert!(result.success, "{}", result.message);
    assert_eq!(result.driver, "command-runner");
    assert_eq!(result.message, "3 steps succeeded");
    let steps = result.data["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps.iter().all(|s| s["exit_code"] == 0 && s["duration_seconds"].as_f64().is_some()));
    let log = lines(&harness, &run.run_id);
    let at = |text: &str| {
        log.iter().position(|l| l == text).unwrap_or_else(|| panic!("no line {text:?} in {log:#?}"))
    };
    // The image's own working directory (the test image sets none: `/`) and its files.
    assert!(at("==> step 1/3 print-working-directory: pwd") < at("/"));
    assert!(log.iter().any(|l| l.starts_with("total ")), "ls -l output: {log:#?}");
    assert!(log.iter().any(|l| l.ends_with(" etc")), "ls -l shows the image's files: {log:#?}");
    assert!(at("NAME=\"Conveyor test image\"") > at("==> step 3/3 show-os-info: cat /etc/os-release"));
    assert!(log.iter().any(|l| l.starts_with("<== step 3/3 show-os-info exited with code 0 after ")));
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn steps_get_a_real_shell_env_and_a_shared_workspace() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let run = harness
        .create(pipeline(
            "shell",
            json!({
                "image": TEST_IMAGE,
                "env": {"GREETING": "hello world", "WHO": "run"},
                "steps": [
                    {"name": "pipes", "command": "echo \"$GREETING\" | tr a-z A-Z && echo 'it''s quoted'"},
                    {"name": "step-env", "command": "echo \"$WHO $STEP_ONLY\"", "env": {"WHO": "step", "STEP_ONLY": "yes"}},
                    {"name": "write", "command": "echo shared > result.txt"},
                    {"name": "read", "command": "cat result.txt; printf 'no newline at the end'"},
                    {"name": "blank-and-stderr", "command": "echo before; echo; echo after; echo oops >&2"},
                    {"name": "no-stdin", "command": "cat; echo stdin-closed"}
                ]
            }),
        ))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    let log = lines(&harness, &run.run_id);
    for expected in [
        "HELLO WORLD",
        "its quoted",
        "step yes",
        "shared",
        "no newline at the end",
        "before",
        "",
        "after",
        "oops",
        "stdin-closed",
    ] {
        assert!(log.iter().any(|l| l == expected), "missing {expected:?} in {log:#?}");
    }
    // stdout and stderr are two streams: only the order within each is defined.
    let stdout: Vec<&String> = log.iter().filter(|l| *l != "oops").collect();
    let before = stdout.iter().position(|l| *l == "before").unwrap();
    assert_eq!(stdout[before + 1..before + 3], ["", "after"], "blank lines are kept");
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failing_step_stops_the_run_and_is_named_in_the_result() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let run = harness
        .create(pipeline(
            "failing",
            json!({"image": TEST_IMAGE, "steps": [
                {"name": "may-fail", "command": "exit 3", "continue_on_error": true},
                {"name": "errexit", "command": "false\necho must-not-print"},
                {"name": "never", "command": "echo never"}
            ]}),
        ))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "step errexit failed with exit code 1");
    let codes: Vec<_> =
        result.data["steps"].as_array().unwrap().iter().map(|s| s["exit_code"].clone()).collect();
    assert_eq!(codes, [json!(3), json!(1)]);
    let log = lines(&harness, &run.run_id);
    assert!(!log.iter().any(|l| l == "must-not-print" || l == "never"), "{log:#?}");
    assert!(log.iter().any(|l| l == "step may-fail may fail: going on"));
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_step_over_its_timeout_is_stopped_and_the_run_fails_saying_so() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let step = harness
        .create(pipeline(
            "slow-step",
            json!({"image": TEST_IMAGE, "steps": [{"name": "sleepy", "command": "sleep 600", "timeout": "1s"}]}),
        ))
        .await
        .unwrap();
    let whole = harness
        .create(pipeline(
            "slow-run",
            json!({"image": TEST_IMAGE, "timeout": 2, "steps": [
                {"name": "quick", "command": "true"},
                {"name": "slow", "command": "sleep 600"}
            ]}),
        ))
        .await
        .unwrap();
    let result = harness.result(&step.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "step sleepy timed out after 1s");
    let result = harness.result(&whole.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "timed out after 2s during step slow");
    assert_no_container_left(&engine, &step.run_id).await;
    assert_no_container_left(&engine, &whole.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_image_and_a_failed_pull_are_clear_failures() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let image = "127.0.0.1:1/conveyor-test/missing:0";
    let never = harness
        .create(pipeline(
            "never",
            json!({"image": image, "pull": "never", "steps": [{"name": "a", "command": "true"}]}),
        ))
        .await
        .unwrap();
    let pull = harness
        .create(pipeline("pull", json!({"image": image, "steps": [{"name": "a", "command": "true"}]})))
        .await
        .unwrap();
    let result = harness.result(&never.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, format!("image {image} is not present and the pull policy is `never`"));
    let result = harness.result(&pull.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert!(result.message.starts_with(&format!("pulling image {image} failed: ")), "{}", result.message);
    assert!(lines(&harness, &pull.run_id).contains(&format!("pulling image {image}")));
    assert_no_container_left(&engine, &never.run_id).await;
    assert_no_container_left(&engine, &pull.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_fails_before_any_container_starts() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let run = harness
        .create(pipeline(
            "invalid",
            json!({"image": TEST_IMAGE, "steps": [{"name": "no-command"}], "pull": "often"}),
        ))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert!(
        result.message.contains("/spec/steps/0: \"command\" is a required property"),
        "{}",
        result.message
    );
    assert!(result.message.contains("/spec/pull"), "{}", result.message);
    assert_eq!(containers_of_run(&engine, &run.run_id).await, 0);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_hundred_thousand_lines_are_all_logged_in_order() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let run = harness
        .create(pipeline(
            "chatty",
            json!({"image": TEST_IMAGE, "steps": [{"name": "count", "command": "seq 1 200000"}]}),
        ))
        .await
        .unwrap();
    let result = harness.result_within(&run.run_id, Duration::from_secs(240)).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    let log = lines(&harness, &run.run_id);
    let start = log.iter().position(|l| l == "1").expect("first line");
    let numbers: Vec<&String> = log[start..start + 200_000].iter().collect();
    assert!(
        numbers.iter().enumerate().all(|(i, l)| **l == (i + 1).to_string()),
        "lines out of order or lost"
    );
    assert!(log[start + 200_000].starts_with("<== step 1/1 count exited with code 0"));
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_runs_overlap_in_containers_of_their_own() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving =
        serve(CommandRunner::new(engine.clone(), settings()), config(&nats).concurrency(4), &harness).await;

    let mut runs = Vec::new();
    for i in 0..4 {
        let spec = json!({"image": TEST_IMAGE, "steps": [
            {"name": "mark", "command": "echo started; hostname"},
            {"name": "wait", "command": "sleep 4; echo finished"}
        ]});
        runs.push(harness.create(pipeline(&format!("parallel-{i}"), spec)).await.unwrap());
    }
    for run in &runs {
        assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    }
    // Each run has a container of its own, and every run started before any finished.
    let stamp = |run: &conveyor_sdk::testing::Dispatched, text: &str| {
        harness.logs(&run.run_id).into_iter().find(|l| l.message == text).map(|l| l.timestamp).unwrap()
    };
    let last_start = runs.iter().map(|r| stamp(r, "started")).max().unwrap();
    let first_finish = runs.iter().map(|r| stamp(r, "finished")).min().unwrap();
    assert!(
        last_start < first_finish,
        "runs did not overlap: last start {last_start}, first finish {first_finish}"
    );
    let hostnames: std::collections::HashSet<String> = runs
        .iter()
        .map(|r| {
            let log = lines(&harness, &r.run_id);
            let at = log.iter().position(|l| l == "started").unwrap();
            log[at + 1].clone()
        })
        .collect();
    assert_eq!(hostnames.len(), 4, "each run needs its own container");
    for run in &runs {
        assert_no_container_left(&engine, &run.run_id).await;
    }
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_shutdown_mid_step_removes_the_container_and_leaves_the_run_for_redelivery() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let short_grace = config(&nats).grace_period(Duration::from_millis(200)).ack_wait(Duration::from_secs(2));
    let serving = serve(CommandRunner::new(engine.clone(), settings()), short_grace, &harness).await;

    let spec = json!({"image": TEST_IMAGE, "steps": [
        {"name": "long", "command": "echo attempt $CONVEYOR_ATTEMPT; [ \"$CONVEYOR_ATTEMPT\" -gt 1 ] || sleep 600"}
    ]});
    let run = harness.create(pipeline("interrupted", spec)).await.unwrap();
    harness.wait_for_log(&run.run_id, "attempt 1", Duration::from_secs(30)).await.unwrap();
    serving.shutdown().await.unwrap();
    assert!(harness.results(&run.run_id).is_empty(), "a run cut short by shutdown publishes no result");
    assert_eq!(
        containers_of_run(&engine, &run.run_id).await,
        0,
        "the container must be gone when serving ends"
    );

    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    assert!(lines(&harness, &run.run_id).contains(&"attempt 2".to_owned()));
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_served_runs_secret_is_masked_in_the_lines_stored_on_nats() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let secrets =
        simple_runner::settings::secrets::Secrets::default().with("API_KEY", "nats-secret-6e0f").unwrap();
    let settings = simple_runner::Settings { secrets, ..settings() };
    let serving = serve(CommandRunner::new(engine.clone(), settings), config(&nats), &harness).await;

    let run = harness
        .create(pipeline(
            "secret",
            json!({"image": TEST_IMAGE, "secrets": ["API_KEY"], "steps": [
                {"name": "leak", "command": "echo \"key=$API_KEY\"; echo \"$API_KEY\" >&2"}
            ]}),
        ))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    let log = lines(&harness, &run.run_id);
    assert!(log.iter().any(|l| l == "key=***") && log.iter().any(|l| l == "***"), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("nats-secret-6e0f")), "{log:#?}");
    assert_no_container_left(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();
}
