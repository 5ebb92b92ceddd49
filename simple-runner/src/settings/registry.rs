//! Registry credentials, read from a Docker `config.json` (`--docker-config`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

/// Why a Docker `config.json` could not be used.
///
/// ```
/// use simple_runner::settings::registry::{RegistryAuth, RegistryAuthError};
///
/// let error = RegistryAuth::from_json(r#"{"auths": {"r.example": {"auth": "not base64!"}}}"#).unwrap_err();
/// assert!(matches!(error, RegistryAuthError::BadAuth { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryAuthError {
    /// The file could not be read.
    #[error("cannot read the Docker config {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a Docker config.
    #[error("not a Docker config.json")]
    NotConfig(#[source] serde_json::Error),
    /// A registry's `auth` is not base64 of `user:password`.
    #[error("the auth of registry {registry} is not base64 of user:password")]
    BadAuth {
        /// The registry.
        registry: String,
    },
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Credentials by registry host (`ghcr.io`, `127.0.0.1:5000`, `docker.io`). Its
/// `Debug` shows the hosts only.
///
/// ```
/// use simple_runner::settings::registry::RegistryAuth;
///
/// let auth = RegistryAuth::from_json(r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwdw=="}}}"#)?;
/// let credentials = auth.for_image("alpine:3.20").unwrap();
/// assert_eq!(credentials.username.as_deref(), Some("user"));
/// assert!(auth.for_image("ghcr.io/owner/image:1").is_none());
/// # Ok::<(), simple_runner::settings::registry::RegistryAuthError>(())
/// ```
#[derive(Clone, Default)]
pub struct RegistryAuth {
    by_host: BTreeMap<String, DockerCredentials>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RegistryAuth").field(&self.by_host.keys().collect::<Vec<_>>()).finish()
    }
}

impl RegistryAuth {
    /// The `auths` of the Docker config at `path` (`~/.docker/config.json`):
    /// `auth` (base64 `user:password`), `username` and `password`, or
    /// `identitytoken`. Credential helpers (`credsStore`, `credHelpers`) are not read.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), simple_runner::settings::registry::RegistryAuthError> {
    /// let auth = simple_runner::settings::registry::RegistryAuth::from_file("/root/.docker/config.json".as_ref())?;
    /// # Ok(()) }
    /// ```
    pub fn from_file(path: &Path) -> Result<Self, RegistryAuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RegistryAuthError::Unreadable { path: path.to_owned(), source })?;
        Self::from_json(&text)
    }

    /// The `auths` of a Docker config's text.
    ///
    /// ```
    /// let auth = simple_runner::settings::registry::RegistryAuth::from_json(r#"{"auths": {}}"#)?;
    /// assert!(auth.for_image("alpine").is_none());
    /// # Ok::<(), simple_runner::settings::registry::RegistryAuthError>(())
    /// ```
    pub fn from_json(text: &str) -> Result<Self, RegistryAuthError> {
        let config: ConfigFile = serde_json::from_str(text).map_err(RegistryAuthError::NotConfig)?;
        let mut by_host = BTreeMap::new();
        for (key, entry) in config.auths {
            let host = host_of_key(&key);
            let (mut username, mut password) = (entry.username, entry.password);
            if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let bad = || RegistryAuthError::BadAuth { registry: host.clone() };
                let decoded =
                    base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
                let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
                let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
                (username, password) = (Some(user.to_owned()), Some(pass.to_owned()));
            }
            let credentials = DockerCredentials {
                username,
                password,
                identitytoken: entry.identitytoken,
                serveraddress: Some(host.clone()),
                ..Default::default()
            };
            by_host.insert(host, credentials);
        }
        Ok(Self { by_host })
    }

    /// The credentials for pulling `image`, if its registry has any.
    ///
    /// ```
    /// let auth = simple_runner::settings::registry::RegistryAuth::from_json(
    ///     r#"{"auths": {"127.0.0.1:5000": {"username": "ci", "password": "pw"}}}"#,
    /// )?;
    /// assert!(auth.for_image("127.0.0.1:5000/team/app:1").is_some());
    /// assert!(auth.for_image("127.0.0.1:5001/team/app:1").is_none());
    /// # Ok::<(), simple_runner::settings::registry::RegistryAuthError>(())
    /// ```
    pub fn for_image(&self, image: &str) -> Option<DockerCredentials> {
        self.by_host.get(registry_of(image)).cloned()
    }
}

/// The registry host of a config key: `https://index.docker.io/v1/` is `docker.io`.
fn host_of_key(key: &str) -> String {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        other => other.to_owned(),
    }
}

/// The registry host of an image reference, as the engine reads it.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            if host_of_key(first) == "docker.io" {
                "docker.io"
            } else {
                first
            }
        }
        _ => "docker.io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_matched_to_their_registry() {
        assert_eq!(registry_of("alpine"), "docker.io");
        assert_eq!(registry_of("library/alpine:3"), "docker.io");
        assert_eq!(registry_of("index.docker.io/library/alpine"), "docker.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/o/i"), "ghcr.io");
    }

    #[test]
    fn auth_is_decoded_into_user_and_password() {
        let auth =
            RegistryAuth::from_json(r#"{"auths": {"http://127.0.0.1:5000/v2/": {"auth": "Y2k6cDphc3M="}}}"#)
                .unwrap();
        let c = auth.for_image("127.0.0.1:5000/x").unwrap();
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("ci"), Some("p:ass")));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        assert!(!format!("{auth:?}").contains("p:ass"));
    }
}
