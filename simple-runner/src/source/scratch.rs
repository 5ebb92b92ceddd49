//! The directory of one checkout on the runner's host: made private in the runner's
//! temporary directory, named after its run, and removed on every path, also when
//! the checkout is dropped half-way by a cancel.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SCRATCH_PREFIX as PREFIX;

/// How often a removal is tried: git's processes, killed on a cancel, may still be
/// finishing a file for a moment.
const REMOVAL_TRIES: u32 = 20;

/// How long to wait between two tries of a removal.
const REMOVAL_PAUSE: Duration = Duration::from_millis(10);

/// A checkout's directory: `home/` (git's `HOME`, with no configuration),
/// `git-credentials` (the copy of the operator's credentials) and `checkout/` (the
/// repository's work tree).
pub(super) struct Scratch {
    /// `None` once removed.
    dir: Option<PathBuf>,
}

impl Scratch {
    /// A new directory, readable by the runner's user only, in the runner's temporary
    /// directory (`$TMPDIR`, else `/tmp`), named `conveyor-source-<run id>-<random>`.
    pub(super) fn create(run_id: &str) -> io::Result<Self> {
        let run: String =
            run_id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).take(64).collect();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("{PREFIX}{run}-{}", &random[..12]));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let scratch = Self { dir: Some(dir) };
        std::fs::DirBuilder::new().mode(0o700).create(scratch.home())?;
        Ok(scratch)
    }

    /// Its path.
    pub(super) fn path(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new(""))
    }

    /// git's `HOME`: empty, so that git reads no user configuration.
    pub(super) fn home(&self) -> PathBuf {
        self.path().join("home")
    }

    /// Where the repository is checked out.
    pub(super) fn checkout(&self) -> PathBuf {
        self.path().join("checkout")
    }

    /// Writes `store`, readable by the runner's user only, as the checkout's own copy
    /// of the operator's credentials; its path.
    pub(super) fn write_credentials(&self, store: &[u8]) -> io::Result<PathBuf> {
        use std::io::Write;
        let path = self.path().join("git-credentials");
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(store)?;
        Ok(path)
    }

    /// Removes it, off the async threads (a big repository takes a while).
    pub(super) async fn remove(mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || remove_all(&dir)).await;
        }
    }
}

impl Drop for Scratch {
    /// Removes it when it was not removed already: the checkout was dropped half-way.
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            remove_all(&dir);
        }
    }
}

/// Removes `dir` and everything in it, trying again for a moment while it fails.
fn remove_all(dir: &Path) {
    for _ in 0..REMOVAL_TRIES {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(REMOVAL_PAUSE),
        }
    }
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), %error, "a checkout's temporary directory could not be removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_scratch_directory_is_private_named_after_its_run_and_removed() {
        let scratch = Scratch::create("run/../1 2").unwrap();
        let path = scratch.path().to_owned();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("conveyor-source-run12-"), "{name}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        let credentials = scratch.write_credentials(b"https://a:b@h\n").unwrap();
        assert_eq!(std::fs::metadata(credentials).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::create_dir_all(scratch.checkout().join("deep/er")).unwrap();
        scratch.remove().await;
        assert!(!path.exists(), "{} left behind", path.display());
    }

    #[test]
    fn a_dropped_scratch_directory_is_removed_too() {
        let scratch = Scratch::create("dropped").unwrap();
        let path = scratch.path().to_owned();
        std::fs::write(scratch.home().join("f"), b"x").unwrap();
        drop(scratch);
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
