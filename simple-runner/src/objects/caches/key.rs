//! A cache's key as the spec writes it: letters, digits and `._-`, with
//! `{{ checksum "FILE" }}` for the SHA-256 of a workspace file.

use futures_util::TryStreamExt;

use super::tar;
use crate::workspace::{PathError, Workspace, WorkspaceError, WorkspacePath};

/// The most characters a key may have once worked out.
pub(crate) const MAX_KEY: usize = 512;

/// A piece of a key's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part<'a> {
    /// Characters as they are.
    Text(&'a str),
    /// `{{ checksum "FILE" }}`: the SHA-256 of the file, in hex.
    Checksum(&'a str),
}

/// Why a key cannot be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// A character no key may have.
    #[error("{key:?} has {character:?}, which a key may not have (letters, digits and ._- only, and {{{{ checksum \"FILE\" }}}})")]
    Character {
        /// The key as written.
        key: String,
        /// The character.
        character: char,
    },
    /// A `{{` without its `}}`, or something other than `checksum "FILE"` between them.
    #[error("{key:?}: {template:?} is not {{{{ checksum \"FILE\" }}}}")]
    Template {
        /// The key as written.
        key: String,
        /// The template as written.
        template: String,
    },
    /// The key is empty.
    #[error("the key is empty")]
    Empty,
    /// The file of a checksum is not a path in the workspace.
    #[error("the file of {{{{ checksum {file:?} }}}}: {reason}")]
    File {
        /// The file as written.
        file: String,
        /// Why.
        reason: String,
    },
    /// The key is too long once worked out.
    #[error("the key has {0} characters once worked out: at most {MAX_KEY}")]
    TooLong(usize),
}

/// The pieces of `key`; an error when it has a character a key may not have or a
/// template other than `{{ checksum "FILE" }}`.
pub(crate) fn parse(key: &str) -> Result<Vec<Part<'_>>, KeyError> {
    let mut parts = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            parts.push(Part::Text(rest));
            break;
        };
        if open > 0 {
            parts.push(Part::Text(&rest[..open]));
        }
        let template_error =
            |template: &str| KeyError::Template { key: key.to_owned(), template: template.to_owned() };
        let Some(close) = rest[open..].find("}}") else { return Err(template_error(&rest[open..])) };
        let template = &rest[open..open + close + 2];
        parts.push(Part::Checksum(checksum_file(template).ok_or_else(|| template_error(template))?));
        rest = &rest[open + close + 2..];
    }
    for part in &parts {
        if let Part::Text(text) = part {
            if let Some(character) = text.chars().find(|c| !is_key_char(*c)) {
                return Err(KeyError::Character { key: key.to_owned(), character });
            }
        }
    }
    if parts.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(parts)
}

/// The file of `{{ checksum "FILE" }}` (spaces around the words as one likes).
fn checksum_file(template: &str) -> Option<&str> {
    let inner = template.strip_prefix("{{")?.strip_suffix("}}")?.trim_matches(' ');
    let quoted = inner.strip_prefix("checksum")?;
    let quoted = quoted.strip_prefix(' ')?.trim_start_matches(' ');
    let file = quoted.strip_prefix('"')?.strip_suffix('"')?;
    (!file.is_empty() && !file.contains('"')).then_some(file)
}

/// Whether a key may have `c`.
pub(crate) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Every way `key` is not one that can be worked out in a workspace at `root`, without
/// reading the workspace: its characters and templates, and the paths of its files.
pub(crate) fn check(key: &str, root: &str) -> Result<(), KeyError> {
    for part in parse(key)? {
        if let Part::Checksum(file) = part {
            let path = WorkspacePath::parse(root, file).map_err(|e| file_error(file, &e))?;
            if path.as_str().is_empty() {
                return Err(KeyError::File {
                    file: file.to_owned(),
                    reason: "the workspace itself is not a file".into(),
                });
            }
        }
    }
    Ok(())
}

