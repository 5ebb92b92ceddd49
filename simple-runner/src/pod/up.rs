//! The pod up, or preparing a run: its images present, its containers started, their
//! shells attached, its services started and ready. A run that cannot be prepared ends
//! here with its report.

use std::collections::HashMap;
use std::time::Instant;

use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::{LogHandle, Run};
use futures_util::future::{join_all, try_join_all};

use super::plan::Plan;
use super::ready::{wait_ready, Probe};
use super::{Member, Placement, RunningService};
use crate::engine::error::EngineError;
use crate::engine::image::{PullOptions, PullProgress};
use crate::engine::Engine;
use crate::housekeeping::pool::{PoolKey, Warm, WarmPool};
use crate::pod::down::{PodGuard, Removals};
use crate::pod::{container_name, labels};
use crate::report::{Refusal, RunReport};
use crate::settings::{ContainerSettings, Settings};
use crate::spec::{PipelineSpec, Service};
use crate::steps::cap::OutputCap;
use crate::steps::session::Session;
use crate::steps::Shell;
use crate::workspace::Workspace;

/// A run ready for its steps.
pub(crate) struct Prepared {
    /// Its containers and volume, removed when this goes.
    pub(crate) container: PodGuard,
    /// What the steps need of them.
    pub(crate) shell: Shell,
    /// Its workspace, when it has a volume of its own.
    pub(crate) workspace: Option<Workspace>,
}

/// Where a run's containers come from.
pub(crate) struct Containers<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) removals: &'a Removals,
    pub(crate) pool: &'a WarmPool,
}

/// Prepares `run`, in the order a failure is reported: its spec within the rules its
/// schema cannot say ([`PipelineSpec::violations`]), its images named, every secret
/// it names known (their values masked in its log from then on), its images present
/// (a wait a cancellation cuts short); then a run of one image
/// without services takes a warm container or starts one, and tops up the warm
/// containers of its image and settings, while any other run brings its pod up
/// ([`pod_up`]). A failure is logged before it is returned.
pub(crate) async fn prepare(
    containers: Containers<'_>,
    settings: &Settings,
    run: &Run<PipelineSpec>,
    progress: PullProgress<'_>,
) -> Result<Prepared, RunReport> {
    let Containers { engine, removals, pool } = containers;
    let spec = run.spec();
    let log = run.log();
    let violations = spec.violations();
    if !violations.is_empty() {
        return Err(logged(log, RunReport::Refused(Refusal::InvalidSpec(violations))).await);
    }
    let run_image = spec.image.clone().or_else(|| settings.default_image.clone());
    let Some(plan) = Plan::of(spec, run_image) else {
        return Err(logged(log, RunReport::Refused(Refusal::NoImage)).await);
    };
    for name in secret_names(spec) {
        match settings.secrets.get(name) {
            Some(value) => log.mask(value),
            None => {
                return Err(logged(log, RunReport::Refused(Refusal::UnknownSecret(name.to_owned()))).await)
            }
        }
    }
    let (container_settings, notes) = settings.container.for_run(spec);
    for note in notes {
        log.log(note).await;
    }
    let mut image_ids = HashMap::new();
    for image in plan.images(spec) {
        let pull = PullOptions {
            platform: container_settings.platform.clone(),
            credentials: settings.registry_auth.for_image(&image),
        };
        let pulled = tokio::select! {
            pulled = engine.ensure_image(&image, spec.pull, &pull, progress) => pulled,
            _ = run.cancelled() => return Err(interrupted(run)),
        };
        match pulled {
            Ok(image_id) => image_ids.insert(image, image_id),
            Err(error) => return Err(logged(log, RunReport::NoContainer { image, error }).await),
        };
    }
    let cap = OutputCap::new(settings.max_log_bytes);
    if plan.is_pod() {
        let up = PodUp { engine, removals, settings, container_settings: &container_settings, run, cap };
        return up.bring_up(&plan).await;
    }

    let image = plan.run_image;
    let image_id = image_ids.remove(&image).unwrap_or_default();
    let workdir = spec.workdir.as_deref();
    let key = PoolKey::new(&image, workdir, &container_settings);
    let warm = pool.take(&key, &image_id).await;
    engine.metrics().run_started(warm.is_some());
    let taken = match warm {
        Some(warm) => {
            tracing::debug!(container = %warm.id, "the run takes a warm container");
            Ok(warm)
        }
        None => {
            let name = container_name(&run.resource().name, run.run_id());
            let labels = container_labels(run, settings);
            cold(engine, removals, &image, &name, workdir, labels, &container_settings).await
        }
    };
    // The next run of this image and settings finds one ready.
    pool.refill(&key, &image, &image_id, &container_settings, workdir);
    match taken {
        Ok(Warm { id, guard, session }) => Ok(Prepared {
            container: guard,
            workspace: None,
            shell: Shell {
                members: vec![Member {
                    image: image.clone(),
                    container_id: id,
                    session: session.with_output_cap(cap),
                }],
                image,
                services: Vec::new(),
                memory_bytes: container_settings.memory_bytes,
                env: env(run),
            },
        }),
        Err(error) => Err(logged(log, RunReport::NoContainer { image, error }).await),
    }
}

