//! The secrets the operator gives the runner: values a resource names and never
//! holds.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why secrets could not be read.
///
/// ```
/// use simple_runner::settings::secrets::{SecretError, Secrets};
///
/// let error = Secrets::default().with_env_var("CONVEYOR_SURELY_UNSET_SECRET").unwrap_err();
/// assert!(matches!(error, SecretError::NotInEnvironment(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// `--secret NAME` names a variable the runner's environment does not have.
    #[error("secret {0} is not set in the runner's environment")]
    NotInEnvironment(String),
    /// A secret's name is not a shell name.
    #[error("{0:?} is not a valid secret name (letters, digits and _, not first a digit)")]
    InvalidName(String),
    /// The secrets file could not be read.
    #[error("cannot read the secrets file {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the secrets file is not `NAME=VALUE`.
    #[error("line {line} of the secrets file {} is not NAME=VALUE", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
    },
}

/// Secret values by name. Its `Debug` shows the names only.
///
/// ```
/// use simple_runner::settings::secrets::Secrets;
///
/// let secrets = Secrets::default().with("DEPLOY_TOKEN", "s3cr3t")?;
/// assert_eq!(secrets.get("DEPLOY_TOKEN"), Some("s3cr3t"));
/// assert_eq!(format!("{secrets:?}"), "Secrets([\"DEPLOY_TOKEN\"])");
/// # Ok::<(), simple_runner::settings::secrets::SecretError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secrets").field(&self.0.keys().collect::<Vec<_>>()).finish()
    }
}

impl Secrets {
    /// These secrets and `name` with `value`.
    ///
    /// ```
    /// let secrets = simple_runner::settings::secrets::Secrets::default().with("A", "1")?;
    /// assert!(secrets.get("A").is_some());
    /// assert!(simple_runner::settings::secrets::Secrets::default().with("1A", "x").is_err());
    /// # Ok::<(), simple_runner::settings::secrets::SecretError>(())
    /// ```
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Result<Self, SecretError> {
        if !valid_name(name) {
            return Err(SecretError::InvalidName(name.to_owned()));
        }
        self.0.insert(name.to_owned(), value.into());
        Ok(self)
    }

    /// These secrets and `name` with the value of the runner's environment variable
    /// of that name (`--secret NAME`).
    ///
    /// ```
    /// # fn demo() -> Result<(), simple_runner::settings::secrets::SecretError> {
    /// let secrets = simple_runner::settings::secrets::Secrets::default().with_env_var("DEPLOY_TOKEN")?;
    /// # Ok(()) }
    /// ```
    pub fn with_env_var(self, name: &str) -> Result<Self, SecretError> {
        let value = std::env::var(name).map_err(|_| SecretError::NotInEnvironment(name.to_owned()))?;
        self.with(name, value)
    }

    /// These secrets and those of `path`, one `NAME=VALUE` per line
    /// (`--secrets-file`); blank lines and lines starting with `#` are skipped, the
    /// value is the rest of the line as it is.
    ///
    /// ```
    /// # fn demo() -> Result<(), simple_runner::settings::secrets::SecretError> {
    /// let secrets = simple_runner::settings::secrets::Secrets::default().with_file("/etc/conveyor/secrets".as_ref())?;
    /// # Ok(()) }
    /// ```
    pub fn with_file(mut self, path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SecretError::Unreadable { path: path.to_owned(), source })?;
        for (index, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let bad = || SecretError::BadLine { path: path.to_owned(), line: index + 1 };
            let (name, value) = line.split_once('=').ok_or_else(bad)?;
            self = self.with(name.trim(), value).map_err(|_| bad())?;
        }
        Ok(self)
    }

    /// The value of `name`.
    ///
    /// ```
    /// assert_eq!(simple_runner::settings::secrets::Secrets::default().get("NOPE"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Whether `name` is a shell variable name.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_secrets_file_holds_name_value_lines() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "# deploy\nTOKEN=a=b c \n\nOTHER=\r\n").unwrap();
        let secrets = Secrets::default().with_file(file.path()).unwrap();
        assert_eq!(secrets.get("TOKEN"), Some("a=b c "));
        assert_eq!(secrets.get("OTHER"), Some(""));
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number_and_not_its_text() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "A=1\njust-a-value-s3cr3t\n").unwrap();
        let error = Secrets::default().with_file(file.path()).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
    }
}
