//! A service of a pod: its container, joined to the pod's network namespace and kept
//! alive by a shell on its open stdin as every run container is; its process, started
//! by an exec with its environment and secrets (given to that process alone, never to
//! the container's configuration); its output, in the run's log as `[NAME] line`
//! under the run's log cap; and how its process ended, said in the log when its end
//! reached the runner before the pod began to go down.

use bollard::container::LogOutput;
use conveyor_sdk::log::LineSplitter;
use conveyor_sdk::LogHandle;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::error::EngineError;
use crate::engine::{docker_error, Engine, ExecOutput};
use crate::spec::Service;
use crate::steps::cap::OutputCap;

/// A service whose process has started.
pub(crate) struct RunningService {
    /// Its name, from the spec.
    pub(crate) name: String,
    /// Its container.
    pub(crate) container_id: String,
    /// Its process's exit code once it has ended (`Some(None)`: ended, code unknown).
    ended: watch::Receiver<Option<Option<i64>>>,
    /// Once cancelled, its output is no longer logged and its end not said.
    quiet: CancellationToken,
    /// Logs its output until it ends or the service is quieted.
    pump: Option<JoinHandle<()>>,
}

impl RunningService {
    /// Starts the process of `service` in `container_id`: its `command` through
    /// `sh -c`, else its image's entrypoint and command, with `env`. Its output goes
    /// to `log` under `cap`.
    pub(crate) async fn start(
        engine: &Engine,
        service: &Service,
        container_id: String,
        env: Vec<String>,
        log: &LogHandle,
        cap: OutputCap,
    ) -> Result<Self, EngineError> {
        let cmd = match &service.command {
            Some(command) => vec!["/bin/sh".to_owned(), "-c".to_owned(), command.clone()],
            None => image_command(engine, &service.image).await?,
        };
        let (exec, output) = engine.exec_attached(&container_id, cmd, env).await?;
        let (sender, ended) = watch::channel(None);
        let quiet = CancellationToken::new();
        let pump = Pump {
            engine: engine.clone(),
            exec,
            prefix: format!("[{}] ", service.name),
            name: service.name.clone(),
            log: log.clone(),
            cap,
            quiet: quiet.clone(),
        };
        let pump = tokio::spawn(pump.run(output, sender));
        Ok(Self { name: service.name.clone(), container_id, ended, quiet, pump: Some(pump) })
    }

    /// Its process's exit code, once it has ended (`Some(None)`: ended, code unknown);
    /// `None` while it runs.
    pub(crate) fn ended(&self) -> Option<Option<i64>> {
        *self.ended.borrow()
    }

    /// Waits until its process has ended: its exit code, if known. Cancel-safe.
    pub(crate) async fn wait_ended(&self) -> Option<i64> {
        let mut ended = self.ended.clone();
        let code = match ended.wait_for(Option::is_some).await {
            Ok(code) => Some(code.flatten()),
            Err(_) => None,
        };
        match code {
            Some(code) => code,
            // The pump is gone without a word: it will say nothing more.
            None => std::future::pending().await,
        }
    }

    /// Stops logging its output, after what has already come, and saying its end: the
    /// pod is going down. An end that had already come (its output had ended) is said
    /// before this returns.
    pub(crate) async fn quiet(&mut self) {
        self.quiet.cancel();
        if let Some(pump) = self.pump.take() {
            if let Err(error) = pump.await {
                tracing::debug!(%error, service = %self.name, "the output of a service ended abnormally");
            }
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.quiet.cancel();
    }
}

/// The entrypoint and command of `image`, as `docker run` would start it.
async fn image_command(engine: &Engine, image: &str) -> Result<Vec<String>, EngineError> {
    let inspected = engine
        .docker()
        .inspect_image(image)
        .await
        .map_err(docker_error(format!("cannot read the configuration of image {image}")))?;
    let config = inspected.config.unwrap_or_default();
    let cmd: Vec<String> =
        config.entrypoint.unwrap_or_default().into_iter().chain(config.cmd.unwrap_or_default()).collect();
    if cmd.is_empty() {
        return Err(EngineError::NoCommand(image.to_owned()));
    }
    Ok(cmd)
}

/// What carries a service's output to the run's log.
struct Pump {
    engine: Engine,
    exec: String,
    name: String,
    prefix: String,
    log: LogHandle,
    cap: OutputCap,
    quiet: CancellationToken,
}

impl Pump {
    async fn run(self, mut output: ExecOutput, ended: watch::Sender<Option<Option<i64>>>) {
        let (mut stdout, mut stderr) = (LineSplitter::new(), LineSplitter::new());
        // Whether its output ended before the pod began to go down: its process ended
        // by itself then, and that is said even if the steps end while it is asked how.
        let ended_by_itself = loop {
            let chunk = tokio::select! {
                biased;
                chunk = output.next() => chunk,
                () = self.quiet.cancelled() => break false,
            };
            let lines = match chunk {
                Some(Ok(LogOutput::StdErr { message })) => stderr.push(&message),
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    stdout.push(&message)
                }
                Some(Ok(LogOutput::StdIn { .. })) => continue,
                Some(Err(error)) => {
                    tracing::debug!(%error, service = %self.name, "the output of a service broke off");
                    break !self.quiet.is_cancelled();
                }
                None => break !self.quiet.is_cancelled(),
            };
            self.emit(lines).await;
        };
        self.emit(stdout.finish().into_iter().chain(stderr.finish()).collect()).await;
        if !ended_by_itself {
            return;
        }
        let code = self.engine.exec_exit_code(&self.exec).await;
        // Said before it is known: whoever waits on the end finds this line in the log.
        let how = code.map_or_else(|| "ended".to_owned(), |code| format!("exited with code {code}"));
        self.log.log(format!("service {} {how}", self.name)).await;
        let _ = ended.send(Some(code));
    }

    async fn emit(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let mut lines: Vec<String> = lines.into_iter().map(|line| format!("{}{line}", self.prefix)).collect();
        self.cap.admit(&mut lines);
        if !lines.is_empty() {
            self.log.log_lines(&lines).await;
        }
    }
}
