//! The `pipeline` resource: an image and the command steps to run in it.
//!
//! Every resource valid for upstream's definition (`image`, `steps[{name, command}]`)
//! is valid here and behaves the same; the other fields are optional additions. Its
//! sizes ([`ByteSize`], `size.rs`) and durations ([`Timeout`], `timeout.rs`) are read
//! in files of their own.

mod cache;
mod check;
mod image;
mod service;
mod size;
mod source;
mod timeout;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use cache::{Artifact, ArtifactWhen, Cache};
pub use image::IMAGE_REFERENCE;
pub use service::{Ready, Service, DEFAULT_READY_TIMEOUT};
pub use size::ByteSize;
pub use source::Source;
pub use timeout::Timeout;

/// The resource type the runner owns.
pub const RESOURCE_TYPE: &str = "pipeline";

/// The spec of a `pipeline` resource.
///
/// ```
/// let spec: simple_runner::PipelineSpec = serde_json::from_value(serde_json::json!({
///     "image": "alpine:3.20",
///     "env": {"CI": "true"},
///     "timeout": "10m",
///     "steps": [
///         {"name": "build", "command": "make", "timeout": 300},
///         {"name": "lint", "command": "make lint", "continue_on_error": true}
///     ]
/// }))?;
/// assert_eq!(spec.steps[0].timeout.unwrap().as_duration().as_secs(), 300);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "An image and the command steps to run in it, one after the other.")]
pub struct PipelineSpec {
    /// The image the steps run in, unless a step names its own. Without it, the
    /// runner's default image is used, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_REFERENCE))]
    pub image: Option<String>,
    /// The steps, run one after the other through `sh -c`.
    pub steps: Vec<Step>,
    /// Environment variables of every step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The directory steps run in, shared by all of them, created when missing
    /// (default: the image's own working directory, `/` when it sets none, as
    /// `docker run` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub workdir: Option<String>,
    /// The names of the secrets every step gets as environment variables; their
    /// values come from the runner's operator, never from the resource, and no log
    /// line shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")))]
    pub secrets: Vec<String>,
    /// The CPUs the run may use, e.g. `1.5` (capped by the runner's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub cpus: Option<f64>,
    /// The memory the run may use: bytes, or a size like `"512m"` or `"2g"` (capped
    /// by the runner's maximum). A step over it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// The most processes the run may have at once (capped by the runner's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pids: Option<u32>,
    /// The platform of the image, e.g. `linux/amd64` or `linux/arm64/v8` (default:
    /// the engine's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"))]
    pub platform: Option<String>,
    /// The longest the whole run may take, image pull and container start included:
    /// seconds, or a duration like `"10m"`; at most the runner's `--run-timeout`, which
    /// is also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// When to pull the images (default `if-not-present`).
    #[serde(default)]
    pub pull: PullPolicy,
    /// Services started before the first step and stopped after the last: a database
    /// or a web server the steps talk to at `localhost:PORT` or `NAME:PORT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// The repository checked out into the workspace before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Paths of the workspace restored before the first step and saved after a
    /// successful run, in the runner's object store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<Cache>,
    /// Paths of the workspace kept after the run in the runner's object store, under
    /// the run's id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

/// One command step.
///
/// ```
/// let step: simple_runner::Step = serde_json::from_value(serde_json::json!({
///     "name": "test",
///     "command": "make test 2>&1 | tee test.log",
///     "env": {"JOBS": "4"},
///     "continue_on_error": true
/// }))?;
/// assert_eq!(step.env["JOBS"], "4");
/// assert!(step.timeout.is_none());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// The step's name, shown in the log and the result.
    pub name: String,
    /// A shell command (`sh -c`): pipes, `&&`, quotes and `$VARIABLES` work; the step
    /// stops at the first failing command and a pipeline fails if any part does.
    pub command: String,
    /// The image this step runs in (default: the run's `image`). When a step names an
    /// image other than the run's, every container of the run shares a workspace
    /// volume mounted at the run's `workdir` (default `/workspace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_REFERENCE))]
    pub image: Option<String>,
    /// Environment variables of this step, over the run's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The directory this step runs in, created when missing; relative to the run's
    /// (default: the run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub workdir: Option<String>,
    /// The names of secrets this step gets, besides the run's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")))]
    pub secrets: Vec<String>,
    /// When the step runs: `on_success` (default: while no step has failed),
    /// `always` (cleanup) or `on_failure` (only once a step has failed).
    #[serde(default, skip_serializing_if = "When::is_default")]
    pub when: When,
    /// The longest this step may take: seconds, or a duration like `"90s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// Whether the run goes on when this step fails (default `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
}

