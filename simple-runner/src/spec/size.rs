//! Sizes in bytes, written as a number or with a unit: `512m`, `2g`, `64k`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes: whole bytes (`1048576`), or a number with a unit, `k`, `m` or
/// `g` (powers of 1024; `kb`, `mib`, … and capitals are read the same).
///
/// ```
/// use simple_runner::spec::ByteSize;
///
/// let size: ByteSize = "512m".parse()?;
/// assert_eq!(size.bytes(), 512 << 20);
/// assert_eq!(serde_json::from_str::<ByteSize>("\"2G\"")?.bytes(), 2 << 30);
/// assert_eq!(size.to_string(), "512m");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `bytes` bytes.
    ///
    /// ```
    /// assert_eq!(simple_runner::spec::ByteSize::new(1024).to_string(), "1k");
    /// ```
    pub fn new(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The size in bytes.
    ///
    /// ```
    /// let size: simple_runner::spec::ByteSize = "1k".parse()?;
    /// assert_eq!(size.bytes(), 1024);
    /// # Ok::<(), String>(())
    /// ```
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
        let (digits, unit) = lower.split_at(split);
        let value: u64 = digits.parse().map_err(|_| format!("not a size: {text:?} (try 512m or 2g)"))?;
        let factor: u64 = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => return Err(format!("unknown size unit in {text:?} (use k, m or g)")),
        };
        let bytes = value.checked_mul(factor).ok_or_else(|| format!("size too large: {text:?}"))?;
        if bytes == 0 {
            return Err(format!("a size must be more than zero: {text:?}"));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
            if self.0 >= factor && self.0 % factor == 0 {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(0) => Err(serde::de::Error::custom("a size must be more than zero")),
            Raw::Bytes(bytes) => Ok(Self(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes, or a size with a unit: \"512m\", \"2g\", \"64k\".",
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": "^ *[0-9]*[1-9][0-9]* *([kKmMgG]([iI]?[bB])?|[bB])? *$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        let bytes = |text: &str| text.parse::<ByteSize>().map(ByteSize::bytes);
        assert_eq!(bytes("512m"), Ok(512 << 20));
        assert_eq!(bytes("2G"), Ok(2 << 30));
        assert_eq!(bytes("1024"), Ok(1024));
        assert_eq!(bytes("1gib"), Ok(1 << 30));
        assert_eq!(bytes("64 KB"), Ok(64 << 10));
        assert!(bytes("lots").is_err());
        assert!(bytes("5t").is_err());
        assert!(bytes("0m").is_err());
    }

    #[test]
    fn sizes_read_bytes_and_text_and_are_written_in_the_largest_unit() {
        assert_eq!(serde_json::from_str::<ByteSize>("1536").unwrap().to_string(), "1536");
        assert_eq!(serde_json::to_string(&ByteSize::new(3 << 20)).unwrap(), "\"3m\"");
        assert!(serde_json::from_str::<ByteSize>("0").is_err());
    }
}
