//! The tar streams of a cache entry: the engine's tar of each path, whose entries are
//! named from the path's last component, re-rooted at the workspace's root and joined
//! into one tar, so that the entry is unpacked in one go at the root; and the SHA-256
//! of the one file in a tar, for a key's checksum.
//!
//! The `tar` crate reads and writes them on a blocking thread, between bridges to the
//! async streams: it handles the long names (PAX and GNU) the engine writes.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::Stream;
use ring::digest::{Context, SHA256};
use tokio_util::io::{StreamReader, SyncIoBridge};

/// How many bytes the bridges between the threads buffer.
const BUFFER: usize = 256 * 1024;

/// A tar stream of the engine, read in a blocking task.
type Source =
    SyncIoBridge<StreamReader<std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>, Bytes>>;

/// The bridge to read `tar` from a blocking task; made in the runtime.
fn source(tar: impl Stream<Item = io::Result<Bytes>> + Send + 'static) -> Source {
    SyncIoBridge::new(StreamReader::new(Box::pin(tar) as std::pin::Pin<Box<dyn Stream<Item = _> + Send>>))
}

/// The SHA-256, in hex, of the one regular file in `tar`.
pub(crate) async fn file_sha256(
    tar: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
) -> io::Result<String> {
    let reader = source(tar);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut archive = ::tar::Archive::new(BufReader::with_capacity(BUFFER, reader));
        let mut entries = archive.entries()?;
        let mut entry = entries.next().ok_or_else(|| io::Error::other("the engine sent an empty tar"))??;
        if entry.header().entry_type() != ::tar::EntryType::Regular {
            return Err(io::Error::other("it is not a regular file"));
        }
        let mut hasher = Context::new(&SHA256);
        io::copy(&mut entry, &mut HashWriter(&mut hasher))?;
        Ok(hex(hasher.finish().as_ref()))
    });
    hashing.await.map_err(io::Error::other)?
}

/// `bytes` in lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct HashWriter<'a>(&'a mut Context);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One path's tar from the engine and the workspace directory it is in (`""`: the root).
pub(crate) struct PathTar {
    /// The directory its entries are re-rooted at.
    dir: String,
    /// Its tar.
    tar: Source,
}

impl PathTar {
    /// The tar of a path in `dir`; made in the runtime, read in a blocking task.
    pub(crate) fn new(dir: &str, tar: impl Stream<Item = io::Result<Bytes>> + Send + 'static) -> Self {
        Self { dir: dir.to_owned(), tar: source(tar) }
    }
}

/// Writes to `out` one tar of every entry of `paths`, each re-rooted at its directory,
/// and finishes it; returns how many entries it has. Blocking: run it in a blocking task.
pub(crate) fn join(paths: Vec<PathTar>, out: impl Write) -> io::Result<u64> {
    let mut builder = ::tar::Builder::new(BufWriter::with_capacity(BUFFER, out));
    let mut count = 0;
    for PathTar { dir, tar } in paths {
        let mut archive = ::tar::Archive::new(BufReader::with_capacity(BUFFER, tar));
        for entry in archive.entries()? {
            copy_entry(&mut builder, &dir, &mut entry?)?;
            count += 1;
        }
    }
    builder.finish()?;
    builder.into_inner()?.flush()?;
    Ok(count)
}

/// Appends `entry` to `builder`, its name (and a hard link's target, a name in the same
/// tar) under `dir`; its mode, owner, times and extended attributes kept.
fn copy_entry<W: Write, R: Read>(
    builder: &mut ::tar::Builder<W>,
    dir: &str,
    entry: &mut ::tar::Entry<'_, R>,
) -> io::Result<()> {
    let path = rerooted(dir, &entry.path_bytes())?;
    let link = entry.link_name_bytes().map(|link| link.into_owned());
    let mut extensions = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for extension in pax {
            let extension = extension?;
            if !matches!(extension.key_bytes(), b"path" | b"linkpath" | b"size") {
                extensions.push((extension.key_bytes().to_vec(), extension.value_bytes().to_vec()));
            }
        }
    }
    let old = entry.header();
    let kind = old.entry_type();
    let mut header = ::tar::Header::new_gnu();
    header.set_entry_type(kind);
    // A field a writer left blank reads as zero.
    header.set_mode(old.mode().unwrap_or(0o644));
    header.set_uid(old.uid().unwrap_or(0));
    header.set_gid(old.gid().unwrap_or(0));
    header.set_mtime(old.mtime().unwrap_or(0));
    if let Ok(Some(name)) = old.username() {
        let _ = header.set_username(name);
    }
    if let Ok(Some(name)) = old.groupname() {
        let _ = header.set_groupname(name);
    }
    if let (Ok(Some(major)), Ok(Some(minor))) = (old.device_major(), old.device_minor()) {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    let link_kind = matches!(kind, ::tar::EntryType::Link | ::tar::EntryType::Symlink);
    header.set_size(if link_kind { 0 } else { entry.size() });
    if !extensions.is_empty() {
        append_pax(builder, &extensions)?;
    }
    match (kind, link) {
        (::tar::EntryType::Link, Some(target)) => {
            builder.append_link(&mut header, &path, rerooted(dir, &target)?)
        }
        (::tar::EntryType::Symlink, Some(target)) => {
            builder.append_link(&mut header, &path, bytes_path(&target)?)
        }
        _ => builder.append_data(&mut header, &path, entry),
    }
}

