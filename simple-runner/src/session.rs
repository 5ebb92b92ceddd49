//! Steps through the run container's own shell.
//!
//! The container's main process is `/bin/sh` reading its stdin. The runner attaches to
//! it once and, for each step, writes one line that starts the step as
//! `/bin/sh -c '<script>' </dev/null` (with the step's environment) and then prints an
//! end marker with the exit code on stdout and an end marker on stderr. Output before
//! a marker that does not end with a line break is the step's last, partial line. Starting a
//! process this way costs a fork, where a Docker exec costs tens of milliseconds.
//! The markers carry a random nonce per run, so no output can fake them.

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptions;
use bollard::Docker;
use conveyor_sdk::log::LineSplitter;
use conveyor_sdk::LogHandle;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::docker::{EngineError, StepExit};

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// An attached shell session in a run container.
pub struct Session {
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
    marker: String,
    stdout: Channel,
    stderr: Channel,
}

/// One output stream: its marker scanner and its line splitter.
struct Channel {
    scanner: MarkerScanner,
    lines: LineSplitter,
}

impl Channel {
    fn new(marker: &str) -> Self {
        Self { scanner: MarkerScanner::new(marker.to_owned()), lines: LineSplitter::new() }
    }

    /// Feeds a chunk; logs the lines it completes; returns the marker's trailer (the
    /// text after it on its line) once the marker has come.
    async fn feed(&mut self, chunk: &[u8], log: &LogHandle) -> Option<String> {
        let scan = self.scanner.push(chunk);
        for line in self.lines.push(&scan.output) {
            log.log(line).await;
        }
        if scan.trailer.is_some() {
            if let Some(last) = self.lines.finish() {
                log.log(last).await;
            }
        }
        scan.trailer
    }
}

impl Session {
    /// Attaches to the container's shell.
    pub async fn attach(docker: &Docker, container: &str) -> Result<Self, EngineError> {
        let options = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            ..Default::default()
        };
        let attached = docker.attach_container(container, Some(options)).await.map_err(|source| {
            EngineError::Docker { action: "cannot attach to the run container".into(), source }
        })?;
        let marker = format!("__CONVEYOR_STEP_END_{}__", uuid::Uuid::new_v4().simple());
        Ok(Self {
            input: attached.input,
            output: attached.output,
            stdout: Channel::new(&marker),
            stderr: Channel::new(&marker),
            marker,
        })
    }

    /// Runs `script` through `sh -c` with `env`, without stdin, logging its output line
    /// by line; returns when both output streams have ended the step.
    pub async fn run(
        &mut self,
        script: &str,
        env: &[(String, String)],
        log: &LogHandle,
    ) -> Result<StepExit, EngineError> {
        let mut line = String::new();
        for (key, value) in env {
            line.push_str(&format!("{key}={} ", quote(value)));
        }
        line.push_str(&format!(
            "/bin/sh -c {} </dev/null; __conveyor_status=$?; printf '%s %s\\n' {marker} \"$__conveyor_status\"; \
             printf '%s\\n' {marker} >&2\n",
            quote(script),
            marker = self.marker
        ));
        let written = async {
            self.input.write_all(line.as_bytes()).await?;
            self.input.flush().await
        };
        written.await.map_err(|e| {
            EngineError::Session(format!("cannot send the step to the container's shell: {e}"))
        })?;

        let (mut code, mut stderr_done) = (None::<String>, false);
        while code.is_none() || !stderr_done {
            let Some(chunk) = self.output.next().await else {
                return Err(EngineError::Session("the container stopped during the step".into()));
            };
            let chunk = chunk.map_err(|source| EngineError::Docker {
                action: "the step's output stream broke".into(),
                source,
            })?;
            match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    if let Some(trailer) = self.stdout.feed(&message, log).await {
                        code = Some(trailer);
                    }
                }
                LogOutput::StdErr { message } => {
                    if self.stderr.feed(&message, log).await.is_some() {
                        stderr_done = true;
                    }
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        code.and_then(|c| c.trim().parse().ok()).map(|code| StepExit { code }).ok_or(EngineError::NoExitCode)
    }
}

/// Quotes `text` for the shell: `'…'`, with `'` written as `'\''`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What one push into a [`MarkerScanner`] gives.
#[derive(Debug, Default, PartialEq)]
struct Scan {
    /// Bytes that are output (before the marker).
    output: Vec<u8>,
    /// The rest of the marker's line, once it has come.
    trailer: Option<String>,
}

/// Finds a marker in a byte stream that may split it anywhere.
#[derive(Debug)]
struct MarkerScanner {
    marker: Vec<u8>,
    held: Vec<u8>,
    /// The marker was seen; its line is not complete yet.
    in_trailer: bool,
}

impl MarkerScanner {
    fn new(marker: String) -> Self {
        Self { marker: marker.into_bytes(), held: Vec::new(), in_trailer: false }
    }

    fn push(&mut self, chunk: &[u8]) -> Scan {
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

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
