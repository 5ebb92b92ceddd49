//! `/drivers/broadcast-message`: a message handed to the drivers over NATS.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::error::{parse, ApiError};
use super::ServerState;
use crate::protocol::{subjects, DriverMessage};
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
    if !is_subject_token(&resource_type) {
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

/// Whether `text` is one NATS subject token: not empty, no `.`, `*`, `>` or white space.
pub(super) fn is_subject_token(text: &str) -> bool {
    !text.is_empty() && !text.contains(['.', '*', '>']) && !text.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens_are_single_words_without_wildcards() {
        assert!(is_subject_token("pipeline"));
        assert!(is_subject_token("fbdf5edf-66d4-46ce-859a-8ee44d6c9463"));
        for bad in ["", "a.b", "a*", ">", "two words", "tab\t"] {
            assert!(!is_subject_token(bad), "{bad:?}");
        }
    }
}
