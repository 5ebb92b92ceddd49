//! The seed tutorial end to end: the dev server, simple-runner serving, a resource
//! created over HTTP and its log watched live over WebSocket; then a two-step pipeline.

use std::time::Duration;

use conveyor_sdk::client::{Client, LogQuery, Pipeline, PipelineStep, Transport};
use conveyor_sdk::testing::{DevServer, NatsServer, Serving};
use conveyor_sdk::{
    CancellationToken, Config, Driver, DriverResult, ReconcileError, Resource, ResourceType, Run,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "common.rs"]
mod common;

use common::tutorial_resource;

struct Services {
    _nats: NatsServer,
    server: DevServer,
    client: Client,
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<Result<(), conveyor_sdk::runtime::Error>>,
}

impl Services {
    /// Stops simple-runner and waits until the containers of its runs are removed.
    async fn finish(self) {
        self.stop.cancel();
        self.serving.await.expect("simple-runner's task").expect("simple-runner served");
    }
}

/// NATS, the dev server, and simple-runner serving against both.
async fn services() -> Services {
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let server = DevServer::start(&nats.url(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::new(server.url()).unwrap();
    let stop = CancellationToken::new();
    let config = Config::default().nats_url(nats.url()).api_url(server.url());
    let serving = common::serve_simple_runner(config, &client, &stop).await;
    Services { _nats: nats, server, client, stop, serving }
}

#[tokio::test]
async fn the_tutorial_runs_and_its_log_is_watched_live_over_websocket() {
    let services = services().await;
    let base = services.server.url();

    // reqwest is built with rustls and no crypto provider of its own (conveyor-sdk
    // brings its own to its client): a plain reqwest client needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // POST /resources/ exactly as the tutorial does.
    let reply = reqwest::Client::new()
        .post(format!("{base}/resources/"))
        .json(&tutorial_resource())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["message"], "Resource created successfully");
    assert_eq!(reply["name"], "ubuntu-pipeline-6");
    let run_id = reply["runid"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&run_id).is_ok(), "runid {run_id} is not a UUID");

    // ws://…/logs/streams/command-runner/<runid>: "a timestamp and a log message" per entry.
    let ws_url = format!("{}/logs/streams/command-runner/{run_id}", base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.unwrap();
    let mut entries: Vec<(String, String)> = Vec::new();
    let read = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.unwrap() {
                let entry: (String, String) = serde_json::from_str(text.as_str()).unwrap();
                let done = entry.1 == "run succeeded" || entry.1 == "run failed";
                entries.push(entry);
                if done {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the run's log did not finish in time");
    let messages: Vec<&str> = entries.iter().map(|(_, m)| m.as_str()).collect();
    let position = |text: &str| {
        messages.iter().position(|m| *m == text).unwrap_or_else(|| panic!("{text:?} not in {messages:#?}"))
    };
    assert!(position("==> step 1/3 print-working-directory: pwd") < position("/"));
    assert!(position("/") < position("==> step 2/3 list-files: ls -l"));
    assert!(
        position("==> step 3/3 show-os-info: cat /etc/os-release") < position("NAME=\"Conveyor test image\"")
    );
    assert_eq!(messages.last(), Some(&"run succeeded"));
    assert!(entries.iter().all(|(ts, _)| ts.len() == 30), "every entry has its timestamp");
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "entries come in order");

    // The same lines, stored, and over Server-Sent Events.
    let stored = services.client.logs(&LogQuery::run(&run_id)).await.unwrap();
    assert_eq!(stored.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), messages);
    let mut sse = services
        .client
        .stream_logs_with("command-runner", &run_id, Transport::ServerSentEvents)
        .await
        .unwrap();
    for expected in &messages {
        let line = tokio::time::timeout(Duration::from_secs(10), sse.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(line.message, *expected);
    }
    services.finish().await;
}

/// The second step of the pipeline: reads what the first left in the metadata.
struct Reporter;

#[conveyor_sdk::async_trait]
impl Driver for Reporter {
    type Spec = Value;

    fn name(&self) -> &str {
        "reporter"
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::foreign("pipeline")]
    }

    async fn reconcile(&self, run: Run<Value>) -> Result<DriverResult, ReconcileError> {
        let build = run.resource().driver_result("command-runner").ok_or("no result of the build step")??;
        run.log().log(format!("the build said: {}", build.message)).await;
        Ok(DriverResult::success("reported")
            .with_data(json!({"build": build.message, "event": run.event().as_str()})))
    }
}

#[tokio::test]
async fn a_two_step_pipeline_passes_the_first_result_to_the_second_driver() {
    let services = services().await;
    let config = Config::default().nats_url(services._nats.url());
    let reporter = Serving::start(Reporter, config, services.server.harness()).await.unwrap();
    let pipeline = Pipeline::new("build-and-report", "pipeline")
        .step(PipelineStep::new("build", "command-runner"))
        .step(PipelineStep::new("report", "reporter"));
    services.client.create_pipeline(&pipeline).await.unwrap();

    let mut resource: Resource = serde_json::from_value(tutorial_resource()).unwrap();
    resource.name = "piped".into();
    resource.pipeline = Some("build-and-report".into());
    let created = services.client.create_resource(&resource).await.unwrap();

    let harness = services.server.harness();
    let report = harness.result_of_driver(&created.runid, "reporter", Duration::from_secs(60)).await.unwrap();
    assert!(report.driverresult.success, "{}", report.driverresult.message);
    assert_eq!(report.driverresult.data["build"], "3 steps succeeded");
    assert_eq!(report.driverresult.data["event"], "create", "every step gets the operation itself");

    let stored = services.client.get_resource("pipeline", "piped").await.unwrap();
    let build = stored.driver_result("command-runner").unwrap().unwrap();
    assert!(build.success);
    let reported = stored.driver_result("reporter").unwrap().unwrap();
    assert_eq!(reported.message, "reported");
    let lines = services.client.logs(&LogQuery::run(&created.runid).driver("reporter")).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].message, "the build said: 3 steps succeeded");
    assert_eq!(lines[0].pipeline.as_deref(), Some("build-and-report"));

    // The whole run's stream carries the lines of both drivers.
    let mut run_stream = services.client.stream_run_logs(&created.runid).await.unwrap();
    let mut drivers = std::collections::BTreeSet::new();
    while drivers.len() < 2 {
        let line =
            tokio::time::timeout(Duration::from_secs(10), run_stream.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(line.runid, created.runid);
        drivers.insert(line.driver);
    }
    assert_eq!(drivers.into_iter().collect::<Vec<_>>(), ["command-runner", "reporter"]);
    reporter.shutdown().await.unwrap();
    services.finish().await;
}

