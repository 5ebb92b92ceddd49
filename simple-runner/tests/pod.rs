//! A run is a pod: steps in their own images on a shared workspace, services beside
//! them in the run's network namespace, ready before the first step. Each run goes
//! through `CommandRunner::execute` on the real engine (Docker, or Podman with
//! `scripts/podman-tests.sh`), with a driver name of its own and no network.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use simple_runner::report::RunReport;
use simple_runner::settings::secrets::Secrets;
use simple_runner::{CommandRunner, Settings};

async fn runner(settings: Settings) -> CommandRunner {
    CommandRunner::new(engine().await, settings)
}

fn web(ready: serde_json::Value) -> serde_json::Value {
    json!({"name": "web", "image": HTTPD_IMAGE, "ready": ready})
}

#[tokio::test]
async fn a_file_written_by_a_step_in_one_image_is_read_by_a_step_in_another() {
    let runner = runner(own_settings()).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "steps": [
                {"name": "build", "image": ALPHA_IMAGE, "command": ". /etc/os-release; echo \"built in $ID\" > artifact.txt; pwd"},
                {"name": "test", "image": BETA_IMAGE, "command": ". /etc/os-release; echo \"read in $ID: $(cat artifact.txt)\""},
                {"name": "list", "command": "ls /workspace"}
            ]
        }),
    )
    .await;
    assert!(report.succeeded(), "{}: {log:?}", report.message());
    assert!(has(&log, "/workspace"), "the workspace is every container's directory: {log:?}");
    assert!(has(&log, "read in beta: built in alpha"), "{log:?}");
    assert!(has(&log, "artifact.txt"), "the run's own image sees the workspace too: {log:?}");
}

#[tokio::test]
async fn a_run_without_step_images_or_services_keeps_the_images_own_directory() {
    let runner = runner(own_settings()).await;
    let (report, log, run_id) =
        run_here(&runner, json!({"image": TEST_IMAGE, "steps": [{"name": "where", "command": "pwd"}]})).await;
    assert!(report.succeeded(), "{}", report.message());
    assert!(has(&log, "/"), "{log:?}");
    assert_eq!(volumes_of_run(runner.engine(), &run_id).await, 0);
}

#[tokio::test]
async fn a_step_reaches_a_service_by_its_name_and_at_localhost() {
    let runner = runner(own_settings()).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "services": [web(json!({"tcp": 8080}))],
            "steps": [
                {"name": "by-name", "command": "wget -q -O - http://web:8080/"},
                {"name": "by-localhost", "image": ALPHA_IMAGE, "command": "wget -q -O - http://localhost:8080/"}
            ]
        }),
    )
    .await;
    assert!(report.succeeded(), "{}: {log:?}", report.message());
    let pages = log.iter().filter(|l| *l == HTTPD_PAGE).count();
    assert_eq!(pages, 2, "{log:?}");
    let ready = log.iter().position(|l| l.starts_with("<-- service web is ready after")).expect("ready line");
    let first = log.iter().position(|l| l.starts_with("==> step 1/2")).expect("first step");
    assert!(ready < first, "the service is ready before the first step: {log:?}");
}

#[tokio::test]
async fn a_service_that_never_listens_fails_the_run_within_its_timeout_before_any_step() {
    let runner = runner(own_settings()).await;
    let started = Instant::now();
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "services": [{
                "name": "db", "image": TEST_IMAGE,
                "command": "echo starting the database; echo 'cannot bind' >&2; exec sleep 60",
                "ready": {"tcp": 5432}, "ready_timeout": 2
            }],
            "steps": [{"name": "never", "command": "echo should not run"}]
        }),
    )
    .await;
    let elapsed = started.elapsed();
    match &report {
        RunReport::ServiceNotReady { service, .. } => assert_eq!(service, "db"),
        other => panic!("not a service failure: {other:?}"),
    }
    assert_eq!(report.message(), "service db was not ready within 2s: nothing listened on port 5432");
    assert!(elapsed < Duration::from_secs(15), "failed after {elapsed:?}, its timeout is 2 s");
    assert!(has(&log, "[db] starting the database") && has(&log, "[db] cannot bind"), "its lines: {log:?}");
    assert!(!log.iter().any(|l| l.contains("should not run")), "{log:?}");
    assert!(has(&log, &report.message()), "the reason is in the log: {log:?}");
}

