//! Log timestamps that sort in emission order.

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
    pub(crate) fn next(&mut self) -> Timestamp {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        self.last = now.max(self.last + 1);
        Timestamp(rfc3339_nanos(self.last))
    }
}

/// A timestamp of [`RunClock`], kept in place: no allocation per log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp([u8; 30]);

impl Timestamp {
    /// The timestamp's text, which needs no escaping in JSON.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and `-T:.Z` are ever written.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000000000Z")
    }
}

/// Formats nanoseconds since the Unix epoch as fixed-width RFC 3339 UTC
/// (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`); dates before 1970 or after 9999 are clamped.
pub(crate) fn format_rfc3339_nanos(nanos: i128) -> String {
    Timestamp(rfc3339_nanos(nanos)).as_str().to_owned()
}

/// [`format_rfc3339_nanos`] into a fixed buffer. Called for every log line, so it
/// writes the digits itself.
fn rfc3339_nanos(nanos: i128) -> [u8; 30] {
    const MAX: i128 = 253_402_300_799_999_999_999; // 9999-12-31T23:59:59.999999999Z
    let nanos = nanos.clamp(0, MAX);
    let secs = (nanos / 1_000_000_000) as i64;
    let frac = (nanos % 1_000_000_000) as u32;
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (year, month, day) = civil_from_days(days);
    let mut out = [0u8; 30];
    put(&mut out[0..4], year as u32);
    out[4] = b'-';
    put(&mut out[5..7], month);
    out[7] = b'-';
    put(&mut out[8..10], day);
    out[10] = b'T';
    put(&mut out[11..13], day_secs / 3600);
    out[13] = b':';
    put(&mut out[14..16], day_secs / 60 % 60);
    out[16] = b':';
    put(&mut out[17..19], day_secs % 60);
    out[19] = b'.';
    put(&mut out[20..29], frac);
    out[29] = b'Z';
    out
}

/// Writes `value` as zero-padded decimal digits filling `buf`.
fn put(buf: &mut [u8], mut value: u32) {
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    fn agrees_with_the_time_crate_across_the_calendar() {
        let fmt = time::format_description::parse_borrowed::<2>(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z",
        )
        .unwrap();
        // Leap days, month ends, century rules, far past and future.
        let mut nanos: i128 = 0;
        while nanos < 4_200_000_000 * 1_000_000_000 {
            let expected =
                time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap().format(&fmt).unwrap();
            assert_eq!(format_rfc3339_nanos(nanos), expected);
            nanos += 86_399_999_999_937; // just under a day, so hours and digits move too
        }
    }

    #[test]
    fn timestamps_parse_as_rfc3339() {
        let ts = RunClock::default().next();
        let parsed = time::OffsetDateTime::parse(ts.as_str(), &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok(), "{}", ts.as_str());
    }

    #[test]
    fn timestamps_strictly_increase_and_sort_as_strings() {
        let mut clock = RunClock::default();
        let stamps: Vec<String> = (0..10_000).map(|_| clock.next().as_str().to_owned()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "not strictly increasing");
    }

    #[test]
    fn a_clock_ahead_of_the_system_clock_still_increases() {
        let far_future = 4_102_444_800_000_000_000i128; // 2100-01-01
        let mut clock = RunClock { last: far_future };
        assert_eq!(clock.next().as_str(), format_rfc3339_nanos(far_future + 1));
        assert_eq!(clock.next().as_str(), format_rfc3339_nanos(far_future + 2));
    }
}
