//! `simple-runner artifact get|list`: the artifacts of runs, fetched from the NATS
//! object store with the SDK's [`conveyor_sdk::artifacts`], and what a local run says
//! of those it kept.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use conveyor_sdk::artifacts::{ArtifactKey, ArtifactStore, BUCKET};
use conveyor_sdk::{error_text, DriverResult};

use super::args::{ArtifactCommand, StoreArgs, DEFAULT_NATS_URL};

/// Runs `command`: 0 when it did what it was asked.
pub async fn run(command: ArtifactCommand) -> ExitCode {
    let done = match command {
        ArtifactCommand::Get { run_id, artifact, output, store } => {
            get(&run_id, &artifact, output.as_deref(), &store).await
        }
        ArtifactCommand::List { run_id, store } => list(&run_id, &store).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes artifact `name` of run `run_id` into `output`, or standard output when it is
/// not a terminal; a file half written is removed.
async fn get(run_id: &str, name: &str, output: Option<&Path>, args: &StoreArgs) -> Result<(), String> {
    let key = ArtifactKey::new(&args.name, run_id, name).map_err(|e| error_text(&e))?;
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(format!(
            "artifact {name} is a tar: give -o FILE, or pipe it (`simple-runner artifact get {run_id} {name} | tar x`)"
        ));
    }
    let store = open(args).await?;
    let Some(path) = output else {
        let mut stdout = tokio::io::stdout();
        return store.fetch(&key, &mut stdout).await.map(drop).map_err(|e| error_text(&e));
    };
    // The artifact must exist before a file is made for it.
    store.info(&key).await.map_err(|e| error_text(&e))?;
    let mut file =
        tokio::fs::File::create(path).await.map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    match store.fetch(&key, &mut file).await {
        Ok(info) => {
            eprintln!("{}: artifact {name}, {} bytes, sha256 {}", path.display(), info.size, info.sha256);
            Ok(())
        }
        Err(error) => {
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
            Err(error_text(&error))
        }
    }
}

/// Prints the artifacts of run `run_id`, one a line: name, size, SHA-256, when kept.
async fn list(run_id: &str, args: &StoreArgs) -> Result<(), String> {
    let store = open(args).await?;
    let artifacts = store.list(&args.name, run_id).await.map_err(|e| error_text(&e))?;
    if artifacts.is_empty() {
        return Err(format!("run {run_id} of driver {} has no artifacts (none kept, or expired)", args.name));
    }
    for artifact in artifacts {
        let kept = artifact.modified.map(|t| humantime::format_rfc3339_seconds(t).to_string());
        println!(
            "{}\t{}\t{}\t{}",
            artifact.name,
            artifact.size,
            artifact.sha256,
            kept.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

async fn open(args: &StoreArgs) -> Result<ArtifactStore, String> {
    let js = args.nats.connect().await?;
    ArtifactStore::open(&js, BUCKET).await.map_err(|e| error_text(&e))
}

/// Says, after a local run of driver `driver` that kept its artifacts on the NATS of
/// `nats_urls`, how to fetch each artifact its result lists.
pub fn say_kept(result: &DriverResult, run_id: &str, driver: &str, nats_urls: &[String]) {
    let Some(artifacts) = result.data.get("artifacts").and_then(|a| a.as_array()) else { return };
    let mut flags = String::new();
    if driver != simple_runner::DRIVER_NAME {
        flags.push_str(&format!(" --name {driver}"));
    }
    if nats_urls != [DEFAULT_NATS_URL] {
        flags.push_str(&format!(" --nats-url {}", nats_urls.join(",")));
    }
    for artifact in artifacts {
        let name = artifact["name"].as_str().unwrap_or_default();
        println!(
            "artifact {name}: {} bytes, sha256 {}: simple-runner artifact get{flags} {run_id} {name} | tar x",
            artifact["size"],
            artifact["sha256"].as_str().unwrap_or_default()
        );
    }
}
