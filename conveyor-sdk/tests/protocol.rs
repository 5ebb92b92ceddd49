//! The wire types against the fixtures of the real server.

use conveyor_sdk::protocol::*;
use serde_json::{json, Value};

const CREATE: &str = include_str!("fixtures/driver-message.create.json");
const PROCESS: &str = include_str!("fixtures/driver-message.process.json");
const RESULT: &str = include_str!("fixtures/pipeline-event.driver-result.json");
const LOG: &str = include_str!("fixtures/log.json");
const LOG_PIPELINE: &str = include_str!("fixtures/log.pipeline.json");
const DEFINITION: &str = include_str!("fixtures/resource-definition.pipeline.json");
const SEED: &str = include_str!("fixtures/resource.seed.json");

#[test]
fn create_fixture_decodes_with_payload_as_string() {
    let message: DriverMessage = serde_json::from_str(CREATE).unwrap();
    assert_eq!(message.event, Event::Create);
    assert_eq!(message.run_id, "fbdf5edf-66d4-46ce-859a-8ee44d6c9463");
    assert_eq!(message.id, "5f0c2a9e1b7d4c3e8a6f0b1d");
    assert_eq!(message.payload.name, "ubuntu-pipeline-6");
    assert_eq!(message.payload.pipeline(), None);
    assert_eq!(message.payload.spec["steps"][1]["command"], "ls -l && echo done");
}

#[test]
fn process_fixture_exposes_earlier_driver_results() {
    let message: DriverMessage = serde_json::from_str(PROCESS).unwrap();
    assert_eq!(message.event, Event::Process);
    assert_eq!(message.payload.pipeline(), Some("node-pipeline"));
    let cloner = message.payload.driver_result("git-cloner").unwrap().unwrap();
    assert_eq!(cloner.driver, "git-cloner");
    assert_eq!(cloner.data, json!({"commit": "9f2c1e7"}));
    let all: Vec<_> = message.payload.driver_results().map(|(d, _)| d).collect();
    assert_eq!(all, ["git-cloner"]);
    assert!(message.payload.driver_result("other").is_none());
}

#[test]
fn payload_as_object_decodes_too() {
    let mut value: Value = serde_json::from_str(CREATE).unwrap();
    let inner: Value = serde_json::from_str(value["payload"].as_str().unwrap()).unwrap();
    value["payload"] = inner;
    let message: DriverMessage = serde_json::from_value(value).unwrap();
    assert_eq!(message.payload.resource, "pipeline");
}

#[test]
fn encoding_a_message_writes_payload_as_string_like_the_server() {
    let message: DriverMessage = serde_json::from_str(CREATE).unwrap();
    let encoded: Value = serde_json::to_value(&message).unwrap();
    let original: Value = serde_json::from_str(CREATE).unwrap();
    let payload = encoded["payload"].as_str().expect("payload is a string");
    let ours: Value = serde_json::from_str(payload).unwrap();
    let theirs: Value = serde_json::from_str(original["payload"].as_str().unwrap()).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(encoded["run_id"], original["run_id"]);
    assert_eq!(encoded["event"], "create");
}

#[test]
fn payload_that_is_not_a_resource_is_an_error() {
    let text = r#"{"event":"create","payload":"{\"spec\":{}}","id":"1","run_id":"r"}"#;
    let error = serde_json::from_str::<DriverMessage>(text).unwrap_err();
    assert!(error.to_string().contains("name"), "{error}");
}

#[test]
fn decodes_the_servers_message() {
    let message = DriverMessage::decode(CREATE.as_bytes()).unwrap();
    assert_eq!(message.event, Event::Create);
    assert_eq!(message.payload.name, "ubuntu-pipeline-6");
    assert_eq!(message.id, "5f0c2a9e1b7d4c3e8a6f0b1d");
}

#[test]
fn rejects_what_is_not_a_driver_message() {
    for bytes in [&b"not json"[..], br#"{"event":"create"}"#] {
        let error = DriverMessage::decode(bytes).unwrap_err();
        assert_eq!(error.run_id(), None);
        assert_eq!(error.to_string(), "not a DriverMessage");
    }
    let error = DriverMessage::decode(br#"{"event":"create","payload":"[1,2]","id":"x","run_id":"r-1"}"#)
        .unwrap_err();
    assert_eq!(error.run_id(), Some("r-1"));
    assert!(error.to_string().contains("run r-1"), "{error}");
    let cause = std::error::Error::source(&error).expect("the JSON error is the source").to_string();
    assert!(cause.contains("invalid type"), "{cause}");
}

#[test]
fn result_event_round_trips_exactly() {
    let event: PipelineEvent = serde_json::from_str(RESULT).unwrap();
    assert_eq!(event.event, DRIVER_RESULT_EVENT);
    assert!(!event.driverresult.success);
    assert_eq!(event.driverresult.driver, "command-runner");
    let original: Value = serde_json::from_str(RESULT).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), original);
}

