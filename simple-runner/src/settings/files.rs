//! What the operator decides for the files a run moves: the credentials of source
//! checkouts, and the limits of caches and artifacts in the object store.

use std::path::PathBuf;
use std::time::Duration;

/// The default of [`FileSettings::cache_max_size`]: 1 GiB.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 1 << 30;

/// The default of [`FileSettings::cache_ttl`]: 7 days.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The default of [`FileSettings::artifact_ttl`]: 7 days.
pub const DEFAULT_ARTIFACT_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The default of [`FileSettings::artifact_max_size`]: 1 GiB.
pub const DEFAULT_ARTIFACT_MAX_SIZE: u64 = 1 << 30;

/// The files a run moves: its source, its caches, its artifacts.
///
/// ```
/// use simple_runner::settings::files::{FileSettings, DEFAULT_CACHE_TTL};
///
/// let files = FileSettings { git_credentials: Some("/etc/conveyor/git-credentials".into()), ..FileSettings::default() };
/// assert_eq!(files.cache_ttl, DEFAULT_CACHE_TTL);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// A file of git credentials in git's credential-store format
    /// (`https://user:token@host` per line) for source checkouts (default: none, anonymous
    /// checkouts). A resource never gives credentials.
    pub git_credentials: Option<PathBuf>,
    /// The most bytes one cache entry may hold (default [`DEFAULT_CACHE_MAX_SIZE`]); a
    /// bigger one is not saved, with a warning.
    pub cache_max_size: u64,
    /// How long a cache entry is kept after it is saved (default
    /// [`DEFAULT_CACHE_TTL`]).
    pub cache_ttl: Duration,
    /// How long an artifact is kept after its run (default [`DEFAULT_ARTIFACT_TTL`]).
    pub artifact_ttl: Duration,
    /// The most bytes of artifacts one run may keep (default
    /// [`DEFAULT_ARTIFACT_MAX_SIZE`]); past it the run fails.
    pub artifact_max_size: u64,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            git_credentials: None,
            cache_max_size: DEFAULT_CACHE_MAX_SIZE,
            cache_ttl: DEFAULT_CACHE_TTL,
            artifact_ttl: DEFAULT_ARTIFACT_TTL,
            artifact_max_size: DEFAULT_ARTIFACT_MAX_SIZE,
        }
    }
}
