//! The dev server as today's server: `PUT` publishes `update` with a new run id and
//! answers it, `DELETE` publishes `delete`, and a resource in a pipeline carries its
//! operation through every step; deleting one runs `delete` through every step's
//! driver and forgets it only once every step cleaned up.
#![cfg(feature = "dev-server")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conveyor_sdk::client::{Client, ClientError, Pipeline, PipelineStep};
use conveyor_sdk::testing::{DevServer, NatsServer, Serving};
use conveyor_sdk::{
    Config, Driver, DriverMessage, DriverResult, ReconcileError, Resource, ResourceDefinition, ResourceType,
    Run,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

const TYPE: &str = "job";

struct Services {
    nats: NatsServer,
    server: DevServer,
    client: Client,
}

/// NATS, the dev server, and the definition of `job`.
async fn services() -> Services {
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let server = DevServer::start(&nats.url(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::new(server.url()).unwrap();
    client.apply_definition(&ResourceDefinition::new(TYPE, json!({"type": "object"}))).await.unwrap();
    Services { nats, server, client }
}

/// Messages published on `subject`, as the drivers' consumers would get them.
async fn watch_subject(server: &DevServer, subject: &str) -> async_nats::Subscriber {
    let nats = server.harness().client();
    let subscriber = nats.subscribe(subject.to_owned()).await.unwrap();
    nats.flush().await.unwrap();
    subscriber
}

/// The next message on `subscriber`, decoded; the payload must be a JSON string, as
/// the real server sends it.
async fn next_message(subscriber: &mut async_nats::Subscriber) -> DriverMessage {
    let message = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
        .await
        .expect("a message within 30 s")
        .expect("the subscription is open");
    let raw: Value = serde_json::from_slice(&message.payload).unwrap();
    assert!(raw["payload"].is_string(), "the payload is a JSON string: {raw}");
    DriverMessage::decode(&message.payload).unwrap()
}

/// Asks for the resource until `wanted` accepts the answer (the engine takes results
/// in the background, announcing nothing), for up to 30 s.
async fn resource_when(
    client: &Client,
    name: &str,
    what: &str,
    wanted: impl Fn(&Result<Resource, ClientError>) -> bool,
) -> Result<Resource, ClientError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.get_resource(TYPE, name).await;
        if wanted(&answer) {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} did not come within 30 s: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn not_found(answer: &Result<Resource, ClientError>) -> bool {
    matches!(answer, Err(ClientError::Server { status: 404, .. }))
}

fn meta<'a>(resource: &'a Resource, key: &str) -> &'a Value {
    resource.metadata.get(key).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_put_publishes_update_with_a_new_run_id_and_answers_it_beside_the_resource() {
    let services = services().await;
    let mut standalone = watch_subject(&services.server, "resources.job").await;
    let created =
        services.client.create_resource(&Resource::new("app", TYPE, json!({"v": 1}))).await.unwrap();
    let create = next_message(&mut standalone).await;
    assert_eq!((create.event.as_str(), create.run_id.as_str()), ("create", created.runid.as_str()));

    let mut changed = services.client.get_resource(TYPE, "app").await.unwrap();
    changed.spec = json!({"v": 2});
    let updated = services.client.update_resource(&changed).await.unwrap();
    let runid = updated.runid.clone().expect("the dev server names the update's run");
    assert_ne!(runid, created.runid, "an update starts a run of its own");
    assert!(uuid::Uuid::parse_str(&runid).is_ok(), "{runid}");
    assert_eq!(updated.message, "Resource updated successfully");
    assert_eq!((updated.resource.version(), &updated.resource.spec), (Some(2), &json!({"v": 2})));
    assert_eq!(updated.resource.id, create.payload.id, "a new version keeps the resource's id");

    let update = next_message(&mut standalone).await;
    assert_eq!((update.event.as_str(), update.run_id.as_str()), ("update", runid.as_str()));
    assert_eq!(update.payload, updated.resource, "the drivers get the version kept");
    assert_eq!(update.id.len(), 24);

    // The answer on the wire: the create's fields, and the resource beside the run id.
    let _ = rustls::crypto::ring::default_provider().install_default();
    changed.spec = json!({"v": 3});
    let raw: Value = reqwest::Client::new()
        .put(format!("{}/resources/job/app", services.server.url()))
        .json(&changed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&raw["name"], &raw["version"], &raw["resource"]["spec"]),
        (&json!("app"), &json!("3"), &json!({"v": 3}))
    );
    let third = next_message(&mut standalone).await;
    assert_eq!(raw["runid"], third.run_id.as_str());
}

#[tokio::test]
async fn a_delete_publishes_delete_with_the_resource_as_it_was_and_forgets_it() {
    let services = services().await;
    let client = &services.client;
    let created = client.create_resource(&Resource::new("app", TYPE, json!({"v": 1}))).await.unwrap();
    let mut changed = client.get_resource(TYPE, "app").await.unwrap();
    changed.spec = json!({"v": 2});
    changed.metadata.insert("owner".into(), json!({"team": "ci", "on_call": true}));
    let updated = client.update_resource(&changed).await.unwrap();
    let as_it_was = client.get_resource(TYPE, "app").await.unwrap();
    assert_eq!(meta(&as_it_was, "owner"), &json!({"team": "ci", "on_call": true}), "metadata of any JSON");

    let mut standalone = watch_subject(&services.server, "resources.job").await;
    client.delete_resource(TYPE, "app").await.unwrap();
    let delete = next_message(&mut standalone).await;
    assert_eq!(delete.event.as_str(), "delete");
    assert_eq!(delete.payload, as_it_was);
    assert!(
        ![created.runid.as_str(), updated.runid.as_deref().unwrap_or_default()]
            .contains(&delete.run_id.as_str()),
        "a deletion is a run of its own"
    );
    assert!(not_found(&client.get_resource(TYPE, "app").await), "gone at once, outside any pipeline");
    assert!(matches!(
        client.delete_resource(TYPE, "app").await,
        Err(ClientError::Server { status: 404, .. })
    ));
}

/// A pipeline step's driver: reconcile says which event and step it got; cleanup waits
/// while its gate is shut, then cleans up, or says in its data that it could not.
#[derive(Clone)]
struct Step {
    name: &'static str,
    gate: watch::Receiver<bool>,
    fail_cleanup: Arc<AtomicBool>,
}

/// What a test does with a [`Step`] while it serves.
struct Controls {
    gate: watch::Sender<bool>,
    fail_cleanup: Arc<AtomicBool>,
}

fn step(name: &'static str) -> (Step, Controls) {
    let (gate, opened) = watch::channel(true);
    let fail_cleanup = Arc::new(AtomicBool::new(false));
    (Step { name, gate: opened, fail_cleanup: fail_cleanup.clone() }, Controls { gate, fail_cleanup })
}

#[conveyor_sdk::async_trait]
impl Driver for Step {
    type Spec = Value;

    fn name(&self) -> &str {
        self.name
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::foreign(TYPE)]
    }

    async fn reconcile(&self, run: Run<Value>) -> Result<DriverResult, ReconcileError> {
        let step = run.resource().metadata_str("current_pipeline_step").unwrap_or_default().to_owned();
        Ok(DriverResult::success(format!("{} done", self.name))
            .with_data(json!({"event": run.event().as_str(), "step": step})))
    }

    async fn cleanup(&self, run: Run<Option<Value>>) -> Result<DriverResult, ReconcileError> {
        let _ = self.gate.clone().wait_for(|open| *open).await;
        if self.fail_cleanup.load(Ordering::SeqCst) {
            // As drivers that carry the operation's outcome in their data say it.
            return Ok(DriverResult::success("ran").with_data(json!({"success": false})));
        }
        Ok(DriverResult::success(format!("{} cleaned up", self.name))
            .with_data(json!({"event": run.event().as_str()})))
    }
}

