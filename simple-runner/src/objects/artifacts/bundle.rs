//! An artifact's content: one tar of its paths, made while it is read.
//!
//! The engine gives each path of the workspace as a tar whose entries are named from
//! the path's last component (`release/app` for `target/release`). The artifact's tar
//! holds them all, each entry named from the workspace's root instead
//! (`target/release/app`), so that `tar x` in a directory lays the paths out as they
//! were in the workspace. The tar is made on a blocking thread, reading the engine's
//! tars and writing into a pipe of [`PIPE`] bytes that the object store reads: nothing
//! waits in memory but the pipe and a chunk on each side.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::TryStreamExt;
use tar::EntryType;
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::workspace::{Workspace, WorkspacePath};

/// How many bytes of the tar may wait between the thread that makes it and the
/// object store that reads it.
const PIPE: usize = 256 * 1024;

/// How many bytes the thread gathers before it hands them to the pipe.
const WRITE_BUFFER: usize = 64 * 1024;

/// The tar of `paths` of `workspace` as it is made: the reader of it, and the thread
/// that makes it, which says, once the reader has ended, whether the tar is whole. A
/// reader dropped early stops the thread (its writes fail).
pub(super) fn tar_of(
    workspace: &Workspace,
    paths: Vec<WorkspacePath>,
) -> (DuplexStream, JoinHandle<io::Result<()>>) {
    let (reader, writer) = tokio::io::duplex(PIPE);
    let handle = tokio::runtime::Handle::current();
    let workspace = workspace.clone();
    let maker = tokio::task::spawn_blocking(move || {
        // The engine's streams are made on this thread, within the runtime.
        let _runtime = handle.enter();
        let out =
            BufWriter::with_capacity(WRITE_BUFFER, SyncIoBridge::new_with_handle(writer, handle.clone()));
        let mut builder = tar::Builder::new(out);
        for path in &paths {
            let stream = workspace.get_tar(path).map_err(io::Error::other);
            let source = SyncIoBridge::new_with_handle(StreamReader::new(Box::pin(stream)), handle.clone());
            reroot(source, path.as_str(), &mut builder)
                .map_err(|error| io::Error::new(error.kind(), format!("{path}: {error}")))?;
        }
        let mut bridge = builder.into_inner()?.into_inner().map_err(io::IntoInnerError::into_error)?;
        bridge.shutdown()
    });
    (reader, maker)
}

/// Appends to `out` every entry of `tar`, the engine's tar of workspace path `path`
/// (entries named from its last component), named from the workspace's root: the
/// first component of each name becomes `path` (dropped for the root itself, whose own
/// entry is left out). Hard links are renamed alike; symbolic links keep their
/// target as it is. A name that is not plain components is refused.
pub(super) fn reroot<R: Read, W: Write>(tar: R, path: &str, out: &mut tar::Builder<W>) -> io::Result<()> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            continue;
        }
        let Some(name) = rerooted(path, &entry.path()?)? else { continue };
        let mut header = entry.header().clone();
        header.set_size(entry.size());
        match kind {
            EntryType::Link => {
                let target =
                    entry.link_name()?.ok_or_else(|| invalid(&name, "a hard link without a target"))?;
                let target =
                    rerooted(path, &target)?.ok_or_else(|| invalid(&name, "a hard link to the root"))?;
                out.append_link(&mut header, &name, target)?;
            }
            EntryType::Symlink => {
                let target =
                    entry.link_name()?.ok_or_else(|| invalid(&name, "a symbolic link without a target"))?;
                out.append_link(&mut header, &name, target)?;
            }
            _ => out.append_data(&mut header, &name, &mut entry)?,
        }
    }
    Ok(())
}

/// `name`, an entry of the engine's tar of `path`, named from the workspace's root;
/// `None` for the root's own entry.
fn rerooted(path: &str, name: &Path) -> io::Result<Option<PathBuf>> {
    let mut rest = PathBuf::new();
    let mut components = name.components().filter(|c| !matches!(c, Component::CurDir));
    match components.next() {
        Some(Component::Normal(_)) => {}
        _ => return Err(invalid(name, "not named from the path")),
    }
    for component in components {
        match component {
            Component::Normal(part) => rest.push(part),
            _ => return Err(invalid(name, "a name that climbs or is absolute")),
        }
    }
    Ok(match (path.is_empty(), rest.as_os_str().is_empty()) {
        (true, true) => None,
        (true, false) => Some(rest),
        (false, true) => Some(PathBuf::from(path)),
        (false, false) => Some(Path::new(path).join(rest)),
    })
}

fn invalid(name: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the engine's tar has {what}: {}", name.display()))
}

