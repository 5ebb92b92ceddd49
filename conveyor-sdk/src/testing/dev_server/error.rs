//! Errors as the real server answers them: a status and `{"error": "…"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;

use super::store::StoreError;
use crate::auth::AuthError;
use crate::testing::TestingError;
use crate::validate::{SchemaError, SpecError};

/// Why a request was refused, or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum ApiError {
    /// The body is not the JSON the route takes.
    #[error("invalid payload")]
    Payload(#[source] serde_json::Error),
    /// The request lacks something the route needs; the text says what.
    #[error("{0}")]
    BadRequest(String),
    /// The spec of a resource to create does not satisfy its definition's schema.
    #[error("spec validation failed")]
    SpecOnCreate(#[source] SpecError),
    /// The spec of a resource's update does not satisfy its definition's schema.
    #[error("invalid spec")]
    SpecOnUpdate(#[source] SpecError),
    /// A definition's schema is not a usable JSON Schema.
    #[error("invalid schema")]
    Schema(#[source] SchemaError),
    /// What the request names is not kept, or is kept already.
    #[error("refused by the store")]
    Store(#[from] StoreError),
    /// The resource could not be sent to the drivers.
    #[error("cannot dispatch")]
    Dispatch(#[source] TestingError),
    /// A log line or a message to the drivers could not be published on NATS.
    #[error("cannot publish")]
    Publish(#[source] TestingError),
    /// The request carries no valid token.
    #[error("unauthorized")]
    Unauthorized(#[source] AuthError),
    /// A cancel request could not be sent to the drivers.
    #[error("cannot send the cancel request")]
    Cancel(#[source] crate::runtime::CancelError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Store(StoreError::NotFound { .. } | StoreError::NoSuchVersion { .. }) => {
                StatusCode::NOT_FOUND
            }
            Self::Store(StoreError::Poisoned) | Self::Dispatch(_) | Self::Publish(_) | Self::Cancel(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            Self::Store(StoreError::Taken { .. })
            | Self::Payload(_)
            | Self::BadRequest(_)
            | Self::SpecOnCreate(_)
            | Self::SpecOnUpdate(_)
            | Self::Schema(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The text of the answer, word for word the real server's where it has one.
    fn message(&self) -> String {
        match self {
            Self::Payload(error) => format!("invalid payload: {error}"),
            Self::BadRequest(text) => text.clone(),
            Self::SpecOnCreate(SpecError::Invalid(violations)) => {
                let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
                format!("spec validation failed: {}", list.join("; "))
            }
            Self::SpecOnCreate(error) | Self::SpecOnUpdate(error) => error.to_string(),
            Self::Schema(error) => error.to_string(),
            Self::Store(error) => error.to_string(),
            Self::Dispatch(error) | Self::Publish(error) => error.to_string(),
            Self::Unauthorized(error) => format!("unauthorized: {error}"),
            Self::Cancel(error) => crate::report::error_text(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({"error": self.message()}))).into_response()
    }
}

/// The request's body as JSON, or `400 invalid payload`.
pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::Payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_refusals_answer_404_for_what_is_missing_and_400_for_what_is_taken() {
        let missing = ApiError::from(StoreError::NotFound { kind: "pipeline", key: "\"ci\"".into() });
        assert_eq!(
            (missing.status(), missing.message().as_str()),
            (StatusCode::NOT_FOUND, "pipeline \"ci\" not found")
        );
        let taken = ApiError::from(StoreError::Taken { kind: "pipeline", key: "\"ci\"".into() });
        assert_eq!(
            (taken.status(), taken.message().as_str()),
            (StatusCode::BAD_REQUEST, "pipeline \"ci\" already exists")
        );
        let poisoned = ApiError::from(StoreError::Poisoned);
        assert_eq!(
            (poisoned.status(), poisoned.message().as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "state poisoned")
        );
    }

    #[test]
    fn a_change_the_state_refuses_answers_409() {
        let busy = ApiError::from(StoreError::Conflict {
            kind: "resource",
            key: "job/a".into(),
            reason: "is being deleted".into(),
        });
        assert_eq!(
            (busy.status(), busy.message().as_str()),
            (StatusCode::CONFLICT, "resource job/a is being deleted")
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_an_invalid_payload() {
        let Err(error) = parse::<serde_json::Value>(&Bytes::from_static(b"{")) else {
            panic!("an unfinished object parsed");
        };
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(error.message().starts_with("invalid payload: EOF"), "{}", error.message());
    }
}
