//! The messages of the Conveyor CI wire protocol, exactly as the server sends and reads them.
//!
//! Every type here round-trips with the real server's JSON: see the fixtures in the
//! repository's `conveyor-sdk/tests/fixtures/` and `conveyor-sdk/tests/protocol.rs`.

mod cancel;
mod log;
mod message;
mod resource;
mod result;
pub mod subjects;

pub use cancel::{CancelReply, CancelState};
pub use log::Log;
pub use message::{DecodeError, DecodeErrorKind, DriverMessage, Event};
pub use resource::{Resource, ResourceDefinition};
pub use result::{DriverResult, DriverResultEvent, PipelineEvent};

/// The event value of the result a driver publishes, [`PipelineEvent::event`].
pub const DRIVER_RESULT_EVENT: &str = "driver.result";

/// The prefix of the metadata key under which the server stores a driver's result.
pub const DRIVER_RESULTS_PREFIX: &str = "driverresults.";
