//! The streams an artifact moves through: its content read under a limit, written out
//! as it arrives, and its digest as the object store gives it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ArtifactError;

/// A reader that ends (reads nothing more) once more than `limit` bytes came from
/// `inner`, and remembers that it did: the bytes past the limit are dropped.
pub(super) struct Limited<'a, R> {
    inner: &'a mut R,
    left: u64,
    over: bool,
}

impl<'a, R> Limited<'a, R> {
    pub(super) fn new(inner: &'a mut R, limit: u64) -> Self {
        Self { inner, left: limit, over: false }
    }

    /// Whether `inner` had more than the limit.
    pub(super) fn over(&self) -> bool {
        self.over
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.over {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut *self.inner).poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        if read > self.left {
            self.over = true;
            buf.set_filled(before);
        } else {
            self.left -= read;
        }
        Poll::Ready(Ok(()))
    }
}

/// What a fetched artifact must come to: as many chunks, bytes, and this SHA-256 (hex).
pub(super) struct Expected<'a> {
    pub(super) chunks: usize,
    pub(super) size: u64,
    pub(super) sha256: &'a str,
}

/// Writes the first `expected.chunks` chunks of `chunks` into `writer` as they come,
/// and flushes it: [`ArtifactError::Corrupt`] when they end early or do not come to
/// the size and SHA-256 expected, [`ArtifactError::Write`] when the writer fails.
pub(super) async fn copy_chunks<S, W>(
    chunks: S,
    expected: Expected<'_>,
    writer: &mut W,
) -> Result<(), ArtifactError>
where
    S: Stream<Item = Result<Bytes, ArtifactError>>,
    W: AsyncWrite + Unpin,
{
    let mut chunks = std::pin::pin!(chunks.take(expected.chunks));
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut count, mut size) = (0, 0u64);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        digest.update(&chunk);
        writer.write_all(&chunk).await.map_err(ArtifactError::Write)?;
        count += 1;
        size += chunk.len() as u64;
    }
    let sha256: String = digest.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let corrupt = |what: String| {
        Err(ArtifactError::Corrupt(std::io::Error::new(std::io::ErrorKind::InvalidData, what)))
    };
    if count < expected.chunks {
        return corrupt(format!("it ended after {count} of its {} chunks", expected.chunks));
    }
    if size != expected.size {
        return corrupt(format!("it has {size} bytes, not the {} kept", expected.size));
    }
    if sha256 != expected.sha256 {
        return corrupt(format!("its SHA-256 is {sha256}, not the {} kept", expected.sha256));
    }
    writer.flush().await.map_err(ArtifactError::Write)
}

/// The SHA-256 of an object store digest (`SHA-256=<base64url>`), in lowercase hex;
/// `None` when it is not one.
pub(super) fn sha256_hex(digest: &str) -> Option<String> {
    let encoded = digest.strip_prefix("SHA-256=")?.trim_end_matches('=');
    let mut bytes = Vec::with_capacity(32);
    let (mut bits, mut count) = (0u32, 0u32);
    for c in encoded.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    (bytes.len() == 32).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_of_the_object_store_reads_as_hex() {
        // The SHA-256 of nothing, as the object store writes it.
        let digest = "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            sha256_hex(digest).as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(sha256_hex("MD5=abc"), None);
        assert_eq!(sha256_hex("SHA-256=short"), None);
        assert_eq!(sha256_hex("SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuF!="), None);
    }

    #[tokio::test]
    async fn a_limited_reader_ends_past_its_limit_and_says_so() {
        use tokio::io::AsyncReadExt;
        let mut content: &[u8] = b"0123456789";
        let mut limited = Limited::new(&mut content, 10);
        let mut read = Vec::new();
        limited.read_to_end(&mut read).await.unwrap();
        assert_eq!((read.len(), limited.over()), (10, false), "exactly the limit is fine");

        let mut content: &[u8] = b"0123456789";
        let mut limited = Limited::new(&mut content, 9);
        let mut read = Vec::new();
        limited.read_to_end(&mut read).await.unwrap();
        assert!(limited.over());
        assert!(read.len() <= 9, "nothing past the limit is read through: {}", read.len());
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, ArtifactError>> {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    /// The SHA-256 of `hello world`.
    const HELLO_WORLD: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    #[tokio::test]
    async fn a_copy_writes_every_chunk_and_checks_what_they_come_to() {
        let expected = || Expected { chunks: 2, size: 11, sha256: HELLO_WORLD };
        let mut out = Vec::new();
        copy_chunks(chunks(&[b"hello ", b"world", b"not asked for"]), expected(), &mut out).await.unwrap();
        assert_eq!(out, b"hello world", "only as many chunks as the object has");

        let short = copy_chunks(chunks(&[b"hello "]), expected(), &mut Vec::new()).await;
        assert!(
            matches!(&short, Err(ArtifactError::Corrupt(e)) if e.to_string().contains("1 of its 2")),
            "{short:?}"
        );
        let other = copy_chunks(chunks(&[b"hello ", b"World"]), expected(), &mut Vec::new()).await;
        assert!(
            matches!(&other, Err(ArtifactError::Corrupt(e)) if e.to_string().contains("SHA-256")),
            "{other:?}"
        );
        let failed = futures_util::stream::iter([Err(ArtifactError::NoBucket("b".into()))]);
        let failed = copy_chunks(failed, expected(), &mut Vec::new()).await;
        assert!(matches!(failed, Err(ArtifactError::NoBucket(_))), "a failed chunk is the copy's error");
    }
}
