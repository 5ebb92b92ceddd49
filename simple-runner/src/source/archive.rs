//! The checkout as a tar stream, for the engine to unpack in the workspace: written
//! by a blocking task in chunks through a small channel, so that a repository of any
//! size never sits in the runner's memory, and stopped as soon as nobody reads it.
//!
//! Every entry keeps its mode and modification time (so that `git status` in a step
//! sees the files as git wrote them) and belongs to the run's user when the operator
//! gave a numeric `--user` (`uid[:gid]`), else to root: git in a step refuses a
//! repository owned by another user ("dubious ownership").

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The size of the chunks the stream carries.
const CHUNK: usize = 64 * 1024;

/// How many chunks may wait for the engine: the most the stream holds in memory.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Who the checkout's files belong to in the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Owner {
    uid: u64,
    gid: u64,
}

impl Owner {
    /// The owner for a run as `user` (the operator's `--user`): its ids when they are
    /// numbers (`1000`, `1000:1000`; the group 0 when it is not given), else root.
    pub(super) fn of(user: Option<&str>) -> Self {
        let Some(user) = user else { return Self::default() };
        let (uid, gid) = user.split_once(':').map_or((user, None), |(uid, gid)| (uid, Some(gid)));
        match (uid.parse(), gid.map(str::parse).transpose()) {
            (Ok(uid), Ok(gid)) => Self { uid, gid: gid.unwrap_or(0) },
            _ => Self::default(),
        }
    }
}

/// What went into the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Packed {
    /// The files, directories and links.
    pub(super) entries: u64,
    /// The bytes of the tar stream.
    pub(super) bytes: u64,
}

/// The tar stream of everything in `dir` (not `dir` itself), its entries named
/// relative to it and owned by `owner`; and the task writing it, which says what it
/// wrote, or why it failed (that error is also the stream's last item, which breaks
/// an upload off).
pub(super) fn stream(
    dir: PathBuf,
    owner: Owner,
) -> (impl Stream<Item = io::Result<Bytes>> + Send + 'static, JoinHandle<io::Result<Packed>>) {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let task = tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter { chunk: BytesMut::with_capacity(CHUNK), sender, written: 0 };
        let result = write_tar(&dir, owner, &mut writer);
        match result {
            Ok(entries) => Ok(Packed { entries, bytes: writer.written }),
            Err(error) => {
                let _ = writer.sender.blocking_send(Err(io::Error::new(error.kind(), error.to_string())));
                Err(error)
            }
        }
    });
    let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    (chunks, task)
}

/// Writes the tar of everything in `dir` into `writer`; how many entries.
fn write_tar(dir: &Path, owner: Owner, writer: &mut ChunkWriter) -> io::Result<u64> {
    let mut builder = tar::Builder::new(writer);
    let mut entries = 0;
    // A directory's entries in name order, then its subdirectories' the same way:
    // every directory comes before what is in it, and the same checkout makes the
    // same stream.
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut names: Vec<_> = fs::read_dir(dir.join(&relative))?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let mut subdirectories = Vec::new();
        for name in names {
            let path = relative.join(&name);
            let full = dir.join(&path);
            let meta = fs::symlink_metadata(&full)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_uid(owner.uid);
            header.set_gid(owner.gid);
            let kind = meta.file_type();
            if kind.is_dir() {
                header.set_size(0);
                builder.append_data(&mut header, &path, io::empty())?;
                subdirectories.push(path);
            } else if kind.is_symlink() {
                header.set_size(0);
                builder.append_link(&mut header, &path, fs::read_link(&full)?)?;
            } else if kind.is_file() {
                builder.append_data(&mut header, &path, File::open(&full)?)?;
            } else {
                // git writes nothing else; a socket or a fifo has no content to copy.
                continue;
            }
            entries += 1;
        }
        pending.extend(subdirectories.into_iter().rev());
    }
    builder.into_inner()?.flush()?;
    Ok(entries)
}

/// A writer that sends what it is given in chunks of [`CHUNK`] bytes, waiting while
/// the channel is full; it fails once nobody receives.
struct ChunkWriter {
    chunk: BytesMut,
    sender: mpsc::Sender<io::Result<Bytes>>,
    written: u64,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = self.chunk.split().freeze();
        self.written += chunk.len() as u64;
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the workspace stopped reading the checkout")
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let taken = bytes.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&bytes[..taken]);
        if self.chunk.len() == CHUNK {
            self.send()?;
            self.chunk.reserve(CHUNK);
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_numeric_user_owns_the_checkout_and_anyone_else_means_root() {
        assert_eq!(Owner::of(Some("1000")), Owner { uid: 1000, gid: 0 });
        assert_eq!(Owner::of(Some("1000:100")), Owner { uid: 1000, gid: 100 });
        for user in [None, Some("node"), Some("1000:staff"), Some("")] {
            assert_eq!(Owner::of(user), Owner::default(), "{user:?}");
        }
    }

    #[tokio::test]
    async fn the_stream_holds_every_file_directory_and_link_with_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(".git/objects")).unwrap();
        fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(root.join(&long)).unwrap();
        fs::write(root.join(&long).join("f".repeat(120)), vec![7u8; 3 * CHUNK + 5]).unwrap();
        std::os::unix::fs::symlink("run.sh", root.join("link")).unwrap();

        let (chunks, task) = stream(root.to_owned(), Owner { uid: 1000, gid: 100 });
        let chunks: Vec<Bytes> = chunks.try_collect().await.unwrap();
        let packed = task.await.unwrap().unwrap();
        assert!(chunks.iter().all(|chunk| chunk.len() <= CHUNK), "a chunk over {CHUNK} bytes");
        let bytes: Vec<u8> = chunks.concat();
        assert_eq!(packed.bytes, bytes.len() as u64);

        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (1000, 100));
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == "run.sh" {
                assert_eq!(header.mode().unwrap() & 0o777, 0o755);
            }
            if path == "link" {
                assert_eq!(entry.link_name().unwrap().unwrap().to_string_lossy(), "run.sh");
            }
            if path.ends_with(&"f".repeat(120)) {
                assert_eq!(header.size().unwrap(), 3 * CHUNK as u64 + 5);
            }
            seen.push(path);
        }
        let file = format!("{long}/{}", "f".repeat(120));
        let expected = [".git", long.as_str(), "link", "run.sh", ".git/HEAD", ".git/objects", file.as_str()];
        assert_eq!(seen, expected.map(|path| path.trim_end_matches('/').to_owned()));
        assert_eq!(packed.entries, expected.len() as u64);
    }

    #[tokio::test]
    async fn the_writer_stops_when_nobody_reads_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big"), vec![0u8; 64 * CHUNK]).unwrap();
        let (chunks, task) = stream(dir.path().to_owned(), Owner::default());
        drop(chunks);
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
    }

    #[tokio::test]
    async fn a_missing_directory_fails_the_stream_and_the_task() {
        let (chunks, task) = stream(PathBuf::from("does-not-exist/checkout"), Owner::default());
        let items: Vec<io::Result<Bytes>> = futures_util::StreamExt::collect(chunks).await;
        assert!(items.last().is_some_and(Result::is_err), "the stream did not end with the error");
        assert_eq!(task.await.unwrap().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
