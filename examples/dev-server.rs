//! A local Conveyor API server on a local NATS server, for developing drivers and
//! clients without the Go server: resources, resource definitions, pipelines, stored
//! logs and live log streams (WebSocket and Server-Sent Events).
//!
//! As today's server, it sends the drivers `create`, `update` (with a new run id,
//! answered beside the version kept) and `delete` (the resource as it was); a resource
//! in a pipeline carries its operation through every step, and one deleted is kept,
//! marked `deleting`, until every step's driver has cleaned up.
//!
//! ```text
//! cargo run --example dev-server -- --listen 127.0.0.1:8080 --nats-url nats://127.0.0.1:4222
//! ```
//!
//! Both flags are optional, with these defaults. `--auth-ca ca.pem` turns on
//! authentication as the server's `auth_enabled` does: every request but `/health`
//! needs a certificate-bound token whose chain leads to that CA.
//! `--tls-cert server.pem --tls-key server.key` serves HTTPS (and WSS) with that
//! certificate chain and key instead of HTTP. Stop it with Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use conveyor_sdk::auth::TokenVerifier;
use conveyor_sdk::testing::{DevServer, Harness};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut nats_url = "nats://127.0.0.1:4222".to_owned();
    let mut verifier = None;
    let (mut tls_cert, mut tls_key): (Option<PathBuf>, Option<PathBuf>) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "--nats-url" => nats_url = args.next().ok_or("--nats-url needs a URL")?,
            "--auth-ca" => {
                let path = args.next().ok_or("--auth-ca needs a PEM file")?;
                verifier = Some(TokenVerifier::from_pem(&std::fs::read(&path)?)?);
            }
            "--tls-cert" => tls_cert = Some(args.next().ok_or("--tls-cert needs a PEM file")?.into()),
            "--tls-key" => tls_key = Some(args.next().ok_or("--tls-key needs a PEM file")?.into()),
            "-h" | "--help" => {
                println!(
                    "dev-server [--listen 127.0.0.1:8080] [--nats-url nats://127.0.0.1:4222] [--auth-ca ca.pem] \
                     [--tls-cert server.pem --tls-key server.key]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    let authenticated = verifier.is_some();
    let harness = Harness::start(&nats_url).await?;
    let server = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => DevServer::start_with_tls(harness, listen, verifier, &cert, &key).await?,
        (None, None) => DevServer::start_with(harness, listen, verifier).await?,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if authenticated {
        println!("requests need a certificate-bound token (--auth-ca)");
    }
    println!("Conveyor dev server listening on {} (NATS {nats_url})", server.url());
    tokio::select! {
        _ = conveyor_sdk::runtime::shutdown_signal() => server.shutdown().await,
    }
    Ok(())
}
