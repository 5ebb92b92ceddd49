//! The message a driver receives: [`DriverMessage`], its [`Event`], and its decoder.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::resource::Resource;
use super::subjects;
use crate::report::quoted;

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
    /// A message is returned only when its run id can stand in a NATS subject
    /// ([`subjects::is_token`]): the runtime builds the subjects of the run's log from
    /// it. When the bytes are not such a message, the error says which part is wrong
    /// ([`DecodeError::kind`]), keeps the run id when it is a usable one, and as much of
    /// the resource as could be read, so that the run can be answered.
    ///
    /// ```
    /// use conveyor_sdk::protocol::DecodeErrorKind;
    /// use conveyor_sdk::DriverMessage;
    /// let text = br#"{"event":"create","payload":"{\"name\":\"a\",\"resource\":\"pipeline\"}","id":"1","run_id":"r-1"}"#;
    /// let message = DriverMessage::decode(text)?;
    /// assert_eq!(message.run_id, "r-1");
    ///
    /// let error = DriverMessage::decode(br#"{"event":"create","payload":"[1]","run_id":"r-2"}"#).unwrap_err();
    /// assert_eq!(error.kind(), DecodeErrorKind::InvalidResource);
    /// assert_eq!(error.run_id(), Some("r-2"));
    ///
    /// let error = DriverMessage::decode(br#"{"event":"create","payload":"{}","run_id":"a.b"}"#).unwrap_err();
    /// assert_eq!(error.kind(), DecodeErrorKind::InvalidRunId);
    /// assert_eq!((error.run_id(), error.invalid_run_id()), (None, Some("a.b")));
    /// # Ok::<(), conveyor_sdk::protocol::DecodeError>(())
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match serde_json::from_slice::<DriverMessage>(bytes) {
            Ok(message) => match subjects::token_fault(&message.run_id) {
                None => Ok(message),
                Some(fault) => Err(DecodeError {
                    kind: DecodeErrorKind::InvalidRunId,
                    run_id: Some(message.run_id),
                    fault: Some(fault),
                    resource: Some(Box::new(message.payload)),
                    source: None,
                }),
            },
            // Only on failure: read what can be read, to answer the run.
            Err(source) => Err(DecodeError::read(bytes, source)),
        }
    }
}

/// Which part of a message is wrong: [`DecodeError::kind`].
///
/// ```
/// use conveyor_sdk::protocol::DecodeErrorKind;
/// let error = conveyor_sdk::DriverMessage::decode(b"[]").unwrap_err();
/// assert_eq!(error.kind(), DecodeErrorKind::NotAMessage);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Not a JSON object with a `run_id` string: it names no run that could be answered.
    NotAMessage,
    /// The run id cannot stand in a NATS subject ([`subjects::is_token`]): empty,
    /// longer than [`subjects::MAX_TOKEN_LEN`], or holding `.`, `*`, `>`, white space
    /// or a control character.
    InvalidRunId,
    /// The run id is usable; the `event` or `id` is missing or of the wrong type.
    InvalidEnvelope,
    /// The envelope is usable; the `payload` is not a [`Resource`].
    InvalidResource,
}

