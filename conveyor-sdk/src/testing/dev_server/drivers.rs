//! `/drivers/…`: a message handed to the drivers over NATS, and cancelling a run.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::error::{parse, ApiError};
use super::ServerState;
use crate::protocol::{subjects, CancelReply, CancelState, DriverMessage};
use crate::testing::TestingError;

/// `POST /drivers/broadcast-message`: publishes the message on `resources.<type>`,
/// the type being its payload's `resource`, where every driver of that type receives
/// it (the contract says only "broadcast it to drivers via NATS"). An empty `id` or
/// `run_id` gets a new one. `200` with the subject, the id and the run id.
pub(super) async fn broadcast(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut message: DriverMessage = parse(&body)?;
    let resource_type = message.payload.resource.clone();
    if !subjects::is_token(&resource_type) {
        return Err(ApiError::BadRequest(format!(
            "invalid resource type {resource_type:?}: the payload needs a resource type without '.', \
             '*', '>' or white space"
        )));
    }
    if message.id.is_empty() {
        message.id = uuid::Uuid::new_v4().simple().to_string()[..24].to_owned();
    }
    if message.run_id.is_empty() {
        message.run_id = uuid::Uuid::new_v4().to_string();
    }
    let subject = subjects::resource(&resource_type);
    let payload = serde_json::to_vec(&message).map_err(|e| ApiError::Publish(TestingError::Encode(e)))?;
    state.harness.publish_raw(&subject, payload.into()).await.map_err(ApiError::Publish)?;
    Ok(Json(json!({
        "message": "Message published successfully",
        "subject": subject,
        "id": message.id,
        "run_id": message.run_id,
    })))
}

/// `POST /drivers/{driver}/runs/{runid}/cancel`: asks the replica of `driver` that
/// holds run `runid` to cancel it ([`cancel_run`](crate::runtime::cancel_run)). `202`
/// with the [`CancelReply`](crate::protocol::CancelReply) when it is being cancelled;
/// `200` with it when there was nothing to cancel (`finished`, `not_running`); `400`
/// for a name that is not a subject token.
pub(super) async fn cancel(
    State(state): State<Arc<ServerState>>,
    Path((driver, run_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<CancelReply>), ApiError> {
    if !subjects::is_token(&driver) || !subjects::is_token(&run_id) {
        return Err(ApiError::BadRequest(format!(
            "invalid driver {driver:?} or run id {run_id:?}: each must be without '.', '*', '>' or white space"
        )));
    }
    let reply = crate::runtime::cancel_run(state.harness.client(), &driver, &run_id)
        .await
        .map_err(ApiError::Cancel)?;
    let status = if reply.state == CancelState::Cancelling { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(reply)))
}
