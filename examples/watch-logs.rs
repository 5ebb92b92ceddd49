//! Watches a run's log live, as a user of the tutorial does: stored lines first, then
//! new ones as they come, until the server closes the stream (or Ctrl-C).
//!
//! ```text
//! cargo run --example watch-logs -- <runid> [--driver command-runner] [--server http://localhost:8080] [--websocket]
//! ```
//!
//! `--websocket` reads the stream over WebSocket, as the seed tutorial's viewer does;
//! otherwise the client asks for Server-Sent Events and falls back to WebSocket.

use conveyor_sdk::client::{Client, Transport};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut run_id = None;
    let mut driver = "command-runner".to_owned();
    let mut server = std::env::var("CONVEYOR_API_URL").unwrap_or_else(|_| "http://localhost:8080".into());
    let mut transport = Transport::Auto;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--driver" => driver = args.next().ok_or("--driver needs a name")?,
            "--server" => server = args.next().ok_or("--server needs a URL")?,
            "--websocket" => transport = Transport::WebSocket,
            other if run_id.is_none() && !other.starts_with('-') => run_id = Some(other.to_owned()),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let run_id = run_id.ok_or("usage: watch-logs <runid> [--driver NAME] [--server URL] [--websocket]")?;
    let client = Client::new(server)?;
    let mut lines = client.stream_logs_with(&driver, &run_id, transport).await?;
    while let Some(line) = lines.next().await {
        let line = line?;
        println!("{} {}", line.timestamp, line.message);
    }
    Ok(())
}