/// When a step runs, given how the steps before it went.
///
/// ```
/// use simple_runner::spec::When;
///
/// let cleanup: When = serde_json::from_str("\"always\"")?;
/// assert!(cleanup.runs(true) && cleanup.runs(false));
/// assert!(!When::OnFailure.runs(false));
/// assert_eq!(When::default(), When::OnSuccess);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// While no step has failed.
    #[default]
    OnSuccess,
    /// Whatever happened before: cleanup.
    Always,
    /// Only once a step has failed: a notification.
    OnFailure,
}

impl When {
    /// Whether a step with this condition runs when `failed` says whether a step
    /// before it has failed the run.
    ///
    /// ```
    /// use simple_runner::spec::When;
    ///
    /// assert!(When::OnSuccess.runs(false));
    /// assert!(!When::OnSuccess.runs(true));
    /// ```
    pub fn runs(self, failed: bool) -> bool {
        match self {
            When::OnSuccess => !failed,
            When::Always => true,
            When::OnFailure => failed,
        }
    }

    fn is_default(&self) -> bool {
        *self == When::OnSuccess
    }
}

/// When the image is pulled.
///
/// ```
/// use simple_runner::PullPolicy;
///
/// let policy: PullPolicy = serde_json::from_str("\"if-not-present\"")?;
/// assert_eq!(policy, PullPolicy::default());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Before every run.
    Always,
    /// Only when the engine does not have the image.
    #[default]
    IfNotPresent,
    /// Never: a missing image fails the run.
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_sdk::validate::{SpecError, SpecValidator};
    use conveyor_sdk::{Resource, ResourceDefinition, ResourceType};
    use serde_json::json;

    fn validator() -> SpecValidator {
        SpecValidator::new(&[ResourceType::owned(ResourceDefinition::from_type::<PipelineSpec>("pipeline"))])
            .unwrap()
    }

    #[test]
    fn everything_upstreams_schema_accepts_is_accepted() {
        // Upstream's schema requires only `steps`, each with `name` and `command`,
        // and allows any other field.
        for spec in [
            json!({"steps": []}),
            json!({"steps": [{"name": "a", "command": "true", "extra": 1}], "other": "x"}),
        ] {
            let r = Resource::new("r", "pipeline", spec.clone());
            assert!(validator().decode::<PipelineSpec>(&r).is_ok(), "{spec}");
        }
    }

    #[test]
    fn invalid_additions_are_refused_with_their_path() {
        let r = Resource::new(
            "r",
            "pipeline",
            json!({"steps": [{"name": "a", "command": "x", "timeout": 0}], "pull": "sometimes"}),
        );
        let error = validator().decode::<PipelineSpec>(&r).unwrap_err().to_string();
        assert!(error.contains("/spec/pull"), "{error}");
        assert!(error.contains("/spec/steps/0/timeout"), "{error}");
    }

    #[test]
    fn every_new_field_refuses_an_invalid_value_with_its_path() {
        let r = Resource::new(
            "r",
            "pipeline",
            json!({
                "workdir": "relative/dir",
                "secrets": ["1BAD"],
                "cpus": 0,
                "memory": "lots",
                "pids": 0,
                "platform": "amd64",
                "steps": [{"name": "a", "command": "x", "when": "sometimes", "workdir": "", "secrets": ["A-B"]}]
            }),
        );
        let error = validator().decode::<PipelineSpec>(&r).unwrap_err().to_string();
        for path in [
            "/spec/workdir",
            "/spec/secrets/0",
            "/spec/cpus",
            "/spec/memory",
            "/spec/pids",
            "/spec/platform",
            "/spec/steps/0/when",
            "/spec/steps/0/workdir",
            "/spec/steps/0/secrets/0",
        ] {
            assert!(error.contains(path), "{path} missing from: {error}");
        }
    }

    #[test]
    fn every_new_field_decodes_from_a_valid_spec() {
        let r = Resource::new(
            "r",
            "pipeline",
            json!({
                "workdir": "/src",
                "secrets": ["DEPLOY_TOKEN"],
                "cpus": 1.5,
                "memory": "512m",
                "pids": 256,
                "platform": "linux/arm64/v8",
                "steps": [
                    {"name": "a", "command": "x", "workdir": "sub", "secrets": ["NPM_TOKEN"]},
                    {"name": "b", "command": "y", "when": "always"},
                    {"name": "c", "command": "z", "when": "on_failure"}
                ]
            }),
        );
        let spec: PipelineSpec = validator().decode(&r).unwrap();
        assert_eq!(spec.memory.map(|m| m.bytes()), Some(512 << 20));
        assert_eq!((spec.cpus, spec.pids), (Some(1.5), Some(256)));
        let whens: Vec<When> = spec.steps.iter().map(|s| s.when).collect();
        assert_eq!(whens, [When::OnSuccess, When::Always, When::OnFailure]);
        assert_eq!(spec.steps[0].workdir.as_deref(), Some("sub"));
    }

    /// The schema's refusal of `spec`, as the SDK says it: the definition's JSON Schema
    /// itself refuses it, not only the decoding after it.
    fn refusal(spec: serde_json::Value) -> String {
        let r = Resource::new("r", "pipeline", spec.clone());
        match validator().validate(&r) {
            Err(error @ SpecError::Invalid(_)) => error.to_string(),
            other => panic!("the schema did not refuse {spec}: {other:?}"),
        }
    }

    /// A spec of one service `service`.
    fn with_service(service: serde_json::Value) -> serde_json::Value {
        json!({"image": "alpine:3.20", "steps": [{"name": "s", "command": "c"}], "services": [service]})
    }

    #[test]
    fn a_ready_without_exactly_one_valid_probe_is_refused_at_its_path() {
        for ready in [
            json!({}),
            json!({"tcp": 0}),
            json!({"tcp": 70000}),
            json!({"tcp": -1}),
            json!({"tcp": "5432"}),
            json!({"command": ""}),
            json!({"tcp": 5432, "command": "pg_isready"}),
            json!({"http": "/health"}),
            json!("tcp"),
        ] {
            let error = refusal(with_service(json!({"name": "db", "image": "postgres:16", "ready": ready})));
            assert!(error.starts_with("invalid spec: /spec/services/0/ready: "), "{ready}: {error}");
        }
    }

    #[test]
    fn an_invalid_image_reference_is_refused_wherever_it_is_named() {
        for image in
            ["Alpine", "alpine:", "a b", "", "alpine:3.20@sha256:abc", "/alpine", "alpine//x", "team/App"]
        {
            let error = refusal(json!({
                "image": image,
                "steps": [{"name": "s", "command": "c", "image": image}],
                "services": [{"name": "db", "image": image}]
            }));
            for path in ["/spec/image", "/spec/steps/0/image", "/spec/services/0/image"] {
                assert!(error.contains(&format!("{path}: ")), "{image:?}: {path} missing from: {error}");
            }
        }
    }

    #[test]
    fn a_service_name_that_is_not_a_host_name_is_refused_at_its_path() {
        for name in ["", "DB", "my_db", "-db", "db-", "db.local", "a b", &"a".repeat(64)] {
            let error = refusal(with_service(json!({"name": name, "image": "postgres:16"})));
            assert!(error.starts_with("invalid spec: /spec/services/0/name: "), "{name:?}: {error}");
        }
    }

    #[test]
    fn a_service_missing_its_name_or_image_or_with_bad_fields_is_refused_at_its_path() {
        let error = refusal(json!({
            "steps": [],
            "services": [
                {"image": "postgres:16"},
                {"name": "web"},
                {"name": "x", "image": "nginx", "command": "", "secrets": ["A-B"], "ready_timeout": 0,
                 "env": {"A": 1}}
            ]
        }));
        for path in [
            "/spec/services/0: ",
            "/spec/services/1: ",
            "/spec/services/2/command: ",
            "/spec/services/2/secrets/0: ",
            "/spec/services/2/ready_timeout: ",
            "/spec/services/2/env/A: ",
        ] {
            assert!(error.contains(path), "{path} missing from: {error}");
        }
    }

    #[test]
    fn every_field_of_a_pod_decodes_from_a_valid_spec() {
        let digest = format!("alpine@sha256:{}", "0123456789abcdef".repeat(4));
        let r = Resource::new(
            "r",
            "pipeline",
            json!({
                "image": "rust:1.80",
                "steps": [
                    {"name": "build", "command": "cargo build"},
                    {"name": "test", "command": "make test", "image": "127.0.0.1:5000/team/app:1.2"},
                    {"name": "pinned", "command": "true", "image": digest},
                    {"name": "hub", "command": "true", "image": "docker.io/library/debian:12-slim"}
                ],
                "services": [
                    {
                        "name": "db",
                        "image": "postgres:16",
                        "env": {"POSTGRES_PASSWORD": "test"},
                        "secrets": ["DB_LICENSE"],
                        "ready": {"tcp": 5432},
                        "ready_timeout": "2m"
                    },
                    {"name": "web-1", "image": "nginx:1.27", "command": "nginx -g 'daemon off;'",
                     "ready": {"command": "wget -q -O /dev/null http://localhost"}, "ready_timeout": 30},
                    {"name": "cache", "image": "[::1]:5000/redis:7"}
                ]
            }),
        );
        let spec: PipelineSpec = validator().decode(&r).unwrap();
        let images: Vec<Option<&str>> = spec.steps.iter().map(|s| s.image.as_deref()).collect();
        assert_eq!(
            images,
            [
                None,
                Some("127.0.0.1:5000/team/app:1.2"),
                Some(digest.as_str()),
                Some("docker.io/library/debian:12-slim")
            ]
        );
        let [db, web, cache] = &spec.services[..] else { panic!("{:?}", spec.services) };
        assert_eq!((db.name.as_str(), db.image.as_str()), ("db", "postgres:16"));
        assert_eq!(db.env["POSTGRES_PASSWORD"], "test");
        assert_eq!(db.secrets, ["DB_LICENSE"]);
        assert_eq!(db.ready, Some(Ready::Tcp(5432)));
        assert_eq!(db.ready_timeout().as_secs(), 120);
        assert_eq!(web.command.as_deref(), Some("nginx -g 'daemon off;'"));
        assert_eq!(web.ready, Some(Ready::Command("wget -q -O /dev/null http://localhost".into())));
        assert_eq!(web.ready_timeout().as_secs(), 30);
        assert_eq!((cache.ready.as_ref(), cache.ready_timeout()), (None, DEFAULT_READY_TIMEOUT));
        assert_eq!(spec.violations(), []);
    }

    #[test]
    fn every_resource_in_the_readme_is_valid() {
        let readme = include_str!("../../README.md");
        let blocks: Vec<&str> =
            readme.split("```json\n").skip(1).filter_map(|rest| rest.split("\n```").next()).collect();
        assert!(blocks.iter().any(|b| b.contains("\"services\"")), "no example with services in the README");
        for block in blocks {
            let r: Resource = serde_json::from_str(block).unwrap_or_else(|e| panic!("{e}: {block}"));
            let spec: PipelineSpec = validator().decode(&r).unwrap_or_else(|e| panic!("{e}: {block}"));
            assert_eq!(spec.violations(), [], "{block}");
        }
    }

    #[test]
    fn the_schema_lets_through_what_only_violations_refuse() {
        // Names unique across the run and environment names are not the schema's to
        // say: the spec decodes, and `violations` names them.
        let r = Resource::new(
            "r",
            "pipeline",
            json!({
                "steps": [{"name": "db", "command": "c"}],
                "services": [
                    {"name": "db", "image": "postgres:16", "env": {"1A": "x"}},
                    {"name": "db", "image": "postgres:16"}
                ]
            }),
        );
        let spec: PipelineSpec = validator().decode(&r).unwrap();
        let paths: Vec<String> = spec.violations().into_iter().map(|v| v.path).collect();
        assert_eq!(
            paths,
            [
                "/spec/services/0/name",
                "/spec/services/0/env/1A",
                "/spec/services/1/name",
                "/spec/services/1/name"
            ]
        );
    }
}
