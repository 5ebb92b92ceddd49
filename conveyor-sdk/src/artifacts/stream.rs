//! The streams an artifact moves through: its content read under a limit, written out
//! as it arrives, and its digest as the object store gives it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ArtifactError;

/// How much of a fetched artifact is read before it is written.
const COPY_BUFFER: usize = 64 * 1024;

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

/// Copies `object` into `writer` and flushes it: an error reading is
/// [`ArtifactError::Corrupt`] when the store found the content not to be what was put,
/// else a store failure; an error writing is [`ArtifactError::Write`].
pub(super) async fn copy_verified<R, W>(object: &mut R, writer: &mut W) -> Result<u64, ArtifactError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0; COPY_BUFFER];
    let mut copied = 0;
    loop {
        let read = object.read(&mut buffer).await.map_err(|error| match error.kind() {
            std::io::ErrorKind::InvalidData => ArtifactError::Corrupt(error),
            _ => ArtifactError::store("cannot read the artifact from the object store".to_owned(), error),
        })?;
        if read == 0 {
            break;
        }
        writer.write_all(&buffer[..read]).await.map_err(ArtifactError::Write)?;
        copied += read as u64;
    }
    writer.flush().await.map_err(ArtifactError::Write)?;
    Ok(copied)
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

    #[tokio::test]
    async fn a_copy_writes_everything_and_tells_a_bad_digest_from_a_failed_read() {
        let mut out = Vec::new();
        let copied = copy_verified(&mut &b"hello"[..], &mut out).await.unwrap();
        assert_eq!((copied, out.as_slice()), (5, &b"hello"[..]));

        struct Failing(std::io::ErrorKind);
        impl AsyncRead for Failing {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(Err(std::io::Error::new(self.0, "wrong digest")))
            }
        }
        let corrupt = copy_verified(&mut Failing(std::io::ErrorKind::InvalidData), &mut Vec::new()).await;
        assert!(matches!(corrupt, Err(ArtifactError::Corrupt(_))), "{corrupt:?}");
        let lost = copy_verified(&mut Failing(std::io::ErrorKind::ConnectionReset), &mut Vec::new()).await;
        assert!(matches!(lost, Err(ArtifactError::Store { .. })), "{lost:?}");
    }
}
