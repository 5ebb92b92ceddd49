//! The log handle: how a run writes the lines users watch live.
//!
//! A [`LogHandle`] is cheap to clone and usable from any task. Where its lines go is
//! pluggable: in the [`Runtime`](crate::runtime::Runtime) they go to NATS (stored by the server
//! and relayed live), [`LogHandle::stdout`] prints them for a local run,
//! [`LogHandle::memory`] keeps them for a test, and any [`LogSink`] of your own works too.

pub(crate) mod clock;
mod lines;
mod mask;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

pub(crate) use clock::RunClock;
pub use lines::{LineSplitter, MAX_LINE_BYTES};
use mask::Masks;
pub use mask::MASK;

/// Errors of a log destination.
///
/// A [`LogSink`] of your own reports its failures as [`LogError::Delivery`], with its
/// own error as the source:
///
/// ```
/// use conveyor_sdk::log::LogError;
/// let error = LogError::Delivery { source: std::io::Error::other("disk full").into() };
/// assert_eq!(error.to_string(), "log lines could not be delivered");
/// assert_eq!(conveyor_sdk::error_text(&error), "log lines could not be delivered: disk full");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Lines could not be delivered to their destination; some are lost.
    #[error("log lines could not be delivered")]
    Delivery {
        /// What went wrong: the destination's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing to the local writer failed.
    #[error("writing log lines failed")]
    Io(#[source] io::Error),
}

/// A destination of log lines.
///
/// Implement it to send a run's lines somewhere of your own; the SDK provides NATS
/// (inside the runtime), a writer and memory.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use conveyor_sdk::log::{LogError, LogHandle, LogSink};
///
/// /// Counts lines instead of keeping them.
/// struct Counter(Arc<AtomicUsize>);
///
/// #[async_trait::async_trait]
/// impl LogSink for Counter {
///     async fn write_line(&self, _line: &str) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
///     async fn flush(&self) -> Result<(), LogError> {
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), LogError> {
/// let count = Arc::new(AtomicUsize::new(0));
/// let log = LogHandle::new(Counter(count.clone()));
/// log.log("one\ntwo").await;
/// log.flush().await?;
/// assert_eq!(count.load(Ordering::Relaxed), 2);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait LogSink: Send + Sync + 'static {
    /// Writes one line, without its line break. May wait to slow a fast writer down;
    /// a line that cannot be delivered is reported by the next [`flush`](Self::flush).
    ///
    /// [`LogHandle::log`] calls it once per line:
    ///
    /// ```
    /// use conveyor_sdk::log::{LogHandle, LogSink};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (_, memory) = LogHandle::memory();
    /// memory.write_line("written directly").await;
    /// assert_eq!(memory.lines(), ["written directly"]);
    /// # }
    /// ```
    async fn write_line(&self, line: &str);

    /// Writes several lines, in order, as [`write_line`](Self::write_line) would one
    /// after the other, which is what it does unless a sink overrides it. A sink that
    /// does something once per call (a lock, a wake-up, a write) overrides it to do
    /// that once per batch: [`LogHandle::log_lines`], [`LogHandle::log`] with a text
    /// of several lines and [`LogHandle::writer`] hand it every line they have at once.
    ///
    /// ```
    /// use conveyor_sdk::log::{LogHandle, LogSink};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (_, memory) = LogHandle::memory();
    /// memory.write_lines(&["one", "two"]).await;
    /// assert_eq!(memory.lines(), ["one", "two"]);
    /// # }
    /// ```
    async fn write_lines(&self, lines: &[&str]) {
        for line in lines {
            self.write_line(line).await;
        }
    }

    /// Waits until every line written so far has reached its destination; an error
    /// says that some did not.
    ///
    /// ```
    /// use conveyor_sdk::log::{LogError, LogHandle, LogSink};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), LogError> {
    /// let (_, memory) = LogHandle::memory();
    /// memory.write_line("kept").await;
    /// memory.flush().await?; // memory never loses a line
    /// # Ok(()) }
    /// ```
    async fn flush(&self) -> Result<(), LogError>;
}

