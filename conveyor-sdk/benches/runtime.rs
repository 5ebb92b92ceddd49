//! Runtime overhead and log throughput, each against a hand-written async-nats
//! baseline doing the same work in the same run, on a nats-server of its own.
//!
//! ```text
//! cargo bench -p conveyor-sdk --bench runtime            # everything
//! cargo bench -p conveyor-sdk --bench runtime -- quick   # smaller counts, one round
//! cargo bench -p conveyor-sdk --bench runtime -- logs    # log throughput only
//! ```
//!
//! Arguments naming parts (`overhead`, `logs`, `idle`) pick those; none picks all.
//! Numbers pick the overhead's concurrencies (`-- overhead 8`; 1 and 8 if none);
//! `defaults-only`, `unclaimed-only` (without the claim) and `raw-only` run only that
//! loop, printing every round, to profile one side alone.
//!
//! Prints messages (or lines) per second for both sides and their ratio, the same for
//! the runtime with its metrics and HTTP endpoint on (beside it off, in the same
//! rounds), the peak RSS of a log-only run in a process of its own, and the RSS of an
//! idle driver process.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use conveyor_sdk::protocol::subjects;
use conveyor_sdk::testing::{create_server_streams, NatsServer};
use conveyor_sdk::validate::SpecValidator;
use conveyor_sdk::{
    Config, Driver, DriverMessage, DriverResult, Event, PipelineEvent, ReconcileError, Resource,
    ResourceDefinition, ResourceType, Run, Runtime,
};
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ROLE: &str = "CONVEYOR_BENCH_ROLE";
const NATS: &str = "CONVEYOR_BENCH_NATS";
const LINES: &str = "CONVEYOR_BENCH_LINES";

fn schema() -> serde_json::Value {
    serde_json::from_str(include_str!("../tests/fixtures/resource-definition.pipeline.json"))
        .map(|d: ResourceDefinition| d.schema)
        .unwrap_or_else(|_| json!({}))
}

fn seed_spec() -> serde_json::Value {
    json!({"image": "busybox", "steps": [
        {"name": "print-working-directory", "command": "pwd"},
        {"name": "list-files", "command": "ls -l"},
        {"name": "show-os-info", "command": "cat /etc/os-release"}]})
}

/// A driver that does nothing, or logs `lines` lines.
struct Bench {
    name: String,
    resource_type: String,
    lines: usize,
}

#[conveyor_sdk::async_trait]
impl Driver for Bench {
    type Spec = serde_json::Value;

    fn name(&self) -> &str {
        &self.name
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::owned(ResourceDefinition::new(&self.resource_type, schema()))]
    }

    async fn reconcile(&self, run: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
        if self.lines == 0 {
            return Ok(DriverResult::success("noop"));
        }
        // Built before the clock starts, as the baseline's payloads are; a set that is
        // cycled, so that the peak RSS shows the handle's memory, not this input's.
        let lines: Vec<String> =
            (0..1024).map(|i| format!("{i:>8} the quick brown fox jumps over the lazy dog")).collect();
        let (started, cpu) = (Instant::now(), cpu_seconds("self"));
        for line in lines.iter().cycle().take(self.lines) {
            run.log().log(line).await;
        }
        run.log().flush().await?;
        let data = json!({"seconds": started.elapsed().as_secs_f64(), "cpu": cpu_seconds("self") - cpu});
        Ok(DriverResult::success("logged").with_data(data))
    }
}

fn consumer_config(name: &str, resource_type: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.into()),
        name: Some(name.into()),
        filter_subjects: vec![
            subjects::resource(resource_type),
            subjects::driver_resource(name, resource_type),
        ],
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Publishes `n` DriverMessages for `resource_type`, pipelined, and waits for all acks:
/// `n` resources never seen before, each created once, as many users' pipelines are.
async fn backlog(js: &Context, resource_type: &str, n: usize) {
    let mut pending = std::collections::VecDeque::new();
    let batch = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..n {
        let mut resource = Resource::new(format!("bench-{batch}-{i}"), resource_type, seed_spec());
        resource.id = uuid::Uuid::new_v4().to_string();
        resource.metadata.insert("version".into(), "1".into());
        let message = DriverMessage {
            event: Event::Create,
            payload: resource,
            id: "5f0c2a9e1b7d4c3e8a6f0b1d".into(),
            run_id: uuid::Uuid::new_v4().to_string(),
        };
        let payload = serde_json::to_vec(&message).expect("encode");
        pending
            .push_back(js.publish(subjects::resource(resource_type), payload.into()).await.expect("publish"));
        if pending.len() > 2048 {
            pending.pop_front().expect("pending").await.expect("ack");
        }
    }
    for ack in pending {
        ack.await.expect("ack");
    }
}

