//! The run's workspace as the runner reaches it from outside the containers: files put
//! in and taken out as tar streams through the engine's archive endpoint, so that the
//! runner needs no mount of its own and works with a remote engine, and at paths
//! checked to stay inside the workspace ([`WorkspacePath`], `path.rs`).
//!
//! A run has a workspace when it is a pod with a workspace volume
//! ([`crate::pod::DEFAULT_WORKSPACE`]): a step in its own image, a source, caches or
//! artifacts. The runner reaches it through the pod's first container.

mod path;

use bollard::query_parameters::{
    ContainerArchiveInfoOptions, DownloadFromContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::engine::error::EngineError;
use crate::engine::{docker_error, Engine};

pub use path::{PathError, WorkspacePath};

/// The mode bits of a symbolic link in the engine's stat of a path (Go's
/// `os.ModeSymlink`).
const MODE_SYMLINK: u32 = 1 << 27;

/// The mode bits of a directory (Go's `os.ModeDir`).
const MODE_DIR: u32 = 1 << 31;

/// A run's workspace, reached through one container of its pod.
///
/// ```no_run
/// # async fn demo(workspace: simple_runner::workspace::Workspace) -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use simple_runner::workspace::WorkspacePath;
///
/// let path = WorkspacePath::parse(workspace.root(), "target/release/app")?;
/// if workspace.stat(&path).await?.is_some() {
///     let mut tar = Box::pin(workspace.get_tar(&path));
///     while let Some(chunk) = tar.next().await {
///         let _bytes = chunk?;
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Workspace {
    engine: Engine,
    container: String,
    root: String,
}

/// What is at a path of the workspace.
///
/// ```
/// let stat = simple_runner::workspace::PathStat { size: 12, directory: false };
/// assert!(!stat.directory);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathStat {
    /// Its size in bytes, as the engine reports it (a directory's is not its content's).
    pub size: u64,
    /// Whether it is a directory.
    pub directory: bool,
}

/// Why the workspace could not be read or written.
///
/// ```
/// use simple_runner::workspace::{WorkspaceError, WorkspacePath};
///
/// let error = WorkspaceError::Symlink(WorkspacePath::parse("/workspace", "out")?);
/// assert_eq!(error.to_string(), "out is a symbolic link: nothing is read through one");
/// # Ok::<(), simple_runner::workspace::PathError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// A path, or a directory on its way, is a symbolic link, which could point
    /// anywhere.
    #[error("{0} is a symbolic link: nothing is read through one")]
    Symlink(WorkspacePath),
    /// The engine failed.
    #[error("the workspace could not be reached")]
    Engine(#[source] EngineError),
}

impl Workspace {
    /// The workspace mounted at `root` in `container`, reached through `engine`.
    pub(crate) fn new(engine: Engine, container: String, root: String) -> Self {
        Self { engine, container, root }
    }

    /// Where it is mounted in every container of the pod (`/workspace` by default).
    ///
    /// ```no_run
    /// # fn demo(workspace: simple_runner::workspace::Workspace) {
    /// assert!(workspace.root().starts_with('/'));
    /// # }
    /// ```
    pub fn root(&self) -> &str {
        &self.root
    }

    /// What is at `path`, or `None` if nothing is; an error if it, or a directory on
    /// its way, is a symbolic link ([`WorkspaceError::Symlink`]): a link could lead out
    /// of the workspace.
    ///
    /// ```no_run
    /// # async fn demo(workspace: simple_runner::workspace::Workspace) -> Result<(), Box<dyn std::error::Error>> {
    /// let lock = simple_runner::workspace::WorkspacePath::parse(workspace.root(), "Cargo.lock")?;
    /// let present = workspace.stat(&lock).await?.is_some();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stat(&self, path: &WorkspacePath) -> Result<Option<PathStat>, WorkspaceError> {
        let mut last = None;
        for prefix in path.prefixes() {
            let options = ContainerArchiveInfoOptions { path: prefix.absolute(&self.root) };
            match self.engine.docker().get_container_archive_info(&self.container, Some(options)).await {
                Ok(stat) if stat.file_mode & MODE_SYMLINK != 0 => {
                    return Err(WorkspaceError::Symlink(prefix))
                }
                Ok(stat) => {
                    last = Some(PathStat {
                        size: u64::try_from(stat.size).unwrap_or(0),
                        directory: stat.file_mode & MODE_DIR != 0,
                    })
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    return Ok(None)
                }
                Err(error) => {
                    let action = format!("cannot read {prefix} in the workspace");
                    return Err(WorkspaceError::Engine(docker_error(action)(error)));
                }
            }
        }
        Ok(last.or(Some(PathStat { size: 0, directory: true })))
    }

    /// `path` as a tar stream, as the engine writes it: one entry named after its last
    /// component (`release/…` for `target/release`), and below it, for a directory,
    /// everything in it (symbolic links inside as links, never followed). Check the
    /// path first with [`stat`](Self::stat).
    ///
    /// ```no_run
    /// # async fn demo(workspace: simple_runner::workspace::Workspace) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::TryStreamExt;
    /// let dist = simple_runner::workspace::WorkspacePath::parse(workspace.root(), "dist")?;
    /// let bytes: usize = workspace.get_tar(&dist).map_ok(|chunk| chunk.len()).try_fold(0, |a, b| async move { Ok(a + b) }).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_tar(
        &self,
        path: &WorkspacePath,
    ) -> impl Stream<Item = Result<Bytes, EngineError>> + Send + 'static {
        let options = DownloadFromContainerOptions { path: path.absolute(&self.root) };
        let action = format!("cannot read {path} from the workspace");
        self.engine
            .docker()
            .download_from_container(&self.container, Some(options))
            .map(move |chunk| chunk.map_err(docker_error(action.clone())))
    }

    /// Unpacks the tar stream `tar` in the workspace's directory `dir` (created by the
    /// caller when missing: the engine refuses a directory that does not exist). An
    /// error of the stream breaks the upload off.
    ///
    /// ```no_run
    /// # async fn demo(workspace: simple_runner::workspace::Workspace, tar: Vec<u8>) -> Result<(), simple_runner::EngineError> {
    /// let stream = futures_util::stream::iter([Ok(bytes::Bytes::from(tar))]);
    /// workspace.put_tar(&simple_runner::workspace::WorkspacePath::root(), stream).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put_tar<S>(&self, dir: &WorkspacePath, tar: S) -> Result<(), EngineError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let options = UploadToContainerOptions { path: dir.absolute(&self.root), ..Default::default() };
        self.engine
            .docker()
            .upload_to_container(&self.container, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(docker_error(format!("cannot write into {dir} of the workspace")))
    }
}
