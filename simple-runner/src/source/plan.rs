//! The git commands that check a source out, run one after the other in the
//! checkout's directory (its work tree is `checkout/` in it).
//!
//! A branch, a tag or the default branch is cloned (`git clone --branch`, which
//! takes both); a commit id or a full ref name cannot be, so a repository is made
//! and that one revision fetched into it (servers of protocol v2, and those that
//! allow it in v0, such as every common forge, give a commit by its id). `depth`
//! applies to both, and to the submodules.

use crate::spec::Source;

/// The directory of the work tree, in the checkout's directory.
pub(super) const WORK_TREE: &str = "checkout";

/// What `ref` names, as far as the runner tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revision<'a> {
    /// The repository's default branch.
    Default,
    /// A branch or a tag.
    Name(&'a str),
    /// A full commit id or a full ref name (`refs/…`), fetched as it is.
    Exact(&'a str),
}

impl<'a> Revision<'a> {
    fn of(source: &'a Source) -> Self {
        match source.reference.as_deref() {
            None => Revision::Default,
            Some(reference) if is_commit_id(reference) || reference.starts_with("refs/") => {
                Revision::Exact(reference)
            }
            Some(name) => Revision::Name(name),
        }
    }
}

/// Whether `reference` is a full commit id: 40 hex digits (SHA-1) or 64 (SHA-256).
pub(super) fn is_commit_id(reference: &str) -> bool {
    matches!(reference.len(), 40 | 64) && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commands that check `source` out into [`WORK_TREE`], each its arguments after
/// `git`.
pub(super) fn commands(source: &Source) -> Vec<Vec<String>> {
    let depth = source.depth.map(|depth| format!("--depth={depth}"));
    let in_tree = |args: &[&str]| -> Vec<String> {
        ["-C", WORK_TREE].iter().chain(args).map(|arg| (*arg).to_owned()).collect()
    };
    let mut commands = match Revision::of(source) {
        revision @ (Revision::Default | Revision::Name(_)) => {
            let mut clone = vec!["clone".to_owned(), "--quiet".to_owned()];
            clone.extend(depth.clone());
            if let Revision::Name(name) = revision {
                clone.push(format!("--branch={name}"));
            }
            clone.extend(["--".to_owned(), source.git.clone(), WORK_TREE.to_owned()]);
            vec![clone]
        }
        Revision::Exact(revision) => {
            let mut fetch = in_tree(&["fetch", "--quiet", "--no-tags"]);
            fetch.extend(depth.clone());
            fetch.extend(["origin".to_owned(), revision.to_owned()]);
            vec![
                vec!["init".to_owned(), "--quiet".to_owned(), "--".to_owned(), WORK_TREE.to_owned()],
                in_tree(&["remote", "add", "origin", source.git.as_str()]),
                fetch,
                in_tree(&["checkout", "--quiet", "--detach", "FETCH_HEAD"]),
            ]
        }
    };
    if source.submodules {
        let mut update = in_tree(&["submodule", "update", "--init", "--recursive", "--quiet"]);
        update.extend(depth);
        commands.push(update);
    }
    commands
}

/// The command whose output is the commit checked out, in full.
pub(super) fn commit_command() -> Vec<String> {
    ["-C", WORK_TREE, "rev-parse", "--verify", "HEAD^{commit}"].map(str::to_owned).to_vec()
}

/// The revision of `source` in words, for the run's log: `at v1.2.0 (depth 1, with
/// submodules)`.
pub(super) fn described(source: &Source) -> String {
    let mut text = match &source.reference {
        Some(reference) => format!("at {reference}"),
        None => "at its default branch".to_owned(),
    };
    let mut details = Vec::new();
    if let Some(depth) = source.depth {
        details.push(format!("depth {depth}"));
    }
    if source.submodules {
        details.push("with submodules".to_owned());
    }
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(reference: Option<&str>, depth: Option<u32>, submodules: bool) -> Source {
        Source {
            git: "https://git.example.com/app.git".into(),
            reference: reference.map(str::to_owned),
            depth,
            submodules,
        }
    }

    fn joined(commands: Vec<Vec<String>>) -> Vec<String> {
        commands.into_iter().map(|args| args.join(" ")).collect()
    }

    #[test]
    fn a_branch_a_tag_or_the_default_branch_is_cloned() {
        assert_eq!(
            joined(commands(&source(None, None, false))),
            ["clone --quiet -- https://git.example.com/app.git checkout"]
        );
        assert_eq!(
            joined(commands(&source(Some("v1.2.0"), Some(1), false))),
            ["clone --quiet --depth=1 --branch=v1.2.0 -- https://git.example.com/app.git checkout"]
        );
    }

    #[test]
    fn a_commit_id_or_a_full_ref_is_fetched_by_itself_and_checked_out_detached() {
        let commit = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        for revision in [commit, "refs/pull/7/head"] {
            assert_eq!(
                joined(commands(&source(Some(revision), Some(3), false))),
                [
                    "init --quiet -- checkout".to_owned(),
                    "-C checkout remote add origin https://git.example.com/app.git".to_owned(),
                    format!("-C checkout fetch --quiet --no-tags --depth=3 origin {revision}"),
                    "-C checkout checkout --quiet --detach FETCH_HEAD".to_owned(),
                ]
            );
        }
    }

    #[test]
    fn submodules_are_updated_recursively_at_the_same_depth() {
        let commands = joined(commands(&source(Some("main"), Some(1), true)));
        assert_eq!(
            commands.last().map(String::as_str),
            Some("-C checkout submodule update --init --recursive --quiet --depth=1")
        );
        let commands = joined(super::commands(&source(None, None, true)));
        assert_eq!(
            commands.last().map(String::as_str),
            Some("-C checkout submodule update --init --recursive --quiet")
        );
    }

    #[test]
    fn only_full_hex_ids_are_commit_ids() {
        assert!(is_commit_id("4b825dc642cb6eb9a060e54bf8d69288fbee4904"));
        assert!(is_commit_id(&"a".repeat(64)));
        for not in ["4b825dc", "main", &"g".repeat(40), &"a".repeat(41)] {
            assert!(!is_commit_id(not), "{not}");
        }
    }

    #[test]
    fn the_revision_is_described_with_its_depth_and_submodules() {
        assert_eq!(described(&source(None, None, false)), "at its default branch");
        assert_eq!(described(&source(Some("v1"), Some(1), true)), "at v1 (depth 1, with submodules)");
    }
}
