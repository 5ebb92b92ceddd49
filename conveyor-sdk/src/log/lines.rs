//! Turning a byte stream into log lines.

/// The longest log line, in bytes: a longer line is split into pieces of at most
/// this size (at a character boundary), each sent as a line of its own.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Splits a byte stream into lines, the way a terminal user reads them.
///
/// - a line ends at `\n`; a `\r` before it is dropped (`\r\n` line ends);
/// - invalid UTF-8 is replaced by `U+FFFD`;
/// - a line longer than [`MAX_LINE_BYTES`] is cut into pieces of at most that size;
/// - blank lines are kept; [`LineSplitter::finish`] returns the last line when the
///   stream did not end with a line break.
///
/// ```
/// use conveyor_sdk::log::LineSplitter;
/// let mut lines = LineSplitter::new();
/// assert_eq!(lines.push(b"one\r\ntw"), vec!["one"]);
/// assert_eq!(lines.push(b"o\n\nthr"), vec!["two", ""]);
/// assert_eq!(lines.finish(), Some("thr".to_string()));
/// ```
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// An empty splitter.
    ///
    /// ```
    /// let lines = conveyor_sdk::log::LineSplitter::new();
    /// assert!(!lines.has_partial());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the lines they complete.
    ///
    /// ```
    /// let mut lines = conveyor_sdk::log::LineSplitter::new();
    /// assert!(lines.push(b"half a li").is_empty());
    /// assert_eq!(lines.push(b"ne\r\nand \xff\n"), ["half a line", "and \u{fffd}"]);
    /// ```
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..pos]);
            self.take_long_pieces(&mut lines);
            if self.partial.last() == Some(&b'\r') {
                self.partial.pop();
            }
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
            bytes = &bytes[pos + 1..];
        }
        self.partial.extend_from_slice(bytes);
        self.take_long_pieces(&mut lines);
        lines
    }

    /// Ends the stream: returns the last line if it had no line break.
    ///
    /// ```
    /// let mut lines = conveyor_sdk::log::LineSplitter::new();
    /// lines.push(b"done\nexit 0");
    /// assert_eq!(lines.finish().as_deref(), Some("exit 0"));
    /// assert_eq!(lines.finish(), None);
    /// ```
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        Some(line)
    }

    /// Whether bytes of an unfinished line are held.
    ///
    /// ```
    /// let mut lines = conveyor_sdk::log::LineSplitter::new();
    /// lines.push(b"progress: 40%");
    /// assert!(lines.has_partial());
    /// lines.push(b"\n");
    /// assert!(!lines.has_partial());
    /// ```
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Moves full-size pieces of an over-long line out of `partial`. A piece never ends
    /// inside a UTF-8 sequence.
    fn take_long_pieces(&mut self, lines: &mut Vec<String>) {
        while self.partial.len() > MAX_LINE_BYTES {
            let cut = utf8_cut(&self.partial[..MAX_LINE_BYTES]);
            let rest = self.partial.split_off(cut);
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial = rest;
        }
    }
}

/// The length of the longest prefix of `bytes` that does not end inside a UTF-8
/// sequence (never 0 for a non-empty input).
fn utf8_cut(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A UTF-8 sequence is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=3.min(len) {
        let byte = bytes[len - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte
        }
        let width = match byte {
            b if b < 0x80 => 1,
            b if b >> 5 == 0b110 => 2,
            b if b >> 4 == 0b1110 => 3,
            b if b >> 3 == 0b11110 => 4,
            _ => 1,
        };
        return if width > back && len - back > 0 { len - back } else { len };
    }
    len
}

/// Splits a text that may hold several lines into log lines (see [`LineSplitter`]).
pub(crate) fn split_text(text: &str) -> Vec<String> {
    if !text.contains('\n') && text.len() <= MAX_LINE_BYTES {
        return vec![text.strip_suffix('\r').unwrap_or(text).to_owned()];
    }
    let mut splitter = LineSplitter::new();
    let mut lines = splitter.push(text.as_bytes());
    lines.extend(splitter.finish());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_lf_both_end_lines() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push(b"a\r\nb\nc\r"), ["a", "b"]);
        assert_eq!(s.push(b"\n"), ["c"]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn blank_lines_are_kept() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push(b"\n\nx\n\n"), ["", "", "x", ""]);
    }

    #[test]
    fn last_partial_line_is_returned_by_finish() {
        let mut s = LineSplitter::new();
        assert!(s.push(b"no newline").is_empty());
        assert!(s.has_partial());
        assert_eq!(s.finish().as_deref(), Some("no newline"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push(b"ok \xff\xfe end\n"), ["ok \u{fffd}\u{fffd} end"]);
    }

    #[test]
    fn utf8_split_across_writes_is_joined() {
        let snowman = "☃".as_bytes();
        let mut s = LineSplitter::new();
        assert!(s.push(&snowman[..1]).is_empty());
        assert_eq!(s.push(&[&snowman[1..], b"\n"].concat()), ["☃"]);
    }

    #[test]
    fn over_long_lines_are_split_at_the_limit() {
        let mut s = LineSplitter::new();
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let mut lines = s.push(&long);
        assert_eq!(lines.len(), 2);
        lines.extend(s.push(b"\n"));
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(lines.concat().len(), long.len());
    }

    #[test]
    fn over_long_lines_are_not_cut_inside_a_character() {
        let mut text = vec![b'a'; MAX_LINE_BYTES - 1];
        text.extend_from_slice("€€".as_bytes()); // 3-byte characters straddle the limit
        text.push(b'\n');
        let mut s = LineSplitter::new();
        let lines = s.push(&text);
        assert_eq!(lines.len(), 2);
        assert!(!lines.concat().contains('\u{fffd}'), "a character was cut");
        assert_eq!(lines[1], "€€");
    }

    #[test]
    fn split_text_handles_embedded_newlines() {
        assert_eq!(split_text("one"), ["one"]);
        assert_eq!(split_text("one\r"), ["one"]);
        assert_eq!(split_text("a\nb"), ["a", "b"]);
        assert_eq!(split_text("a\n"), ["a"]);
        assert_eq!(split_text(""), [""]);
    }
}