/// Appends a PAX extended header of `records` (`key`, `value`) for the next entry.
fn append_pax<W: Write>(builder: &mut ::tar::Builder<W>, records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let mut data = Vec::new();
    for (key, value) in records {
        // "<length> <key>=<value>\n", the length counting itself.
        let rest = key.len() + value.len() + 3;
        let mut length = rest + 1;
        while length != rest + length.to_string().len() {
            length = rest + length.to_string().len();
        }
        data.extend_from_slice(length.to_string().as_bytes());
        data.push(b' ');
        data.extend_from_slice(key);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = ::tar::Header::new_ustar();
    header.set_entry_type(::tar::EntryType::XHeader);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, "PaxHeader", data.as_slice())
}

/// `name`, a name in an engine's tar, under the workspace directory `dir`.
fn rerooted(dir: &str, name: &[u8]) -> io::Result<PathBuf> {
    let name = bytes_path(name)?;
    Ok(if dir.is_empty() { name } else { PathBuf::from(dir).join(name) })
}

/// A path from the bytes of a tar.
fn bytes_path(bytes: &[u8]) -> io::Result<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes).map(PathBuf::from).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    /// A tar as the engine writes one of `name`: a directory with a file, a long name,
    /// a hard link to the file and a symbolic link out of it.
    fn engine_tar(name: &str) -> Vec<u8> {
        let mut builder = ::tar::Builder::new(Vec::new());
        let mut dir = ::tar::Header::new_ustar();
        dir.set_entry_type(::tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        builder.append_data(&mut dir, format!("{name}/"), io::empty()).unwrap();
        let mut file = ::tar::Header::new_ustar();
        file.set_mode(0o640);
        file.set_uid(1000);
        file.set_mtime(1_700_000_000);
        file.set_size(5);
        builder.append_data(&mut file, format!("{name}/a.txt"), &b"hello"[..]).unwrap();
        let long = format!("{name}/{}", "x".repeat(150));
        let mut file = ::tar::Header::new_gnu();
        file.set_mode(0o644);
        file.set_size(0);
        builder.append_data(&mut file, &long, io::empty()).unwrap();
        let mut hard = ::tar::Header::new_ustar();
        hard.set_entry_type(::tar::EntryType::Link);
        hard.set_size(0);
        builder.append_link(&mut hard, format!("{name}/b.txt"), format!("{name}/a.txt")).unwrap();
        let mut soft = ::tar::Header::new_ustar();
        soft.set_entry_type(::tar::EntryType::Symlink);
        soft.set_size(0);
        builder.append_link(&mut soft, format!("{name}/etc"), "../../etc").unwrap();
        builder.into_inner().unwrap()
    }

    fn chunked(bytes: Vec<u8>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let chunks: Vec<io::Result<Bytes>> =
            bytes.chunks(700).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        stream::iter(chunks)
    }

    #[tokio::test]
    async fn the_tars_of_paths_are_joined_at_their_directories_keeping_what_entries_are() {
        let paths = vec![
            PathTar::new("target/debug", chunked(engine_tar("deps"))),
            PathTar::new("", chunked(engine_tar("node_modules"))),
        ];
        let joined = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let count = join(paths, &mut out).unwrap();
            (count, out)
        })
        .await
        .unwrap();
        assert_eq!(joined.0, 10);
        let mut archive = ::tar::Archive::new(joined.1.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let link = entry.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.push((path, header.entry_type(), link, header.mode().unwrap(), header.uid().unwrap(), data));
        }
        let long = format!("target/debug/deps/{}", "x".repeat(150));
        let file =
            seen.iter().find(|s| s.0 == "target/debug/deps/a.txt").expect("the file under its directory");
        assert_eq!(
            (file.3, file.4, file.5.as_slice()),
            (0o640, 1000, &b"hello"[..]),
            "mode, owner and content kept"
        );
        assert!(
            seen.iter().any(|s| s.0 == long),
            "the long name is whole: {:?}",
            seen.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        let hard = seen.iter().find(|s| s.0 == "target/debug/deps/b.txt").unwrap();
        assert_eq!(
            (hard.1, hard.2.as_deref()),
            (::tar::EntryType::Link, Some("target/debug/deps/a.txt")),
            "a hard link names the re-rooted file"
        );
        let soft = seen.iter().find(|s| s.0 == "node_modules/etc").unwrap();
        assert_eq!(
            (soft.1, soft.2.as_deref()),
            (::tar::EntryType::Symlink, Some("../../etc")),
            "a symbolic link's target is its own"
        );
        assert!(seen.iter().any(|s| s.0 == "node_modules/a.txt"));
    }

    #[tokio::test]
    async fn a_files_checksum_is_the_sha256_of_its_content() {
        let mut builder = ::tar::Builder::new(Vec::new());
        let mut header = ::tar::Header::new_ustar();
        header.set_size(0);
        builder.append_data(&mut header, "empty", io::empty()).unwrap();
        let empty = builder.into_inner().unwrap();
        assert_eq!(
            file_sha256(chunked(empty)).await.unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let tar = engine_tar("d");
        assert!(file_sha256(chunked(tar)).await.is_err(), "a directory has no checksum");
        let broken: Vec<io::Result<Bytes>> = vec![Err(io::Error::other("the engine went away"))];
        let error = file_sha256(stream::iter(broken)).await.unwrap_err();
        assert!(error.to_string().contains("the engine went away"), "{error}");
    }
}
