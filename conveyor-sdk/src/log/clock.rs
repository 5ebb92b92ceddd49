//! Log timestamps that sort in emission order.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Hands out the timestamps of one run's log lines: RFC 3339 UTC, always nine
/// fractional digits and `Z` (`2026-11-23T21:30:46.123456789Z`), strictly increasing.
///
/// The server stores lines under keys that contain the timestamp and returns them in
/// key order, so lines come back in the order they were written only if their
/// timestamps sort that way; a fixed width makes string order time order, and a
/// clock that never repeats (nor goes back when the system clock does) makes it
/// emission order.
#[derive(Debug, Default)]
pub(crate) struct RunClock {
    last: i128,
}

impl RunClock {
    /// The next timestamp: now, or one nanosecond after the previous one if now is not later.
    pub(crate) fn next(&mut self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        self.last = now.max(self.last + 1);
        format_rfc3339_nanos(self.last)
    }
}

/// Formats nanoseconds since the Unix epoch as fixed-width RFC 3339 UTC.
pub(crate) fn format_rfc3339_nanos(nanos: i128) -> String {
    let mut out = String::with_capacity(30);
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond()
            );
        }
        Err(_) => out.push_str("1970-01-01T00:00:00.000000000Z"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_with_nine_digits() {
        assert_eq!(format_rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339_nanos(1_795_469_446_123_456_789), "2026-11-23T21:30:46.123456789Z");
        assert_eq!(format_rfc3339_nanos(1_795_469_446_000_000_001).len(), 30);
    }

    #[test]
    fn timestamps_parse_as_rfc3339() {
        let ts = RunClock::default().next();
        let parsed = time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok(), "{ts}");
    }

    #[test]
    fn timestamps_strictly_increase_and_sort_as_strings() {
        let mut clock = RunClock::default();
        let stamps: Vec<String> = (0..10_000).map(|_| clock.next()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "not strictly increasing");
    }

    #[test]
    fn a_clock_ahead_of_the_system_clock_still_increases() {
        let far_future = 4_102_444_800_000_000_000i128; // 2100-01-01
        let mut clock = RunClock { last: far_future };
        assert_eq!(clock.next(), format_rfc3339_nanos(far_future + 1));
        assert_eq!(clock.next(), format_rfc3339_nanos(far_future + 2));
    }
}