/// A reader that ends (reads nothing more) once `cancel` is cancelled, and remembers
/// that it did: the object store then ends its put as for a whole content, which the
/// caller deletes again, rather than leaving chunks without an object.
pub(super) struct EndOnCancel<R> {
    inner: R,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl<R> EndOnCancel<R> {
    pub(super) fn new(inner: R, cancel: &CancellationToken) -> Self {
        Self { inner, cancelled: Box::pin(cancel.clone().cancelled_owned()), ended: false }
    }

    /// Whether it ended for the cancellation.
    pub(super) fn ended(&self) -> bool {
        self.ended
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for EndOnCancel<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ended || std::future::Future::poll(self.cancelled.as_mut(), cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar as the engine writes one of a file for `docker cp`: one entry, named
    /// after it.
    fn engine_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, name, content).unwrap();
        builder.into_inner().unwrap()
    }

    /// A tar as the engine writes one of a directory for `docker cp`: entries named
    /// from `top`, a hard link to the first file and a symbolic link out.
    fn engine_tar(top: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        builder.append_data(&mut dir, format!("{top}/"), io::empty()).unwrap();
        for (name, content) in files {
            let mut header = tar::Header::new_ustar();
            header.set_mode(0o644);
            header.set_size(content.len() as u64);
            builder.append_data(&mut header, format!("{top}/{name}"), *content).unwrap();
        }
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(EntryType::Link);
        link.set_size(0);
        builder.append_link(&mut link, format!("{top}/hard"), format!("{top}/{}", files[0].0)).unwrap();
        let mut symlink = tar::Header::new_ustar();
        symlink.set_entry_type(EntryType::Symlink);
        symlink.set_size(0);
        builder.append_link(&mut symlink, format!("{top}/soft"), "/etc/passwd").unwrap();
        builder.into_inner().unwrap()
    }

    fn entries(tar: &[u8]) -> Vec<(String, EntryType, String)> {
        let mut archive = tar::Archive::new(tar);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            found.push((name, entry.header().entry_type(), link.unwrap_or(content)));
        }
        found
    }

    #[test]
    fn each_paths_entries_are_named_from_the_workspaces_root_in_one_tar() {
        let long = format!("{}/deep.txt", "d".repeat(120));
        let mut builder = tar::Builder::new(Vec::new());
        reroot(&engine_tar("release", &[("app", b"binary")])[..], "target/release", &mut builder).unwrap();
        reroot(&engine_file_tar("notes.txt", b"")[..], "docs/notes.txt", &mut builder).unwrap();
        reroot(&engine_tar("sub", &[(long.as_str(), b"far down")])[..], "a/sub", &mut builder).unwrap();
        let tar = builder.into_inner().unwrap();
        let found = entries(&tar);
        let names: Vec<&str> = found.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "target/release",
                "target/release/app",
                "target/release/hard",
                "target/release/soft",
                "docs/notes.txt",
                "a/sub",
                &format!("a/sub/{long}"),
                "a/sub/hard",
                "a/sub/soft"
            ][..]
        );
        assert_eq!(found[1].2, "binary");
        assert_eq!((found[4].1, found[4].2.as_str()), (EntryType::Regular, ""), "an empty file is kept");
        assert_eq!(found[6].2, "far down", "a name past 100 bytes keeps its content");
        assert_eq!(
            (found[2].1, found[2].2.as_str()),
            (EntryType::Link, "target/release/app"),
            "a hard link follows"
        );
        assert_eq!(
            (found[3].1, found[3].2.as_str()),
            (EntryType::Symlink, "/etc/passwd"),
            "a symlink is as it was"
        );
    }

    #[test]
    fn the_roots_own_entry_is_left_out_and_its_content_named_as_is() {
        let mut builder = tar::Builder::new(Vec::new());
        reroot(&engine_tar("workspace", &[("Cargo.toml", b"[package]")])[..], "", &mut builder).unwrap();
        let found = entries(&builder.into_inner().unwrap());
        assert_eq!(found[0].0, "Cargo.toml");
        assert_eq!(found[1], ("hard".to_owned(), EntryType::Link, "Cargo.toml".to_owned()));
    }

    #[test]
    fn an_entry_that_climbs_is_refused() {
        let mut raw = tar::Header::new_old();
        raw.as_old_mut().name[..9].copy_from_slice(b"out/../..");
        raw.set_size(0);
        raw.set_cksum();
        let mut tar = raw.as_bytes().to_vec();
        tar.extend([0; 1024]);
        let mut builder = tar::Builder::new(Vec::new());
        let error = reroot(&tar[..], "out", &mut builder).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }

    #[tokio::test]
    async fn a_cancelled_read_ends_and_says_so() {
        use tokio::io::AsyncReadExt;
        let cancel = CancellationToken::new();
        let mut reader = EndOnCancel::new(&b"0123456789"[..], &cancel);
        let mut first = [0; 4];
        assert_eq!(reader.read(&mut first).await.unwrap(), 4);
        cancel.cancel();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty() && reader.ended());
    }
}
