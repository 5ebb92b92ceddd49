//! `simple-runner run` with secrets, in a process of its own: the `serve` tests of
//! `cli.rs` remove the containers of `command-runner` runners that do not answer them,
//! which a `run` running beside them would be.

use std::process::Command;

fn simple_runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_simple-runner"))
}

fn write(spec: serde_json::Value) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), spec.to_string()).unwrap();
    file
}

#[test]
fn run_takes_secrets_from_its_environment_and_a_file_and_masks_them() {
    let file = write(serde_json::json!({"name": "secretive", "resource": "pipeline", "spec": {
        "image": "conveyor-test/busybox:latest",
        "secrets": ["CLI_TOKEN"],
        "steps": [{"name": "show", "command": "echo \"$CLI_TOKEN / $FILE_TOKEN\"", "secrets": ["FILE_TOKEN"]}]
    }}));
    let secrets = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secrets.path(), "# deploy\nFILE_TOKEN=file-secret-9c2e\n").unwrap();
    let output = simple_runner()
        .args(["run", "--network", "none", "--secret", "CLI_TOKEN", "--secrets-file"])
        .arg(secrets.path())
        .arg(file.path())
        .env("CLI_TOKEN", "env-secret-4b7d")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.lines().any(|l| l == "*** / ***"), "{stdout}");
    assert!(!stdout.contains("env-secret-4b7d") && !stdout.contains("file-secret-9c2e"), "{stdout}");

    let output = simple_runner().args(["run", "--network", "none"]).arg(file.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("the spec names secret CLI_TOKEN, which the runner does not have"), "{stdout}");
}
