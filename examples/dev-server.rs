//! A local Conveyor API server on a local NATS server, for developing drivers and
//! clients without the Go server: resources, resource definitions, pipelines, stored
//! logs and live log streams (WebSocket and Server-Sent Events).
//!
//! ```text
//! cargo run --example dev-server -- --listen 127.0.0.1:8080 --nats-url nats://127.0.0.1:4222
//! ```
//!
//! Both flags are optional, with these defaults. `--auth-ca ca.pem` turns on
//! authentication as the server's `auth_enabled` does: every request but `/health`
//! needs a certificate-bound token whose chain leads to that CA. Stop it with Ctrl-C.

use std::net::SocketAddr;

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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "--nats-url" => nats_url = args.next().ok_or("--nats-url needs a URL")?,
            "--auth-ca" => {
                let path = args.next().ok_or("--auth-ca needs a PEM file")?;
                verifier = Some(TokenVerifier::from_pem(&std::fs::read(&path)?)?);
            }
            "-h" | "--help" => {
                println!("dev-server [--listen 127.0.0.1:8080] [--nats-url nats://127.0.0.1:4222] [--auth-ca ca.pem]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    let authenticated = verifier.is_some();
    let server = DevServer::start_with(Harness::start(&nats_url).await?, listen, verifier).await?;
    if authenticated {
        println!("requests need a certificate-bound token (--auth-ca)");
    }
    println!("Conveyor dev server listening on {} (NATS {nats_url})", server.url());
    tokio::select! {
        _ = conveyor_sdk::runtime::shutdown_signal() => server.shutdown().await,
    }
    Ok(())
}
