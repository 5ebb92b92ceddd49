//! The NATS subjects and stream names of the protocol.

/// The stream of resource events, created by the server (Interest retention).
pub const MESSAGES_STREAM: &str = "messages";
/// The stream of pipeline results, read by the server (WorkQueue retention).
pub const PIPELINE_STREAM: &str = "pipeline-engine";
/// The stream of stored log lines, read by the server (WorkQueue retention).
pub const LOGS_STREAM: &str = "logs-engine";
/// The subject a driver publishes its results to.
pub const DRIVER_RESULT: &str = "pipelines.driver.result";

/// The longest subject token the SDK accepts, in bytes: a run id, a driver name or a
/// resource type. A subject of a few such tokens stays far below the 4 KiB control
/// line nats-server allows (`max_control_line`), beyond which it closes the connection.
///
/// ```
/// use conveyor_sdk::protocol::subjects::{is_token, MAX_TOKEN_LEN};
/// assert!(is_token(&"a".repeat(MAX_TOKEN_LEN)));
/// assert!(!is_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
/// ```
pub const MAX_TOKEN_LEN: usize = 256;

/// Whether `text` is one NATS subject token, as a driver name, a resource type or a run
/// id must be to stand in a subject: not empty, at most [`MAX_TOKEN_LEN`] bytes, no
/// `.`, `*`, `>`, white space or control character.
///
/// ```
/// use conveyor_sdk::protocol::subjects::is_token;
/// assert!(is_token("command-runner"));
/// assert!(!is_token("a.b") && !is_token("") && !is_token("two words") && !is_token(">"));
/// assert!(!is_token("a\u{0}b") && !is_token("line\r\n"));
/// ```
pub fn is_token(text: &str) -> bool {
    token_fault(text).is_none()
}

/// Why a text cannot be one subject token: [`token_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenFault {
    /// It is empty.
    Empty,
    /// It is longer than [`MAX_TOKEN_LEN`] bytes; how long it is.
    TooLong(usize),
    /// It holds a `.`, which separates tokens.
    Dot,
    /// It holds a wildcard, `*` or `>`.
    Wildcard,
    /// It holds a control character (NUL, CR, LF, …).
    Control,
    /// It holds white space.
    WhiteSpace,
}

impl std::fmt::Display for TokenFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenFault::Empty => f.write_str("it is empty"),
            TokenFault::TooLong(len) => write!(f, "it is {len} bytes long, more than {MAX_TOKEN_LEN}"),
            TokenFault::Dot => f.write_str("it holds a `.`"),
            TokenFault::Wildcard => f.write_str("it holds a wildcard (`*` or `>`)"),
            TokenFault::Control => f.write_str("it holds a control character"),
            TokenFault::WhiteSpace => f.write_str("it holds white space"),
        }
    }
}

/// Why `text` cannot be one subject token; `None` when it can.
pub(crate) fn token_fault(text: &str) -> Option<TokenFault> {
    if text.is_empty() {
        Some(TokenFault::Empty)
    } else if text.len() > MAX_TOKEN_LEN {
        Some(TokenFault::TooLong(text.len()))
    } else if text.contains('.') {
        Some(TokenFault::Dot)
    } else if text.contains(['*', '>']) {
        Some(TokenFault::Wildcard)
    } else if text.contains(char::is_control) {
        Some(TokenFault::Control)
    } else if text.contains(char::is_whitespace) {
        Some(TokenFault::WhiteSpace)
    } else {
        None
    }
}

/// `resources.<type>`: a resource created outside any pipeline.
///
/// ```
/// assert_eq!(conveyor_sdk::protocol::subjects::resource("pipeline"), "resources.pipeline");
/// ```
pub fn resource(resource_type: &str) -> String {
    format!("resources.{resource_type}")
}

/// `drivers.<driver>.resources.<type>`: a pipeline step addressed to a driver.
///
/// ```
/// use conveyor_sdk::protocol::subjects;
/// assert_eq!(subjects::driver_resource("command-runner", "pipeline"), "drivers.command-runner.resources.pipeline");
/// ```
pub fn driver_resource(driver: &str, resource_type: &str) -> String {
    format!("drivers.{driver}.resources.{resource_type}")
}

