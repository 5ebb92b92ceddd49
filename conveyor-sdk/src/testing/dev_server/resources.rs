//! `/resources`: create (and dispatch), read, list, update and delete resources,
//! every version kept.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;

use super::engine::PipelineRun;
use super::error::{bad_request, internal, not_found, parse, ApiError};
use super::ServerState;
use crate::protocol::{Event, Resource};
use crate::validate::SpecError;

pub(super) async fn create_resource(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut resource: Resource = parse(&body)?;
    if resource.name.is_empty() || resource.resource.is_empty() {
        return Err(bad_request("a resource needs a name and a resource type"));
    }
    {
        let definitions = state.definitions.read().map_err(|_| internal("state poisoned"))?;
        let definition = definitions
            .get(&resource.resource)
            .ok_or_else(|| not_found(format!("resource definition {:?} not found", resource.resource)))?;
        match definition.validator.validate(&resource) {
            Ok(()) => {}
            Err(SpecError::Invalid(violations)) => {
                let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
                return Err(bad_request(format!("spec validation failed: {}", list.join("; "))));
            }
            Err(other) => return Err(bad_request(other.to_string())),
        }
    }
    let pipeline = match resource.pipeline() {
        Some(name) => Some(
            state
                .pipelines
                .read()
                .map_err(|_| internal("state poisoned"))?
                .get(name)
                .cloned()
                .ok_or_else(|| not_found(format!("pipeline {name:?} not found")))?,
        ),
        None => None,
    };
    resource.id = uuid::Uuid::new_v4().to_string();
    resource.metadata.insert("version".into(), "1".into());
    let key = (resource.resource.clone(), resource.name.clone());
    state
        .resources
        .write()
        .map_err(|_| internal("state poisoned"))?
        .insert(key.clone(), vec![resource.clone()]);

    let run_id = uuid::Uuid::new_v4().to_string();
    let dispatched = match &pipeline {
        Some(pipeline) => {
            let Some(first) = pipeline.steps.first() else {
                return Err(bad_request(format!("pipeline {:?} has no steps", pipeline.name)));
            };
            state.runs.write().map_err(|_| internal("state poisoned"))?.insert(
                run_id.clone(),
                PipelineRun {
                    pipeline: pipeline.name.clone(),
                    step: 0,
                    resource_type: key.0.clone(),
                    name: key.1.clone(),
                },
            );
            state.harness.step(&first.driver, Event::Create, resource.clone(), Some(&run_id)).await
        }
        None => state.harness.create_with_run_id(resource.clone(), &run_id).await,
    };
    dispatched.map_err(|e| internal(e.to_string()))?;
    let body = json!({"name": resource.name, "runid": run_id, "message": "Resource created successfully", "version": "1"});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) fn latest(state: &ServerState, resource_type: &str, name: &str) -> Result<Resource, ApiError> {
    state
        .resources
        .read()
        .map_err(|_| internal("state poisoned"))?
        .get(&(resource_type.to_owned(), name.to_owned()))
        .and_then(|versions| versions.last().cloned())
        .ok_or_else(|| not_found(format!("resource {resource_type}/{name} not found")))
}

pub(super) async fn list_resources(
    State(state): State<Arc<ServerState>>,
) -> Result<Json<Vec<Resource>>, ApiError> {
    let resources = state.resources.read().map_err(|_| internal("state poisoned"))?;
    Ok(Json(resources.values().filter_map(|v| v.last().cloned()).collect()))
}

pub(super) async fn list_resources_of(
    State(state): State<Arc<ServerState>>,
    Path(resource_type): Path<String>,
) -> Result<Json<Vec<Resource>>, ApiError> {
    let resources = state.resources.read().map_err(|_| internal("state poisoned"))?;
    Ok(Json(
        resources
            .iter()
            .filter(|((t, _), _)| *t == resource_type)
            .filter_map(|(_, v)| v.last().cloned())
            .collect(),
    ))
}

pub(super) async fn get_resource(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name)): Path<(String, String)>,
) -> Result<Json<Resource>, ApiError> {
    latest(&state, &resource_type, &name).map(Json)
}

pub(super) async fn get_resource_version(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name, version)): Path<(String, String, String)>,
) -> Result<Json<Resource>, ApiError> {
    let resources = state.resources.read().map_err(|_| internal("state poisoned"))?;
    resources
        .get(&(resource_type.clone(), name.clone()))
        .and_then(|versions| versions.iter().find(|r| r.metadata.get("version") == Some(&version)).cloned())
        .map(Json)
        .ok_or_else(|| not_found(format!("resource {resource_type}/{name} version {version} not found")))
}

pub(super) async fn update_resource(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Resource>, ApiError> {
    let mut update: Resource = parse(&body)?;
    let current = latest(&state, &resource_type, &name)?;
    {
        let definitions = state.definitions.read().map_err(|_| internal("state poisoned"))?;
        if let Some(definition) = definitions.get(&resource_type) {
            update.resource = resource_type.clone();
            definition.validator.validate(&update).map_err(|e| bad_request(e.to_string()))?;
        }
    }
    let version = current.metadata.get("version").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1) + 1;
    update.id = current.id.clone();
    update.name = name.clone();
    update.resource = resource_type.clone();
    update.metadata.insert("version".into(), version.to_string());
    let mut resources = state.resources.write().map_err(|_| internal("state poisoned"))?;
    resources.entry((resource_type, name)).or_default().push(update.clone());
    Ok(Json(update))
}

pub(super) async fn delete_resource(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut resources = state.resources.write().map_err(|_| internal("state poisoned"))?;
    resources
        .remove(&(resource_type.clone(), name.clone()))
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| not_found(format!("resource {resource_type}/{name} not found")))
}