/// What bringing a pod up needs.
struct PodUp<'a> {
    engine: &'a Engine,
    removals: &'a Removals,
    settings: &'a Settings,
    container_settings: &'a ContainerSettings,
    run: &'a Run<PipelineSpec>,
    cap: OutputCap,
}

impl PodUp<'_> {
    /// Brings the pod of `plan` up, always cold: its workspace volume if it has one;
    /// the container of its first step image, which owns the network namespace and
    /// names every service `NAME → 127.0.0.1`; then, at once, the containers of its
    /// other step images and of its services, joining it; then every service's
    /// process, and the wait until each is ready (cut short by a cancellation). Every
    /// container and the volume are owned by the returned guard from the moment they
    /// exist, so that a failure anywhere removes them.
    async fn bring_up(&self, plan: &Plan) -> Result<Prepared, RunReport> {
        let (engine, run, spec, log) = (self.engine, self.run, self.run.spec(), self.run.log());
        engine.metrics().run_started(false);
        let mut guard = self.removals.pod();
        let labels = container_labels(run, self.settings);
        let name = container_name(&run.resource().name, run.run_id());
        let workspace = match &plan.workspace {
            Some(path) => {
                let volume = format!("{name}-workspace");
                let volume_labels =
                    super::container::with_installation(labels.clone(), self.container_settings);
                if let Err(error) = engine.create_volume(&volume, volume_labels).await {
                    return Err(
                        logged(log, RunReport::NoContainer { image: plan.run_image.clone(), error }).await
                    );
                }
                guard.set_volume(volume.clone());
                Some((volume, path.clone()))
            }
            None => None,
        };
        let workdir = plan.workdir(spec);
        let owner_image = &plan.step_images[0];
        let owner = Placement {
            join: None,
            extra_hosts: spec.services.iter().map(|s| format!("{}:127.0.0.1", s.name)).collect(),
            workspace: workspace.clone(),
            hosts_file: None,
        };
        let owner = self.member(owner_image, &name, workdir, &labels, &owner, &mut guard).await;
        let owner = match owner {
            Ok(owner) => owner,
            Err(error) => {
                return Err(logged(log, RunReport::NoContainer { image: owner_image.clone(), error }).await)
            }
        };
        let hosts_file = match spec.services.is_empty() {
            true => None,
            false => self.owner_hosts_file(&owner.container_id).await,
        };
        let joining = Placement {
            join: Some(owner.container_id.clone()),
            extra_hosts: Vec::new(),
            workspace,
            hosts_file,
        };

        let (labels, joining) = (&labels, &joining);
        let others = plan.step_images[1..].iter().map(|image| {
            let name = container_name(&run.resource().name, run.run_id());
            async move { (image, self.start(image, &name, workdir, labels, joining).await) }
        });
        let services = spec.services.iter().map(|service| {
            let name = format!("{name}-{}", service.name);
            async move { (service, self.start(&service.image, &name, None, labels, joining).await) }
        });
        let (others, services) = futures_util::join!(join_all(others), join_all(services));

        let mut members = vec![owner];
        let mut failure: Option<(String, EngineError)> = None;
        for (image, started) in others {
            match started {
                Ok(id) => {
                    guard.add_shell(id.clone());
                    match Session::attach(engine.docker(), &id).await {
                        Ok(session) => members.push(Member {
                            image: image.clone(),
                            container_id: id,
                            session: session.with_output_cap(self.cap.clone()),
                        }),
                        Err(error) => failure = failure.or(Some((image.clone(), error))),
                    }
                }
                Err(error) => failure = failure.or(Some((image.clone(), error))),
            }
        }
        let mut running = Vec::new();
        for (service, started) in services {
            match started {
                Ok(id) => {
                    guard.add_service(id.clone());
                    if failure.is_none() {
                        log.log(format!("--> service {} ({})", service.name, service.image)).await;
                        match RunningService::start(
                            engine,
                            service,
                            id,
                            self.service_env(service),
                            log,
                            self.cap.clone(),
                        )
                        .await
                        {
                            Ok(service) => running.push(service),
                            Err(error) => failure = Some((service.image.clone(), error)),
                        }
                    }
                }
                Err(error) => failure = failure.or(Some((service.image.clone(), error))),
            }
        }
        if let Some((image, error)) = failure {
            return Err(logged(log, RunReport::NoContainer { image, error }).await);
        }

        let ready = try_join_all(
            spec.services
                .iter()
                .zip(&running)
                .map(|(service, running)| self.ready(service, running, &members[0].container_id)),
        );
        let ready = tokio::select! {
            ready = ready => ready,
            _ = run.cancelled() => return Err(interrupted(run)),
        };
        if let Err((service, reason)) = ready {
            return Err(logged(log, RunReport::ServiceNotReady { service, reason }).await);
        }
        let workspace = plan
            .workspace
            .clone()
            .map(|root| Workspace::new(engine.clone(), members[0].container_id.clone(), root));
        Ok(Prepared {
            container: guard,
            workspace,
            shell: Shell {
                image: plan.run_image.clone(),
                members,
                services: running,
                memory_bytes: self.container_settings.memory_bytes,
                env: env(run),
            },
        })
    }

    /// A step container of `image`, placed by `placement`, owned by `guard` as soon
    /// as it exists, its shell attached.
    async fn member(
        &self,
        image: &str,
        name: &str,
        workdir: Option<&str>,
        labels: &HashMap<String, String>,
        placement: &Placement,
        guard: &mut PodGuard,
    ) -> Result<Member, EngineError> {
        let id = self.start(image, name, workdir, labels, placement).await?;
        guard.add_shell(id.clone());
        let session = Session::attach(self.engine.docker(), &id).await?;
        Ok(Member {
            image: image.to_owned(),
            container_id: id,
            session: session.with_output_cap(self.cap.clone()),
        })
    }

    /// On Podman, the path of the owner's `/etc/hosts` on the engine's host, which names
    /// the services, for the containers that join it (see [`Placement::hosts_file`]).
    async fn owner_hosts_file(&self, owner: &str) -> Option<String> {
        if !self.engine.is_podman().await {
            return None;
        }
        match self.engine.docker().inspect_container(owner, None).await {
            Ok(inspected) => inspected.hosts_path.filter(|path| !path.is_empty()),
            Err(error) => {
                tracing::warn!(%error, "cannot read the pod's hosts file: its services are reachable at localhost only");
                None
            }
        }
    }

    /// Starts a container of the pod; its id.
    async fn start(
        &self,
        image: &str,
        name: &str,
        workdir: Option<&str>,
        labels: &HashMap<String, String>,
        placement: &Placement,
    ) -> Result<String, EngineError> {
        // The environment reaches the steps and services through their processes.
        let started = self
            .engine
            .start_pod_container(
                image,
                name,
                workdir,
                Vec::new(),
                labels.clone(),
                self.container_settings,
                placement,
            )
            .await?;
        Ok(started.id)
    }

    /// Waits until `service` is ready, saying so in the run's log; why not, if it is
    /// not.
    async fn ready(
        &self,
        service: &Service,
        running: &RunningService,
        pod: &str,
    ) -> Result<(), (String, String)> {
        let log = self.run.log();
        let probe = Probe::of(self.engine, service).await;
        let started = Instant::now();
        let env = self.service_env(service);
        match wait_ready(self.engine, running, pod, &probe, &env, service.ready_timeout()).await {
            Ok(()) => {
                log.log(format!(
                    "<-- service {} is ready after {:.2}s",
                    service.name,
                    started.elapsed().as_secs_f64()
                ))
                .await;
                Ok(())
            }
            Err(why) => Err((service.name.clone(), why.to_string())),
        }
    }

    /// The environment of a service's process: the run's identity, its own `env`,
    /// then its secrets' values (known to exist by now).
    fn service_env(&self, service: &Service) -> Vec<String> {
        let identity = env(self.run).into_iter().take(IDENTITY_VARIABLES);
        let own = service.env.iter().map(|(k, v)| (k.clone(), v.clone()));
        let secrets = service
            .secrets
            .iter()
            .filter_map(|name| self.settings.secrets.get(name).map(|value| (name.clone(), value.to_owned())));
        identity.chain(own).chain(secrets).map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// A container made for the run, started, its shell attached.
async fn cold(
    engine: &Engine,
    removals: &Removals,
    image: &str,
    name: &str,
    workdir: Option<&str>,
    labels: HashMap<String, String>,
    settings: &ContainerSettings,
) -> Result<Warm, EngineError> {
    // The environment reaches the steps through the steps, as for a warm container.
    let container = engine.start_run_container(image, name, workdir, Vec::new(), labels, settings).await?;
    // From here the container goes with the guard, even if this future is dropped.
    let guard = removals.guard(container.id.clone());
    let session = Session::attach(engine.docker(), &container.id).await?;
    Ok(Warm { id: container.id, guard, session })
}

/// How many variables of [`env`] say who the run is, before the spec's.
const IDENTITY_VARIABLES: usize = 4;

/// The report of a run cancelled before its steps: a shutdown gives it back, a
/// deadline or a cancel request ends it.
pub(crate) fn interrupted(run: &Run<PipelineSpec>) -> RunReport {
    match run.cancel_reason() {
        Some(CancelReason::Shutdown) | None => RunReport::Cancelled,
        Some(reason) => RunReport::Stopped(reason),
    }
}

async fn logged(log: &LogHandle, report: RunReport) -> RunReport {
    log.log(report.message()).await;
    report
}

/// The environment of every step: the run's identity, then the spec's.
fn env(run: &Run<PipelineSpec>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("CI".into(), "true".into()),
        ("CONVEYOR_RUN_ID".into(), run.run_id().to_owned()),
        ("CONVEYOR_RESOURCE".into(), run.resource().name.clone()),
        ("CONVEYOR_ATTEMPT".into(), run.attempt().to_string()),
    ];
    env.extend(run.spec().env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn container_labels(run: &Run<PipelineSpec>, settings: &Settings) -> HashMap<String, String> {
    HashMap::from([
        (labels::RUN_ID.to_owned(), run.run_id().to_owned()),
        (labels::DRIVER.to_owned(), settings.name.clone()),
        (labels::RESOURCE.to_owned(), run.resource().name.clone()),
        (labels::INSTANCE.to_owned(), settings.instance.clone()),
        (labels::MODE.to_owned(), settings.mode.label().to_owned()),
    ])
}

/// The secrets the run names, of the run, its steps and its services.
fn secret_names(spec: &PipelineSpec) -> impl Iterator<Item = &str> {
    let steps = spec.steps.iter().flat_map(|s| s.secrets.iter());
    let services = spec.services.iter().flat_map(|s| s.secrets.iter());
    spec.secrets.iter().chain(steps).chain(services).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_sdk::Resource;
    use serde_json::json;

    #[test]
    fn the_runs_identity_comes_before_the_specs_environment() {
        let spec: PipelineSpec =
            serde_json::from_value(json!({"steps": [], "env": {"CI": "false", "A": "1"}})).unwrap();
        let run = Run::new(Resource::new("web", "pipeline", json!({})), spec).with_run_id("r-1");
        let env: Vec<String> = env(&run).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            env,
            [
                "CI=true",
                "CONVEYOR_RUN_ID=r-1",
                "CONVEYOR_RESOURCE=web",
                "CONVEYOR_ATTEMPT=1",
                "A=1",
                "CI=false"
            ]
        );
        let labels = container_labels(&run, &Settings { instance: "me".into(), ..Settings::default() });
        assert_eq!(labels[labels::RUN_ID], "r-1");
        assert_eq!(labels[labels::INSTANCE], "me");
        assert_eq!(labels[labels::DRIVER], "command-runner");
        assert_eq!(labels[labels::MODE], "run", "never reaped unless the runner says it serves");
        let serving = Settings { mode: crate::Mode::Serve, ..Settings::default() };
        assert_eq!(container_labels(&run, &serving)[labels::MODE], "serve");
    }
}
