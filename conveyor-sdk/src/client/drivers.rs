//! Drivers (`/drivers/…`): messages the server hands to drivers over NATS.

use reqwest::Method;

use crate::client::error::ClientError;
use crate::client::Client;
use crate::protocol::DriverMessage;

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
}
