//! A path a resource names inside the run's workspace, checked to stay inside it.

use std::fmt;

/// A path inside the workspace, relative to its root, normalized: no `.`, no `..`,
/// no empty component. The root itself is the empty path.
///
/// ```
/// use simple_runner::workspace::WorkspacePath;
///
/// let path = WorkspacePath::parse("/workspace", "./target//release/")?;
/// assert_eq!(path.as_str(), "target/release");
/// assert_eq!(path.absolute("/workspace"), "/workspace/target/release");
/// assert_eq!(WorkspacePath::parse("/workspace", "/workspace/out")?.as_str(), "out");
/// assert!(WorkspacePath::parse("/workspace", "../etc/passwd").is_err());
/// assert!(WorkspacePath::parse("/workspace", "/etc/passwd").is_err());
/// # Ok::<(), simple_runner::workspace::PathError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspacePath(String);

/// Why a path is not one inside the workspace.
///
/// ```
/// use simple_runner::workspace::{PathError, WorkspacePath};
///
/// let error = WorkspacePath::parse("/workspace", "a/../../b").unwrap_err();
/// assert_eq!(error, PathError::Climbs("a/../../b".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("the path is empty")]
    Empty,
    /// The path climbs out of the workspace with `..`.
    #[error("{0:?} climbs out of the workspace")]
    Climbs(String),
    /// The path is absolute and not inside the workspace.
    #[error("{path:?} is outside the workspace {root}")]
    Outside {
        /// The path.
        path: String,
        /// The workspace's root.
        root: String,
    },
    /// The path has a character no file name in a workspace may have here: a NUL or
    /// a line break.
    #[error("{0:?} has a NUL or a line break")]
    Character(String),
}

impl WorkspacePath {
    /// The root of the workspace itself.
    ///
    /// ```
    /// assert_eq!(simple_runner::workspace::WorkspacePath::root().as_str(), "");
    /// ```
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Reads `path`, relative to the workspace or absolute inside it (`root`), without
    /// climbing out of it by `..`. Symbolic links are not looked at here: see
    /// [`Workspace::stat`](super::Workspace::stat).
    ///
    /// ```
    /// let path = simple_runner::workspace::WorkspacePath::parse("/src", "dist/app.tar.gz")?;
    /// assert_eq!(path.as_str(), "dist/app.tar.gz");
    /// # Ok::<(), simple_runner::workspace::PathError>(())
    /// ```
    pub fn parse(root: &str, path: &str) -> Result<Self, PathError> {
        if path.trim().is_empty() {
            return Err(PathError::Empty);
        }
        if path.contains(['\0', '\n', '\r']) {
            return Err(PathError::Character(path.to_owned()));
        }
        let relative = match path.strip_prefix('/') {
            Some(_) => {
                let root = root.trim_end_matches('/');
                match path.strip_prefix(root) {
                    Some(rest) if root.is_empty() || rest.is_empty() || rest.starts_with('/') => rest,
                    _ => return Err(PathError::Outside { path: path.to_owned(), root: root.to_owned() }),
                }
            }
            None => path,
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(PathError::Climbs(path.to_owned())),
                part => parts.push(part),
            }
        }
        Ok(Self(parts.join("/")))
    }

    /// The path relative to the workspace's root (`""` for the root).
    ///
    /// ```
    /// assert_eq!(simple_runner::workspace::WorkspacePath::parse("/w", "a/b")?.as_str(), "a/b");
    /// # Ok::<(), simple_runner::workspace::PathError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path in the containers, under the workspace's `root`.
    ///
    /// ```
    /// let path = simple_runner::workspace::WorkspacePath::parse("/w", "a")?;
    /// assert_eq!(path.absolute("/w/"), "/w/a");
    /// # Ok::<(), simple_runner::workspace::PathError>(())
    /// ```
    pub fn absolute(&self, root: &str) -> String {
        let root = root.trim_end_matches('/');
        match self.0.is_empty() {
            true if root.is_empty() => "/".to_owned(),
            true => root.to_owned(),
            false => format!("{root}/{}", self.0),
        }
    }

    /// The paths from the first component down to this one: `a`, `a/b`, `a/b/c`.
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = WorkspacePath> + '_ {
        self.0
            .match_indices('/')
            .map(|(at, _)| WorkspacePath(self.0[..at].to_owned()))
            .chain((!self.0.is_empty()).then(|| self.clone()))
    }

    /// The directory it is in (the root's is the root) and its last component.
    pub(crate) fn split_last(&self) -> (WorkspacePath, &str) {
        match self.0.rsplit_once('/') {
            Some((dir, name)) => (WorkspacePath(dir.to_owned()), name),
            None => (WorkspacePath::root(), self.0.as_str()),
        }
    }
}

impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("."),
            false => f.write_str(&self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_climbs_out_or_is_elsewhere_is_refused() {
        let parse = |p: &str| WorkspacePath::parse("/workspace", p);
        assert!(matches!(parse(".."), Err(PathError::Climbs(_))));
        assert!(matches!(parse("a/../../etc"), Err(PathError::Climbs(_))));
        assert!(
            matches!(parse("a/.."), Err(PathError::Climbs(_))),
            "no `..` at all, even one that stays inside"
        );
        assert!(matches!(parse("/etc/passwd"), Err(PathError::Outside { .. })));
        assert!(matches!(parse("/workspacefoo/x"), Err(PathError::Outside { .. })), "a sibling of the root");
        assert!(matches!(parse(""), Err(PathError::Empty)));
        assert!(matches!(parse("  "), Err(PathError::Empty)));
        assert!(matches!(parse("a\nb"), Err(PathError::Character(_))));
        assert_eq!(parse("/workspace").map(|p| p.as_str().to_owned()), Ok(String::new()));
        assert_eq!(parse(".").map(|p| p.as_str().to_owned()), Ok(String::new()));
        assert_eq!(parse("a/./b/").map(|p| p.as_str().to_owned()), Ok("a/b".to_owned()));
        assert_eq!(parse("weird name ü").map(|p| p.as_str().to_owned()), Ok("weird name ü".to_owned()));
    }

    #[test]
    fn a_paths_prefixes_go_down_from_its_first_component() {
        let path = WorkspacePath::parse("/w", "a/b/c").unwrap();
        let prefixes: Vec<String> = path.prefixes().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(prefixes, ["a", "a/b", "a/b/c"]);
        assert_eq!(WorkspacePath::root().prefixes().count(), 0);
        let (dir, name) = path.split_last();
        assert_eq!((dir.as_str(), name), ("a/b", "c"));
        assert_eq!(path.absolute("/w"), "/w/a/b/c");
        assert_eq!(WorkspacePath::root().absolute("/w"), "/w");
    }
}
