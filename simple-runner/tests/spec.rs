//! The pipeline spec against the seed tutorial's resource.

use conveyor_sdk::validate::SpecValidator;
use conveyor_sdk::{Resource, ResourceDefinition, ResourceType};
use simple_runner::{PipelineSpec, PullPolicy};

fn validator() -> SpecValidator {
    SpecValidator::new(&[ResourceType::owned(ResourceDefinition::from_type::<PipelineSpec>("pipeline"))])
        .unwrap()
}

#[test]
fn the_seed_resource_is_valid_and_decodes() {
    let seed: Resource =
        serde_json::from_str(include_str!("../../conveyor-sdk/tests/fixtures/resource.seed.json")).unwrap();
    let spec: PipelineSpec = validator().decode(&seed).unwrap();
    assert_eq!(spec.image.as_deref(), Some("jimjuniorb/hello-node:1.2.3"));
    assert_eq!(spec.steps.len(), 3);
    assert_eq!(spec.pull, PullPolicy::IfNotPresent);
}
