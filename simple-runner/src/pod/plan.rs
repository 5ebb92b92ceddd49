//! Which containers a run needs: one of each image its steps run in, and a workspace
//! volume when they are not all the run's image.

use crate::spec::PipelineSpec;

/// Where the workspace volume is mounted when the spec names no `workdir`.
pub const DEFAULT_WORKSPACE: &str = "/workspace";

/// The containers of a run, as its spec asks for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The run's image: the spec's or the runner's default, else the first step's.
    pub(crate) run_image: String,
    /// The images the steps run in, each once, in the order the steps first name them;
    /// the first one's container owns the pod's network namespace.
    pub(crate) step_images: Vec<String>,
    /// Where the workspace volume is mounted, when a step names an image other than the
    /// run's, or the run has a source, caches or artifacts (which the runner moves in
    /// and out of the workspace).
    pub(crate) workspace: Option<String>,
    /// Whether the run has services.
    pub(crate) services: bool,
}

impl Plan {
    /// The plan of `spec`, whose run image is `run_image` (the spec's, else the
    /// runner's default); `None` when a step has no image to run in.
    pub(crate) fn of(spec: &PipelineSpec, run_image: Option<String>) -> Option<Plan> {
        let mut step_images: Vec<String> = Vec::new();
        for step in &spec.steps {
            let image = step.image.clone().or_else(|| run_image.clone())?;
            if !step_images.contains(&image) {
                step_images.push(image);
            }
        }
        let run_image = run_image.or_else(|| step_images.first().cloned())?;
        if step_images.is_empty() {
            step_images.push(run_image.clone());
        }
        let own_images = step_images.iter().any(|image| *image != run_image);
        let files = spec.source.is_some() || !spec.caches.is_empty() || !spec.artifacts.is_empty();
        let workspace = (own_images || files)
            .then(|| spec.workdir.clone().unwrap_or_else(|| DEFAULT_WORKSPACE.to_owned()));
        Some(Plan { run_image, step_images, workspace, services: !spec.services.is_empty() })
    }

    /// Whether the run is more than one container of its image: it has services or a
    /// step in an image of its own. Such a run starts cold: a warm container has
    /// neither the pod's host names nor its workspace.
    pub(crate) fn is_pod(&self) -> bool {
        self.services || self.workspace.is_some()
    }

    /// The images to make present: the steps', then the services' not among them.
    pub(crate) fn images(&self, spec: &PipelineSpec) -> Vec<String> {
        let mut images = self.step_images.clone();
        for service in &spec.services {
            if !images.contains(&service.image) {
                images.push(service.image.clone());
            }
        }
        images
    }

    /// The working directory of the step containers: the workspace, else the spec's.
    pub(crate) fn workdir<'a>(&'a self, spec: &'a PipelineSpec) -> Option<&'a str> {
        self.workspace.as_deref().or(spec.workdir.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PipelineSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_run_of_one_image_without_services_is_one_container_as_before() {
        let s = spec(
            json!({"image": "a", "steps": [{"name": "x", "command": "c"}, {"name": "y", "command": "c", "image": "a"}]}),
        );
        let plan = Plan::of(&s, s.image.clone()).unwrap();
        assert_eq!(plan.step_images, ["a"]);
        assert_eq!((plan.workspace.as_deref(), plan.is_pod()), (None, false));
        assert_eq!(plan.workdir(&s), None, "the image's own directory");
    }

    #[test]
    fn a_step_of_another_image_gets_a_workspace_shared_by_every_container() {
        let s = spec(json!({"image": "a", "steps": [
            {"name": "build", "command": "c", "image": "b"},
            {"name": "test", "command": "c"},
            {"name": "pack", "command": "c", "image": "b"}
        ]}));
        let plan = Plan::of(&s, s.image.clone()).unwrap();
        assert_eq!(plan.step_images, ["b", "a"], "the first step's image owns the namespace");
        assert_eq!(plan.workspace.as_deref(), Some(DEFAULT_WORKSPACE));
        assert!(plan.is_pod());
        let s = spec(json!({"workdir": "/src", "steps": [{"name": "x", "command": "c", "image": "b"}]}));
        let plan = Plan::of(&s, Some("a".into())).unwrap();
        assert_eq!(plan.workdir(&s), Some("/src"), "the spec's workdir is where the workspace goes");
    }

    #[test]
    fn every_step_in_its_own_image_needs_no_run_image() {
        let s = spec(
            json!({"steps": [{"name": "x", "command": "c", "image": "b"}, {"name": "y", "command": "c", "image": "c"}]}),
        );
        let plan = Plan::of(&s, None).unwrap();
        assert_eq!(plan.run_image, "b");
        assert_eq!(plan.step_images, ["b", "c"]);
        assert!(plan.is_pod());
        let lacking = spec(
            json!({"steps": [{"name": "x", "command": "c", "image": "b"}, {"name": "y", "command": "c"}]}),
        );
        assert_eq!(Plan::of(&lacking, None), None, "a step with no image to run in");
    }

    #[test]
    fn a_source_caches_or_artifacts_get_a_workspace_whatever_the_images() {
        for extra in [
            json!({"source": {"git": "https://example.com/r.git"}}),
            json!({"caches": [{"key": "k", "paths": ["p"]}]}),
            json!({"artifacts": [{"name": "a", "paths": ["p"]}]}),
        ] {
            let mut value = json!({"image": "a", "steps": [{"name": "x", "command": "c"}]});
            value.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let s = spec(value);
            let plan = Plan::of(&s, s.image.clone()).unwrap();
            assert_eq!(plan.workspace.as_deref(), Some(DEFAULT_WORKSPACE), "{extra}");
            assert!(plan.is_pod());
        }
    }

    #[test]
    fn services_make_a_pod_and_their_images_are_pulled_once() {
        let s = spec(json!({"image": "a", "steps": [{"name": "x", "command": "c"}],
            "services": [{"name": "db", "image": "p"}, {"name": "cache", "image": "a"}]}));
        let plan = Plan::of(&s, s.image.clone()).unwrap();
        assert!(plan.is_pod());
        assert_eq!(plan.workspace, None, "services alone share no workspace");
        assert_eq!(plan.images(&s), ["a", "p"]);
    }
}