#[test]
fn result_event_built_from_a_driver_result_matches_the_fixture() {
    let fixture: Value = serde_json::from_str(RESULT).unwrap();
    let resource: Resource = serde_json::from_value(fixture["resource"].clone()).unwrap();
    let result = DriverResult::failure("step list-files failed with exit code 2")
        .with_data(fixture["driverresult"]["data"].clone());
    let event = PipelineEvent::driver_result(
        "fbdf5edf-66d4-46ce-859a-8ee44d6c9463",
        resource,
        result.into_event("command-runner"),
    );
    assert_eq!(serde_json::to_value(&event).unwrap(), fixture);
}

#[test]
fn logs_round_trip_with_and_without_pipeline() {
    for text in [LOG, LOG_PIPELINE] {
        let log: Log = serde_json::from_str(text).unwrap();
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&log).unwrap(), original);
    }
    let log: Log = serde_json::from_str(LOG).unwrap();
    assert_eq!(log.pipeline, None);
    let with_empty: Log = serde_json::from_value(json!({
        "runid": "r", "driver": "d", "pipeline": "", "timestamp": "t", "message": "m"
    }))
    .unwrap();
    assert_eq!(with_empty.pipeline, None, "the server's empty pipeline means none");
}

#[test]
fn definition_and_seed_resource_round_trip() {
    let def: ResourceDefinition = serde_json::from_str(DEFINITION).unwrap();
    assert_eq!(def.name, "pipeline");
    assert_eq!(serde_json::to_value(&def).unwrap(), serde_json::from_str::<Value>(DEFINITION).unwrap());
    let seed: Resource = serde_json::from_str(SEED).unwrap();
    assert!(seed.id.is_empty());
    assert_eq!(serde_json::to_value(&seed).unwrap(), serde_json::from_str::<Value>(SEED).unwrap());
}

#[test]
fn unknown_events_are_kept_by_name() {
    let event: Event = serde_json::from_value(json!("archive")).unwrap();
    assert_eq!(event, Event::Other("archive".into()));
    assert_eq!(serde_json::to_value(&event).unwrap(), json!("archive"));
}

const UPDATE: &str = include_str!("fixtures/driver-message.update.json");
const DELETE: &str = include_str!("fixtures/driver-message.delete.json");
const STEP_RICH: &str = include_str!("fixtures/driver-message.pipeline-step.rich-metadata.json");
const STEP_DELETE: &str = include_str!("fixtures/driver-message.pipeline-step.delete.json");

/// The payload of a fixture message, as the server wrote it.
fn payload_of(fixture: &str) -> Value {
    let message: Value = serde_json::from_str(fixture).unwrap();
    serde_json::from_str(message["payload"].as_str().unwrap()).unwrap()
}

#[test]
fn every_message_of_both_servers_round_trips_with_its_resource_equal_as_json() {
    let events = [
        (CREATE, Event::Create),
        (PROCESS, Event::Process),
        (UPDATE, Event::Update),
        (DELETE, Event::Delete),
        (STEP_RICH, Event::Update),
        (STEP_DELETE, Event::Delete),
    ];
    for (fixture, event) in events {
        let message = DriverMessage::decode(fixture.as_bytes()).unwrap();
        assert_eq!(message.event, event);
        let encoded: Value = serde_json::to_value(&message).unwrap();
        let original: Value = serde_json::from_str(fixture).unwrap();
        assert_eq!(encoded["event"], original["event"]);
        assert_eq!((&encoded["id"], &encoded["run_id"]), (&original["id"], &original["run_id"]));
        let echoed: Value = serde_json::from_str(encoded["payload"].as_str().unwrap()).unwrap();
        assert_eq!(echoed, payload_of(fixture), "the resource is echoed as delivered");
        // And in a result, as the engine requires.
        let result = PipelineEvent::driver_result(
            message.run_id.clone(),
            message.payload.clone(),
            DriverResult::success("ok").into_event("command-runner"),
        );
        let result: Value = serde_json::to_value(&result).unwrap();
        assert_eq!(result["resource"], payload_of(fixture));
    }
}