/// Where a run writes its log lines. Cheap to clone; every clone writes to the same place.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (log, lines) = conveyor_sdk::LogHandle::memory();
/// log.log("step 1: ok").await;
/// log.log("two\nlines").await;
/// assert_eq!(lines.lines(), ["step 1: ok", "two", "lines"]);
/// # }
/// ```
#[derive(Clone)]
pub struct LogHandle {
    sink: Arc<dyn LogSink>,
    /// The secret values its lines never show, shared by every clone.
    masks: Arc<Masks>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// A handle that writes to `sink`.
    ///
    /// ```
    /// use conveyor_sdk::log::{LogHandle, MemoryLog};
    /// let memory = MemoryLog::default();
    /// let log = LogHandle::new(memory.clone()); // any LogSink
    /// # let _ = log;
    /// ```
    pub fn new(sink: impl LogSink) -> Self {
        Self { sink: Arc::new(sink), masks: Arc::default() }
    }

    /// Masks `secret` from now on: every line written through this handle or any of
    /// its clones, to whatever destination, shows [`MASK`] (`***`) where the value
    /// was. A line is masked once it is whole, so a value written in pieces (through
    /// [`writer`](Self::writer), or a line put together by a [`LineSplitter`]) is
    /// masked too; a value of several lines is masked line by line, each non-blank
    /// line of it as a value of its own. A blank value masks nothing.
    ///
    /// A handle with no secret registered pays one atomic load per line for this.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (log, lines) = conveyor_sdk::LogHandle::memory();
    /// log.mask("s3cr3t");
    /// log.mask("-----BEGIN KEY-----\nAAAA\n-----END KEY-----");
    /// log.clone().log("token=s3cr3t").await;
    /// log.log("-----BEGIN KEY-----\nAAAA\n-----END KEY-----").await;
    /// assert_eq!(lines.lines(), ["token=***", "***", "***", "***"]);
    /// # }
    /// ```
    pub fn mask(&self, secret: &str) {
        self.masks.add(secret);
    }

    /// A handle that keeps its lines in memory, and the means to read them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (log, lines) = conveyor_sdk::LogHandle::memory();
    /// log.clone().log("from a clone").await;
    /// assert_eq!(lines.lines(), ["from a clone"]);
    /// # }
    /// ```
    pub fn memory() -> (Self, MemoryLog) {
        let memory = MemoryLog::default();
        (Self::new(memory.clone()), memory)
    }

    /// A handle that prints each line on standard output, for a local run.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), conveyor_sdk::log::LogError> {
    /// let log = conveyor_sdk::LogHandle::stdout();
    /// log.log("hello").await;
    /// log.flush().await?;
    /// # Ok(()) }
    /// ```
    pub fn stdout() -> Self {
        Self::to_writer(tokio::io::stdout())
    }

