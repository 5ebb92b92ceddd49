//! The operator's git credentials: read from a file in git's credential-store format
//! for each checkout (so that a token rotated in it is used by the next run), handed
//! to git as a copy of the checkout's own, and kept out of every line the run logs.
//!
//! git's `store` helper rewrites its file after a successful authentication and
//! erases an entry after a failed one: given the operator's file, one run with a
//! wrong password would delete the entry for every later run. It only ever gets the
//! copy.

use std::path::Path;

use conveyor_sdk::LogHandle;

use super::SourceError;

/// What replaces a credential in a line.
const MASK: &str = "***";

/// The operator's credentials, as read for one checkout.
#[derive(Default)]
pub(super) struct Credentials {
    /// The file's content, for the checkout's copy; `None` when the operator gave none.
    store: Option<Vec<u8>>,
    /// The passwords in it, as written and decoded.
    passwords: Vec<String>,
}

impl Credentials {
    /// Reads `file`, when the operator gave one.
    pub(super) async fn read(file: Option<&Path>) -> Result<Self, SourceError> {
        let Some(file) = file else { return Ok(Self::default()) };
        match tokio::fs::read(file).await {
            Ok(store) => Ok(Self::parse(store)),
            Err(source) => {
                tracing::error!(file = %file.display(), error = %source, "the git credentials file cannot be read");
                Err(SourceError::Credentials(source))
            }
        }
    }

    /// The credentials of a file in git's credential-store format: one URL per line,
    /// `https://user:password@host[/path]`, its password percent-encoded.
    fn parse(store: Vec<u8>) -> Self {
        let text = String::from_utf8_lossy(&store);
        let mut passwords: Vec<String> = Vec::new();
        for line in text.lines() {
            let Some(password) = password_in(line.trim()) else { continue };
            for value in [percent_decoded(password), password.to_owned()] {
                if !value.is_empty() && !passwords.contains(&value) {
                    passwords.push(value);
                }
            }
        }
        Self { passwords, store: Some(store) }
    }

    /// The file's content for the checkout's own copy, if the operator gave one.
    pub(super) fn store(&self) -> Option<&[u8]> {
        self.store.as_deref()
    }

    /// Masks every password in `log`, before git runs: no line of it shows one.
    pub(super) fn mask_in(&self, log: &LogHandle) {
        for password in &self.passwords {
            log.mask(password);
        }
    }

    /// `line` as it may be shown: without the user and password of any URL in it, and
    /// with every password masked, for what does not go through the run's log (the
    /// reason of a failure).
    pub(super) fn redact(&self, line: &str) -> String {
        let mut line = without_userinfo(line);
        for password in &self.passwords {
            if line.contains(password.as_str()) {
                line = line.replace(password.as_str(), MASK);
            }
        }
        line
    }
}

/// The password of a credential-store line, as written (percent-encoded).
fn password_in(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password)
}

/// `text` with its `%XX` escapes decoded (an invalid escape is kept as it is).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes.get(i + 1..i + 3).and_then(|hex| std::str::from_utf8(hex).ok());
        match (bytes[i], escape.and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `line` with the `user:password@` (or `user@`) of every URL in it removed.
pub(super) fn without_userinfo(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => out.push_str(&authority[userinfo_end + 1..]),
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Credentials {
        Credentials::parse(text.as_bytes().to_vec())
    }

    #[test]
    fn the_passwords_of_a_store_file_are_read_as_written_and_decoded() {
        let credentials = parsed(
            "https://ci:tok%40en%3A1@git.example.com\n\n  http://bot:plain@127.0.0.1%3a8080/team  \n\
             not a url\nhttps://nopassword@git.example.com\nhttps://git.example.com\n",
        );
        assert_eq!(credentials.passwords, ["tok@en:1", "tok%40en%3A1", "plain"]);
        assert!(credentials.store().is_some_and(|store| store.starts_with(b"https://ci:")));
    }

    #[test]
    fn no_file_means_no_store_and_nothing_masked() {
        let credentials = Credentials::default();
        assert!(credentials.store().is_none());
        assert_eq!(credentials.redact("fatal: x"), "fatal: x");
    }

    #[test]
    fn a_url_loses_its_user_and_password_wherever_it_is_in_a_line() {
        for (line, shown) in [
            (
                "fatal: unable to access 'https://ci:s3cret@git.example.com/app.git/': 403",
                "fatal: unable to access 'https://git.example.com/app.git/': 403",
            ),
            ("Cloning from http://u@h:1/x and git://a:b@c/d", "Cloning from http://h:1/x and git://c/d"),
            ("https://p:w@host", "https://host"),
            ("no url here: a@b", "no url here: a@b"),
            ("https://host/path@v1", "https://host/path@v1"),
        ] {
            assert_eq!(without_userinfo(line), shown, "{line}");
        }
    }

    #[test]
    fn a_redacted_line_shows_no_password_even_outside_a_url() {
        let credentials = parsed("https://ci:hunter2x@git.example.com\n");
        assert_eq!(
            credentials.redact("remote: bad password hunter2x for https://ci:hunter2x@git.example.com/a"),
            "remote: bad password *** for https://git.example.com/a"
        );
    }

    #[tokio::test]
    async fn the_passwords_are_masked_in_the_runs_log() {
        let credentials = parsed("https://ci:hunter2x@git.example.com\n");
        let (log, lines) = LogHandle::memory();
        credentials.mask_in(&log);
        log.log("password hunter2x").await;
        assert_eq!(lines.lines(), ["password ***"]);
    }

    #[tokio::test]
    async fn an_unreadable_file_is_an_error_that_does_not_name_it() {
        let missing = Path::new("does-not-exist/git-credentials");
        let error = Credentials::read(Some(missing)).await.err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("the runner's git credentials file cannot be read"));
    }
}
