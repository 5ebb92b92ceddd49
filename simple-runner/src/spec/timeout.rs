//! Durations written as whole seconds or in words: a run's or a step's `timeout`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as whole seconds (`300`) or in words (`"5m"`, `"1h 30m"`, `"90s"`).
///
/// ```
/// use simple_runner::Timeout;
///
/// let written: Timeout = serde_json::from_str("\"1h 30m\"")?;
/// assert_eq!(written.to_string(), "1h 30m");
/// assert_eq!(serde_json::from_str::<Timeout>("5400")?, written);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// A timeout of `duration`.
    ///
    /// ```
    /// let timeout = simple_runner::Timeout::new(std::time::Duration::from_secs(90));
    /// assert_eq!(timeout.to_string(), "1m 30s");
    /// ```
    pub fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// The duration.
    ///
    /// ```
    /// let timeout: simple_runner::Timeout = serde_json::from_str("\"10m\"")?;
    /// assert_eq!(timeout.as_duration().as_secs(), 600);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Timeout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        let duration = match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Duration::from_secs(s),
            Raw::Text(text) => humantime::parse_duration(text.trim())
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))?,
        };
        if duration.is_zero() {
            return Err(serde::de::Error::custom("a timeout must be longer than zero"));
        }
        Ok(Self(duration))
    }
}

impl JsonSchema for Timeout {
    fn schema_name() -> Cow<'static, str> {
        "Timeout".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Whole seconds, or a duration like \"90s\", \"10m\" or \"1h 30m\".",
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "minLength": 2}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timeouts_read_seconds_and_words() {
        let t: Timeout = serde_json::from_value(json!(90)).unwrap();
        assert_eq!(t.as_duration(), Duration::from_secs(90));
        let t: Timeout = serde_json::from_value(json!("1h 30m")).unwrap();
        assert_eq!(t.as_duration(), Duration::from_secs(5400));
        assert!(serde_json::from_value::<Timeout>(json!("soon")).is_err());
        assert!(serde_json::from_value::<Timeout>(json!("0s")).is_err());
    }
}
