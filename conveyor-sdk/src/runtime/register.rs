//! Registering a driver's resource definitions with the API server.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Config, Error};
use crate::client::Client;
use crate::driver::ResourceType;
use crate::protocol::ResourceDefinition;

/// Starts registering the definitions of the resource types the driver owns, in
/// `tasks`, when [`Config::api_url`] names an API server. Settings that cannot work
/// (an unusable URL or root CA) are an error; an API server that cannot be reached
/// yet is retried in the background.
pub(super) fn start(
    config: &Config,
    types: &[ResourceType],
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), Error> {
    let Some(api_url) = config.api_url.clone() else { return Ok(()) };
    let definitions: Vec<_> = types.iter().filter_map(|t| t.definition().cloned()).collect();
    if definitions.is_empty() {
        return Ok(());
    }
    let mut builder = Client::builder(api_url).timeout(Duration::from_secs(10));
    if let Some(path) = &config.api_root_ca {
        let pem = std::fs::read(path).map_err(|source| Error::ApiRootCa { path: path.clone(), source })?;
        builder = builder.root_certificate(pem);
    }
    #[cfg(feature = "auth")]
    let builder = match config.api_identity.clone() {
        Some(identity) => builder.identity(identity),
        None => builder,
    };
    let client = builder.build().map_err(Error::ApiClient)?;
    tasks.spawn(register_until_done(client, definitions, config.register_backoff, stop.clone()));
    Ok(())
}

/// Applies each definition (`POST /resource-definitions/apply`) until every one is
/// accepted or `stop` is cancelled. The driver keeps serving meanwhile.
async fn register_until_done(
    client: Client,
    definitions: Vec<ResourceDefinition>,
    backoff: Backoff,
    stop: CancellationToken,
) {
    let url = format!("{}/resource-definitions/apply", client.base_url());
    let mut pending = definitions;
    let mut pauses = backoff.delays();
    loop {
        let mut failed = Vec::new();
        for definition in pending {
            match client.apply_definition(&definition).await {
                Ok(_) => {
                    tracing::info!(resource_type = %definition.name, %url, "resource definition registered")
                }
                Err(error) => {
                    tracing::warn!(
                        resource_type = %definition.name, %url, reason = %crate::report::error_text(&error),
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
            _ = tokio::time::sleep(pauses.next().unwrap_or(backoff.max())) => {}
        }
    }
}
