//! A run's `source` checked out by the runner before the first step, against git
//! servers of the test's own on loopback: `git daemon` (git://), and `git
//! http-backend` behind busybox `httpd` (http://), with and without basic auth; and a
//! server that accepts and never answers, to cancel a checkout half-way.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use conveyor_sdk::driver::{CancelReason, RunCancellation};
use serde_json::{json, Value};
use simple_runner::settings::files::FileSettings;
use simple_runner::{CommandRunner, RunReport, Settings};
use tokio::io::AsyncReadExt;

const USER: &str = "ci-user";
const PASSWORD: &str = "git-pw-5a7c1e93";

fn missing(what: &str) -> String {
    format!("{what} is missing: run `bash scripts/services.sh`")
}

/// The path of `program` on `PATH`.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{}", missing(program)))
}

/// The test's own git, with none of the host's configuration.
fn git(home: &Path, dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(which("git"))
        .args(["-c", "user.name=Conveyor Test", "-c", "user.email=test@conveyor.invalid"])
        .args(["-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", missing("git")));
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Bare repositories in a directory of their own: `lib.git` (one commit, `lib.txt`),
/// and `app.git`, whose `main` has three commits (README `first`, tagged `v1`; README
/// `second` and `two.txt`; the submodule `lib` at `../lib.git`) and whose `feature`
/// branches off `v1` with `feature.txt`.
struct Repos {
    dir: tempfile::TempDir,
    /// The tip of `main`.
    main: String,
    /// The second commit of `main`.
    second: String,
    /// The commit `v1` tags.
    v1: String,
    /// The tip of `feature`.
    feature: String,
}

impl Repos {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (home, work, bare) = (dir.path().join("home"), dir.path().join("work"), dir.path().join("repos"));
        for path in [&home, &work, &bare] {
            std::fs::create_dir_all(path).unwrap();
        }
        let lib = work.join("lib");
        git(&home, &work, &["init", "-q", "lib"]);
        std::fs::write(lib.join("lib.txt"), "from the submodule\n").unwrap();
        git(&home, &lib, &["add", "."]);
        git(&home, &lib, &["commit", "-qm", "lib"]);
        git(&home, &work, &["clone", "-q", "--bare", "lib", "../repos/lib.git"]);

        let app = work.join("app");
        git(&home, &work, &["init", "-q", "app"]);
        std::fs::write(app.join("README"), "first\n").unwrap();
        git(&home, &app, &["add", "."]);
        git(&home, &app, &["commit", "-qm", "first"]);
        git(&home, &app, &["tag", "-a", "-m", "version 1", "v1"]);
        std::fs::write(app.join("README"), "second\n").unwrap();
        std::fs::write(app.join("two.txt"), "two\n").unwrap();
        git(&home, &app, &["add", "."]);
        git(&home, &app, &["commit", "-qm", "second"]);
        let lib_repo = bare.join("lib.git");
        git(&home, &app, &["submodule", "add", "-q", &lib_repo.to_string_lossy(), "lib"]);
        git(&home, &app, &["config", "-f", ".gitmodules", "submodule.lib.url", "../lib.git"]);
        git(&home, &app, &["add", "."]);
        git(&home, &app, &["commit", "-qm", "the library as a submodule"]);
        git(&home, &app, &["checkout", "-q", "-b", "feature", "v1"]);
        std::fs::write(app.join("feature.txt"), "feature work\n").unwrap();
        git(&home, &app, &["add", "feature.txt"]);
        git(&home, &app, &["commit", "-qm", "feature"]);
        git(&home, &app, &["checkout", "-q", "main"]);
        git(&home, &work, &["clone", "-q", "--bare", "app", "../repos/app.git"]);

        let rev = |name: &str| git(&home, &app, &["rev-parse", &format!("{name}^{{commit}}")]);
        let (main, second, v1, feature) = (rev("main"), rev("main~1"), rev("v1"), rev("feature"));
        Self { dir, main, second, v1, feature }
    }

    fn base(&self) -> PathBuf {
        self.dir.path().join("repos")
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn until_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `git daemon` serving every repository of `repos` on a loopback port, stopped when
/// dropped.
struct GitDaemon {
    _child: tokio::process::Child,
    port: u16,
}

impl GitDaemon {
    async fn start(repos: &Repos) -> Self {
        let port = closed_port();
        let base = repos.base();
        let child = tokio::process::Command::new(which("git"))
            .arg("daemon")
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(&base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", missing("git daemon")));
        until_listening(port, "git daemon").await;
        Self { _child: child, port }
    }

    fn url(&self, repository: &str) -> String {
        format!("git://127.0.0.1:{}/{repository}", self.port)
    }
}

/// `git http-backend` as a CGI of busybox `httpd` on a loopback port, behind basic
/// auth when `auth` says so; stopped when dropped.
struct HttpGit {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl HttpGit {
    async fn start(repos: &Repos, auth: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cgi = dir.path().join("www/cgi-bin");
        std::fs::create_dir_all(&cgi).unwrap();
        let script = format!("#!{}\nexec {} http-backend\n", which("sh").display(), which("git").display());
        std::fs::write(cgi.join("git"), script).unwrap();
        std::fs::set_permissions(cgi.join("git"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let config = if auth { format!("/cgi-bin:{USER}:{PASSWORD}\n") } else { String::new() };
        std::fs::write(dir.path().join("httpd.conf"), config).unwrap();
        let port = closed_port();
        let child = tokio::process::Command::new(which("busybox"))
            .arg("httpd")
            .arg("-f")
            .arg("-p")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-h")
            .arg(dir.path().join("www"))
            .arg("-c")
            .arg(dir.path().join("httpd.conf"))
            .env("GIT_PROJECT_ROOT", repos.base())
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", missing("busybox (busybox-static)")));
        until_listening(port, "busybox httpd").await;
        Self { _child: child, _dir: dir, port }
    }

    fn url(&self, repository: &str) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/git/{repository}", self.port)
    }

    /// A credential-store line for this server.
    fn credentials(&self, password: &str) -> String {
        format!("http://{USER}:{password}@127.0.0.1:{}\n", self.port)
    }
}

/// A runner of its own with no network, and `credentials` as its operator's
/// credentials file when given (kept in `dir`).
async fn runner(dir: &Path, credentials: Option<&str>) -> (CommandRunner, Option<PathBuf>) {
    let file = credentials.map(|text| {
        let file = dir.join("git-credentials");
        std::fs::write(&file, text).unwrap();
        file
    });
    let settings = Settings {
        files: FileSettings { git_credentials: file.clone(), ..FileSettings::default() },
        ..own_settings()
    };
    (CommandRunner::new(engine().await, settings), file)
}

/// A spec of the test image checking `source` out, with one step `command`.
fn spec(source: Value, command: &str) -> Value {
    json!({"image": TEST_IMAGE, "source": source, "steps": [{"name": "read", "command": command}]})
}

/// The directories of checkouts of run `run_id` left on the runner's host.
fn scratch_left(run_id: &str) -> Vec<PathBuf> {
    let prefix = format!("{}{run_id}", simple_runner::source::SCRATCH_PREFIX);
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect()
}

/// Runs `spec` here; its report, log and run id, once nothing of it is left: no
/// container, no volume, no checkout directory.
async fn run(runner: &CommandRunner, spec: Value) -> (RunReport, Vec<String>) {
    let (report, lines, run_id) = run_here(runner, spec).await;
    assert_eq!(scratch_left(&run_id), Vec::<PathBuf>::new(), "checkout directories left behind");
    (report, lines)
}

/// The commit in a report's result data.
fn result_commit(report: RunReport) -> Option<String> {
    report.into_result().data["source"]["commit"].as_str().map(str::to_owned)
}

/// Asserts that `report` failed the checkout of `url` before any step, with a reason
/// that says `says`; the reason.
fn assert_checkout_failed(report: &RunReport, lines: &[String], url: &str, says: &str) -> String {
    let RunReport::SourceFailed { repository, reason } = report else {
        panic!("not a failed checkout: {report:?}\n{lines:#?}")
    };
    assert_eq!(repository, url);
    assert!(reason.contains(says), "{reason:?} does not say {says:?}");
    assert!(has(lines, &format!("checking out {url} failed: {reason}")), "{lines:#?}");
    assert!(!lines.iter().any(|line| line.starts_with("==> step")), "a step ran: {lines:#?}");
    reason.clone()
}

#[tokio::test]
async fn a_branch_is_checked_out_for_steps_without_git_or_network_and_its_commit_reported() {
    let repos = Repos::make();
    let daemon = GitDaemon::start(&repos).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let url = daemon.url("app.git");
    let command = "cat feature.txt; cat .git/HEAD; command -v git || echo no-git; ls /sys/class/net";
    let (report, lines) = run(&runner, spec(json!({"git": url, "ref": "feature"}), command)).await;

    assert!(report.succeeded(), "{}\n{lines:#?}", report.message());
    assert!(has(&lines, "feature work"), "{lines:#?}");
    assert!(has(&lines, "ref: refs/heads/feature"), "the checkout keeps .git on its branch: {lines:#?}");
    assert!(has(&lines, "no-git"), "{lines:#?}");
    assert!(
        has(&lines, "lo") && !lines.iter().any(|l| l.starts_with("eth")),
        "the step had a network: {lines:#?}"
    );
    assert!(has(&lines, &format!("checking out {url} at feature")), "{lines:#?}");
    let logged = format!("checked out {url} at commit {}", repos.feature);
    assert!(lines.iter().any(|line| line.starts_with(&logged)), "{logged} missing: {lines:#?}");
    assert_eq!(result_commit(report).as_deref(), Some(repos.feature.as_str()));
}

#[tokio::test]
async fn a_tag_is_checked_out_at_the_commit_it_names() {
    let repos = Repos::make();
    let daemon = GitDaemon::start(&repos).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let source = json!({"git": daemon.url("app.git"), "ref": "v1"});
    let (report, lines) = run(&runner, spec(source, "cat README; ls two.txt || echo no-two")).await;

    assert!(report.succeeded(), "{}\n{lines:#?}", report.message());
    assert!(has(&lines, "first") && has(&lines, "no-two"), "{lines:#?}");
    assert_eq!(result_commit(report).as_deref(), Some(repos.v1.as_str()));
}

#[tokio::test]
async fn a_commit_id_or_a_full_ref_is_fetched_by_itself_at_the_depth_asked() {
    let repos = Repos::make();
    let daemon = GitDaemon::start(&repos).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let source = json!({"git": daemon.url("app.git"), "ref": repos.second, "depth": 1});
    let (report, lines) = run(&runner, spec(source, "cat README two.txt; cat .git/shallow")).await;

    assert!(report.succeeded(), "{}\n{lines:#?}", report.message());
    assert!(has(&lines, "second") && has(&lines, "two"), "{lines:#?}");
    assert!(has(&lines, &repos.second), "the checkout is not shallow at the commit: {lines:#?}");
    assert_eq!(result_commit(report).as_deref(), Some(repos.second.as_str()));

    let source = json!({"git": daemon.url("app.git"), "ref": "refs/heads/feature"});
    let (report, lines) = run(&runner, spec(source, "cat feature.txt")).await;
    assert!(report.succeeded(), "{}\n{lines:#?}", report.message());
    assert!(has(&lines, "feature work"), "{lines:#?}");
    assert_eq!(result_commit(report).as_deref(), Some(repos.feature.as_str()));
}

#[tokio::test]
async fn the_default_branch_is_checked_out_with_its_submodules() {
    let repos = Repos::make();
    let daemon = GitDaemon::start(&repos).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let source = json!({"git": daemon.url("app.git"), "submodules": true, "depth": 1});
    let (report, lines) = run(&runner, spec(source, "cat README lib/lib.txt")).await;

    assert!(report.succeeded(), "{}\n{lines:#?}", report.message());
    assert!(has(&lines, "second") && has(&lines, "from the submodule"), "{lines:#?}");
    assert_eq!(result_commit(report).as_deref(), Some(repos.main.as_str()));
}

#[tokio::test]
async fn a_checkout_behind_basic_auth_uses_the_operators_credentials_and_no_line_shows_the_password() {
    let repos = Repos::make();
    let server = HttpGit::start(&repos, true).await;
    let dir = tempfile::tempdir().unwrap();
    let credentials = server.credentials(PASSWORD);
    let (runner, file) = runner(dir.path(), Some(&credentials)).await;
    let source = json!({"git": server.url("app.git"), "ref": "main"});
    let (report, lines) =
        run(&runner, spec(source, &format!("cat README; echo 'the password: {PASSWORD}'"))).await;

    assert!(report.succeeded(), "{}\n{lines:#?}", report.message());
    assert!(has(&lines, "second"), "{lines:#?}");
    assert!(has(&lines, "the password: ***"), "the password is not masked in the run's log: {lines:#?}");
    assert!(!lines.iter().any(|line| line.contains(PASSWORD)), "a line shows the password: {lines:#?}");
    let after = std::fs::read_to_string(file.unwrap()).unwrap();
    assert_eq!(after, credentials, "git rewrote the operator's credentials file");
    assert_eq!(result_commit(report).as_deref(), Some(repos.main.as_str()));
}

#[tokio::test]
async fn wrong_credentials_fail_the_checkout_and_leave_the_operators_file_as_it_was() {
    let repos = Repos::make();
    let server = HttpGit::start(&repos, true).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-pw-77d0c2";
    let credentials = server.credentials(wrong);
    let (runner, file) = runner(dir.path(), Some(&credentials)).await;
    let url = server.url("app.git");
    let (report, lines) = run(&runner, spec(json!({"git": url}), "true")).await;

    let reason = assert_checkout_failed(&report, &lines, &url, "Authentication failed");
    assert!(!reason.contains(wrong) && !report.message().contains(wrong), "{reason}");
    assert!(!lines.iter().any(|line| line.contains(wrong)), "a line shows the password: {lines:#?}");
    let after = std::fs::read_to_string(file.unwrap()).unwrap();
    assert_eq!(after, credentials, "git erased the operator's credentials");
}

#[tokio::test]
async fn no_credentials_for_a_server_that_asks_fail_the_checkout_without_a_prompt() {
    let repos = Repos::make();
    let server = HttpGit::start(&repos, true).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let url = server.url("app.git");
    let (report, lines) = run(&runner, spec(json!({"git": url}), "true")).await;

    let reason = assert_checkout_failed(&report, &lines, &url, "terminal prompts disabled");
    assert!(reason.contains("--git-credentials"), "{reason}");
}

#[tokio::test]
async fn a_repository_that_does_not_exist_fails_the_run_before_its_first_step() {
    let repos = Repos::make();
    let server = HttpGit::start(&repos, false).await;
    let daemon = GitDaemon::start(&repos).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;

    let url = server.url("missing.git");
    let (report, lines) = run(&runner, spec(json!({"git": url}), "true")).await;
    assert_checkout_failed(&report, &lines, &url, "missing.git/' not found");

    let url = daemon.url("missing.git");
    let (report, lines) = run(&runner, spec(json!({"git": url}), "true")).await;
    assert_checkout_failed(&report, &lines, &url, "repository not exported: /missing.git");
}

#[tokio::test]
async fn a_ref_that_does_not_exist_fails_the_run_before_its_first_step() {
    let repos = Repos::make();
    let daemon = GitDaemon::start(&repos).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let url = daemon.url("app.git");

    let (report, lines) = run(&runner, spec(json!({"git": url, "ref": "nosuch"}), "true")).await;
    assert_checkout_failed(&report, &lines, &url, "Remote branch nosuch not found in upstream origin");

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let (report, lines) = run(&runner, spec(json!({"git": url, "ref": unknown, "depth": 1}), "true")).await;
    assert_checkout_failed(&report, &lines, &url, &format!("not our ref {unknown}"));
}

#[tokio::test]
async fn an_unreachable_host_fails_the_run_before_its_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let port = closed_port();

    let url = format!("git://127.0.0.1:{port}/app.git");
    let (report, lines) = run(&runner, spec(json!({"git": url}), "true")).await;
    assert_checkout_failed(&report, &lines, &url, "Connection refused");

    let url = format!("http://127.0.0.1:{port}/app.git");
    let (report, lines) = run(&runner, spec(json!({"git": url}), "true")).await;
    assert_checkout_failed(&report, &lines, &url, "Failed to connect to 127.0.0.1");
}

#[tokio::test]
async fn a_cancel_during_a_stalled_checkout_ends_the_run_promptly_and_stops_git() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/app.git", listener.local_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;

    let resource = pipeline("stalled", spec(json!({"git": url}), "true"));
    let validator =
        conveyor_sdk::validate::SpecValidator::new(&conveyor_sdk::Driver::resources(&runner)).unwrap();
    let decoded = validator.decode(&resource).unwrap_or_else(|e| panic!("invalid spec: {e}"));
    let run_id = uuid::Uuid::new_v4().to_string();
    let cancel = RunCancellation::new();
    let (log, memory) = conveyor_sdk::LogHandle::memory();
    let run = conveyor_sdk::Run::new(resource, decoded)
        .with_log(log)
        .with_run_id(run_id.clone())
        .with_run_cancellation(cancel.clone());
    let running = {
        let runner = runner.clone();
        tokio::spawn(async move {
            runner.execute(&run, simple_runner::engine::image::PullProgress::Log(run.log())).await
        })
    };

    let accepted = tokio::time::timeout(Duration::from_secs(60), listener.accept()).await;
    let (mut connection, _) = accepted.expect("git never reached the server").unwrap();
    let cancelled = Instant::now();
    cancel.cancel(CancelReason::Requested);
    let report = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the run did not end within 10s of its cancel")
        .unwrap();
    assert!(
        matches!(report, RunReport::Stopped(CancelReason::Requested)),
        "{report:?}\n{:#?}",
        memory.lines()
    );
    assert!(cancelled.elapsed() < Duration::from_secs(5), "the run took {:?} to end", cancelled.elapsed());

    // The connection was git-remote-http's, a process git started: it is gone too.
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match connection.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection of git's helper is still open 5s after the cancel");

    runner.finish_removals().await;
    assert_nothing_left_within(runner.engine(), &run_id, Duration::from_secs(20)).await;
    assert_eq!(scratch_left(&run_id), Vec::<PathBuf>::new(), "checkout directories left behind");
}

#[test]
fn serve_and_run_offer_the_operators_git_credentials_in_their_help() {
    for command in ["serve", "run"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
            .args([command, "--help"])
            .output()
            .expect("simple-runner runs");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command} --help: {help}");
        for text in ["--git-credentials <FILE>", "credential-store format", "CONVEYOR_GIT_CREDENTIALS"] {
            assert!(help.contains(text), "{command} --help does not show {text:?}:\n{help}");
        }
    }
}

#[tokio::test]
async fn the_checkout_belongs_to_the_runs_numeric_user_so_that_it_may_write_in_it() {
    let repos = Repos::make();
    let daemon = GitDaemon::start(&repos).await;
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path(), None).await;
    let mut settings = runner.settings().clone();
    settings.container.user = Some("1000:1000".into());
    let runner = CommandRunner::new(runner.engine().clone(), settings);
    let command =
        "id -u; stat -c 'owner %u:%g' README .git .git/HEAD; echo mine >> README && tail -n 1 README";
    let (report, lines) = run(&runner, spec(json!({"git": daemon.url("app.git")}), command)).await;

    assert!(report.succeeded(), "{}\n{lines:#?}", report.message());
    assert!(has(&lines, "1000"), "the step did not run as 1000: {lines:#?}");
    let owners: Vec<&String> = lines.iter().filter(|line| line.starts_with("owner ")).collect();
    assert_eq!(owners, ["owner 1000:1000"; 3], "{lines:#?}");
    assert!(has(&lines, "mine"), "{lines:#?}");
}
