//! What a step runner gives CI users: the image's working directory, per-step
//! environment and directory, secrets that never reach the log, steps after a
//! failure, a cap on output, resource limits and hardening. Each run goes through
//! `CommandRunner::execute` on the real Docker engine, with a driver name of its own.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;
use simple_runner::report::{Refusal, RunReport};
use simple_runner::settings::secrets::Secrets;
use simple_runner::{CommandRunner, ContainerSettings, Settings};

/// An image of the test image's with `WORKDIR /app` and a file there, removed when
/// dropped.
struct WorkdirImage(String);

impl WorkdirImage {
    fn build() -> Self {
        let tag = format!("conveyor-test/workdir:{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let context = tempfile::tempdir().unwrap();
        std::fs::write(
            context.path().join("Dockerfile"),
            format!("FROM {TEST_IMAGE}\nWORKDIR /app\nRUN echo hi > /app/from-the-image.txt\n"),
        )
        .unwrap();
        let built = Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(context.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("docker CLI: run `bash scripts/services.sh`");
        assert!(built.status.success(), "docker build: {}", String::from_utf8_lossy(&built.stderr));
        Self(tag)
    }
}

impl Drop for WorkdirImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

fn runner_with(settings: Settings, engine: simple_runner::Engine) -> CommandRunner {
    CommandRunner::new(engine, settings)
}

#[tokio::test]
async fn steps_run_in_the_images_workdir_unless_the_run_or_the_step_names_one() {
    let image = WorkdirImage::build();
    let runner = runner_with(own_settings(), engine().await);

    let (report, log, _) = run_here(
        &runner,
        json!({
            "image": image.0,
            "env": {"RUN_VAR": "from-run", "BOTH": "run"},
            "steps": [
                {"name": "pwd", "command": "pwd"},
                {"name": "ls", "command": "ls"},
                {"name": "sub", "command": "pwd; echo made > here.txt", "workdir": "sub/dir"},
                {"name": "back", "command": "pwd; cat sub/dir/here.txt"},
                {"name": "env", "command": "echo \"$RUN_VAR $BOTH $STEP_VAR\"", "env": {"BOTH": "step", "STEP_VAR": "s"}}
            ]
        }),
    )
    .await;
    assert!(report.succeeded(), "{} {log:#?}", report.message());
    for line in ["/app", "from-the-image.txt", "/app/sub/dir", "made", "from-run step s"] {
        assert!(has(&log, line), "no {line:?} in {log:#?}");
    }
    let pwd = log.iter().position(|l| l == "==> step 4/5 back: pwd; cat sub/dir/here.txt").unwrap();
    assert_eq!(log[pwd + 1], "/app", "a step's workdir is its own");

    let (report, log, _) = run_here(
        &runner,
        json!({"image": image.0, "workdir": "/srv/new", "steps": [{"name": "pwd", "command": "pwd; ls /app"}]}),
    )
    .await;
    assert!(report.succeeded(), "{} {log:#?}", report.message());
    assert!(has(&log, "/srv/new") && has(&log, "from-the-image.txt"), "{log:#?}");
}

#[tokio::test]
async fn a_step_after_a_failure_runs_when_always_or_on_failure_and_the_result_names_the_first() {
    let runner = runner_with(own_settings(), engine().await);
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "steps": [
            {"name": "ok", "command": "echo fine"},
            {"name": "not-now", "command": "echo not-yet", "when": "on_failure"},
            {"name": "breaks", "command": "exit 4"},
            {"name": "skipped", "command": "echo must-not-run"},
            {"name": "cleanup", "command": "echo cleaning up", "when": "always"},
            {"name": "notify", "command": "echo notified", "when": "on_failure"},
            {"name": "cleanup-fails", "command": "exit 9", "when": "always"}
        ]}),
    )
    .await;
    let result = report.into_result();
    assert!(!result.success);
    assert_eq!(result.message, "step breaks failed with exit code 4");
    let ran: Vec<(String, serde_json::Value)> = result.data["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["exit_code"].clone()))
        .collect();
    let expected = [("ok", 0), ("breaks", 4), ("cleanup", 0), ("notify", 0), ("cleanup-fails", 9)]
        .map(|(name, code)| (name.to_owned(), json!(code)));
    assert_eq!(ran, expected);
    assert!(has(&log, "cleaning up") && has(&log, "notified"), "{log:#?}");
    assert!(!has(&log, "must-not-run") && !has(&log, "not-yet"), "{log:#?}");
    assert!(has(&log, "--- step 4/7 skipped skipped: a step before it failed"), "{log:#?}");

    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "steps": [
            {"name": "ok", "command": "true"},
            {"name": "notify", "command": "echo notified", "when": "on_failure"},
            {"name": "cleanup", "command": "echo cleaning up", "when": "always"}
        ]}),
    )
    .await;
    assert!(report.succeeded(), "{}", report.message());
    assert!(!has(&log, "notified") && has(&log, "cleaning up"), "{log:#?}");
}