/// Counts result events as they are published, until `n`.
async fn count_results(client: &async_nats::Client, prefix: String, n: usize) -> tokio::task::JoinHandle<()> {
    let mut results = client.subscribe(subjects::DRIVER_RESULT).await.expect("subscribe");
    tokio::spawn(async move {
        let mut seen = 0;
        while let Some(message) = results.next().await {
            if message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .is_some_and(|id| id.as_str().ends_with(&prefix))
            {
                seen += 1;
                if seen == n {
                    return;
                }
            }
        }
    })
}

/// The hand-written loop: pull, decode, validate, publish the result and wait for its
/// ack, ack the message; `concurrency` messages at a time.
async fn raw_loop(js: &Context, client: &async_nats::Client, concurrency: usize, n: usize) -> Measured {
    let name = format!("raw-{concurrency}");
    let resource_type = format!("rawjob{concurrency}");
    let stream = js.get_stream(subjects::MESSAGES_STREAM).await.expect("stream");
    let consumer = stream.create_consumer(consumer_config(&name, &resource_type)).await.expect("consumer");
    backlog(js, &resource_type, n).await;
    let validator =
        SpecValidator::new(&[ResourceType::owned(ResourceDefinition::new(&resource_type, schema()))])
            .expect("schema");
    let done = count_results(client, format!(".{name}"), n).await;
    let started = Clock::start(client);
    let messages = consumer.messages().await.expect("messages");
    messages
        .take(n)
        .for_each_concurrent(concurrency, |message| {
            let (validator, name) = (&validator, &name);
            async move {
                let message = message.expect("message");
                let dm: DriverMessage = serde_json::from_slice(&message.payload).expect("decode");
                let valid = validator.validate(&dm.payload).is_ok();
                let result =
                    if valid { DriverResult::success("noop") } else { DriverResult::failure("invalid") };
                let event =
                    PipelineEvent::driver_result(dm.run_id.clone(), dm.payload, result.into_event(name));
                let publish = PublishMessage::build()
                    .payload(serde_json::to_vec(&event).expect("encode").into())
                    .message_id(format!("result.{}.{name}", dm.run_id));
                js.send_publish(subjects::DRIVER_RESULT, publish).await.expect("publish").await.expect("ack");
                message.ack().await.expect("ack");
            }
        })
        .await;
    done.await.expect("counter");
    started.stop(n)
}

/// Empties the stream of results the loops fill.
async fn purge_results(js: &Context) {
    js.get_stream(subjects::PIPELINE_STREAM).await.expect("stream").purge().await.expect("purge");
    // The records of finished runs, which the runtime writes (its bucket's stream).
    if let Ok(records) = js.get_stream(format!("KV_{}", subjects::RUNS_BUCKET)).await {
        records.purge().await.expect("purge");
    }
}

/// What a runtime loop is measured with, beside the defaults.
#[derive(Clone, Copy)]
enum Variant {
    /// The defaults: superseding on, no metrics.
    Default,
    /// Its metrics recorded and served on a loopback port, as `--metrics-listen` does.
    Metrics,
    /// Superseding off (`Config::supersede(false)`): no claim of each resource.
    NoSupersede,
}

/// The runtime with a no-op driver, as `variant` says.
async fn sdk_loop(
    url: &str,
    js: &Context,
    client: &async_nats::Client,
    concurrency: usize,
    n: usize,
    variant: Variant,
) -> Measured {
    let kind = match variant {
        Variant::Default => "sdk",
        Variant::Metrics => "sdkm",
        Variant::NoSupersede => "sdkn",
    };
    let name = format!("{kind}-{concurrency}");
    let resource_type = format!("{kind}job{concurrency}");
    let stream = js.get_stream(subjects::MESSAGES_STREAM).await.expect("stream");
    // The consumer exists before the backlog, as the runtime would leave it.
    stream.create_consumer(consumer_config(&name, &resource_type)).await.expect("consumer");
    backlog(js, &resource_type, n).await;
    let done = count_results(client, format!(".{name}"), n).await;
    let stop = CancellationToken::new();
    let started = Clock::start(client);
    let driver = Bench { name: name.clone(), resource_type, lines: 0 };
    let mut config = Config::default().nats_url(url).concurrency(concurrency);
    if let Variant::NoSupersede = variant {
        config = config.supersede(false);
    }
    if let Variant::Metrics = variant {
        config = config
            .metrics(conveyor_sdk::runtime::Metrics::new())
            .metrics_listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    let serving =
        tokio::spawn(Runtime::with_config(driver, config).run_until(stop.clone().cancelled_owned()));
    done.await.expect("counter");
    let measured = started.stop(n);
    stop.cancel();
    serving.await.expect("join").expect("runtime");
    measured
}

/// A loop's rate and the CPU time it cost, per message, this process and nats-server.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    process_us: f64,
    server_us: f64,
}