    /// A handle that writes each line, followed by `\n`, to `writer`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncReadExt;
    /// let (writer, mut reader) = tokio::io::duplex(1024);
    /// let log = conveyor_sdk::LogHandle::to_writer(writer);
    /// log.log("one\ntwo").await;
    /// log.flush().await?;
    /// drop(log);
    /// let mut text = String::new();
    /// reader.read_to_string(&mut text).await?;
    /// assert_eq!(text, "one\ntwo\n");
    /// # Ok(()) }
    /// ```
    pub fn to_writer<W: AsyncWrite + Send + Unpin + 'static>(writer: W) -> Self {
        Self::new(WriterSink { writer: Mutex::new(writer), error: StdMutex::new(None) })
    }

    /// Writes `text` as one line, or as several if it holds line breaks; lines longer
    /// than [`MAX_LINE_BYTES`] are split. Waits when the destination is slower than the
    /// writer, so memory stays bounded.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (log, lines) = conveyor_sdk::LogHandle::memory();
    /// log.log(format!("cloning {}", "https://example.com/repo.git")).await;
    /// log.log("Cloning into 'repo'...\r\ndone.\n").await;
    /// assert_eq!(lines.lines(), ["cloning https://example.com/repo.git", "Cloning into 'repo'...", "done."]);
    /// # }
    /// ```
    pub async fn log(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if !self.masks.any() && !text.contains('\n') && text.len() <= MAX_LINE_BYTES {
            self.sink.write_line(text.strip_suffix('\r').unwrap_or(text)).await;
            return;
        }
        self.log_lines(&[text]).await;
    }

    /// Writes each of `texts` as [`log`](Self::log) would, in order, handing the
    /// destination all their lines at once ([`LogSink::write_lines`]): for many lines,
    /// such as a chunk of a program's output, one call in place of one per line.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (log, lines) = conveyor_sdk::LogHandle::memory();
    /// log.mask("s3cr3t");
    /// let output = vec!["compiling".to_owned(), String::new(), "token s3cr3t\r".to_owned()];
    /// log.log_lines(&output).await;
    /// assert_eq!(lines.lines(), ["compiling", "", "token ***"]);
    /// # }
    /// ```
    pub async fn log_lines<S: AsRef<str>>(&self, texts: &[S]) {
        let simple = |text: &str| !text.contains('\n') && text.len() <= MAX_LINE_BYTES;
        if !self.masks.any() && texts.iter().all(|t| simple(t.as_ref())) {
            let lines: Vec<&str> =
                texts.iter().map(|t| t.as_ref()).map(|t| t.strip_suffix('\r').unwrap_or(t)).collect();
            self.sink.write_lines(&lines).await;
            return;
        }
        let lines: Vec<String> = texts
            .iter()
            .flat_map(|text| lines::split_text(text.as_ref()))
            .map(|line| self.masks.apply_owned(line))
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        self.sink.write_lines(&lines).await;
    }

    /// An [`AsyncWrite`] that turns the bytes written to it into lines of this log,
    /// as [`LineSplitter`] does. Shut it down (`AsyncWriteExt::shutdown`) to send the
    /// last line when it has no line break.
    ///
    /// A child process's output, line by line:
    ///
    /// ```no_run
    /// # async fn demo(log: conveyor_sdk::LogHandle) -> std::io::Result<()> {
    /// use tokio::io::AsyncWriteExt;
    /// let mut out = log.writer();
    /// let mut child = tokio::process::Command::new("make")
    ///     .stdout(std::process::Stdio::piped())
    ///     .spawn()?;
    /// if let Some(mut stdout) = child.stdout.take() {
    ///     tokio::io::copy(&mut stdout, &mut out).await?;
    /// }
    /// out.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Bytes in any chunks:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use tokio::io::AsyncWriteExt;
    /// let (log, lines) = conveyor_sdk::LogHandle::memory();
    /// let mut out = log.writer();
    /// out.write_all(b"compiling\nlink").await?;
    /// out.write_all(b"ing\nno line break").await?;
    /// out.shutdown().await?; // sends the last, unfinished line
    /// assert_eq!(lines.lines(), ["compiling", "linking", "no line break"]);
    /// # Ok(()) }
    /// ```
    pub fn writer(&self) -> LogWriter {
        LogWriter {
            log: self.clone(),
            splitter: LineSplitter::new(),
            queue: VecDeque::new(),
            in_flight: None,
        }
    }

    /// Waits until every line written so far has reached the destination.
    ///
    /// The runtime calls this before it publishes a run's result.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), conveyor_sdk::log::LogError> {
    /// let (log, lines) = conveyor_sdk::LogHandle::memory();
    /// log.log("done").await;
    /// log.flush().await?;
    /// assert_eq!(lines.lines(), ["done"]);
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<(), LogError> {
        self.sink.flush().await
    }
}

