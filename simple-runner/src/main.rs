//! `simple-runner`: serve as the `command-runner` driver, run one resource locally,
//! fetch the artifacts of runs, or print the resource definition. Its command line is
//! read in `cli/`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use conveyor_sdk::driver::{CancelReason, RunCancellation};
use conveyor_sdk::validate::SpecValidator;
use conveyor_sdk::{Driver, LogHandle, Resource, Run};
use simple_runner::engine::image::PullProgress;
use simple_runner::{CommandRunner, Engine, Mode, Settings};

mod cli;

use cli::args::{Cli, Command, LogFormat, NatsArgs, RunnerArgs, ServeArgs};
use cli::spinner::PullSpinner;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema => match serde_json::to_string_pretty(&CommandRunner::definition()) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            init_tracing(args.log_format);
            match serve(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { file, name, runner, nats } => run_local(&file, &name, &runner, &nats).await,
        Command::Artifact(command) => cli::artifact::run(command).await,
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => subscriber.init(),
        // With the current span and its parents: a run's lines carry its fields.
        LogFormat::Json => subscriber.json().with_current_span(true).with_span_list(true).init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    // `Mode::Serve`: other replicas remove its containers once its liveness record is gone.
    let settings = Settings { mode: Mode::Serve, warm: args.warm(), ..args.runner.settings(&args.name)? };
    let engine = Engine::connect().await?;
    let runner = CommandRunner::new(engine.clone(), settings.clone());
    tracing::info!(driver = %args.name, instance = %settings.instance, "simple-runner starting");

    let api_root_ca = args.api_root_ca();
    let mut config = args
        .nats
        .config()
        .api_url(args.api_url)
        .concurrency(args.concurrency)
        .grace_period(args.grace_period);
    if let Some(ca) = api_root_ca {
        config = config.api_root_ca(ca);
    }
    if let (Some(cert), Some(key)) = (&args.nats.tls_cert, &args.nats.tls_key) {
        config = config.api_identity(conveyor_sdk::auth::ClientIdentity::from_files(cert, key)?);
    }
    if let Some(addr) = args.metrics_listen {
        let metrics = conveyor_sdk::runtime::Metrics::new();
        engine.metrics().register(&metrics);
        config = config.metrics(metrics).metrics_listen(addr);
    }

    // Liveness record before the first run, sweeps, drain, removals awaited, record
    // deleted: all in the runtime.
    let config = config.liveness_ttl(args.liveness_ttl).housekeeping_interval(args.sweep_interval);
    runner.serve(config, conveyor_sdk::runtime::shutdown_signal()).await?;
    Ok(())
}

async fn run_local(file: &PathBuf, name: &str, args: &RunnerArgs, nats: &NatsArgs) -> ExitCode {
    let fail = |text: String| {
        eprintln!("error: {text}");
        ExitCode::FAILURE
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => return fail(format!("cannot read {}: {error}", file.display())),
    };
    let resource: Resource = match serde_json::from_str(&text) {
        Ok(resource) => resource,
        Err(error) => return fail(format!("{} is not a resource: {error}", file.display())),
    };
    let engine = match Engine::connect().await {
        Ok(engine) => engine,
        Err(error) => return fail(conveyor_sdk::error_text(&error)),
    };
    let settings = match args.settings(name) {
        Ok(settings) => settings,
        Err(error) => return fail(error),
    };
    // `Mode::Run`: no serving runner's sweep ever removes its container.
    let mut runner = CommandRunner::new(engine, Settings { mode: Mode::Run, ..settings });
    if nats.given() {
        match nats.connect().await {
            Ok(js) => runner = runner.with_jetstream(js),
            Err(error) => return fail(error),
        }
    }
    let spec = match SpecValidator::new(&runner.resources()).map(|v| v.decode(&resource)) {
        Ok(Ok(spec)) => spec,
        Ok(Err(error)) => return fail(error.to_string()),
        Err(error) => return fail(error.to_string()),
    };
    // The run's timeout, or Ctrl-C, stops it as the runtime would: its step is stopped
    // and the run fails saying why.
    let timeout = runner.settings().run_timeout_for(&spec);
    let cancel = RunCancellation::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = conveyor_sdk::runtime::shutdown_signal() => on_signal.cancel(CancelReason::Requested),
            _ = tokio::time::sleep(timeout) => on_signal.cancel(CancelReason::Deadline(timeout)),
        }
    });
    let log = LogHandle::stdout();
    let run = Run::new(resource, spec).with_log(log.clone()).with_run_cancellation(cancel);
    // On a terminal a pull is a spinner; elsewhere its lines go to the log.
    let spinner = std::io::stdout().is_terminal().then(PullSpinner::start);
    let show = |update| {
        if let Some(spinner) = &spinner {
            spinner.show(update);
        }
    };
    let progress = match &spinner {
        Some(_) => PullProgress::Callback(&show),
        None => PullProgress::Log(&log),
    };
    let result = runner.execute(&run, progress).await.into_result();
    runner.finish_removals().await;
    let _ = log.flush().await;
    cli::artifact::say_kept(&result, run.run_id(), name, &nats.urls());
    if result.success {
        println!("result: success: {}", result.message);
        ExitCode::SUCCESS
    } else {
        println!("result: failure: {}", result.message);
        ExitCode::FAILURE
    }
}
