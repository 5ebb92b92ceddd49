//! `/pipelines`: create, read, update and delete pipelines.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::error::{bad_request, internal, not_found, parse, ApiError};
use super::ServerState;
use crate::client::Pipeline;

pub(super) async fn create_pipeline(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pipeline: Pipeline = parse(&body)?;
    if pipeline.name.is_empty() {
        return Err(bad_request("a pipeline needs a name"));
    }
    let mut pipelines = state.pipelines.write().map_err(|_| internal("state poisoned"))?;
    if pipelines.contains_key(&pipeline.name) {
        return Err(bad_request(format!("pipeline {:?} already exists", pipeline.name)));
    }
    pipelines.insert(pipeline.name.clone(), pipeline.clone());
    Ok((StatusCode::CREATED, Json(pipeline)).into_response())
}

pub(super) async fn get_pipeline(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<Pipeline>, ApiError> {
    let pipelines = state.pipelines.read().map_err(|_| internal("state poisoned"))?;
    pipelines.get(&name).cloned().map(Json).ok_or_else(|| not_found(format!("pipeline {name:?} not found")))
}

pub(super) async fn update_pipeline(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Pipeline>, ApiError> {
    let mut pipeline: Pipeline = parse(&body)?;
    pipeline.name = name.clone();
    let mut pipelines = state.pipelines.write().map_err(|_| internal("state poisoned"))?;
    match pipelines.get_mut(&name) {
        Some(slot) => {
            *slot = pipeline.clone();
            Ok(Json(pipeline))
        }
        None => Err(not_found(format!("pipeline {name:?} not found"))),
    }
}

pub(super) async fn delete_pipeline(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut pipelines = state.pipelines.write().map_err(|_| internal("state poisoned"))?;
    pipelines
        .remove(&name)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| not_found(format!("pipeline {name:?} not found")))
}