#[tokio::test]
async fn a_service_that_exits_before_the_steps_fails_the_run_naming_it_with_its_last_lines() {
    let runner = runner(own_settings()).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "services": [{
                "name": "broken", "image": TEST_IMAGE,
                "command": "echo reading config; echo 'fatal: no config' >&2; exit 3",
                "ready": {"tcp": 9000}, "ready_timeout": "1m"
            }],
            "steps": [{"name": "never", "command": "echo should not run"}]
        }),
    )
    .await;
    assert_eq!(report.message(), "service broken exited with code 3 before the steps began");
    assert!(has(&log, "[broken] fatal: no config"), "{log:?}");
    assert!(has(&log, "service broken exited with code 3"), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("should not run")), "{log:?}");
}

#[tokio::test]
async fn a_service_is_ready_by_its_command_or_by_its_images_health_check() {
    let runner = runner(own_settings()).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "services": [
                {"name": "slow", "image": HTTPD_IMAGE,
                 "command": "sleep 1; touch /tmp/up; exec httpd -f -p 8081 -h /www",
                 "ready": {"command": "test -e /tmp/up"}},
                {"name": "checked", "image": HTTPD_HEALTHCHECK_IMAGE}
            ],
            "steps": [{"name": "both", "command": "wget -q -O - http://slow:8081/ && wget -q -O - http://checked:8080/"}]
        }),
    )
    .await;
    assert!(report.succeeded(), "{}: {log:?}", report.message());
    assert_eq!(log.iter().filter(|l| *l == HTTPD_PAGE).count(), 2, "{log:?}");
}

#[tokio::test]
async fn a_services_secret_reaches_its_process_alone_and_never_the_log_or_its_container() {
    let secret = format!("s3cret-{}", uuid::Uuid::new_v4().simple());
    let settings = Settings {
        secrets: Secrets::default().with("DB_PASSWORD", secret.as_str()).unwrap(),
        ..own_settings()
    };
    let runner = runner(settings).await;
    let resource = json!({
        "image": TEST_IMAGE,
        "services": [{
            "name": "db", "image": TEST_IMAGE, "secrets": ["DB_PASSWORD"], "env": {"DB_USER": "ci"},
            "command": "echo \"user $DB_USER password $DB_PASSWORD\"; touch /tmp/up; exec sleep 60",
            "ready": {"command": "test -e /tmp/up"}
        }],
        "steps": [{"name": "look", "command": "echo \"step sees [$DB_PASSWORD]\""}]
    });
    let (report, log, _) = run_here(&runner, resource).await;
    assert!(report.succeeded(), "{}: {log:?}", report.message());
    assert!(has(&log, "[db] user ci password ***"), "masked in the service's output: {log:?}");
    assert!(has(&log, "step sees []"), "a step does not get a service's secret: {log:?}");
    assert!(!log.iter().any(|l| l.contains(&secret)), "{log:?}");
}

