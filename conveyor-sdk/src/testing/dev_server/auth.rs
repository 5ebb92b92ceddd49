//! The token check of a server with `auth_enabled`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::TokenVerifier;

/// Refuses a request without a valid token (`/health` excepted).
pub(super) async fn authenticate(
    State(verifier): State<Arc<TokenVerifier>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().trim_end_matches('/');
    if path == "/health" {
        return next.run(request).await;
    }
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    match verifier.verify_header(header) {
        Ok(_) => next.run(request).await,
        Err(error) => ApiError::Unauthorized(error).into_response(),
    }
}