fn with_secrets(secrets: Secrets) -> Settings {
    Settings { secrets, ..own_settings() }
}

#[tokio::test]
async fn a_secret_reaches_its_step_and_never_the_log_however_it_is_printed() {
    let secrets = Secrets::default()
        .with("DEPLOY_TOKEN", "tok-3f9a81c2")
        .unwrap()
        .with("SIGNING_KEY", "-----BEGIN-----\nkey-line-7d1e\n-----END-----")
        .unwrap()
        .with("STEP_ONLY", "step-secret-55aa")
        .unwrap();
    let runner = runner_with(with_secrets(secrets), engine().await);
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "secrets": ["DEPLOY_TOKEN", "SIGNING_KEY"], "steps": [
            {"name": "plain", "command": "echo \"$DEPLOY_TOKEN\""},
            {"name": "inside", "command": "echo \"Authorization: Bearer ${DEPLOY_TOKEN}; done\""},
            {"name": "pieces", "command": "printf '%s' \"${DEPLOY_TOKEN%????}\"; sleep 0.3; printf '%s was split\\n' \"${DEPLOY_TOKEN#????????}\""},
            {"name": "stderr", "command": "echo \"err:$DEPLOY_TOKEN\" >&2"},
            {"name": "multi-line", "command": "printf '%s\\n' \"$SIGNING_KEY\""},
            {"name": "reaches", "command": "[ \"$DEPLOY_TOKEN\" = tok-3f9a81c2 ] && echo token-ok; echo \"[${STEP_ONLY:-unset}]\""},
            {"name": "step-secret", "command": "echo \"$STEP_ONLY\" | wc -c", "secrets": ["STEP_ONLY"]}
        ]}),
    )
    .await;
    assert!(report.succeeded(), "{} {log:#?}", report.message());
    for value in ["tok-3f9a81c2", "tok-3f9a", "81c2", "key-line-7d1e", "BEGIN", "step-secret-55aa"] {
        assert!(!log.iter().any(|l| l.contains(value)), "{value:?} reached the log: {log:#?}");
    }
    for line in
        ["***", "Authorization: Bearer ***; done", "*** was split", "err:***", "token-ok", "[unset]", "17"]
    {
        assert!(has(&log, line), "no {line:?} in {log:#?}");
    }
    let masked_key = log.iter().filter(|l| *l == "***").count();
    assert!(masked_key >= 4, "each line of the multi-line value is masked: {log:#?}");
}

#[tokio::test]
async fn a_run_naming_an_unknown_secret_fails_before_any_container_starts() {
    let runner =
        runner_with(with_secrets(Secrets::default().with("KNOWN", "known-value").unwrap()), engine().await);
    let (report, log, run_id) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "secrets": ["KNOWN"], "steps": [
            {"name": "s", "command": "echo never", "secrets": ["NOT_GIVEN"]}
        ]}),
    )
    .await;
    assert!(matches!(report, RunReport::Refused(Refusal::UnknownSecret(ref name)) if name == "NOT_GIVEN"));
    assert!(report.message().contains("NOT_GIVEN"), "{}", report.message());
    assert_eq!(log, [report.message()], "nothing ran");
    assert_eq!(containers_of_run(runner.engine(), &run_id).await, 0);
}

#[tokio::test]
async fn output_past_the_log_cap_is_dropped_with_one_marker_and_the_run_goes_on() {
    let settings = Settings { max_log_bytes: 2000, ..own_settings() };
    let runner = runner_with(settings, engine().await);
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "steps": [
            {"name": "flood", "command": "i=0; while [ $i -lt 20000 ]; do echo \"line $i of a flood\"; i=$((i+1)); done"},
            {"name": "after", "command": "echo still-running >&2; echo after-the-cap"}
        ]}),
    )
    .await;
    assert!(report.succeeded(), "{}", report.message());
    let markers: Vec<&String> = log.iter().filter(|l| l.starts_with("[output truncated")).collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(markers[0].contains("2000 bytes"), "{}", markers[0]);
    let output: usize = log.iter().filter(|l| l.starts_with("line ")).map(|l| l.len() + 1).sum();
    assert!(output <= 2000, "{output} bytes of output were logged");
    assert!(has(&log, "line 0 of a flood") && !has(&log, "line 19999 of a flood"));
    assert!(!has(&log, "after-the-cap"), "the cap is the run's, over all steps");
    assert!(log.iter().any(|l| l.starts_with("<== step 2/2 after exited with code 0")), "{log:#?}");
}