/// The wall clock and the CPU time of this process and of nats-server from a start.
struct Clock {
    started: Instant,
    server: String,
    process_cpu: f64,
    server_cpu: f64,
}

impl Clock {
    fn start(client: &async_nats::Client) -> Self {
        let server = server_pid(&format!("127.0.0.1:{}", client.server_info().port)).unwrap_or_default();
        let server_cpu = cpu_seconds(&server);
        Self { started: Instant::now(), process_cpu: cpu_seconds("self"), server_cpu, server }
    }

    fn stop(&self, n: usize) -> Measured {
        let per = |seconds: f64| seconds * 1e6 / n as f64;
        Measured {
            rate: n as f64 / self.started.elapsed().as_secs_f64(),
            process_us: per(cpu_seconds("self") - self.process_cpu),
            server_us: per(cpu_seconds(&self.server) - self.server_cpu),
        }
    }
}

/// Raw pipelined JetStream publishing of the same Log payloads the handle sends.
async fn raw_log_publish(js: &Context, lines: usize, window: usize) -> f64 {
    let run_id = uuid::Uuid::new_v4().to_string();
    let subject = subjects::logs(&run_id);
    let payloads: Vec<Bytes> = (0..lines)
        .map(|i| {
            let log = conveyor_sdk::Log {
                runid: run_id.clone(),
                driver: "raw-logger".into(),
                pipeline: None,
                timestamp: "2026-11-23T21:30:46.123456789Z".into(),
                message: format!("{i:>8} the quick brown fox jumps over the lazy dog"),
            };
            serde_json::to_vec(&log).expect("encode").into()
        })
        .collect();
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(window + 1);
    for payload in payloads {
        pending.push_back(js.publish(subject.clone(), payload).await.expect("publish"));
        if pending.len() > window {
            pending.pop_front().expect("pending").await.expect("ack");
        }
    }
    for ack in pending {
        ack.await.expect("ack");
    }
    lines as f64 / started.elapsed().as_secs_f64()
}

/// Runs a driver that logs `lines` lines in this process (spawned as a child by the
/// main benchmark) and prints its rate and peak RSS.
async fn log_child(url: &str, lines: usize) {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client.clone());
    let name = "sdk-logger".to_string();
    let resource_type = "logjob".to_string();
    let stream = js.get_stream(subjects::MESSAGES_STREAM).await.expect("stream");
    stream.create_consumer(consumer_config(&name, &resource_type)).await.expect("consumer");
    let mut results = client.subscribe(subjects::DRIVER_RESULT).await.expect("subscribe");
    let stop = CancellationToken::new();
    let driver = Bench { name, resource_type: resource_type.clone(), lines };
    let config = Config::default().nats_url(url).legacy_live_logs(true);
    let serving =
        tokio::spawn(Runtime::with_config(driver, config).run_until(stop.clone().cancelled_owned()));
    backlog(&js, &resource_type, 1).await;
    let message = results.next().await.expect("result");
    let event: PipelineEvent = serde_json::from_slice(&message.payload).expect("result event");
    let seconds = event.driverresult.data["seconds"].as_f64().expect("seconds");
    let cpu = event.driverresult.data["cpu"].as_f64().expect("cpu");
    stop.cancel();
    serving.await.expect("join").expect("runtime");
    println!("RATE {}", lines as f64 / seconds);
    println!("CPU_US_PER_LINE {}", cpu * 1e6 / lines as f64);
    println!("PEAK_RSS_KB {}", proc_status_kb("self", "VmHWM"));
}

/// A driver process that does nothing but wait for work.
async fn idle_child(url: &str) {
    let driver = Bench { name: "idle".into(), resource_type: "idlejob".into(), lines: 0 };
    Runtime::with_config(driver, Config::default().nats_url(url)).run().await.expect("runtime");
}

