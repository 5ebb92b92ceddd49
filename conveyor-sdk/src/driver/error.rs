//! [`ReconcileError`]: what a reconcile returns when it has no result, and whether the
//! run should be tried again later.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Any error, boxed, as [`ReconcileError`] holds it.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The error a reconcile may return: a failure, or a request to try the run again later.
///
/// A plain error becomes a failed result whose message is the error's text (with its
/// sources). `?` converts any error into one, and a string works too:
///
/// ```
/// use conveyor_sdk::{DriverResult, ReconcileError};
///
/// fn checkout(path: &str) -> Result<DriverResult, ReconcileError> {
///     if path.is_empty() {
///         return Err("no path given".into());
///     }
///     let _meta = std::fs::metadata(path)?; // an io::Error becomes a ReconcileError
///     Ok(DriverResult::success("checked out"))
/// }
/// let error = checkout("").unwrap_err();
/// assert_eq!(error.to_string(), "no path given");
/// assert_eq!(error.retry_delay(), None);
/// ```
///
/// [`ReconcileError::retry_after`] asks for another attempt instead, as kube's
/// `Action::requeue` does: the runtime gives the event back to JetStream with that
/// delay, the next attempt says in the run's log which retry it is, and past
/// [`Config::max_retries`](crate::Config::max_retries) the run fails saying why.
#[must_use = "a ReconcileError does nothing unless it is returned"]
pub struct ReconcileError {
    retry: Option<Duration>,
    error: BoxError,
}

impl ReconcileError {
    /// A failure: the run ends with a failed result saying `error`.
    ///
    /// ```
    /// let error = conveyor_sdk::ReconcileError::new("the repository does not exist");
    /// assert_eq!(error.to_string(), "the repository does not exist");
    /// ```
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self { retry: None, error: error.into() }
    }

    /// Try the run again in `delay`, because of `reason` (a registry that answers 429, a
    /// lock held elsewhere, …). No result is published for this attempt.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conveyor_sdk::{DriverResult, ReconcileError};
    ///
    /// fn deploy(cluster_busy: bool) -> Result<DriverResult, ReconcileError> {
    ///     if cluster_busy {
    ///         return Err(ReconcileError::retry_after(Duration::from_secs(30), "the cluster is busy"));
    ///     }
    ///     Ok(DriverResult::success("deployed"))
    /// }
    /// let error = deploy(true).unwrap_err();
    /// assert_eq!(error.retry_delay(), Some(Duration::from_secs(30)));
    /// assert_eq!(error.to_string(), "the cluster is busy");
    /// ```
    pub fn retry_after(delay: Duration, reason: impl Into<BoxError>) -> Self {
        Self { retry: Some(delay), error: reason.into() }
    }

    /// The delay before the next attempt, when this asks for one.
    ///
    /// ```
    /// let error = conveyor_sdk::ReconcileError::retry_after(std::time::Duration::from_secs(5), "busy");
    /// assert_eq!(error.retry_delay(), Some(std::time::Duration::from_secs(5)));
    /// ```
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry
    }

    /// The error itself, e.g. for [`error_text`](crate::error_text) or to downcast it.
    ///
    /// ```
    /// let error: conveyor_sdk::ReconcileError = std::io::Error::other("disk full").into();
    /// assert!(error.error().downcast_ref::<std::io::Error>().is_some());
    /// assert_eq!(conveyor_sdk::error_text(error.error()), "disk full");
    /// ```
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.error.as_ref()
    }

    /// The error itself, boxed.
    ///
    /// ```
    /// let error = conveyor_sdk::ReconcileError::new("no");
    /// let boxed: Box<dyn std::error::Error + Send + Sync> = error.into_error();
    /// assert_eq!(boxed.to_string(), "no");
    /// ```
    pub fn into_error(self) -> BoxError {
        self.error
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry {
            Some(delay) => f
                .debug_struct("ReconcileError")
                .field("retry_after", &delay)
                .field("error", &self.error)
                .finish(),
            None => fmt::Debug::fmt(&self.error, f),
        }
    }
}

/// Any error, and any string, converts into a failure (`?`, `.into()`).
impl<E: Into<BoxError>> From<E> for ReconcileError {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}
