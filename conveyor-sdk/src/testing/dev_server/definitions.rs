//! `/resource-definitions`: create, apply, read, update and delete resource
//! definitions, each kept with the validator of its schema.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::error::{parse, ApiError};
use super::store::Stored;
use super::ServerState;
use crate::driver::ResourceType;
use crate::protocol::ResourceDefinition;
use crate::validate::SpecValidator;

/// A definition and the validator of its schema.
#[derive(Clone)]
pub(super) struct Definition {
    pub(super) definition: ResourceDefinition,
    pub(super) validator: Arc<SpecValidator>,
}

impl Definition {
    /// The definition with its validator, if it has a name and a usable schema.
    fn new(definition: ResourceDefinition) -> Result<Self, ApiError> {
        if definition.name.is_empty() {
            return Err(ApiError::BadRequest("a resource definition needs a name".into()));
        }
        let validator =
            SpecValidator::new(&[ResourceType::owned(definition.clone())]).map_err(ApiError::Schema)?;
        Ok(Self { definition, validator: Arc::new(validator) })
    }
}

impl Stored for Definition {
    type Key = String;
    const KIND: &'static str = "resource definition";

    fn key(&self) -> String {
        self.definition.name.clone()
    }

    fn show(name: &String) -> String {
        format!("{name:?}")
    }

    /// A definition sent without an id keeps the one it had, or gets a new one.
    fn stamp(&mut self, _number: u64, previous: Option<&Self>) {
        if self.definition.id.is_empty() {
            self.definition.id =
                previous.map(|p| p.definition.id.clone()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        }
    }
}

/// `POST /resource-definitions`: `201` and the definition; a name taken is refused.
pub(super) async fn create(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let created = state.definitions.create(Definition::new(parse(&body)?)?)?;
    Ok((StatusCode::CREATED, Json(created.definition)).into_response())
}

/// `POST /resource-definitions/apply`: creates or replaces; `201` and the definition.
pub(super) async fn apply(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let applied = state.definitions.apply(Definition::new(parse(&body)?)?)?;
    Ok((StatusCode::CREATED, Json(applied.definition)).into_response())
}

/// `GET /resource-definitions/{name}`.
pub(super) async fn get(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<ResourceDefinition>, ApiError> {
    Ok(Json(state.definitions.get(&name)?.definition))
}

/// `PUT /resource-definitions/{name}`: replaces a definition there is, named by the path.
pub(super) async fn update(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ResourceDefinition>, ApiError> {
    let update = ResourceDefinition { name: name.clone(), ..parse(&body)? };
    // A missing definition is 404 before its new schema is looked at.
    state.definitions.get(&name)?;
    Ok(Json(state.definitions.update(Definition::new(update)?)?.definition))
}

/// `DELETE /resource-definitions/{name}`: `204`.
pub(super) async fn delete(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.definitions.delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::dev_server::store::Store;

    fn job(version: &str) -> Definition {
        let schema = json!({"type": "object"});
        let Ok(definition) = Definition::new(ResourceDefinition::new("job", schema).version(version)) else {
            panic!("the job definition is refused");
        };
        definition
    }

    #[test]
    fn a_second_apply_replaces_the_definition_and_keeps_its_id() {
        let store = Store::default();
        let first = store.apply(job("1.0.0")).unwrap();
        assert!(!first.definition.id.is_empty());
        let second = store.apply(job("2.0.0")).unwrap();
        assert_eq!(second.definition.id, first.definition.id);
        let kept = store.get(&"job".to_owned()).unwrap().definition;
        assert_eq!((kept.version.as_str(), kept.id), ("2.0.0", first.definition.id));
    }

    #[test]
    fn an_id_sent_with_the_definition_is_kept() {
        let store = Store::default();
        store.create(job("1.0.0")).unwrap();
        let mut given = job("1.0.1");
        given.definition.id = "given".into();
        assert_eq!(store.apply(given).unwrap().definition.id, "given");
    }

    #[test]
    fn a_definition_needs_a_name_and_a_usable_schema() {
        let nameless = Definition::new(ResourceDefinition::new("", json!({"type": "object"})));
        assert!(
            matches!(nameless, Err(ApiError::BadRequest(text)) if text == "a resource definition needs a name")
        );
        let unusable = Definition::new(ResourceDefinition::new("job", json!({"type": 7})));
        assert!(matches!(unusable, Err(ApiError::Schema(_))));
    }
}
