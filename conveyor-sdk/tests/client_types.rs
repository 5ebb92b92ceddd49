//! The REST contract's types against the real server's answers.

use conveyor_sdk::client::CreatedResource;

#[test]
fn the_create_answer_of_the_real_server_decodes() {
    let created: CreatedResource =
        serde_json::from_str(include_str!("fixtures/create-resource.response.json")).unwrap();
    assert_eq!(created.message, "Resource created successfully");
    assert_eq!(created.name, "ubuntu-pipeline-6");
    assert_eq!(created.version, "1");
    assert!(uuid::Uuid::parse_str(&created.runid).is_ok());
}
