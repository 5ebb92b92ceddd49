//! Finding a step's end marker in a byte stream that may split it anywhere.

/// What one push into a [`MarkerScanner`] gives.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Scan {
    /// Bytes that are output (before the marker).
    pub(crate) output: Vec<u8>,
    /// The rest of the marker's line, once it has come.
    pub(crate) trailer: Option<String>,
}

/// Finds a marker in a byte stream that may split it anywhere.
#[derive(Debug)]
pub(crate) struct MarkerScanner {
    marker: Vec<u8>,
    held: Vec<u8>,
    /// The marker was seen; its line is not complete yet.
    in_trailer: bool,
}

impl MarkerScanner {
    /// A scanner for `marker`.
    pub(crate) fn new(marker: String) -> Self {
        Self { marker: marker.into_bytes(), held: Vec::new(), in_trailer: false }
    }

    /// Takes in `chunk`: what is surely output, and the trailer once the marker's
    /// line is complete.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Scan {
        self.held.extend_from_slice(chunk);
        let mut scan = Scan::default();
        if !self.in_trailer {
            match find(&self.held, &self.marker) {
                Some(at) => {
                    scan.output = self.held[..at].to_vec();
                    self.held.drain(..at + self.marker.len());
                    self.in_trailer = true;
                }
                None => {
                    // Hold back what could be the start of a marker.
                    let keep = partial_suffix(&self.held, &self.marker);
                    let release = self.held.len() - keep;
                    scan.output = self.held.drain(..release).collect();
                    return scan;
                }
            }
        }
        if let Some(end) = self.held.iter().position(|&b| b == b'\n') {
            scan.trailer = Some(String::from_utf8_lossy(&self.held[..end]).into_owned());
            self.held.drain(..=end);
            self.in_trailer = false;
        }
        scan
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The length of the longest suffix of `data` that is a proper prefix of `marker`.
fn partial_suffix(data: &[u8], marker: &[u8]) -> usize {
    (1..marker.len().min(data.len() + 1)).rev().find(|&n| data.ends_with(&marker[..n])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> MarkerScanner {
        MarkerScanner::new("__END__".into())
    }

    #[test]
    fn output_before_the_marker_is_released_and_the_trailer_read() {
        let mut s = scanner();
        let scan = s.push(b"hello\nworld\n__END__ 0\n");
        assert_eq!(scan.output, b"hello\nworld\n");
        assert_eq!(scan.trailer.as_deref(), Some(" 0"));
    }

    #[test]
    fn a_marker_split_across_chunks_is_found() {
        let mut s = scanner();
        let mut output = Vec::new();
        let mut trailer = None;
        for chunk in [&b"partial line_"[..], b"_EN", b"D__ 4", b"2\n"] {
            let scan = s.push(chunk);
            output.extend(scan.output);
            trailer = trailer.or(scan.trailer);
        }
        assert_eq!(output, b"partial line");
        assert_eq!(trailer.as_deref(), Some(" 42"));
    }

    #[test]
    fn text_that_only_looks_like_a_marker_start_is_output() {
        let mut s = scanner();
        let first = s.push(b"a\n__EN");
        assert_eq!(first.output, b"a\n", "complete lines are never held back");
        let second = s.push(b"ding\n");
        assert_eq!([first.output, second.output].concat(), b"a\n__ENding\n");
        assert_eq!(second.trailer, None);
    }

    #[test]
    fn the_scanner_is_ready_for_the_next_step() {
        let mut s = scanner();
        assert_eq!(s.push(b"x\n__END__ 1\n").trailer.as_deref(), Some(" 1"));
        let next = s.push(b"y\n__END__ 0\n");
        assert_eq!(next.output, b"y\n");
        assert_eq!(next.trailer.as_deref(), Some(" 0"));
    }
}
