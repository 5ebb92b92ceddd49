//! A local Conveyor API server on a local NATS server, for developing drivers and
//! clients without the Go server: resources, resource definitions, pipelines, stored
//! logs and live log streams (WebSocket and Server-Sent Events).
//!
//! ```text
//! cargo run --example dev-server -- --listen 127.0.0.1:8080 --nats-url nats://127.0.0.1:4222
//! ```
//!
//! Both flags are optional, with these defaults. Stop it with Ctrl-C.

use std::net::SocketAddr;

use conveyor_sdk::testing::DevServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut nats_url = "nats://127.0.0.1:4222".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "--nats-url" => nats_url = args.next().ok_or("--nats-url needs a URL")?,
            "-h" | "--help" => {
                println!("dev-server [--listen 127.0.0.1:8080] [--nats-url nats://127.0.0.1:4222]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    let server = DevServer::start(&nats_url, listen).await?;
    println!("Conveyor dev server listening on {} (NATS {nats_url})", server.url());
    tokio::select! {
        _ = conveyor_sdk::runtime::shutdown_signal() => server.shutdown().await,
    }
    Ok(())
}