/// Services with a pipeline `ci` of steps `build` (driver `first`) and `report`
/// (driver `second`), both serving.
struct PipelineServices {
    services: Services,
    first: Controls,
    second: Controls,
    serving: Vec<Serving>,
}

impl PipelineServices {
    async fn start() -> Self {
        let services = services().await;
        let (first, first_controls) = step("first");
        let (second, second_controls) = step("second");
        let config = Config::default().nats_url(services.nats.url());
        let harness = services.server.harness();
        let serving = vec![
            Serving::start(first, config.clone(), harness).await.unwrap(),
            Serving::start(second, config, harness).await.unwrap(),
        ];
        let pipeline = Pipeline::new("ci", TYPE)
            .step(PipelineStep::new("build", "first"))
            .step(PipelineStep::new("report", "second"));
        services.client.create_pipeline(&pipeline).await.unwrap();
        Self { services, first: first_controls, second: second_controls, serving }
    }

    /// Creates `name` in pipeline `ci` and waits until its run went through both steps.
    async fn created(&self, name: &str) -> (String, Resource) {
        let mut resource = Resource::new(name, TYPE, json!({"v": 1}));
        resource.pipeline = Some("ci".into());
        let created = self.services.client.create_resource(&resource).await.unwrap();
        let both = |r: &Result<Resource, ClientError>| {
            r.as_ref()
                .is_ok_and(|r| r.driver_result("first").is_some() && r.driver_result("second").is_some())
        };
        let kept = resource_when(&self.services.client, name, "both steps' results", both).await.unwrap();
        (created.runid, kept)
    }

