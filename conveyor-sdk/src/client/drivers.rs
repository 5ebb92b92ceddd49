//! Drivers (`/drivers/…`): messages the server hands to drivers over NATS, and
//! cancelling a run.

use reqwest::Method;

use crate::client::error::ClientError;
use crate::client::seg;
use crate::client::Client;
use crate::protocol::{CancelReply, DriverMessage};

impl Client {
    /// `POST /drivers/broadcast-message`: the server publishes `message` to the
    /// drivers over NATS and answers `200`.
    ///
    /// The REST contract says only "broadcast it to drivers via NATS". The subject
    /// every driver of a resource type consumes is `resources.<type>` (stream
    /// `messages`), so the dev server publishes there, the type being the payload's
    /// `resource`: every driver of that type receives the message as it receives a
    /// resource created outside any pipeline.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), conveyor_sdk::client::ClientError> {
    /// use conveyor_sdk::{DriverMessage, Event, Resource};
    /// let message = DriverMessage {
    ///     event: Event::Create,
    ///     payload: Resource::new("hello", "pipeline", serde_json::json!({"steps": []})),
    ///     id: String::new(), // the server picks one
    ///     run_id: "fbdf5edf-66d4-46ce-859a-8ee44d6c9463".into(),
    /// };
    /// client.broadcast_message(&message).await?;
    /// # Ok(()) }
    /// ```
    pub async fn broadcast_message(&self, message: &DriverMessage) -> Result<(), ClientError> {
        self.send(Method::POST, "/drivers/broadcast-message", Some(message), &[]).await?;
        Ok(())
    }

    /// `POST /drivers/{driver}/runs/{runid}/cancel`: cancels run `run_id` of `driver`
    /// wherever it is in flight. The replica that holds it stops its work, the run's log
    /// ends saying it was cancelled, and one failure result `cancelled` is published;
    /// the answer's [`state`](CancelReply::state) is then
    /// [`Cancelling`](crate::protocol::CancelState::Cancelling). A run that finished
    /// already, or that no replica holds, is answered with `Finished` or `NotRunning`
    /// and nothing happens.
    ///
    /// The dev server serves this route
    /// (`conveyor_sdk::testing::DevServer`); the Conveyor server has no such route yet
    /// (it answers 404). Without an API server, [`crate::runtime::cancel_run`] sends the
    /// same request on NATS.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), conveyor_sdk::client::ClientError> {
    /// use conveyor_sdk::protocol::CancelState;
    /// let reply = client.cancel_run("command-runner", "fbdf5edf-66d4-46ce-859a-8ee44d6c9463").await?;
    /// match reply.state {
    ///     CancelState::Cancelling => println!("cancelling"),
    ///     other => println!("nothing to cancel: {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel_run(&self, driver: &str, run_id: &str) -> Result<CancelReply, ClientError> {
        let path = format!("/drivers/{}/runs/{}/cancel", seg(driver), seg(run_id));
        self.json(Method::POST, &path, None, &[]).await
    }
}