/// Bytes that are not a [`DriverMessage`] the runtime can run: which part is wrong
/// ([`kind`](Self::kind)), the run they name ([`run_id`](Self::run_id), or
/// [`invalid_run_id`](Self::invalid_run_id)) and as much of the resource as could be
/// read ([`resource`](Self::resource)). The cause, when there is one, is in
/// [`source`](std::error::Error::source). A run id that is not a token is written
/// quoted, escaped and cut short.
///
/// ```
/// let error = conveyor_sdk::DriverMessage::decode(b"not json").unwrap_err();
/// assert_eq!(error.run_id(), None);
/// assert_eq!(error.to_string(), "not a DriverMessage");
///
/// let error = conveyor_sdk::DriverMessage::decode(br#"{"event":"create","payload":"{}","run_id":"a\r\nb"}"#)
///     .unwrap_err();
/// assert_eq!(error.to_string(), r#"the run id "a\r\nb" cannot stand in a NATS subject: it holds a control character"#);
/// ```
#[derive(Debug)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    /// The run id as read: a token unless the kind is `InvalidRunId`.
    run_id: Option<String>,
    /// Why the run id is not a token.
    fault: Option<subjects::TokenFault>,
    resource: Option<Box<Resource>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl DecodeError {
    /// Reads what it can of bytes that did not decode as a message.
    fn read(bytes: &[u8], source: serde_json::Error) -> Self {
        let fields = match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(fields)) => fields,
            _ => return Self::not_a_message(source),
        };
        let Some(Value::String(run_id)) = fields.get("run_id") else {
            return Self::not_a_message(source);
        };
        let payload = fields.get("payload");
        let resource = payload.and_then(partial_resource).map(Box::new);
        let fault = subjects::token_fault(run_id);
        let (kind, source): (_, Option<Box<dyn std::error::Error + Send + Sync>>) = match (fault, payload) {
            (Some(_), _) => (DecodeErrorKind::InvalidRunId, None),
            (None, None) => (DecodeErrorKind::InvalidResource, Some(Box::new(source))),
            (None, Some(payload)) => match payload_error(payload) {
                Some(cause) => (DecodeErrorKind::InvalidResource, Some(cause)),
                None => (DecodeErrorKind::InvalidEnvelope, Some(Box::new(source))),
            },
        };
        Self { kind, run_id: Some(run_id.clone()), fault, resource, source }
    }

    fn not_a_message(source: serde_json::Error) -> Self {
        Self {
            kind: DecodeErrorKind::NotAMessage,
            run_id: None,
            fault: None,
            resource: None,
            source: Some(Box::new(source)),
        }
    }

    /// Which part of the message is wrong.
    ///
    /// ```
    /// use conveyor_sdk::protocol::DecodeErrorKind;
    /// let text = br#"{"event":5,"payload":"{\"name\":\"a\",\"resource\":\"job\"}","run_id":"r"}"#;
    /// let error = conveyor_sdk::DriverMessage::decode(text).unwrap_err();
    /// assert_eq!(error.kind(), DecodeErrorKind::InvalidEnvelope);
    /// assert_eq!(error.run_id(), Some("r"));
    /// ```
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The run the message names, when it names one that can stand in a NATS subject
    /// ([`subjects::is_token`]); `None` for a run id that cannot (see
    /// [`invalid_run_id`](Self::invalid_run_id)).
    ///
    /// ```
    /// let error = conveyor_sdk::DriverMessage::decode(br#"{"run_id":"r-9"}"#).unwrap_err();
    /// assert_eq!(error.run_id(), Some("r-9"));
    /// let error = conveyor_sdk::DriverMessage::decode(br#"{"run_id":"r.9"}"#).unwrap_err();
    /// assert_eq!(error.run_id(), None);
    /// ```
    pub fn run_id(&self) -> Option<&str> {
        match self.kind {
            DecodeErrorKind::InvalidRunId => None,
            _ => self.run_id.as_deref(),
        }
    }

    /// The run id the message names, as it is, when it cannot stand in a NATS subject
    /// ([`DecodeErrorKind::InvalidRunId`]). Never build a subject, a key or a header
    /// of it.
    ///
    /// ```
    /// let error = conveyor_sdk::DriverMessage::decode(br#"{"run_id":"*"}"#).unwrap_err();
    /// assert_eq!(error.invalid_run_id(), Some("*"));
    /// ```
    pub fn invalid_run_id(&self) -> Option<&str> {
        match self.kind {
            DecodeErrorKind::InvalidRunId => self.run_id.as_deref(),
            _ => None,
        }
    }

    /// As much of the resource as could be read: the fields of the payload (a JSON
    /// object, or a string holding one) that have the right type, the others left
    /// empty; `None` when the payload is missing or not an object.
    ///
    /// ```
    /// let text = br#"{"event":"create","payload":"{\"id\":\"9\",\"name\":7,\"resource\":\"job\"}","run_id":"r"}"#;
    /// let error = conveyor_sdk::DriverMessage::decode(text).unwrap_err();
    /// let resource = error.resource().ok_or("nothing was read")?;
    /// assert_eq!((resource.id.as_str(), resource.name.as_str(), resource.resource.as_str()), ("9", "", "job"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resource(&self) -> Option<&Resource> {
        self.resource.as_deref()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run_id = self.run_id.as_deref().unwrap_or_default();
        match (self.kind, self.fault) {
            (DecodeErrorKind::InvalidRunId, fault) => {
                write!(f, "the run id {} cannot stand in a NATS subject", quoted(run_id))?;
                match fault {
                    Some(fault) => write!(f, ": {fault}"),
                    None => Ok(()),
                }
            }
            (DecodeErrorKind::InvalidEnvelope, _) => {
                write!(f, "the message of run {run_id} is not a DriverMessage")
            }
            (DecodeErrorKind::InvalidResource, _) => {
                write!(f, "the payload of run {run_id} is not a resource")
            }
            (DecodeErrorKind::NotAMessage, _) => f.write_str("not a DriverMessage"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// Why a `payload` value is not a resource, with the path of the field at fault;
/// `None` when it is one.
fn payload_error(payload: &Value) -> Option<Box<dyn std::error::Error + Send + Sync>> {
    type Boxed = Box<dyn std::error::Error + Send + Sync>;
    match payload {
        Value::String(text) => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize::<_, Resource>(&mut deserializer) {
                // As the decoder does: nothing may follow the resource.
                Ok(_) => deserializer.end().err().map(|error| Box::new(error) as Boxed),
                Err(error) => Some(Box::new(error)),
            }
        }
        other => serde_path_to_error::deserialize::<_, Resource>(other).err().map(|e| Box::new(e) as Boxed),
    }
}

/// The fields of a `payload` value (an object, or a string holding one) that have the
/// type of a [`Resource`]'s; `None` when it is no object.
fn partial_resource(payload: &Value) -> Option<Resource> {
    let parsed;
    let object = match payload {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            parsed.as_object()?
        }
        Value::Object(object) => object,
        _ => return None,
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    let metadata = object
        .get("metadata")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(key, value)| (key.clone(), value.clone())).collect())
        .unwrap_or_default();
    Some(Resource {
        id: text("id").unwrap_or_default(),
        name: text("name").unwrap_or_default(),
        resource: text("resource").unwrap_or_default(),
        pipeline: text("pipeline"),
        metadata,
        spec: object.get("spec").cloned().unwrap_or_default(),
    })
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