/// The lines of a [`LogHandle::memory`] log; also a [`LogSink`] of its own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (log, memory) = conveyor_sdk::LogHandle::memory();
/// log.log("a").await;
/// let copy = memory.clone(); // clones see the same lines
/// log.log("b").await;
/// assert_eq!(copy.lines(), ["a", "b"]);
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    lines: Arc<StdMutex<Vec<String>>>,
}

impl MemoryLog {
    /// A copy of every line written so far, in order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (log, memory) = conveyor_sdk::LogHandle::memory();
    /// assert!(memory.lines().is_empty());
    /// log.log("first\nsecond").await;
    /// assert_eq!(memory.lines(), ["first", "second"]);
    /// # }
    /// ```
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl LogSink for MemoryLog {
    async fn write_line(&self, line: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line.to_owned());
        }
    }

    async fn write_lines(&self, batch: &[&str]) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.extend(batch.iter().map(|line| (*line).to_owned()));
        }
    }

    async fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }
}

struct WriterSink<W> {
    writer: Mutex<W>,
    error: StdMutex<Option<io::Error>>,
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin + 'static> LogSink for WriterSink<W> {
    async fn write_line(&self, line: &str) {
        self.write_lines(&[line]).await;
    }

    async fn write_lines(&self, lines: &[&str]) {
        let mut writer = self.writer.lock().await;
        let mut bytes = Vec::with_capacity(lines.iter().map(|line| line.len() + 1).sum());
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        if let Err(error) = writer.write_all(&bytes).await {
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert(error);
            }
        }
    }

    async fn flush(&self) -> Result<(), LogError> {
        self.writer.lock().await.flush().await.map_err(LogError::Io)?;
        match self.error.lock().ok().and_then(|mut e| e.take()) {
            Some(error) => Err(LogError::Io(error)),
            None => Ok(()),
        }
    }
}

type LineFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The [`AsyncWrite`] side of a [`LogHandle`], from [`LogHandle::writer`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::io::Write as _;
/// use tokio::io::AsyncWriteExt;
///
/// let (log, lines) = conveyor_sdk::LogHandle::memory();
/// let mut writer: conveyor_sdk::log::LogWriter = log.writer();
/// let mut text = Vec::new();
/// writeln!(text, "exit code {}", 0)?;
/// writer.write_all(&text).await?;
/// writer.flush().await?;
/// assert_eq!(lines.lines(), ["exit code 0"]);
/// # Ok(()) }
/// ```
pub struct LogWriter {
    log: LogHandle,
    splitter: LineSplitter,
    queue: VecDeque<String>,
    in_flight: Option<LineFuture>,
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter").field("queued", &self.queue.len()).finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Sends the queued lines, all at once ([`LogSink::write_lines`]); ready when all
    /// are written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(fut) = self.in_flight.as_mut() {
                ready!(fut.as_mut().poll(cx));
                self.in_flight = None;
            }
            if self.queue.is_empty() {
                return Poll::Ready(());
            }
            let lines: Vec<String> = self.queue.drain(..).collect();
            let sink = self.log.sink.clone();
            self.in_flight = Some(Box::pin(async move {
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                sink.write_lines(&lines).await;
            }));
        }
    }
}