/// CPU time (user and system) of process `pid` so far, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The pid of the nats-server listening on `url`'s port.
fn server_pid(url: &str) -> Option<String> {
    let port = url.rsplit(':').next()?.to_owned();
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_server = args.first().is_some_and(|a| a.ends_with(b"nats-server"))
            && args.windows(2).any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        is_server.then(|| entry.file_name().to_string_lossy().into_owned())
    })
}

fn proc_status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn child(role: &str, url: &str, lines: usize) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().expect("exe"));
    command.env(ROLE, role).env(NATS, url).env(LINES, lines.to_string());
    command
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    if let (Ok(role), Ok(url)) = (std::env::var(ROLE), std::env::var(NATS)) {
        let lines = std::env::var(LINES).ok().and_then(|l| l.parse().ok()).unwrap_or(0);
        match role.as_str() {
            "log" => log_child(&url, lines).await,
            "idle" => idle_child(&url).await,
            _ => {}
        }
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parts = ["overhead", "logs", "idle"];
    let picked =
        |part: &str| !args.iter().any(|a| parts.contains(&a.as_str())) || args.iter().any(|a| a == part);
    let (messages, lines, rounds) = if quick { (2_000, 20_000, 1) } else { (20_000, 200_000, 3) };

    let nats = NatsServer::start().await.expect("nats-server (run scripts/services.sh)");
    let url = nats.url();
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(&url)
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    create_server_streams(&js).await.expect("streams");

    if picked("overhead") {
        overhead(&url, &js, &client, messages, rounds, &args).await;
    }
    if picked("logs") {
        log_throughput(&url, &js, lines, rounds).await;
    }
    if picked("idle") {
        idle(&url, &js).await;
    }
}

/// The runtime with a no-op driver against the hand-written loop, with and without
/// metrics and the claim; at the concurrencies named among `args` (1 and 8 if none).
async fn overhead(
    url: &str,
    js: &Context,
    client: &async_nats::Client,
    messages: usize,
    rounds: usize,
    args: &[String],
) {
    println!("runtime overhead: {messages} messages (decode, validate, reconcile, result publish, ack), median of {rounds}");
    let mut concurrencies: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if concurrencies.is_empty() {
        concurrencies = vec![1, 8];
    }
    for concurrency in concurrencies {
        if args.iter().any(|a| a == "raw-only") {
            for _ in 0..rounds {
                let r = raw_loop(js, client, concurrency, messages).await;
                purge_results(js).await;
                println!(
                    "  concurrency {concurrency}: raw {:>9.0} msg/s   CPU µs/msg: process {:.1}, nats-server {:.1}",
                    r.rate, r.process_us, r.server_us
                );
            }
            continue;
        }
        let alone = [
            ("unclaimed-only", Variant::NoSupersede, "supersede off"),
            ("defaults-only", Variant::Default, "defaults"),
        ];
        if let Some((_, variant, label)) = alone.iter().find(|(arg, _, _)| args.iter().any(|a| a == arg)) {
            // For a profile of the runtime alone: `perf record -g -p <pid>` meanwhile.
            for _ in 0..rounds {
                let n = sdk_loop(url, js, client, concurrency, messages, *variant).await;
                purge_results(js).await;
                println!(
                    "  concurrency {concurrency}: {label} {:>9.0} msg/s   CPU µs/msg: process {:.1}, nats-server {:.1}",
                    n.rate, n.process_us, n.server_us
                );
            }
            continue;
        }
        let (mut raw, mut sdk, mut with_metrics, mut unclaimed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let r = raw_loop(js, client, concurrency, messages).await;
            purge_results(js).await;
            // Metrics off and on back to back, in alternating order, so that drift
            // of the machine falls on both.
            // Each loop starts from an empty result stream, so that none pays for the
            // results of the one before.
            let (s, m) = if round % 2 == 0 {
                let s = sdk_loop(url, js, client, concurrency, messages, Variant::Default).await;
                purge_results(js).await;
                (s, sdk_loop(url, js, client, concurrency, messages, Variant::Metrics).await)
            } else {
                let m = sdk_loop(url, js, client, concurrency, messages, Variant::Metrics).await;
                purge_results(js).await;
                (sdk_loop(url, js, client, concurrency, messages, Variant::Default).await, m)
            };
            purge_results(js).await;
            let n = sdk_loop(url, js, client, concurrency, messages, Variant::NoSupersede).await;
            purge_results(js).await;
            raw.push(r);
            sdk.push(s);
            with_metrics.push(m);
            unclaimed.push(n);
        }
        let rates = |m: &[Measured]| m.iter().map(|m| m.rate).collect::<Vec<_>>();
        let ratios = |a: &[Measured], b: &[Measured]| a.iter().zip(b).map(|(a, b)| a.rate / b.rate).collect();
        println!(
            "  concurrency {concurrency}: raw async-nats {:>9.0} msg/s   conveyor-sdk {:>9.0} msg/s   ratio {:.2}",
            median(rates(&raw)),
            median(rates(&sdk)),
            median(ratios(&sdk, &raw))
        );
        println!(
            "  concurrency {concurrency}: metrics off {:>9.0} msg/s   metrics on {:>9.0} msg/s   on/off {:.3}",
            median(rates(&sdk)),
            median(rates(&with_metrics)),
            median(ratios(&with_metrics, &sdk))
        );
        println!(
            "  concurrency {concurrency}: supersede off {:>9.0} msg/s   ratio to raw {:.2}",
            median(rates(&unclaimed)),
            median(ratios(&unclaimed, &raw))
        );
        let cpu = |m: &[Measured]| {
            let process = median(m.iter().map(|m| m.process_us).collect());
            let server = median(m.iter().map(|m| m.server_us).collect());
            format!("process {process:.1}, nats-server {server:.1}")
        };
        println!(
            "  concurrency {concurrency}: CPU µs/msg: raw {}; defaults {}; supersede off {}",
            cpu(&raw),
            cpu(&sdk),
            cpu(&unclaimed)
        );
    }
}