/// `key` worked out in `workspace`: each `{{ checksum "FILE" }}` replaced by the
/// SHA-256 of the file, in hex.
pub(crate) async fn resolve(key: &str, workspace: &Workspace) -> Result<String, KeyError> {
    let mut resolved = String::new();
    for part in parse(key)? {
        match part {
            Part::Text(text) => resolved.push_str(text),
            Part::Checksum(file) => resolved.push_str(&checksum(workspace, file).await?),
        }
    }
    match resolved.len() {
        0 => Err(KeyError::Empty),
        n if n > MAX_KEY => Err(KeyError::TooLong(n)),
        _ => Ok(resolved),
    }
}

/// The SHA-256 of the workspace's file `file`, in hex: read through the engine, never
/// through a symbolic link.
async fn checksum(workspace: &Workspace, file: &str) -> Result<String, KeyError> {
    let fail = |reason: String| KeyError::File { file: file.to_owned(), reason };
    let path = WorkspacePath::parse(workspace.root(), file).map_err(|e| file_error(file, &e))?;
    match workspace.stat(&path).await {
        Ok(Some(stat)) if stat.directory => return Err(fail("it is a directory".into())),
        Ok(Some(_)) => {}
        Ok(None) => return Err(fail("it does not exist in the workspace".into())),
        Err(error @ WorkspaceError::Symlink(_)) => return Err(fail(error.to_string())),
        Err(error) => return Err(fail(conveyor_sdk::error_text(&error))),
    }
    let tar = workspace.get_tar(&path).map_err(|e| std::io::Error::other(conveyor_sdk::error_text(&e)));
    tar::file_sha256(tar).await.map_err(|e| fail(e.to_string()))
}

fn file_error(file: &str, error: &PathError) -> KeyError {
    KeyError::File { file: file.to_owned(), reason: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_text_and_checksums_of_files() {
        assert_eq!(parse("cargo-v1").unwrap(), [Part::Text("cargo-v1")]);
        assert_eq!(
            parse("cargo-{{ checksum \"Cargo.lock\" }}-x").unwrap(),
            [Part::Text("cargo-"), Part::Checksum("Cargo.lock"), Part::Text("-x")]
        );
        assert_eq!(
            parse("{{checksum \"a b/c\"}}").unwrap(),
            [Part::Checksum("a b/c")],
            "spaces are the file's own"
        );
        assert_eq!(parse("{{  checksum   \"f\"  }}").unwrap(), [Part::Checksum("f")]);
    }

    #[test]
    fn a_key_with_odd_characters_or_templates_is_refused_saying_which() {
        for (key, says) in [("a b", "' '"), ("a/b", "'/'"), ("ключ", "'к'"), ("a*", "'*'"), ("a\nb", "'\\n'")]
        {
            let error = parse(key).unwrap_err();
            assert!(matches!(error, KeyError::Character { .. }), "{key:?}: {error}");
            assert!(error.to_string().contains(says), "{key:?}: {error}");
        }
        for key in [
            "a-{{ checksum }}",
            "{{ hash \"f\" }}",
            "a-{{ checksum \"f\"",
            "{{ checksum f }}",
            "{{checksum\"f\"}}",
        ] {
            assert!(matches!(parse(key), Err(KeyError::Template { .. })), "{key:?}: {:?}", parse(key));
        }
        assert_eq!(parse(""), Err(KeyError::Empty));
    }

    #[test]
    fn a_checksum_of_a_file_outside_the_workspace_is_refused_before_anything_is_read() {
        assert!(check("k-{{ checksum \"Cargo.lock\" }}", "/workspace").is_ok());
        assert!(check("k-{{ checksum \"/workspace/Cargo.lock\" }}", "/workspace").is_ok());
        for key in
            ["k-{{ checksum \"../etc/passwd\" }}", "k-{{ checksum \"/etc/passwd\" }}", "{{ checksum \".\" }}"]
        {
            let error = check(key, "/workspace").unwrap_err();
            assert!(matches!(error, KeyError::File { .. }), "{key}: {error}");
        }
    }
}
