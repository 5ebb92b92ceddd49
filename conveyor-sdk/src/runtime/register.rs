//! Registering a driver's resource definitions with the API server.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::protocol::ResourceDefinition;

/// Applies each definition (`POST /resource-definitions/apply`) until every one is
/// accepted or `stop` is cancelled. The driver keeps serving meanwhile.
pub(crate) async fn register_until_done(
    client: Client,
    definitions: Vec<ResourceDefinition>,
    stop: CancellationToken,
) {
    let url = format!("{}/resource-definitions/apply", client.base_url());
    let mut pending = definitions;
    let mut delay = Duration::from_secs(1);
    loop {
        let mut failed = Vec::new();
        for definition in pending {
            match client.apply_definition(&definition).await {
                Ok(_) => {
                    tracing::info!(resource_type = %definition.name, %url, "resource definition registered")
                }
                Err(error) => {
                    tracing::warn!(
                        resource_type = %definition.name, %url, reason = %crate::error_text(&error),
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