#[test]
fn update_and_delete_carry_a_new_run_and_the_next_version_of_the_same_resource() {
    let created = DriverMessage::decode(CREATE.as_bytes()).unwrap();
    let updated = DriverMessage::decode(UPDATE.as_bytes()).unwrap();
    let deleted = DriverMessage::decode(DELETE.as_bytes()).unwrap();
    assert_eq!(created.payload.id, updated.payload.id);
    assert_ne!(created.run_id, updated.run_id);
    assert_ne!(updated.run_id, deleted.run_id);
    assert_eq!((created.payload.version(), updated.payload.version()), (Some(1), Some(2)));
    assert_eq!(deleted.payload.version(), Some(2), "a delete carries the resource as it was");
}

#[test]
fn metadata_of_newer_engines_keeps_booleans_strings_and_the_driverresults_object() {
    let step = DriverMessage::decode(STEP_RICH.as_bytes()).unwrap().payload;
    assert_eq!(step.metadata["deleting"], false);
    assert_eq!(step.metadata_str("current_pipeline_step"), Some("build"));
    assert_eq!(step.metadata_str("current_pipeline_event"), Some("update"));
    let cloner = step.driver_result("git-cloner").unwrap().unwrap();
    assert!(cloner.success);
    assert_eq!(cloner.data, json!({"commit": "4e1f0c9"}));
    let all: Vec<&str> = step.driver_results().map(|(driver, _)| driver).collect();
    assert_eq!(all, ["git-cloner"]);

    let deletion = DriverMessage::decode(STEP_DELETE.as_bytes()).unwrap();
    assert_eq!(deletion.payload.metadata["deleting"], true);
    assert_eq!(deletion.payload.metadata_str("deletion_runid"), Some(deletion.run_id.as_str()));
}

#[test]
fn a_run_id_that_cannot_stand_in_a_subject_is_refused_with_the_message_read() {
    for (run_id, why) in [
        ("", "it is empty"),
        ("a..b", "it holds a `.`"),
        ("r>", "it holds a wildcard (`*` or `>`)"),
        ("r 1", "it holds white space"),
        ("r\r\n1", "it holds a control character"),
        ("r\u{0}", "it holds a control character"),
    ] {
        let mut message: Value = serde_json::from_str(CREATE).unwrap();
        message["run_id"] = run_id.into();
        let error = DriverMessage::decode(message.to_string().as_bytes()).unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::InvalidRunId, "{run_id:?}");
        assert_eq!((error.run_id(), error.invalid_run_id()), (None, Some(run_id)));
        assert!(error.to_string().ends_with(why), "{run_id:?}: {error}");
        assert!(!error.to_string().contains(['\r', '\n', '\0']), "the id is escaped: {error}");
        assert_eq!(error.resource().map(|r| r.name.as_str()), Some("ubuntu-pipeline-6"));
    }
    let long = "r".repeat(subjects::MAX_TOKEN_LEN + 1);
    let mut message: Value = serde_json::from_str(CREATE).unwrap();
    message["run_id"] = long.as_str().into();
    let error = DriverMessage::decode(message.to_string().as_bytes()).unwrap_err();
    assert!(error.to_string().ends_with("it is 257 bytes long, more than 256"), "{error}");
    assert!(error.to_string().len() < 200, "the id is cut short: {error}");
}

#[test]
fn a_resource_that_does_not_decode_is_named_with_the_field_at_fault_and_what_could_be_read() {
    let mut message: Value = serde_json::from_str(CREATE).unwrap();
    let mut payload: Value = serde_json::from_str(message["payload"].as_str().unwrap()).unwrap();
    payload["name"] = json!(7);
    message["payload"] = payload.to_string().into();
    let error = DriverMessage::decode(message.to_string().as_bytes()).unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::InvalidResource);
    assert_eq!(error.run_id(), Some("fbdf5edf-66d4-46ce-859a-8ee44d6c9463"));
    let text = conveyor_sdk::error_text(&error);
    assert!(text.contains("is not a resource: name: invalid type: integer `7`"), "{text}");
    let read = error.resource().expect("the rest of the resource is read");
    assert_eq!((read.id.as_str(), read.name.as_str()), ("3a6f0c2e-9d7b-4f7e-8a51-2c4b9e0d1f23", ""));
    assert_eq!(read.metadata["version"], "1");
    assert_eq!(read.spec["image"], "jimjuniorb/hello-node:1.2.3");

    message["event"] = json!(["create"]);
    message["payload"] = json!({"name": "n", "resource": "pipeline"});
    let error = DriverMessage::decode(message.to_string().as_bytes()).unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::InvalidEnvelope);
    assert_eq!(error.resource().map(|r| r.name.as_str()), Some("n"));
}
