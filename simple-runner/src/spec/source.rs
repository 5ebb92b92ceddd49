//! A run's source: a git repository checked out into its workspace before the first
//! step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The repository a run builds, checked out into its workspace by the runner before
/// the first step: the step containers need neither git nor a network.
///
/// ```
/// let source: simple_runner::spec::Source = serde_json::from_value(serde_json::json!({
///     "git": "https://git.example.com/team/app.git",
///     "ref": "v1.2.0",
///     "depth": 1
/// }))?;
/// assert_eq!(source.reference.as_deref(), Some("v1.2.0"));
/// assert!(!source.submodules);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    description = "A git repository checked out into the run's workspace by the runner before the first step."
)]
pub struct Source {
    /// The repository's URL (`https://…`, `http://…`, `git://…`, `ssh://…`). Its
    /// credentials come from the runner's operator, never from the resource: a URL
    /// with a user name or password in it is refused, and so is a host that starts
    /// with anything but a letter, a digit or `[`.
    #[schemars(length(min = 1), regex(pattern = r"^(https?|git|ssh)://[A-Za-z0-9\[][^@/\s]*(/\S*)?$"))]
    pub git: String,
    /// A branch, a tag, a full commit id (40 or 64 hex digits) or a full ref name
    /// (`refs/pull/7/head`); default: the repository's default branch. It cannot
    /// start with `-`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[^-\s~^:?*\[\\][^\s~^:?*\[\\]*$"))]
    pub reference: Option<String>,
    /// How many commits of history to fetch, of the repository and of its submodules
    /// (default: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub depth: Option<u32>,
    /// Whether the repository's submodules are checked out too, recursively (default
    /// `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub submodules: bool,
}

#[cfg(test)]
mod tests {
    use crate::spec::PipelineSpec;
    use conveyor_sdk::validate::{SpecError, SpecValidator};
    use conveyor_sdk::{Resource, ResourceDefinition, ResourceType};
    use serde_json::{json, Value};

    fn validator() -> SpecValidator {
        SpecValidator::new(&[ResourceType::owned(ResourceDefinition::from_type::<PipelineSpec>("pipeline"))])
            .unwrap()
    }

    /// A spec of one step whose `source` is `source`.
    fn with_source(source: Value) -> Value {
        json!({"image": "alpine:3.20", "source": source, "steps": [{"name": "s", "command": "c"}]})
    }

    /// The schema's refusal of a spec with `source`, as the SDK says it.
    fn refusal(source: Value) -> String {
        let r = Resource::new("r", "pipeline", with_source(source.clone()));
        match validator().validate(&r) {
            Err(error @ SpecError::Invalid(_)) => error.to_string(),
            other => panic!("the schema did not refuse {source}: {other:?}"),
        }
    }

    #[test]
    fn a_url_with_credentials_or_of_another_scheme_is_refused_at_its_path() {
        for git in [
            "https://user:pass@git.example.com/app.git",
            "https://token@git.example.com/app.git",
            "ssh://git@git.example.com/app.git",
            "git@git.example.com:team/app.git",
            "file:///srv/git/app.git",
            "/srv/git/app.git",
            "ext::sh -c touch% /tmp/x",
            "ftp://git.example.com/app.git",
            "ssh://-oProxyCommand=touch/app.git",
            "https://git.example.com/app .git",
            "",
        ] {
            let error = refusal(json!({"git": git}));
            assert!(error.starts_with("invalid spec: /spec/source/git: "), "{git:?}: {error}");
        }
    }

    #[test]
    fn a_ref_git_could_take_for_an_option_or_a_revision_expression_is_refused_at_its_path() {
        let long = "a".repeat(256);
        for reference in
            ["", "-b", "--upload-pack=touch", "main~1", "v1^{}", "a b", "a:b", "x*", "[x", long.as_str()]
        {
            let error = refusal(json!({"git": "https://git.example.com/app.git", "ref": reference}));
            assert!(error.starts_with("invalid spec: /spec/source/ref: "), "{reference:?}: {error}");
        }
    }

    #[test]
    fn a_source_without_git_or_with_bad_depth_or_submodules_is_refused_at_its_path() {
        let error = refusal(json!({"ref": "main"}));
        assert!(error.starts_with("invalid spec: /spec/source: "), "{error}");
        let error =
            refusal(json!({"git": "https://git.example.com/app.git", "depth": 0, "submodules": "yes"}));
        for path in ["/spec/source/depth: ", "/spec/source/submodules: "] {
            assert!(error.contains(path), "{path} missing from: {error}");
        }
    }

    #[test]
    fn every_kind_of_source_decodes_from_a_valid_spec() {
        let commit = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        for (source, reference) in [
            (json!({"git": "https://git.example.com/team/app.git"}), None),
            (json!({"git": "http://127.0.0.1:8080/cgi-bin/git/app.git", "ref": "main"}), Some("main")),
            (json!({"git": "git://[::1]:9418/app.git", "ref": "v1.2.0", "depth": 1}), Some("v1.2.0")),
            (json!({"git": "ssh://git.example.com/app", "ref": commit, "submodules": true}), Some(commit)),
            (
                json!({"git": "https://git.example.com/app.git", "ref": "refs/pull/7/head"}),
                Some("refs/pull/7/head"),
            ),
            (json!({"git": "https://git.example.com/app.git", "ref": "release/2.x"}), Some("release/2.x")),
        ] {
            let r = Resource::new("r", "pipeline", with_source(source.clone()));
            let spec: PipelineSpec = validator().decode(&r).unwrap_or_else(|e| panic!("{source}: {e}"));
            let decoded = spec.source.unwrap_or_else(|| panic!("{source}: no source"));
            assert_eq!(decoded.reference.as_deref(), reference, "{source}");
        }
    }
}