/// `logs.<run_id>`: where log lines are stored (JetStream).
///
/// ```
/// assert_eq!(conveyor_sdk::protocol::subjects::logs("fbdf5edf"), "logs.fbdf5edf");
/// ```
pub fn logs(run_id: &str) -> String {
    format!("logs.{run_id}")
}

/// `live.logs.<run_id>.<driver>`: where log lines are relayed live (core NATS).
///
/// ```
/// use conveyor_sdk::protocol::subjects;
/// assert_eq!(subjects::live_logs("fbdf5edf", "command-runner"), "live.logs.fbdf5edf.command-runner");
/// ```
pub fn live_logs(run_id: &str, driver: &str) -> String {
    format!("live.logs.{run_id}.{driver}")
}

/// `driver:<driver>:logs:<run_id>`: the live subject of servers before 2026-01-21.
///
/// ```
/// use conveyor_sdk::protocol::subjects;
/// assert_eq!(subjects::legacy_live_logs("fbdf5edf", "command-runner"), "driver:command-runner:logs:fbdf5edf");
/// ```
pub fn legacy_live_logs(run_id: &str, driver: &str) -> String {
    format!("driver:{driver}:logs:{run_id}")
}

/// `conveyor.cancel.<driver>.<run_id>`: a request to cancel a run in flight (core NATS,
/// request and reply; no stream stores it, and no other driver's consumer sees it).
/// The replica of `driver` that holds the run answers with a
/// [`CancelReply`](crate::protocol::CancelReply); nobody answers for a run that is not
/// in flight. See `docs/run-lifecycle.md`.
///
/// ```
/// use conveyor_sdk::protocol::subjects;
/// assert_eq!(subjects::cancel("command-runner", "fbdf5edf"), "conveyor.cancel.command-runner.fbdf5edf");
/// ```
pub fn cancel(driver: &str, run_id: &str) -> String {
    format!("conveyor.cancel.{driver}.{run_id}")
}

/// The key-value bucket of run records: each finished run, and the retries of a run
/// that asked to be tried again, under [`run_record_key`].
pub const RUNS_BUCKET: &str = "conveyor_runs";

/// The key of a run's record in [`RUNS_BUCKET`]: `<run_id>.<driver>`, each part with the
/// characters a key may not hold written as `=XX` (hexadecimal bytes).
///
/// ```
/// use conveyor_sdk::protocol::subjects::run_record_key;
/// assert_eq!(run_record_key("fbdf5edf-66d4", "command-runner"), "fbdf5edf-66d4.command-runner");
/// assert_eq!(run_record_key("a:b", "x y"), "a=3Ab.x=20y");
/// ```
pub fn run_record_key(run_id: &str, driver: &str) -> String {
    format!("{}.{}", key_token(run_id), key_token(driver))
}

/// `conveyor.supersede.<driver>.<instance>`: where one replica of a driver asks another,
/// by its instance ([`Config::instance`](crate::Config::instance)), whether it still
/// holds a run of an older event of a resource, and has it cancelled
/// ([`Config::supersede`](crate::Config::supersede)). Each part is written as in
/// [`run_record_key`]. Core NATS, request and reply; every replica answers for itself.
///
/// ```
/// use conveyor_sdk::protocol::subjects;
/// assert_eq!(subjects::supersede("command-runner", "host-1.a"), "conveyor.supersede.command-runner.host-1=2Ea");
/// ```
pub fn supersede(driver: &str, instance: &str) -> String {
    format!("conveyor.supersede.{}.{}", key_token(driver), key_token(instance))
}

/// The key-value bucket of the newest event handled of each resource, by driver: what
/// lets the newest version of a resource win ([`Config::supersede`](crate::Config::supersede)).
pub const RESOURCES_BUCKET: &str = "conveyor_resources";

/// The key of a resource's newest event in [`RESOURCES_BUCKET`]:
/// `<driver>.<type>.<name>`, each part written as in [`run_record_key`].
///
/// ```
/// use conveyor_sdk::protocol::subjects::resource_key;
/// assert_eq!(resource_key("command-runner", "pipeline", "build-1"), "command-runner.pipeline.build-1");
/// assert_eq!(resource_key("command-runner", "pipeline", "a.b c"), "command-runner.pipeline.a=2Eb=20c");
/// ```
pub fn resource_key(driver: &str, resource_type: &str, name: &str) -> String {
    format!("{}.{}.{}", key_token(driver), key_token(resource_type), key_token(name))
}

fn key_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("={byte:02X}"));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}
