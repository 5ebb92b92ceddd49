//! The rules of a spec that its JSON Schema cannot say: names that must differ across
//! the run, and environment variable names a shell can take.

use conveyor_sdk::validate::Violation;

use super::PipelineSpec;
use crate::settings::secrets::valid_name;

impl PipelineSpec {
    /// Every way this spec breaks a rule its JSON Schema cannot say, each with its JSON
    /// Pointer path into the resource, in the order of the document; empty when it
    /// breaks none. A run whose spec has any is refused before a container starts.
    ///
    /// The rules:
    /// - every environment variable name, of the run (`/spec/env/NAME`), of a step
    ///   (`/spec/steps/0/env/NAME`) or of a service (`/spec/services/0/env/NAME`), is a
    ///   shell name: letters, digits and `_`, not first a digit;
    /// - no two services share a name (`/spec/services/1/name`): it is their host name;
    /// - no service is named like a step, compared exactly
    ///   (`/spec/services/0/name`): the log tells their lines apart by name;
    /// - every path of an artifact stays inside the workspace
    ///   (`/spec/artifacts/0/paths/1`), and no two artifacts share a name
    ///   (`/spec/artifacts/1/name`).
    /// - every cache's key is one a cache can have and its paths are inside the
    ///   workspace (`/spec/caches/0/paths/1`).
    ///
    /// Two steps may share a name.
    ///
    /// ```
    /// let spec: simple_runner::PipelineSpec = serde_json::from_value(serde_json::json!({
    ///     "image": "rust:1.80",
    ///     "steps": [{"name": "test", "command": "cargo test"}],
    ///     "services": [
    ///         {"name": "db", "image": "postgres:16", "env": {"POSTGRES_PASSWORD": "test"}},
    ///         {"name": "db", "image": "redis:7"},
    ///         {"name": "test", "image": "nginx:1.27", "env": {"1A": "x"}}
    ///     ]
    /// }))?;
    /// let paths: Vec<String> = spec.violations().into_iter().map(|v| v.path).collect();
    /// assert_eq!(paths, ["/spec/services/1/name", "/spec/services/2/name", "/spec/services/2/env/1A"]);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn violations(&self) -> Vec<Violation> {
        let mut violations = env_names("/spec", self.env.keys());
        for (i, step) in self.steps.iter().enumerate() {
            violations.extend(env_names(&format!("/spec/steps/{i}"), step.env.keys()));
        }
        for (i, service) in self.services.iter().enumerate() {
            let path = format!("/spec/services/{i}");
            if let Some(first) = self.services[..i].iter().position(|s| s.name == service.name) {
                violations.push(Violation {
                    path: format!("{path}/name"),
                    message: format!(
                        "{:?} is already the name of /spec/services/{first}: two services cannot share a host name",
                        service.name
                    ),
                });
            }
            if let Some(step) = self.steps.iter().position(|s| s.name == service.name) {
                violations.push(Violation {
                    path: format!("{path}/name"),
                    message: format!(
                        "{:?} is already the name of /spec/steps/{step}: a service may not be named like a step",
                        service.name
                    ),
                });
            }
            violations.extend(env_names(&path, service.env.keys()));
        }
        violations.extend(crate::objects::artifacts::violations(self));
        violations.extend(crate::objects::caches::violations(self));
        violations
    }
}

/// A violation for every name of `names`, the keys of the `env` under `parent`, that
/// is not a shell name.
fn env_names<'a>(parent: &str, names: impl Iterator<Item = &'a String>) -> Vec<Violation> {
    names
        .filter(|name| !valid_name(name))
        .map(|name| Violation {
            path: format!("{parent}/env/{}", pointer_token(name)),
            message: format!(
                "{name:?} is not a valid environment variable name (letters, digits and _, not first a digit)"
            ),
        })
        .collect()
}

