//! Secret values a log never shows: each is replaced by `***` in every line.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// The values one log masks, shared by every clone of its handle.
///
/// A line is masked as a whole, after it has been put together from the pieces it was
/// written in, so a value split across two writes is masked as well. A value of
/// several lines is masked line by line (each of its non-blank lines is a value of
/// its own), since a log is read line by line.
#[derive(Debug, Default)]
pub(crate) struct Masks {
    /// Whether any value is registered: the one check a line pays when none is.
    any: AtomicBool,
    /// The values, longest first, so that a value inside another is not masked first.
    values: RwLock<Arc<Vec<String>>>,
}

impl Masks {
    /// Registers `secret`: each of its non-blank lines is masked from now on.
    pub(crate) fn add(&self, secret: &str) {
        let new: Vec<String> = secret
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect();
        if new.is_empty() {
            return;
        }
        let Ok(mut values) = self.values.write() else { return };
        let mut all: Vec<String> = values.iter().cloned().collect();
        for value in new {
            if !all.contains(&value) {
                all.push(value);
            }
        }
        all.sort_by_key(|value| std::cmp::Reverse(value.len()));
        *values = Arc::new(all);
        self.any.store(true, Ordering::Release);
    }

    /// Whether any value is registered.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// `line` with every registered value replaced by [`MASK`].
    pub(crate) fn apply<'a>(&self, line: &'a str) -> Cow<'a, str> {
        if !self.any() {
            return Cow::Borrowed(line);
        }
        let values = match self.values.read() {
            Ok(values) => Arc::clone(&values),
            // A writer panicked mid-update: mask everything rather than leak a value.
            Err(_) => return Cow::Owned(MASK.to_owned()),
        };
        let mut line = Cow::Borrowed(line);
        for value in values.iter() {
            if line.contains(value.as_str()) {
                line = Cow::Owned(line.replace(value.as_str(), MASK));
            }
        }
        line
    }

    /// [`apply`](Self::apply) for an owned line, without a copy when nothing is masked.
    pub(crate) fn apply_owned(&self, line: String) -> String {
        match self.apply(&line) {
            Cow::Borrowed(_) => line,
            Cow::Owned(masked) => masked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_masked_until_a_value_is_registered() {
        let masks = Masks::default();
        assert!(!masks.any());
        assert!(matches!(masks.apply("token hunter2"), Cow::Borrowed("token hunter2")));
    }

    #[test]
    fn every_occurrence_is_masked_inside_other_text() {
        let masks = Masks::default();
        masks.add("hunter2");
        assert_eq!(masks.apply("pw=hunter2;again:hunter2hunter2"), "pw=***;again:******");
        assert_eq!(masks.apply("nothing here"), "nothing here");
    }

    #[test]
    fn a_multi_line_value_is_masked_line_by_line() {
        let masks = Masks::default();
        masks.add("-----BEGIN KEY-----\r\nabc123\n\n  \n-----END KEY-----\n");
        assert_eq!(masks.apply("-----BEGIN KEY-----"), "***");
        assert_eq!(masks.apply("  abc123  "), "  ***  ");
        assert_eq!(masks.apply("   "), "   ", "blank lines of a value are not values");
    }

    #[test]
    fn a_longer_value_is_masked_before_one_it_contains() {
        let masks = Masks::default();
        masks.add("abc");
        masks.add("abcdef");
        assert_eq!(masks.apply("xabcdefx abc"), "x***x ***");
    }

    #[test]
    fn blank_values_register_nothing() {
        let masks = Masks::default();
        masks.add("");
        masks.add(" \n ");
        assert!(!masks.any());
    }
}
