//! Malformed and hostile messages against a real nats-server: a message that cannot be
//! run gets one failure result when it names a run, is terminated, builds no subject of
//! what it holds, and never stalls the driver or its connection.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use conveyor_sdk::protocol::subjects;
use conveyor_sdk::testing::Harness;
use conveyor_sdk::{Config, DriverMessage, Event, PipelineEvent, Runtime};
use futures_util::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a valid run published after hostile messages may take to get its result.
const PROMPTLY: Duration = Duration::from_secs(10);

/// A runtime serving on a connection of the test's own, whose disconnections (and
/// errors the server reports) are counted.
struct Watched {
    stop: CancellationToken,
    task: JoinHandle<Result<(), conveyor_sdk::runtime::Error>>,
    connection_events: Arc<AtomicUsize>,
}

impl Watched {
    async fn start(driver: TestDriver, config: Config, url: &str, harness: &Harness) -> Self {
        let connection_events = Arc::new(AtomicUsize::new(0));
        let counted = connection_events.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let counted = counted.clone();
                async move {
                    if matches!(event, async_nats::Event::Disconnected | async_nats::Event::ServerError(_)) {
                        eprintln!("connection event: {event}");
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test's nats-server at {url}: {e}"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            Runtime::with_config(driver, config).run_with_client(client, stop.clone().cancelled_owned()),
        );
        wait_for_pull_requests(harness, 1).await;
        Self { stop, task, connection_events }
    }

    fn connection_events(&self) -> usize {
        self.connection_events.load(Ordering::SeqCst)
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(60), self.task).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "the runtime did not stop cleanly: {ended:?}");
    }
}

/// The bytes of a create message of a runnable job with `run_id`, as the server writes it.
fn message_with_run_id(name: &str, run_id: &str) -> Vec<u8> {
    let mut resource = job(name, json!({"mode": "ok"}));
    resource.id = format!("id-{name}");
    let message =
        DriverMessage { event: Event::Create, payload: resource, id: "m".repeat(24), run_id: run_id.into() };
    serde_json::to_vec(&message).expect("a message encodes")
}

/// Waits until stream `messages` holds no message: every one was acknowledged or
/// terminated, none is left to be delivered again.
async fn wait_until_stream_empty(harness: &Harness) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream =
            harness.jetstream().get_stream(subjects::MESSAGES_STREAM).await.expect("stream messages");
        let held = stream.info().await.expect("stream info").state.messages;
        if held == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "stream messages still holds {held} message(s)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The keys of the bucket of run records.
async fn run_record_keys(harness: &Harness) -> Vec<String> {
    let Ok(store) = harness.jetstream().get_key_value(subjects::RUNS_BUCKET).await else { return Vec::new() };
    let keys = store.keys().await.expect("the bucket's keys");
    keys.filter_map(|key| async move { key.ok() }).collect().await
}

/// Each kind of run id that cannot stand in a subject, and the words that say why.
fn bad_run_ids() -> Vec<(String, &'static str)> {
    let mut ids: Vec<(String, &'static str)> = vec![
        (String::new(), "it is empty"),
        (".r1".into(), "it holds a `.`"),
        ("r2.".into(), "it holds a `.`"),
        ("r..3".into(), "it holds a `.`"),
        ("r4*".into(), "wildcard"),
        ("*".into(), "wildcard"),
        ("r5>".into(), "wildcard"),
        (">".into(), "wildcard"),
        ("r 6".into(), "white space"),
        ("r\t7".into(), "control character"),
        ("r8\r\nPUB x 1".into(), "control character"),
        ("r9\n".into(), "control character"),
        ("r\u{0}10".into(), "control character"),
        ("r\u{1b}[31m11".into(), "control character"),
        ("r12\u{7f}".into(), "control character"),
        ("r\u{2028}13".into(), "white space"),
    ];
    ids.push(("x".repeat(100_000), "100000 bytes long, more than 256"));
    ids
}