    async fn finish(self) {
        for serving in self.serving {
            serving.shutdown().await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_pipeline_run_carries_create_through_both_steps_with_the_engine_s_metadata() {
    let piped = PipelineServices::start().await;
    let server = &piped.services.server;
    let (mut to_first, mut to_second) = (
        watch_subject(server, "drivers.first.resources.job").await,
        watch_subject(server, "drivers.second.resources.job").await,
    );
    let (run_id, kept) = piped.created("app").await;

    for (subscriber, step) in [(&mut to_first, "build"), (&mut to_second, "report")] {
        let message = next_message(subscriber).await;
        assert_eq!((message.event.as_str(), message.run_id.as_str()), ("create", run_id.as_str()), "{step}");
        let metadata = &message.payload;
        assert_eq!(meta(metadata, "current_pipeline_run"), run_id.as_str());
        assert_eq!(meta(metadata, "current_pipeline_event"), "create");
        assert_eq!(meta(metadata, "current_pipeline_step"), step);
        assert_eq!(meta(metadata, "deleting"), false);
    }
    let harness = server.harness();
    let second = harness.result_of_driver(&run_id, "second", Duration::from_secs(30)).await.unwrap();
    assert_eq!(second.driverresult.data, json!({"event": "create", "step": "report"}), "not process");
    let first_as_seen = second.resource.driver_result("first").expect("the first step's result").unwrap();
    assert_eq!(first_as_seen.data, json!({"event": "create", "step": "build"}));

    let results = meta(&kept, "driverresults");
    assert!(results.is_object(), "an object, not driverresults.<driver> strings: {results}");
    assert_eq!(
        results["second"],
        json!({"success": true, "message": "second done", "data": {"event": "create", "step": "report"}, "driver": "second"})
    );
    assert!(!kept.metadata.keys().any(|k| k.starts_with("driverresults.")), "{:?}", kept.metadata);

    // An update is a run of its own, carrying `update` through both steps.
    let mut changed = kept.clone();
    changed.spec = json!({"v": 2});
    let updated = piped.services.client.update_resource(&changed).await.unwrap();
    let update_run = updated.runid.expect("the update's run");
    assert_eq!(meta(&updated.resource, "current_pipeline_run"), update_run.as_str());
    let second = harness.result_of_driver(&update_run, "second", Duration::from_secs(30)).await.unwrap();
    assert_eq!(second.driverresult.data["event"], "update");
    assert_eq!(next_message(&mut to_second).await.event.as_str(), "update");
    piped.finish().await;
}

#[tokio::test]
async fn deleting_a_resource_in_a_pipeline_sends_delete_to_every_step_and_forgets_it_after_the_last() {
    let piped = PipelineServices::start().await;
    let (client, server) = (&piped.services.client, &piped.services.server);
    let (created_run, _) = piped.created("app").await;
    let (mut to_first, mut to_second) = (
        watch_subject(server, "drivers.first.resources.job").await,
        watch_subject(server, "drivers.second.resources.job").await,
    );
    piped.second.gate.send_replace(false);

    client.delete_resource(TYPE, "app").await.unwrap();
    let first = next_message(&mut to_first).await;
    let deletion_run = first.run_id.clone();
    assert_eq!(first.event.as_str(), "delete");
    assert_ne!(deletion_run, created_run);
    assert_eq!(meta(&first.payload, "deletion_runid"), deletion_run.as_str());
    assert_eq!(meta(&first.payload, "deleting"), true);
    assert_eq!(meta(&first.payload, "current_pipeline_step"), "build");
    let second = next_message(&mut to_second).await;
    assert_eq!((second.event.as_str(), second.run_id.as_str()), ("delete", deletion_run.as_str()));
    assert_eq!(meta(&second.payload, "current_pipeline_step"), "report");

    // The second step's cleanup is held: the resource is kept, marked, and takes no update.
    let kept = client.get_resource(TYPE, "app").await.unwrap();
    assert_eq!(
        (meta(&kept, "deleting"), meta(&kept, "deletion_runid")),
        (&json!(true), &json!(deletion_run))
    );
    assert_eq!(kept.driver_result("first").unwrap().unwrap().message, "first cleaned up");
    let refused = client.update_resource(&kept).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Server { status: 409, message } if message.contains("is being deleted")),
        "{refused:?}"
    );

    piped.second.gate.send_replace(true);
    let result =
        server.harness().result_of_driver(&deletion_run, "second", Duration::from_secs(30)).await.unwrap();
    assert_eq!(result.driverresult.message, "second cleaned up");
    resource_when(client, "app", "the deletion", not_found).await.unwrap_err();
    piped.finish().await;
}

#[tokio::test]
async fn a_step_that_could_not_clean_up_keeps_the_resource_with_deletion_failed_until_a_retry_succeeds() {
    let piped = PipelineServices::start().await;
    let (client, server) = (&piped.services.client, &piped.services.server);
    piped.created("app").await;
    let mut to_second = watch_subject(server, "drivers.second.resources.job").await;
    piped.first.fail_cleanup.store(true, Ordering::SeqCst);

    client.delete_resource(TYPE, "app").await.unwrap();
    let failed_flag =
        |r: &Result<Resource, ClientError>| r.as_ref().is_ok_and(|r| meta(r, "deletion_failed") == true);
    let kept = resource_when(client, "app", "deletion_failed", failed_flag).await.unwrap();
    let failed_run = meta(&kept, "deletion_runid").as_str().unwrap().to_owned();
    assert_eq!(meta(&kept, "deleting"), true);
    assert_eq!(kept.driver_result("first").unwrap().unwrap().data, json!({"success": false}));
    let later = tokio::time::timeout(Duration::from_millis(300), to_second.next()).await;
    assert!(later.is_err(), "the step after the failed one got nothing: {later:?}");
    let refused = client.update_resource(&kept).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Server { status: 409, message } if message.contains("delete it again")),
        "{refused:?}"
    );

    // Deleting it again retries, as a new run.
    piped.first.fail_cleanup.store(false, Ordering::SeqCst);
    client.delete_resource(TYPE, "app").await.unwrap();
    let retry = next_message(&mut to_second).await;
    assert_eq!(retry.event.as_str(), "delete");
    assert_ne!(retry.run_id, failed_run);
    assert_eq!(meta(&retry.payload, "deletion_failed"), &Value::Null, "the retry starts clean");
    resource_when(client, "app", "the retried deletion", not_found).await.unwrap_err();
    piped.finish().await;
}
