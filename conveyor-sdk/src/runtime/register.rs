//! Registering a driver's resource definitions with the API server.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::protocol::ResourceDefinition;

/// Applies each definition (`POST /resource-definitions/apply`) until every one is
/// accepted or `stop` is cancelled. The driver keeps serving meanwhile.
pub(crate) async fn register_until_done(
    api_url: String,
    definitions: Vec<ResourceDefinition>,
    stop: CancellationToken,
) {
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build an HTTP client; resource definitions are not registered");
            return;
        }
    };
    let url = format!("{}/resource-definitions/apply", api_url.trim_end_matches('/'));
    let mut pending = definitions;
    let mut delay = Duration::from_secs(1);
    loop {
        let mut failed = Vec::new();
        for definition in pending {
            match apply(&http, &url, &definition).await {
                Ok(()) => {
                    tracing::info!(resource_type = %definition.name, %url, "resource definition registered")
                }
                Err(reason) => {
                    tracing::warn!(
                        resource_type = %definition.name, %url, %reason,
                        "cannot register the resource definition with the API server; serving anyway and retrying"
                    );
                    failed.push(definition);
                }
            }
        }
        if failed.is_empty() {
            return;
        }
        pending = failed;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn apply(http: &reqwest::Client, url: &str, definition: &ResourceDefinition) -> Result<(), String> {
    let response = http.post(url).json(definition).send().await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(format!("HTTP {status}: {}", body.trim()))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
