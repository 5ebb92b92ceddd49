//! An artifact's paths: checked in the spec before the run (they stay inside the
//! workspace, names differ), and looked up in the workspace after its steps.

use conveyor_sdk::validate::Violation;

use crate::pod::DEFAULT_WORKSPACE;
use crate::spec::{Artifact, PipelineSpec};
use crate::workspace::{Workspace, WorkspaceError, WorkspacePath};

/// Every way the artifacts of `spec` break a rule its JSON Schema cannot say, each
/// with its JSON Pointer path: a path that is not inside the workspace (`..`, an
/// absolute path elsewhere, a NUL or a line break), two artifacts of the same name.
pub(crate) fn violations(spec: &PipelineSpec) -> Vec<Violation> {
    let root = spec.workdir.as_deref().unwrap_or(DEFAULT_WORKSPACE);
    let mut violations = Vec::new();
    for (i, artifact) in spec.artifacts.iter().enumerate() {
        if let Some(first) = spec.artifacts[..i].iter().position(|a| a.name == artifact.name) {
            violations.push(Violation {
                path: format!("/spec/artifacts/{i}/name"),
                message: format!(
                    "{:?} is already the name of /spec/artifacts/{first}: two artifacts cannot share a name",
                    artifact.name
                ),
            });
        }
        for (j, path) in artifact.paths.iter().enumerate() {
            if let Err(error) = WorkspacePath::parse(root, path) {
                violations.push(Violation {
                    path: format!("/spec/artifacts/{i}/paths/{j}"),
                    message: error.to_string(),
                });
            }
        }
    }
    violations
}

/// The paths of artifact `artifact` (the `index`th of the spec) that are in
/// `workspace`; an error naming the artifact, the path and its JSON Pointer path when
/// one is not inside the workspace, is or passes through a symbolic link, cannot be
/// read, or is missing from an artifact that is not `optional`.
pub(super) async fn present(
    workspace: &Workspace,
    artifact: &Artifact,
    index: usize,
) -> Result<Vec<WorkspacePath>, String> {
    let mut present = Vec::with_capacity(artifact.paths.len());
    for (j, given) in artifact.paths.iter().enumerate() {
        let name = &artifact.name;
        let at = format!("/spec/artifacts/{index}/paths/{j}");
        let path = WorkspacePath::parse(workspace.root(), given)
            .map_err(|error| format!("artifact {name}: {at}: {error}"))?;
        match workspace.stat(&path).await {
            Ok(Some(_)) => present.push(path),
            Ok(None) if artifact.optional => {}
            Ok(None) => {
                return Err(format!("artifact {name}: {at}: {given:?} does not exist in the workspace"))
            }
            Err(error @ WorkspaceError::Symlink(_)) => return Err(format!("artifact {name}: {at}: {error}")),
            Err(error) => {
                return Err(format!("artifact {name}: {at}: {}", conveyor_sdk::error_text(&error)));
            }
        }
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_out_of_the_workspace_and_names_used_twice_are_violations_with_their_json_path() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "image": "alpine:3.20",
            "steps": [{"name": "build", "command": "make"}],
            "workdir": "/src",
            "artifacts": [
                {"name": "bin", "paths": ["out/app", "/src/out/lib.so", "../secrets", "/etc/passwd"]},
                {"name": "bin", "paths": ["a\nb"]},
                {"name": "logs", "paths": ["."], "when": "always", "optional": true}
            ]
        }))
        .unwrap();
        let found: Vec<(String, String)> =
            violations(&spec).into_iter().map(|v| (v.path, v.message)).collect();
        assert_eq!(
            found,
            [
                (
                    "/spec/artifacts/0/paths/2".to_owned(),
                    "\"../secrets\" climbs out of the workspace".to_owned()
                ),
                (
                    "/spec/artifacts/0/paths/3".to_owned(),
                    "\"/etc/passwd\" is outside the workspace /src".to_owned()
                ),
                (
                    "/spec/artifacts/1/name".to_owned(),
                    "\"bin\" is already the name of /spec/artifacts/0: two artifacts cannot share a name"
                        .to_owned()
                ),
                ("/spec/artifacts/1/paths/0".to_owned(), "\"a\\nb\" has a NUL or a line break".to_owned()),
            ]
        );
    }
}