/// `key` as one reference token of a JSON Pointer (RFC 6901): `~` as `~0`, `/` as `~1`.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn spec(value: Value) -> PipelineSpec {
        serde_json::from_value(value).unwrap()
    }

    fn paths(spec: &PipelineSpec) -> Vec<String> {
        spec.violations().into_iter().map(|v| v.path).collect()
    }

    #[test]
    fn a_spec_breaking_no_rule_has_no_violations() {
        let spec = spec(json!({
            "image": "rust:1.80",
            "env": {"CI_GREETING": "hello", "_x1": "y"},
            "steps": [
                {"name": "build", "command": "cargo build", "env": {"JOBS": "4"}},
                {"name": "build", "command": "cargo build --release"},
                {"name": "test", "command": "cargo test", "image": "debian:12"}
            ],
            "services": [
                {"name": "db", "image": "postgres:16", "env": {"POSTGRES_PASSWORD": "test"}},
                {"name": "cache", "image": "redis:7"},
                {"name": "Build", "image": "nginx:1.27"}
            ]
        }));
        assert_eq!(spec.violations(), []);
    }

    #[test]
    fn a_second_service_of_one_name_is_refused_at_its_name() {
        let spec = spec(json!({
            "steps": [],
            "services": [
                {"name": "db", "image": "postgres:16"},
                {"name": "web", "image": "nginx:1.27"},
                {"name": "db", "image": "postgres:15"},
                {"name": "db", "image": "postgres:14"}
            ]
        }));
        let violations = spec.violations();
        assert_eq!(paths(&spec), ["/spec/services/2/name", "/spec/services/3/name"]);
        assert_eq!(
            violations[0].message,
            "\"db\" is already the name of /spec/services/0: two services cannot share a host name"
        );
        assert!(violations[1].message.contains("/spec/services/0"), "{}", violations[1]);
    }

    #[test]
    fn a_service_named_exactly_like_a_step_is_refused_naming_the_step() {
        let spec = spec(json!({
            "steps": [
                {"name": "build", "command": "make"},
                {"name": "db", "command": "make test"},
                {"name": "db", "command": "make check"}
            ],
            "services": [{"name": "db", "image": "postgres:16"}, {"name": "build-cache", "image": "redis:7"}]
        }));
        let violations = spec.violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].path, "/spec/services/0/name");
        assert_eq!(
            violations[0].message,
            "\"db\" is already the name of /spec/steps/1: a service may not be named like a step"
        );
    }

    #[test]
    fn two_steps_of_one_name_are_allowed() {
        let spec = spec(json!({"steps": [{"name": "s", "command": "a"}, {"name": "s", "command": "b"}]}));
        assert_eq!(spec.violations(), []);
    }

    #[test]
    fn every_environment_name_that_is_not_a_shell_name_is_refused_at_its_path() {
        let spec = spec(json!({
            "env": {"1A": "x", "OK": "y"},
            "steps": [{"name": "s", "command": "c", "env": {"A; rm -rf /": "x", "B_2": "y"}}],
            "services": [
                {"name": "db", "image": "postgres:16", "env": {"POSTGRES-PASSWORD": "x", "": "y", "GOOD": "z"}}
            ]
        }));
        assert_eq!(
            paths(&spec),
            [
                "/spec/env/1A",
                "/spec/steps/0/env/A; rm -rf ~1",
                "/spec/services/0/env/",
                "/spec/services/0/env/POSTGRES-PASSWORD",
            ]
        );
        assert_eq!(
            spec.violations()[0].message,
            "\"1A\" is not a valid environment variable name (letters, digits and _, not first a digit)"
        );
    }

    #[test]
    fn a_name_with_a_slash_or_a_tilde_is_escaped_in_its_pointer() {
        assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
        let spec = spec(json!({"steps": [], "env": {"~/x": "y"}}));
        assert_eq!(paths(&spec), ["/spec/env/~0~1x"]);
    }

    #[test]
    fn violations_come_in_the_order_of_the_document() {
        let spec = spec(json!({
            "env": {"1": "x"},
            "steps": [{"name": "db", "command": "c", "env": {"2": "x"}}],
            "services": [
                {"name": "db", "image": "postgres:16", "env": {"3": "x"}},
                {"name": "db", "image": "postgres:16"}
            ]
        }));
        assert_eq!(
            paths(&spec),
            [
                "/spec/env/1",
                "/spec/steps/0/env/2",
                "/spec/services/0/name",
                "/spec/services/0/env/3",
                "/spec/services/1/name",
                "/spec/services/1/name",
            ]
        );
    }
}
