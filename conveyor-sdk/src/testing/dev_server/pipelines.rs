//! `/pipelines`: create, read, update and delete pipelines.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::error::{parse, ApiError};
use super::store::Stored;
use super::ServerState;
use crate::client::types::Pipeline;

impl Stored for Pipeline {
    type Key = String;
    const KIND: &'static str = "pipeline";

    fn key(&self) -> String {
        self.name.clone()
    }

    fn show(name: &String) -> String {
        format!("{name:?}")
    }
}

/// `POST /pipelines`: `201` and the pipeline; a name taken is refused.
pub(super) async fn create(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let pipeline: Pipeline = parse(&body)?;
    if pipeline.name.is_empty() {
        return Err(ApiError::BadRequest("a pipeline needs a name".into()));
    }
    Ok((StatusCode::CREATED, Json(state.pipelines.create(pipeline)?)).into_response())
}

/// `GET /pipelines/{name}`.
pub(super) async fn get(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<Pipeline>, ApiError> {
    Ok(Json(state.pipelines.get(&name)?))
}

/// `PUT /pipelines/{name}`: replaces the pipeline, named by the path.
pub(super) async fn update(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Pipeline>, ApiError> {
    let pipeline = Pipeline { name, ..parse(&body)? };
    Ok(Json(state.pipelines.update(pipeline)?))
}

/// `DELETE /pipelines/{name}`: `204`.
pub(super) async fn delete(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.pipelines.delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
