//! The run's log cap: how much output of its steps and services the run's log still
//! takes, shared by every container of its pod.

use std::sync::{Arc, Mutex, PoisonError};

/// How much output a run still logs: one for the whole run, cloned into every session
/// and service of its pod.
#[derive(Clone, Default)]
pub(crate) struct OutputCap {
    /// `None`: no cap.
    inner: Option<Arc<Mutex<Budget>>>,
}

struct Budget {
    /// Bytes left.
    left: u64,
    limit: u64,
    /// The line saying output is dropped has been logged.
    exhausted: bool,
}

impl OutputCap {
    /// A cap of `max_bytes` over everything logged through it.
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            inner: Some(Arc::new(Mutex::new(Budget { left: max_bytes, limit: max_bytes, exhausted: false }))),
        }
    }

    /// Keeps the lines of `lines` that fit (each costs its length and a line break),
    /// and in place of the first that does not, the one line saying that output is
    /// dropped.
    pub(crate) fn admit(&self, lines: &mut Vec<String>) {
        let Some(inner) = &self.inner else { return };
        let mut budget = inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut admitted = 0;
        for line in lines.iter() {
            let cost = line.len() as u64 + 1;
            if budget.exhausted || cost > budget.left {
                break;
            }
            budget.left -= cost;
            admitted += 1;
        }
        if admitted == lines.len() {
            return;
        }
        lines.truncate(admitted);
        if !budget.exhausted {
            budget.exhausted = true;
            lines.push(format!(
                "[output truncated: the run's output reached {} bytes, the runner's limit; further output is dropped]",
                budget.limit
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn output_past_the_cap_is_dropped_with_one_line_saying_so() {
        let cap = OutputCap::new(10);
        let mut chunk = lines(&["1234", "5678", "9", "0"]);
        cap.admit(&mut chunk);
        assert_eq!(chunk.len(), 3, "{chunk:?}");
        assert_eq!(chunk[..2], ["1234", "5678"], "each line counts its line break");
        assert!(chunk[2].starts_with("[output truncated: the run's output reached 10 bytes"), "{chunk:?}");
        let mut later = lines(&["x"]);
        cap.admit(&mut later);
        assert!(later.is_empty(), "nothing more, and no second notice");

        let mut chunk = lines(&["a", "b"]);
        OutputCap::default().admit(&mut chunk);
        assert_eq!(chunk, ["a", "b"]);
    }

    #[test]
    fn the_containers_of_a_pod_share_one_cap() {
        let cap = OutputCap::new(9);
        let service = cap.clone();
        let mut step = lines(&["abc"]);
        cap.admit(&mut step);
        let mut served = lines(&["defg", "h"]);
        service.admit(&mut served);
        assert_eq!(served.len(), 2, "{served:?}");
        assert_eq!(served[0], "defg");
        assert!(served[1].starts_with("[output truncated"), "{served:?}");
        let mut after = lines(&["i"]);
        cap.admit(&mut after);
        assert!(after.is_empty(), "the step's session sees the cap reached by the service");
    }
}
