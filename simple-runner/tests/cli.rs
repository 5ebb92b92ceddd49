//! The command line, as a user runs it.

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
    assert_eq!(lines[1], "/workspace");
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
