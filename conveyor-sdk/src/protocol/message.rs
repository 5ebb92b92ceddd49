//! The message a driver receives: [`DriverMessage`], its [`Event`], and its decoder.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::resource::Resource;

/// What happened to a resource: the `event` field of a [`DriverMessage`].
///
/// ```
/// use conveyor_sdk::Event;
/// let event: Event = serde_json::from_str(r#""process""#)?;
/// assert_eq!(event, Event::Process);
/// let deleted: Event = serde_json::from_str(r#""delete""#)?;
/// assert_eq!(deleted, Event::Delete);
/// let later: Event = serde_json::from_str(r#""archive""#)?;
/// assert_eq!(later, Event::Other("archive".into()), "unknown events keep their name");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A new resource (`POST /resources/`); in a pipeline, every step of its run.
    Create,
    /// A new version of a resource (`PUT /resources/{type}/{name}`), with a new run
    /// id; servers after 2026-05-31.
    Update,
    /// The resource was deleted (`DELETE /resources/{type}/{name}`); the payload is
    /// the resource as it was. Servers after 2026-05-31; the runtime hands it to
    /// [`Driver::cleanup`](crate::Driver::cleanup), not to `reconcile`.
    Delete,
    /// A later pipeline step, as 0.6.x engines send it.
    Process,
    /// An event this version of the SDK does not know.
    Other(String),
}

impl Event {
    /// The event's name on the wire.
    ///
    /// ```
    /// use conveyor_sdk::Event;
    /// assert_eq!(Event::Create.as_str(), "create");
    /// assert_eq!(Event::from("delete").as_str(), "delete");
    /// assert_eq!(Event::from("archive").as_str(), "archive");
    /// ```
    pub fn as_str(&self) -> &str {
        match self {
            Event::Create => "create",
            Event::Update => "update",
            Event::Delete => "delete",
            Event::Process => "process",
            Event::Other(name) => name,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Event {
    fn from(name: &str) -> Self {
        match name {
            "create" => Event::Create,
            "update" => Event::Update,
            "delete" => Event::Delete,
            "process" => Event::Process,
            other => Event::Other(other.to_owned()),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Event::from(name.as_str()))
    }
}

/// The message the server sends a driver over JetStream.
///
/// The server sends `payload` as the resource serialized into a JSON **string**; the
/// design document describes an object. Both decode; encoding writes a string, as the
/// server does.
///
/// ```
/// let text = r#"{"event":"create","payload":"{\"name\":\"a\",\"resource\":\"pipeline\",\"spec\":{}}","id":"1","run_id":"r"}"#;
/// let message: conveyor_sdk::DriverMessage = serde_json::from_str(text)?;
/// assert_eq!(message.payload.name, "a");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverMessage {
    /// The event.
    pub event: Event,
    /// The resource the event is about.
    #[serde(serialize_with = "payload_as_string", deserialize_with = "payload_from_either")]
    pub payload: Resource,
    /// The message id (24 hex characters on the real server).
    #[serde(default)]
    pub id: String,
    /// The run this message starts or continues.
    pub run_id: String,
}

impl DriverMessage {
    /// Decodes a message as the server sends it on a driver's subjects: the one
    /// decoder of the wire message, used by the runtime.
    ///
    /// When the bytes are not a valid message but name a run, the error keeps that
    /// run id, so that the run can be named in error reports.
    ///
    /// ```
    /// use conveyor_sdk::DriverMessage;
    /// let text = br#"{"event":"create","payload":"{\"name\":\"a\",\"resource\":\"pipeline\"}","id":"1","run_id":"r-1"}"#;
    /// let message = DriverMessage::decode(text)?;
    /// assert_eq!(message.run_id, "r-1");
    ///
    /// let error = DriverMessage::decode(br#"{"event":"create","payload":"[1]","run_id":"r-2"}"#).unwrap_err();
    /// assert_eq!(error.run_id(), Some("r-2"));
    /// # Ok::<(), conveyor_sdk::protocol::DecodeError>(())
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes).map_err(|source| {
            // Only on failure: read the run id alone, to name the run in the report.
            #[derive(Deserialize)]
            struct RunId {
                run_id: String,
            }
            let run_id = serde_json::from_slice::<RunId>(bytes).ok().map(|r| r.run_id);
            DecodeError { run_id, source }
        })
    }
}

/// Bytes that are not a [`DriverMessage`]; the cause is in [`source`](std::error::Error::source).
///
/// ```
/// let error = conveyor_sdk::DriverMessage::decode(b"not json").unwrap_err();
/// assert_eq!(error.run_id(), None);
/// assert_eq!(error.to_string(), "not a DriverMessage");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{}", match .run_id {
    Some(run_id) => format!("the message of run {run_id} is not a DriverMessage"),
    None => "not a DriverMessage".to_owned(),
})]
pub struct DecodeError {
    run_id: Option<String>,
    #[source]
    source: serde_json::Error,
}

impl DecodeError {
    /// The run the message names, when it names one.
    ///
    /// ```
    /// let error = conveyor_sdk::DriverMessage::decode(br#"{"run_id":"r-9"}"#).unwrap_err();
    /// assert_eq!(error.run_id(), Some("r-9"));
    /// ```
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }
}

fn payload_as_string<S: Serializer>(resource: &Resource, serializer: S) -> Result<S::Ok, S::Error> {
    let text = serde_json::to_string(resource).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

fn payload_from_either<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Resource, D::Error> {
    decode_payload(Value::deserialize(deserializer)?).map_err(D::Error::custom)
}

/// Decodes a `payload` value: a resource as a JSON string or as an object.
fn decode_payload(value: Value) -> Result<Resource, serde_json::Error> {
    match value {
        Value::String(text) => serde_json::from_str(&text),
        other => serde_json::from_value(other),
    }
}
