//! `/resource-definitions`: create, apply, read, update and delete resource
//! definitions, each with the validator of its schema.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::error::{bad_request, internal, not_found, parse, ApiError};
use super::ServerState;
use crate::driver::ResourceType;
use crate::protocol::ResourceDefinition;
use crate::validate::SpecValidator;

/// A definition and the validator of its schema.
pub(super) struct Definition {
    pub(super) definition: ResourceDefinition,
    pub(super) validator: SpecValidator,
}

pub(super) fn store_definition(
    state: &ServerState,
    definition: ResourceDefinition,
    replace: bool,
) -> Result<ResourceDefinition, ApiError> {
    if definition.name.is_empty() {
        return Err(bad_request("a resource definition needs a name"));
    }
    let validator = SpecValidator::new(&[ResourceType::owned(definition.clone())])
        .map_err(|e| bad_request(e.to_string()))?;
    let mut definitions = state.definitions.write().map_err(|_| internal("state poisoned"))?;
    if !replace && definitions.contains_key(&definition.name) {
        return Err(bad_request(format!("resource definition {:?} already exists", definition.name)));
    }
    let mut definition = definition;
    if definition.id.is_empty() {
        definition.id = definitions
            .get(&definition.name)
            .map(|d| d.definition.id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    }
    definitions.insert(definition.name.clone(), Definition { definition: definition.clone(), validator });
    Ok(definition)
}

pub(super) async fn create_definition(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let definition = store_definition(&state, parse(&body)?, false)?;
    Ok((StatusCode::CREATED, Json(definition)).into_response())
}

pub(super) async fn apply_definition(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let definition = store_definition(&state, parse(&body)?, true)?;
    Ok((StatusCode::CREATED, Json(definition)).into_response())
}

pub(super) async fn get_definition(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<ResourceDefinition>, ApiError> {
    let definitions = state.definitions.read().map_err(|_| internal("state poisoned"))?;
    definitions
        .get(&name)
        .map(|d| Json(d.definition.clone()))
        .ok_or_else(|| not_found(format!("resource definition {name:?} not found")))
}

pub(super) async fn update_definition(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ResourceDefinition>, ApiError> {
    let mut definition: ResourceDefinition = parse(&body)?;
    definition.name = name.clone();
    if !state.definitions.read().map_err(|_| internal("state poisoned"))?.contains_key(&name) {
        return Err(not_found(format!("resource definition {name:?} not found")));
    }
    store_definition(&state, definition, true).map(Json)
}

pub(super) async fn delete_definition(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut definitions = state.definitions.write().map_err(|_| internal("state poisoned"))?;
    definitions
        .remove(&name)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| not_found(format!("resource definition {name:?} not found")))
}
