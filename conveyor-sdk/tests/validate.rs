//! Spec validation against the seed tutorial's resource definition and resource.

use conveyor_sdk::validate::*;
use conveyor_sdk::{Resource, ResourceDefinition, ResourceType};
use serde_json::json;

fn seed_validator() -> SpecValidator {
    let def: ResourceDefinition =
        serde_json::from_str(include_str!("fixtures/resource-definition.pipeline.json")).unwrap();
    SpecValidator::new(&[ResourceType::owned(def)]).unwrap()
}

#[test]
fn seed_resource_is_valid_for_the_upstream_definition() {
    let seed: Resource = serde_json::from_str(include_str!("fixtures/resource.seed.json")).unwrap();
    assert!(seed_validator().validate(&seed).is_ok());
}

#[test]
fn every_violation_is_listed_with_its_path() {
    let bad = Resource::new(
        "x",
        "pipeline",
        json!({"image": 5, "steps": [{"name": "a"}, {"name": "b", "command": true}]}),
    );
    let Err(SpecError::Invalid(violations)) = seed_validator().validate(&bad) else {
        panic!("expected violations");
    };
    let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
    assert!(paths.contains(&"/spec/image"), "{paths:?}");
    assert!(paths.contains(&"/spec/steps/0"), "{paths:?}");
    assert!(paths.contains(&"/spec/steps/1/command"), "{paths:?}");
    assert_eq!(violations.len(), 3);
}

#[test]
fn unknown_type_is_refused() {
    let r = Resource::new("x", "other", json!({}));
    assert!(matches!(seed_validator().validate(&r), Err(SpecError::UnknownType(t)) if t == "other"));
}

#[test]
fn decode_errors_name_the_path() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Spec {
        steps: Vec<Step>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Step {
        name: String,
        timeout: u32,
    }
    let v = SpecValidator::new(&[ResourceType::foreign("pipeline")]).unwrap();
    let r = Resource::new("x", "pipeline", json!({"steps": [{"name": "a", "timeout": "soon"}]}));
    let Err(SpecError::Decode(violation)) = v.decode::<Spec>(&r) else { panic!("expected a decode error") };
    assert_eq!(violation.path, "/spec/steps/0/timeout");
}

#[test]
fn a_broken_schema_is_reported() {
    let def = ResourceDefinition::new("pipeline", json!({"type": "no-such-type"}));
    let error = SpecValidator::new(&[ResourceType::owned(def)]).unwrap_err();
    assert_eq!(error.resource_type, "pipeline");
}