impl AsyncWrite for LogWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Accept new bytes only once earlier lines are out: that is the backpressure.
        ready!(self.poll_drain(cx));
        let lines = self.splitter.push(buf);
        let masks = &self.log.masks;
        if masks.any() {
            let masked: Vec<String> = lines.into_iter().map(|line| masks.apply_owned(line)).collect();
            self.queue.extend(masked);
        } else {
            self.queue.extend(lines);
        }
        let _ = self.poll_drain(cx);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx));
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(last) = self.splitter.finish() {
            let last = self.log.masks.apply_owned(last);
            self.queue.push_back(last);
        }
        ready!(self.poll_drain(cx));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writer_turns_bytes_into_lines_and_flushes_the_last_on_shutdown() {
        let (log, memory) = LogHandle::memory();
        let mut w = log.writer();
        w.write_all(b"first\r\nsec").await.unwrap();
        w.write_all(b"ond\n\n").await.unwrap();
        w.write_all(b"partial").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(memory.lines(), ["first", "second", ""]);
        w.shutdown().await.unwrap();
        assert_eq!(memory.lines(), ["first", "second", "", "partial"]);
    }

    /// Keeps each call's lines apart, to show how lines reach a sink.
    #[derive(Clone, Default)]
    struct Calls(Arc<StdMutex<Vec<Vec<String>>>>);

    #[async_trait]
    impl LogSink for Calls {
        async fn write_line(&self, line: &str) {
            self.write_lines(&[line]).await;
        }

        async fn write_lines(&self, lines: &[&str]) {
            let call = lines.iter().map(|line| (*line).to_owned()).collect();
            self.0.lock().unwrap().push(call);
        }

        async fn flush(&self) -> Result<(), LogError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn many_lines_reach_the_sink_in_one_call_masked_split_and_in_order() {
        let calls = Calls::default();
        let log = LogHandle::new(calls.clone());
        log.log_lines(&["one", "two\r", "", "three"]).await;
        log.log("four\nfive").await;
        log.mask("s3cr3t");
        log.log_lines(&["six s3cr3t\nseven", "eight"]).await;
        let mut out = log.writer();
        out.write_all(b"nine\nten s3cr3t\neleven").await.unwrap();
        out.shutdown().await.unwrap();
        let calls = calls.0.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                vec!["one", "two", "", "three"],
                vec!["four", "five"],
                vec!["six ***", "seven", "eight"],
                vec!["nine", "ten ***"],
                vec!["eleven"],
            ]
        );
    }

    #[tokio::test]
    async fn a_sink_without_batches_gets_every_line_of_one_in_order() {
        let (log, memory) = LogHandle::memory();
        struct OneByOne(MemoryLog);
        #[async_trait]
        impl LogSink for OneByOne {
            async fn write_line(&self, line: &str) {
                self.0.write_line(line).await;
            }
            async fn flush(&self) -> Result<(), LogError> {
                Ok(())
            }
        }
        let one_by_one = LogHandle::new(OneByOne(memory.clone()));
        one_by_one.log_lines(&["a", "b\nc"]).await;
        log.log_lines(&["d"]).await;
        assert_eq!(memory.lines(), ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn clones_write_to_the_same_log() {
        let (log, memory) = LogHandle::memory();
        let other = log.clone();
        tokio::spawn(async move { other.log("from a task").await }).await.unwrap();
        log.log("from here").await;
        assert_eq!(memory.lines(), ["from a task", "from here"]);
    }

    #[tokio::test]
    async fn a_secret_is_masked_on_every_destination_and_in_pieces() {
        let (log, memory) = LogHandle::memory();
        log.mask("hunter2");
        log.log("plain hunter2").await;
        let mut w = log.clone().writer();
        w.write_all(b"split hun").await.unwrap();
        w.write_all(b"ter2 here\nlast:hunter").await.unwrap();
        w.write_all(b"2").await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(memory.lines(), ["plain ***", "split *** here", "last:***"]);

        let (client, mut server) = tokio::io::duplex(1024);
        let written = LogHandle::to_writer(client);
        written.mask("hunter2");
        written.log("a hunter2\nb").await;
        written.flush().await.unwrap();
        drop(written);
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut server, &mut out).await.unwrap();
        assert_eq!(out, "a ***\nb\n");
    }

    #[tokio::test]
    async fn writer_sink_appends_newlines() {
        let (client, mut server) = tokio::io::duplex(1024);
        let log = LogHandle::to_writer(client);
        log.log("a").await;
        log.log("b\r").await;
        log.flush().await.unwrap();
        drop(log);
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut server, &mut out).await.unwrap();
        assert_eq!(out, "a\nb\n");
    }
}
