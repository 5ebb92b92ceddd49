//! Pulls with registry credentials from a Docker `config.json`, against a registry of
//! the test's own on loopback that requires them, with the pull's progress in the
//! run's log.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, RemoveImageOptions};
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use simple_runner::settings::registry::RegistryAuth;
use simple_runner::{CommandRunner, Settings};

const USER: &str = "ci-user";
const PASSWORD: &str = "registry-pw-81f3";

/// A `docker-registry` on a loopback port with an htpasswd file, stopped when dropped.
struct Registry {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Self {
        let missing = |what: &str| format!("{what} is missing: run `bash scripts/services.sh`");
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = std::process::Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .unwrap_or_else(|_| panic!("{}", missing("htpasswd (apache2-utils)")));
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: conveyor-test\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = tokio::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|_| panic!("{}", missing("docker-registry")));
        let registry = Self { child, port, _dir: dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "docker-registry did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn credentials(host: &str) -> DockerCredentials {
    DockerCredentials {
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        serveraddress: Some(host.into()),
        ..Default::default()
    }
}

/// A Docker config whose `auths` hold the registry's credentials, as `docker login`
/// writes them.
fn write_docker_config(dir: &Path, host: &str) -> std::path::PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let path = dir.join("config.json");
    std::fs::write(&path, json!({"auths": {host: {"auth": auth}}}).to_string()).unwrap();
    path
}

/// An image of the test image's with a layer of its own (so that a pull has something
/// to download), pushed to `registry` with its credentials and removed from the engine.
async fn push_private(engine: &simple_runner::Engine, registry: &Registry) -> String {
    let host = registry.host();
    let repo = format!("{host}/conveyor-test/private");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let image = format!("{repo}:{tag}");
    let docker = engine.docker();
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {TEST_IMAGE}\nRUN head -c 2000000 /dev/urandom > /unique && echo {tag} > /id\n"),
    )
    .unwrap();
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker CLI: run `bash scripts/services.sh`");
    assert!(built.status.success(), "docker build: {}", String::from_utf8_lossy(&built.stderr));
    let mut push = docker.push_image(
        &repo,
        Some(PushImageOptions { tag: Some(tag.clone()), platform: None }),
        Some(credentials(&host)),
    );
    while let Some(item) = push.next().await {
        let info = item.unwrap_or_else(|e| panic!("push to the test registry: {e}"));
        assert!(info.error_detail.is_none(), "push to the test registry: {:?}", info.error_detail);
    }
    untag(engine, &image).await;
    image
}

/// Removes `image` from the engine.
async fn untag(engine: &simple_runner::Engine, image: &str) {
    let options = RemoveImageOptions { force: true, noprune: false, ..Default::default() };
    let _ = engine.docker().remove_image(image, Some(options), None).await;
}

#[tokio::test]
async fn an_image_behind_registry_credentials_is_pulled_with_those_of_the_docker_config() {
    let engine = engine().await;
    let registry = Registry::start().await;
    let host = registry.host();
    let image = push_private(&engine, &registry).await;

    let spec = json!({"image": image, "pull": "always", "steps": [{"name": "hello", "command": "echo pulled-and-ran"}]});
    let anonymous = CommandRunner::new(engine.clone(), own_settings());
    let (report, _, _) = run_here(&anonymous, spec.clone()).await;
    assert!(!report.succeeded());
    assert!(report.message().starts_with(&format!("pulling image {image} failed")), "{}", report.message());

    let dir = tempfile::tempdir().unwrap();
    let auth = RegistryAuth::from_file(&write_docker_config(dir.path(), &host)).unwrap();
    let runner = CommandRunner::new(engine.clone(), Settings { registry_auth: auth, ..own_settings() });
    let (report, log, _) = run_here(&runner, spec).await;
    untag(&engine, &image).await;
    registry.stop().await;

    assert!(report.succeeded(), "{} {log:#?}", report.message());
    assert!(has(&log, &format!("pulling image {image}")), "{log:#?}");
    assert!(has(&log, "pulled-and-ran"), "{log:#?}");
    let layer_lines: Vec<&String> = log
        .iter()
        .filter(|l| {
            l.contains(": Pull complete")
                || l.contains(": Download complete")
                || l.contains(": Downloading")
                || l.contains(": Extracting")
        })
        .collect();
    // Docker reports each layer's stages up to `Pull complete`; Podman's end at
    // `Download complete`.
    let last_stage = if is_podman(&engine).await { ": Download complete" } else { ": Pull complete" };
    assert!(layer_lines.iter().any(|l| l.ends_with(last_stage)), "per-layer progress: {log:#?}");
    assert!(!log.iter().any(|l| l.contains(PASSWORD)), "{log:#?}");
}

#[tokio::test]
async fn a_steps_own_image_and_a_services_image_are_pulled_with_the_runs_credentials() {
    let engine = engine().await;
    let registry = Registry::start().await;
    let host = registry.host();
    let image = push_private(&engine, &registry).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = RegistryAuth::from_file(&write_docker_config(dir.path(), &host)).unwrap();
    let runner = CommandRunner::new(engine.clone(), Settings { registry_auth: auth, ..own_settings() });
    let spec = json!({
        "image": TEST_IMAGE,
        "services": [{"name": "private", "image": image, "command": "cat /id > /tmp/up; exec sleep 60",
                      "ready": {"command": "test -s /tmp/up"}}],
        "steps": [{"name": "inside", "image": image, "command": "echo \"ran in $(cat /id)\""}]
    });
    let (report, log, _) = run_here(&runner, spec).await;
    untag(&engine, &image).await;
    registry.stop().await;

    assert!(report.succeeded(), "{} {log:#?}", report.message());
    let tag = image.rsplit(':').next().unwrap_or_default();
    assert!(has(&log, &format!("ran in {tag}")), "{log:#?}");
    let pulls = log.iter().filter(|l| **l == format!("pulling image {image}")).count();
    assert_eq!(pulls, 1, "the image the step and the service share is pulled once: {log:#?}");
    assert!(!log.iter().any(|l| l.contains(PASSWORD)), "{log:#?}");
}
