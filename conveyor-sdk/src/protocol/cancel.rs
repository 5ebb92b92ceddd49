//! Cancelling a run in flight: the answer to a request on
//! [`subjects::cancel`](super::subjects::cancel).

use serde::{Deserialize, Serialize};

/// What a cancel request came to.
///
/// ```
/// use conveyor_sdk::protocol::{CancelReply, CancelState};
/// let reply: CancelReply = serde_json::from_str(
///     r#"{"run_id": "fbdf5edf", "driver": "command-runner", "state": "cancelling"}"#,
/// )?;
/// assert_eq!(reply.state, CancelState::Cancelling);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// The run.
    pub run_id: String,
    /// The driver that was asked.
    pub driver: String,
    /// What happens to the run.
    pub state: CancelState,
}

impl CancelReply {
    /// The answer `state` about `run_id` of `driver`.
    ///
    /// ```
    /// use conveyor_sdk::protocol::{CancelReply, CancelState};
    /// let reply = CancelReply::new("r-1", "command-runner", CancelState::NotRunning);
    /// assert_eq!(serde_json::to_value(&reply)?["state"], "not_running");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn new(run_id: impl Into<String>, driver: impl Into<String>, state: CancelState) -> Self {
        Self { run_id: run_id.into(), driver: driver.into(), state }
    }
}

/// The state of a run a cancel request named.
///
/// ```
/// use conveyor_sdk::protocol::CancelState;
/// assert_eq!(serde_json::to_string(&CancelState::Finished)?, r#""finished""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelState {
    /// The run was in flight and is being cancelled: its step is stopped, its log ends
    /// saying it was cancelled, and a failure result `cancelled` is published.
    Cancelling,
    /// The run had finished already: nothing was done.
    Finished,
    /// No replica of the driver holds the run (unknown, not started yet, or already
    /// given back): nothing was done.
    NotRunning,
}