#[tokio::test]
async fn a_services_environment_is_not_in_its_containers_configuration() {
    let secret = format!("s3cret-{}", uuid::Uuid::new_v4().simple());
    let settings =
        Settings { secrets: Secrets::default().with("TOKEN", secret.as_str()).unwrap(), ..own_settings() };
    let runner = runner(settings).await;
    let engine = runner.engine().clone();
    let driver = runner.settings().name.clone();
    let resource = json!({
        "image": TEST_IMAGE,
        // The service is ready once the test has inspected the pod's containers.
        "services": [{"name": "svc", "image": TEST_IMAGE, "secrets": ["TOKEN"], "command": "exec sleep 60",
                      "ready": {"command": "test -e /tmp/inspected"}}],
        "steps": [{"name": "inspect", "command": "echo inspected"}]
    });
    // While the service waits, every container of the run is inspected from outside;
    // then the service is told it is ready.
    let inspecting = tokio::spawn(async move {
        loop {
            let containers = containers_labelled(&engine, &format!("conveyor.driver={driver}"), false).await;
            if containers.len() >= 2 {
                let mut envs = Vec::new();
                for c in containers {
                    let id = c.id.unwrap_or_default();
                    let inspected = engine.docker().inspect_container(&id, None).await.expect("inspect");
                    envs.push(inspected.config.and_then(|c| c.env).unwrap_or_default());
                    let touch = bollard::exec::CreateExecOptions {
                        cmd: Some(vec!["touch", "/tmp/inspected"]),
                        ..Default::default()
                    };
                    let exec = engine.docker().create_exec(&id, touch).await.expect("exec");
                    let detached = bollard::exec::StartExecOptions { detach: true, ..Default::default() };
                    engine.docker().start_exec(&exec.id, Some(detached)).await.expect("touch");
                }
                return envs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (report, _, _) = run_here(&runner, resource).await;
    assert!(report.succeeded(), "{}", report.message());
    let envs =
        tokio::time::timeout(Duration::from_secs(10), inspecting).await.expect("inspected").expect("task");
    for env in envs {
        assert!(!env.iter().any(|e| e.contains(&secret) || e.starts_with("TOKEN=")), "{env:?}");
    }
}

#[tokio::test]
async fn a_service_that_dies_while_steps_run_is_said_in_the_log_and_the_steps_go_on() {
    let runner = runner(own_settings()).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "services": [{"name": "flaky", "image": TEST_IMAGE, "command": "echo up; exit 7"}],
            "steps": [
                {"name": "wait", "command": "i=0; while [ $i -lt 100 ]; do i=$((i+1)); sleep 0.05; done; echo waited"}
            ]
        }),
    )
    .await;
    // Started is ready: the service may end before or after the step begins.
    match &report {
        RunReport::ServiceNotReady { service, .. } => assert_eq!(service, "flaky"),
        _ => {
            assert!(report.succeeded(), "{}: {log:?}", report.message());
            assert!(has(&log, "waited"), "{log:?}");
        }
    }
    assert!(has(&log, "[flaky] up"), "{log:?}");
    assert!(has(&log, "service flaky exited with code 7"), "{log:?}");
}

#[tokio::test]
async fn the_output_of_services_and_steps_shares_the_runs_log_cap() {
    let settings = Settings { max_log_bytes: 2_000, ..own_settings() };
    let runner = runner(settings).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "services": [{"name": "chatty", "image": TEST_IMAGE,
                          "command": "i=0; while [ $i -lt 200 ]; do echo service line $i; i=$((i+1)); done; touch /tmp/done; exec sleep 60",
                          "ready": {"command": "test -e /tmp/done"}}],
            "steps": [{"name": "talk", "command": "i=0; while [ $i -lt 200 ]; do echo step line $i; i=$((i+1)); done"}]
        }),
    )
    .await;
    assert!(report.succeeded(), "{}", report.message());
    let output: usize = log
        .iter()
        .filter(|l| l.starts_with("[chatty] service line ") || l.starts_with("step line "))
        .map(|l| l.len() + 1)
        .sum();
    assert!(output > 1_800, "the cap is used up, not more: {output} bytes");
    assert!(output <= 2_000, "{output} bytes of output logged past a cap of 2000");
    let notices = log.iter().filter(|l| l.starts_with("[output truncated")).count();
    assert_eq!(notices, 1, "one notice for the whole run: {log:?}");
    assert!(!log.iter().any(|l| l == "step line 199"), "the step's output came after the cap was reached");
}

#[tokio::test]
async fn a_spec_breaking_the_pods_rules_is_refused_with_its_paths_before_any_container_starts() {
    let runner = runner(own_settings()).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            // Were it looked at, this image would fail the run: the spec is refused first.
            "image": "conveyor-test/absent:never",
            "pull": "never",
            "services": [web(json!({"tcp": 8080})), web(json!({"tcp": 8081})), {"name": "build", "image": TEST_IMAGE}],
            "steps": [{"name": "build", "command": "true"}]
        }),
    )
    .await;
    let RunReport::Refused(refusal) = &report else { panic!("not refused: {report:?}") };
    let message = refusal.to_string();
    assert!(message.contains("/spec/services/1/name"), "{message}");
    assert!(message.contains("/spec/services/2/name"), "{message}");
    assert_eq!(log, [message], "the refusal is the whole log: no image looked at, no container");
}

#[tokio::test]
async fn a_step_in_its_own_image_is_stopped_at_its_timeout_and_the_always_steps_still_run() {
    let runner = runner(own_settings()).await;
    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "env": {"WHERE": "run"},
            "steps": [
                {"name": "slow", "image": ALPHA_IMAGE, "timeout": 1,
                 "command": "echo \"slow in $WHERE\"; exec sleep 30"},
                {"name": "skipped", "image": BETA_IMAGE, "command": "echo should not run"},
                {"name": "report", "image": BETA_IMAGE, "when": "on_failure",
                 "command": ". /etc/os-release; echo \"reporting from $ID\""}
            ]
        }),
    )
    .await;
    assert_eq!(report.message(), "step slow timed out after 1s");
    assert!(has(&log, "slow in run"), "the run's env reaches a step in its own image: {log:?}");
    assert!(has(&log, "reporting from beta"), "{log:?}");
    assert!(has(&log, "--- step 2/3 skipped skipped: a step before it failed"), "{log:?}");
}