/// A driver logging `lines` lines in a process of its own against raw pipelined publishing.
async fn log_throughput(url: &str, js: &Context, lines: usize, rounds: usize) {
    println!("log throughput: {lines} lines, all acked by JetStream, median of {rounds}");
    let (mut raw, mut sdk, mut ratios, mut peaks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut raw_cpu, mut sdk_cpu, mut raw_server, mut sdk_server) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let server = server_pid(url).unwrap_or_default();
    let per_line = |seconds: f64| seconds * 1e6 / lines as f64;
    for _ in 0..rounds {
        let (server_before, cpu_before) = (cpu_seconds(&server), cpu_seconds("self"));
        let r = raw_log_publish(js, lines, 1024).await;
        raw_cpu.push(per_line(cpu_seconds("self") - cpu_before));
        raw_server.push(per_line(cpu_seconds(&server) - server_before));
        let server_before = cpu_seconds(&server);
        let output = child("log", url, lines).output().expect("log child");
        sdk_server.push(per_line(cpu_seconds(&server) - server_before));
        let text = String::from_utf8_lossy(&output.stdout);
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<f64>().ok()))
                .unwrap_or(0.0)
        };
        let s = value("RATE ");
        js.get_stream(subjects::LOGS_STREAM).await.expect("stream").purge().await.expect("purge");
        raw.push(r);
        sdk.push(s);
        ratios.push(s / r);
        peaks.push(value("PEAK_RSS_KB "));
        sdk_cpu.push(value("CPU_US_PER_LINE "));
    }
    println!(
        "  raw pipelined publish {:>9.0} lines/s   log handle {:>9.0} lines/s   ratio {:.2}   peak RSS of the logging process {:.1} MB",
        median(raw),
        median(sdk),
        median(ratios),
        median(peaks) / 1024.0
    );
    println!(
        "  CPU per line, µs: publishing process raw {:.2}, log handle {:.2}; nats-server raw {:.2}, log handle {:.2} (the log handle's process start included)",
        median(raw_cpu),
        median(sdk_cpu),
        median(raw_server),
        median(sdk_server)
    );
}

/// The RSS of a driver process that waits for work.
async fn idle(url: &str, js: &Context) {
    let mut idle = tokio::process::Command::from(child("idle", url, 0));
    let mut idle = idle.kill_on_drop(true).spawn().expect("idle child");
    let stream = js.get_stream(subjects::MESSAGES_STREAM).await.expect("stream");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream.consumer_info("idle").await.map(|i| i.num_waiting).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "idle driver never started pulling");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = idle.id().expect("pid").to_string();
    println!("idle driver process: RSS {:.1} MB", proc_status_kb(&pid, "VmRSS") as f64 / 1024.0);
    let _ = idle.kill().await;
}