#[tokio::test]
async fn every_kind_of_bad_run_id_gets_one_failure_result_is_terminated_and_stalls_nothing() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let watched = Watched::start(driver.clone(), config(&nats), &nats.url(), &harness).await;

    let bad = bad_run_ids();
    for (i, (run_id, _)) in bad.iter().enumerate() {
        let bytes = message_with_run_id(&format!("bad-{i}"), run_id);
        harness.publish_raw(&subjects::resource(TYPE), bytes.into()).await.unwrap();
    }
    let valid = harness.create(job("after", json!({"mode": "ok"}))).await.unwrap();

    let result = harness.result_within(&valid.run_id, PROMPTLY).await.unwrap();
    assert!(result.driverresult.success, "{:?}", result.driverresult);
    for (i, (run_id, why)) in bad.iter().enumerate() {
        let shown = format!("{:?}", run_id.chars().take(20).collect::<String>());
        let event = harness.result(run_id).await.unwrap_or_else(|e| panic!("no result for {shown}: {e}"));
        let result = &event.driverresult;
        assert!(!result.success, "{shown}: {result:?}");
        assert_eq!(result.driver, DRIVER);
        assert!(result.message.starts_with("refused: the run id "), "{shown}: {}", result.message);
        assert!(result.message.contains("cannot stand in a NATS subject"), "{shown}: {}", result.message);
        assert!(result.message.contains(why), "{shown} should be refused for {why:?}: {}", result.message);
        assert!(
            result.message.len() < 400,
            "{shown}: the message shows the id cut short: {}",
            result.message
        );
        assert_eq!(event.resource.name, format!("bad-{i}"), "{shown}: the resource is as it was sent");
        assert_eq!(event.resource.id, format!("id-bad-{i}"));
    }

    let info = wait_until_settled(&harness).await;
    assert_eq!(info.num_redelivered, 0, "each was answered on its first delivery");
    wait_until_stream_empty(&harness).await;
    for (run_id, _) in &bad {
        assert_eq!(harness.results(run_id).len(), 1, "one result for {:?}", &run_id[..run_id.len().min(20)]);
    }
    assert_eq!(harness.all_results().len(), bad.len() + 1);
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1, "no bad run id was run");
    let logs = harness.all_logs();
    assert!(logs.iter().all(|line| line.runid == valid.run_id), "only the valid run logged: {logs:?}");
    let keys = run_record_keys(&harness).await;
    assert_eq!(keys, [subjects::run_record_key(&valid.run_id, DRIVER)], "only the valid run has a record");
    assert_eq!(watched.connection_events(), 0, "the driver's connection was never disturbed");
    watched.shutdown().await;
}