#[tokio::test]
async fn a_run_created_over_http_is_cancelled_over_http_and_its_log_says_so() {
    let services = services().await;
    let mut resource: Resource = serde_json::from_value(tutorial_resource()).unwrap();
    resource.name = "cancel-over-http".into();
    resource.spec["steps"] = json!([{"name": "wait", "command": "echo waiting; sleep 600"}]);
    let created = services.client.create_resource(&resource).await.unwrap();
    let mut live = services.client.stream_logs("command-runner", &created.runid).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m == "waiting") {
        let line =
            tokio::time::timeout(Duration::from_secs(30), live.next()).await.unwrap().unwrap().unwrap();
        seen.push(line.message);
    }

    let reply = services.client.cancel_run("command-runner", &created.runid).await.unwrap();
    assert_eq!(reply.state, conveyor_sdk::protocol::CancelState::Cancelling);
    while seen.last().map(String::as_str) != Some("the run was cancelled on request") {
        let next = tokio::time::timeout(Duration::from_secs(30), live.next()).await;
        let line = next.expect("the log never said the run was cancelled").unwrap().unwrap();
        seen.push(line.message);
    }
    assert!(
        seen.iter().any(|m| m.starts_with("<== step 1/1 wait: the run was cancelled; stopping it")),
        "{seen:?}"
    );

    let again = services.client.cancel_run("command-runner", &created.runid).await.unwrap();
    assert_eq!(again.state, conveyor_sdk::protocol::CancelState::Finished);
    let unknown = services.client.cancel_run("command-runner", "no-such-run").await.unwrap();
    assert_eq!(unknown.state, conveyor_sdk::protocol::CancelState::NotRunning);
    services.finish().await;
}

/// Reads `live` until a line is `last`; every line read, in order.
async fn read_until(
    live: &mut (impl futures_util::Stream<Item = Result<conveyor_sdk::Log, conveyor_sdk::client::ClientError>>
              + Unpin),
    last: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some(last) {
        let next = tokio::time::timeout(Duration::from_secs(30), live.next()).await;
        let line = next.unwrap_or_else(|_| panic!("no {last:?} in {seen:#?}")).unwrap().unwrap();
        seen.push(line.message);
    }
    seen
}

#[tokio::test]
async fn the_tutorial_s_update_supersedes_the_running_version_and_its_delete_removes_the_resource() {
    let services = services().await;
    let client = &services.client;
    let created: Resource = serde_json::from_value(tutorial_resource()).unwrap();
    let first = client.create_resource(&created).await.unwrap();

    // Step 6: a version that takes a while.
    let mut waiting = created.clone();
    waiting.spec["steps"] = json!([{"name": "wait", "command": "echo waiting; sleep 60"}]);
    let second = client.update_resource(&waiting).await.unwrap();
    let second_run = second.runid.expect("today's server names the update's run");
    assert_ne!(second_run, first.runid);
    assert_eq!(second.resource.version(), Some(2));
    let mut live = client.stream_logs("command-runner", &second_run).await.unwrap();
    read_until(&mut live, "waiting").await;

    // While it sleeps, back to the tutorial's three steps.
    let third = client.update_resource(&created).await.unwrap();
    let third_run = third.runid.expect("a run id");
    assert_eq!(third.resource.version(), Some(3));
    let superseded = format!("the run was cancelled: superseded by run {third_run} (version 3)");
    let seen = read_until(&mut live, &superseded).await;
    assert!(!seen.iter().any(|m| m == "run succeeded"), "{seen:?}");
    let mut newest = client.stream_logs("command-runner", &third_run).await.unwrap();
    let lines = read_until(&mut newest, "run succeeded").await;
    assert!(lines.iter().any(|m| m == "==> step 3/3 show-os-info: cat /etc/os-release"), "{lines:?}");

    // Then delete it: the record goes.
    client.delete_resource("pipeline", "ubuntu-pipeline-6").await.unwrap();
    assert!(client.get_resource("pipeline", "ubuntu-pipeline-6").await.is_err(), "the resource is gone");
    services.finish().await;
}