#[tokio::test]
async fn a_runs_limits_are_the_specs_capped_by_the_operators_and_the_container_is_hardened() {
    let settings = Settings {
        container: ContainerSettings {
            max_memory_bytes: Some(96 << 20),
            max_pids: Some(200),
            ..settings().container
        },
        ..own_settings()
    };
    let runner = runner_with(settings, engine().await);
    // cgroup v2 files first, then v1's.
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "cpus": 0.5, "memory": "1g", "pids": 5000, "steps": [
            {"name": "memory", "command": "echo memory=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"},
            {"name": "pids", "command": "echo pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)"},
            {"name": "cpus", "command": "echo cpu=$(cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"},
            {"name": "privileges", "command": "grep NoNewPrivs /proc/self/status"},
            {"name": "network", "command": "echo net=$(ls /sys/class/net)"}
        ]}),
    )
    .await;
    assert!(report.succeeded(), "{} {log:#?}", report.message());
    for line in [
        "memory 1g is over the runner's maximum: the run gets 96m",
        "pids 5000 is over the runner's maximum: the run gets 200",
        "memory=100663296",
        "pids=200",
        "NoNewPrivs:\t1",
        "net=lo",
    ] {
        assert!(has(&log, line), "no {line:?} in {log:#?}");
    }
    assert!(has(&log, "cpu=50000") || has(&log, "cpu=50000 100000"), "{log:#?}");
}

#[tokio::test]
async fn a_read_only_root_and_another_user_are_the_operators_to_choose() {
    let settings = Settings {
        container: ContainerSettings {
            read_only: true,
            user: Some("1000:1000".into()),
            ..settings().container
        },
        ..own_settings()
    };
    let runner = runner_with(settings, engine().await);
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "steps": [
            {"name": "who", "command": "id -u; id -g"},
            {"name": "root", "command": "touch /probe 2>/dev/null && echo root-writable || echo root-read-only"},
            {"name": "tmp", "command": "touch /tmp/probe && echo tmp-writable"}
        ]}),
    )
    .await;
    assert!(report.succeeded(), "{} {log:#?}", report.message());
    for line in ["1000", "root-read-only", "tmp-writable"] {
        assert!(has(&log, line), "no {line:?} in {log:#?}");
    }
}

#[tokio::test]
async fn a_step_over_its_memory_is_reported_killed_for_memory_and_the_runner_goes_on() {
    let runner = runner_with(own_settings(), engine().await);
    // The step makes itself the kernel's first choice, before the container's shell.
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "memory": "64m", "steps": [
            {"name": "hog", "command": "echo 1000 > /proc/self/oom_score_adj; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"},
            {"name": "cleanup", "command": "echo cleanup-ran", "when": "always"}
        ]}),
    )
    .await;
    let message = report.message();
    assert_eq!(
        message,
        "step hog was killed for memory (exit code 137): it went over the run's limit of 64m"
    );
    assert!(!report.succeeded());
    assert!(!has(&log, "survived") && has(&log, "cleanup-ran"), "{log:#?}");

    let (report, _, _) =
        run_here(&runner, json!({"image": TEST_IMAGE, "steps": [{"name": "next", "command": "true"}]})).await;
    assert!(report.succeeded(), "the runner runs the next run: {}", report.message());
}

#[tokio::test]
async fn a_step_whose_memory_kills_the_containers_shell_is_reported_killed_for_memory() {
    let runner = runner_with(own_settings(), engine().await);
    // The step makes the container's shell, its parent, the kernel's first choice.
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "memory": "24m", "steps": [
            {"name": "hog", "command": "echo 1000 > /proc/$PPID/oom_score_adj; x=$(head -c 200000000 /dev/zero | tr '\\0' a)"}
        ]}),
    )
    .await;
    assert_eq!(
        report.message(),
        "step hog was killed for memory (exit code 137): it went over the run's limit of 24m",
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_run_gets_the_image_of_its_platform_or_none() {
    let runner = runner_with(own_settings(), engine().await);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let platform = format!("linux/{arch}");
    let (report, log, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "platform": platform, "pull": "never", "steps": [{"name": "arch", "command": "uname -m"}]}),
    )
    .await;
    assert!(report.succeeded(), "{} {log:#?}", report.message());
    assert!(has(&log, std::env::consts::ARCH), "{log:#?}");

    let other = if arch == "arm64" { "linux/amd64" } else { "linux/arm64" };
    let (report, _, _) = run_here(
        &runner,
        json!({"image": TEST_IMAGE, "platform": other, "pull": "never", "steps": [{"name": "arch", "command": "uname -m"}]}),
    )
    .await;
    assert_eq!(
        report.message(),
        format!("image {TEST_IMAGE} for {other} is not present and the pull policy is `never`"),
        "an image of another platform is not the one asked for"
    );
}