#[tokio::test]
async fn a_run_id_of_100000_characters_does_not_disturb_the_connection_or_the_runs_around_it() {
    let (nats, harness) = setup().await;
    let watched = Watched::start(TestDriver::new(), config(&nats), &nats.url(), &harness).await;

    let before = harness.create(job("before", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&before.run_id).await.unwrap().driverresult.success);
    let long = "r".repeat(100_000);
    harness.publish_raw(&subjects::resource(TYPE), message_with_run_id("long", &long).into()).await.unwrap();
    let refused = harness.result(&long).await.unwrap();
    let after = harness.create(job("after", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result_within(&after.run_id, PROMPTLY).await.unwrap().driverresult.success);

    assert!(!refused.driverresult.success);
    assert_eq!(refused.run_id.len(), 100_000, "the result names the run as the message did");
    assert!(refused.driverresult.message.contains("(100000 bytes)"), "{}", refused.driverresult.message);
    wait_until_settled(&harness).await;
    assert_eq!(harness.results(&long).len(), 1);
    assert_eq!(watched.connection_events(), 0, "no disconnection, no error from the server");
    watched.shutdown().await;
}

/// Publishes `envelope` (a message's JSON) on the driver's subject.
async fn publish_json(harness: &Harness, envelope: serde_json::Value) {
    harness
        .publish_raw(&subjects::resource(TYPE), serde_json::to_vec(&envelope).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_whose_resource_does_not_decode_gets_one_failure_result_with_what_could_be_read() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let serving = serve(driver.clone(), config(&nats), &harness).await;

    // A name of the wrong type: the rest of the resource is read.
    let payload =
        json!({"id": "res-1", "name": 7, "resource": TYPE, "pipeline": "p", "spec": {"mode": "ok"}});
    publish_json(
        &harness,
        json!({"event": "create", "payload": payload.to_string(), "id": "m1", "run_id": "run-name"}),
    )
    .await;
    // The object form, with metadata that is no object.
    let payload =
        json!({"id": "res-2", "name": "meta", "resource": TYPE, "metadata": [1], "spec": {"mode": "ok"}});
    publish_json(
        &harness,
        json!({"event": "create", "payload": payload, "id": "m2", "run_id": "run-metadata"}),
    )
    .await;
    // A payload that is no resource at all, and one that is no JSON.
    publish_json(&harness, json!({"event": "create", "payload": "[1]", "id": "m3", "run_id": "run-array"}))
        .await;
    publish_json(
        &harness,
        json!({"event": "create", "payload": "not json", "id": "m4", "run_id": "run-text"}),
    )
    .await;
    // An envelope without its event.
    let payload = json!({"id": "res-5", "name": "no-event", "resource": TYPE, "spec": {"mode": "ok"}});
    publish_json(&harness, json!({"payload": payload.to_string(), "id": "m5", "run_id": "run-event"})).await;
    // What the issue tried: a pipeline step whose metadata holds a boolean runs.
    let mut step = job("step", json!({"mode": "ok"}));
    step.pipeline = Some("build".into());
    step.metadata.insert("deleting".into(), json!(false));
    step.metadata.insert(
        "driverresults".into(),
        json!({"git-cloner": {"success": true, "message": "ok", "driver": "git-cloner"}}),
    );
    let step = harness.step(DRIVER, Event::Process, step, None).await.unwrap();

    let ran = harness.result(&step.run_id).await.unwrap();
    assert!(ran.driverresult.success, "{:?}", ran.driverresult);
    assert_eq!(ran.resource.metadata["deleting"], json!(false));

    let refused = |event: &PipelineEvent, words: &[&str]| {
        let result = &event.driverresult;
        assert!(!result.success, "{result:?}");
        for word in words {
            assert!(
                result.message.contains(word),
                "{:?} should say {word:?}: {}",
                event.run_id,
                result.message
            );
        }
    };
    let name = harness.result("run-name").await.unwrap();
    refused(&name, &["refused: the payload of run run-name is not a resource", "name", "invalid type"]);
    assert_eq!((name.resource.id.as_str(), name.resource.resource.as_str()), ("res-1", TYPE));
    assert_eq!((name.resource.name.as_str(), name.resource.pipeline.as_deref()), ("", Some("p")));
    assert_eq!(name.resource.spec, json!({"mode": "ok"}));
    let metadata = harness.result("run-metadata").await.unwrap();
    refused(&metadata, &["is not a resource", "metadata"]);
    assert_eq!((metadata.resource.id.as_str(), metadata.resource.name.as_str()), ("res-2", "meta"));
    assert!(metadata.resource.metadata.is_empty());
    let array = harness.result("run-array").await.unwrap();
    refused(&array, &["is not a resource", "invalid type"]);
    assert_eq!((array.resource.name.as_str(), array.resource.resource.as_str()), ("", ""));
    refused(&harness.result("run-text").await.unwrap(), &["is not a resource", "expected"]);
    let event = harness.result("run-event").await.unwrap();
    refused(&event, &["the message of run run-event is not a DriverMessage", "event"]);
    assert_eq!((event.resource.id.as_str(), event.resource.name.as_str()), ("res-5", "no-event"));

    let info = wait_until_settled(&harness).await;
    assert_eq!(info.num_redelivered, 0);
    for run_id in ["run-name", "run-metadata", "run-array", "run-text", "run-event"] {
        assert_eq!(harness.results(run_id).len(), 1, "one result for {run_id}");
    }
    assert_eq!(harness.all_results().len(), 6);
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1, "only the step was run");
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refusal_whose_result_cannot_be_stored_gives_its_place_back_and_ends_after_the_last_delivery() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    // One reconcile slot and one finishing place: a refusal holding either for ever
    // would stop everything behind it.
    let config =
        config(&nats).concurrency(1).max_finishing(1).max_deliveries(3).log_retry(Duration::from_millis(300));
    let serving = serve(driver.clone(), config, &harness).await;
    // Without the stream, no result can be stored.
    harness.jetstream().delete_stream(subjects::PIPELINE_STREAM).await.unwrap();

    harness.publish_raw(&subjects::resource(TYPE), message_with_run_id("stuck", "a b").into()).await.unwrap();
    let valid = harness.create(job("after", json!({"mode": "ok"}))).await.unwrap();
    harness.wait_for_log(&valid.run_id, "hello from after", PROMPTLY).await.unwrap();

    // The refusal is tried on each of its three deliveries, then terminated without a
    // result; the run, whose result cannot be stored either, is all the stream holds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = harness.jetstream().get_stream(subjects::MESSAGES_STREAM).await.unwrap();
        if stream.info().await.unwrap().state.messages == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal was not terminated after its deliveries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    conveyor_sdk::testing::create_server_streams(harness.jetstream()).await.unwrap();
    let result = harness.result(&valid.run_id).await.unwrap();
    assert_eq!(result.driverresult.driver, DRIVER);
    wait_until_settled(&harness).await;
    wait_until_stream_empty(&harness).await;
    assert_eq!(harness.results(&valid.run_id).len(), 1);
    assert!(harness.results("a b").is_empty(), "the refusal gave up its result after the last delivery");
    serving.shutdown().await.unwrap();
}
