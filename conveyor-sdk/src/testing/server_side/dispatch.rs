//! Dispatching resources as the server does, and waiting until a driver is there to
//! receive them.

use std::time::Duration;

use bytes::Bytes;

use crate::protocol::{subjects, DriverMessage, Event, Resource};
use crate::testing::server_side::Harness;
use crate::testing::TestingError;

/// A run the harness dispatched.
///
/// ```no_run
/// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
/// let run: conveyor_sdk::testing::Dispatched =
///     harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({}))).await?;
/// assert!(!run.resource.id.is_empty(), "the harness sets an id, as the server does");
/// let result = harness.result(&run.run_id).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// The run id the driver will report.
    pub run_id: String,
    /// The message id.
    pub message_id: String,
    /// The resource as sent (with its id set).
    pub resource: Resource,
}

impl Harness {
    /// Sends `resource` as the server does for a resource created outside any
    /// pipeline: event `create` on `resources.<type>`.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let result = harness.result(&run.run_id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, resource: Resource) -> Result<Dispatched, TestingError> {
        let subject = subjects::resource(&resource.resource);
        self.dispatch(subject, Event::Create, resource, None).await
    }

    /// [`create`](Self::create), with a run id of the caller's.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let resource = conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({}));
    /// let run = harness.create_with_run_id(resource, "fbdf5edf-66d4-46ce-859a-8ee44d6c9463").await?;
    /// assert_eq!(run.run_id, "fbdf5edf-66d4-46ce-859a-8ee44d6c9463");
    /// # Ok(()) }
    /// ```
    pub async fn create_with_run_id(
        &self,
        resource: Resource,
        run_id: &str,
    ) -> Result<Dispatched, TestingError> {
        let subject = subjects::resource(&resource.resource);
        self.dispatch(subject, Event::Create, resource, Some(run_id)).await
    }

    /// Sends `resource` as a server after 2026-05-31 does after `PUT
    /// /resources/{type}/{name}`: event `update`, with a new run id, on
    /// `resources.<type>`. Give the resource the id of the version it replaces and its
    /// next `metadata.version`.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let first = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let mut next = first.resource.clone();
    /// next.spec = serde_json::json!({"who": "everyone"});
    /// next.metadata.insert("version".into(), "2".into());
    /// let update = harness.update(next).await?;
    /// assert_ne!(update.run_id, first.run_id);
    /// # Ok(()) }
    /// ```
    pub async fn update(&self, resource: Resource) -> Result<Dispatched, TestingError> {
        self.send(Event::Update, resource, None).await
    }

    /// Sends `resource` as a server after 2026-05-31 does after `DELETE
    /// /resources/{type}/{name}`: event `delete`, with a new run id, on
    /// `resources.<type>`, the resource as it was.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let created = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let deleted = harness.delete(created.resource).await?;
    /// let result = harness.result(&deleted.run_id).await?;
    /// assert!(result.driverresult.success);
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, resource: Resource) -> Result<Dispatched, TestingError> {
        self.send(Event::Delete, resource, None).await
    }

    /// Sends `event` about `resource` as the server does for a resource outside any
    /// pipeline, on `resources.<type>`: `update` after `PUT` (the new version),
    /// `delete` after `DELETE` (the resource as it was). `run_id` names the run; `None`
    /// starts one with a new id, as the server does for each event.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::Event;
    /// let resource = conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}));
    /// let created = harness.create(resource).await?;
    /// let deleted = harness.send(Event::Delete, created.resource, None).await?;
    /// assert!(harness.result(&deleted.run_id).await?.driverresult.success);
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        event: Event,
        resource: Resource,
        run_id: Option<&str>,
    ) -> Result<Dispatched, TestingError> {
        let subject = subjects::resource(&resource.resource);
        self.dispatch(subject, event, resource, run_id).await
    }

    /// Sends `resource` as the server does for a pipeline step addressed to `driver`:
    /// on `drivers.<driver>.resources.<type>`, with `event`: today's engines send the
    /// operation itself (`create`, `update` or `delete`) to every step, 0.6.x engines
    /// sent `process` to the steps after the first. `run_id` continues a run; `None`
    /// starts one.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::Event;
    /// let resource = conveyor_sdk::Resource::new("app", "pipeline", serde_json::json!({"steps": []}));
    /// let first = harness.step("git-cloner", Event::Create, resource.clone(), None).await?;
    /// harness.result_of_driver(&first.run_id, "git-cloner", std::time::Duration::from_secs(30)).await?;
    /// let second = harness.step("command-runner", Event::Create, resource, Some(&first.run_id)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn step(
        &self,
        driver: &str,
        event: Event,
        resource: Resource,
        run_id: Option<&str>,
    ) -> Result<Dispatched, TestingError> {
        let subject = subjects::driver_resource(driver, &resource.resource);
        self.dispatch(subject, event, resource, run_id).await
    }

    async fn dispatch(
        &self,
        subject: String,
        event: Event,
        mut resource: Resource,
        run_id: Option<&str>,
    ) -> Result<Dispatched, TestingError> {
        if resource.id.is_empty() {
            resource.id = uuid::Uuid::new_v4().to_string();
        }
        let run_id = run_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let message_id = uuid::Uuid::new_v4().simple().to_string()[..24].to_owned();
        let message = DriverMessage {
            event,
            payload: resource.clone(),
            id: message_id.clone(),
            run_id: run_id.clone(),
        };
        let payload = serde_json::to_vec(&message).map_err(TestingError::Encode)?;
        self.publish_raw(&subject, payload.into()).await?;
        Ok(Dispatched { run_id, message_id, resource })
    }

    /// Publishes raw bytes to JetStream on `subject` and waits until they are stored.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// // A message the driver cannot decode: it must not stop serving.
    /// harness.publish_raw("resources.greeting", bytes::Bytes::from_static(b"not json")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_raw(&self, subject: &str, payload: Bytes) -> Result<(), TestingError> {
        let ack = self
            .js
            .publish(subject.to_owned(), payload)
            .await
            .map_err(|e| TestingError::nats(format!("publishing on {subject}"), e))?;
        ack.await.map_err(|e| TestingError::nats(format!("publishing on {subject}"), e))?;
        Ok(())
    }

    /// Waits up to `timeout` until driver `driver` has a consumer with at least `n`
    /// pull requests waiting: it is serving, and events dispatched from now on reach
    /// it (stream `messages` keeps events only for consumers that exist). Each process
    /// of a driver keeps at least one pull request waiting while it has free slots.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), conveyor_sdk::testing::TestingError> {
    /// harness.wait_for_pull_requests("command-runner", 1, std::time::Duration::from_secs(30)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_pull_requests(
        &self,
        driver: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), TestingError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream =
            self.js.get_stream(subjects::MESSAGES_STREAM).await.map_err(|e| {
                TestingError::nats(format!("reading stream {}", subjects::MESSAGES_STREAM), e)
            })?;
        // JetStream announces no event for this: ask until it is so.
        loop {
            if stream.consumer_info(driver).await.map(|i| i.num_waiting >= n).unwrap_or(false) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TestingError::Timeout {
                    what: format!("{n} pull request(s) of driver {driver} (is the driver running?)"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
