//! Live-log latency: a step prints timestamped lines at a steady rate, a viewer on the
//! dev server's log stream (WebSocket, then Server-Sent Events) notes when each arrives.
//!
//! ```text
//! cargo bench -p simple-runner --bench live_logs            # 10 s per rate and viewer
//! cargo bench -p simple-runner --bench live_logs -- quick   # 2 s per rate and viewer
//! cargo bench -p simple-runner --bench live_logs -- 20000 sse  # one rate, one viewer
//! cargo bench -p simple-runner --bench live_logs -- burst      # 100,000 lines at once
//! ```
//!
//! Besides the steady rates of 10 s (1,000 and 20,000 lines/s), 100,000 lines at 60,000
//! lines/s (`60000`) and a burst (`burst`): the step prints 100,000 lines as fast as its
//! shell can. For those the figure that matters is how far behind the viewer is at the
//! end: the last line's arrival minus the time it was printed.
//!
//! Everything runs in this process on a nats-server of its own: the dev server, the
//! runner (driver `live-log-bench`, containers without network) and the viewers. The
//! viewer connects before the run is dispatched (the run id is chosen here), so every
//! line is printed while it is connected. A line's latency is when it arrived (this
//! host's clock) minus the `$EPOCHREALTIME` the step printed in it (the container
//! shares the host's clock).
//!
//! Baselines of the same run: the same step as a raw `docker exec` whose output is read
//! straight from Docker (no driver, no NATS, no server), and the same lines published
//! on core NATS and received by a subscriber in this process.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use conveyor_sdk::testing::{DevServer, NatsServer};
use conveyor_sdk::{CancellationToken, Config, Resource, Runtime};
use futures_util::StreamExt;
use serde_json::json;
use simple_runner::{CommandRunner, ContainerSettings, Engine, Settings};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const IMAGE: &str = "conveyor-test/busybox:latest";
const DRIVER: &str = "live-log-bench";
/// How long after the run's result, or the step's end, a viewer waits for the rest.
const STRAGGLERS: Duration = Duration::from_secs(10);

/// Seconds since the Unix epoch, now.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The step: prints `<seq> <EPOCHREALTIME>` for seq 1..=total at `rate` lines/s (each
/// turn prints the lines due by then, then sleeps 2 ms), then `end`.
fn step_script(rate: u64, total: u64) -> String {
    format!(
        "rate={rate}; total={total}; n=0; s=${{EPOCHREALTIME/./}}
while [ $n -lt $total ]; do
  due=$(( (${{EPOCHREALTIME/./}} - s) * rate / 1000000 + 1 ))
  if [ $due -gt $total ]; then due=$total; fi
  while [ $n -lt $due ]; do n=$((n+1)); echo \"$n $EPOCHREALTIME\"; done
  sleep 0.002
done
echo end"
    )
}

/// The burst: prints `<seq> <EPOCHREALTIME>` for seq 1..=total as fast as the shell
/// can, then `end`.
fn burst_script(total: u64) -> String {
    format!(
        "n=0
while [ $n -lt {total} ]; do n=$((n+1)); echo \"$n $EPOCHREALTIME\"; done
echo end"
    )
}

/// One line as it arrived: when, its sequence number and when it was printed.
#[derive(Clone, Copy)]
struct Arrival {
    at: f64,
    seq: u64,
    printed: f64,
}

/// What a viewer saw: every numbered line, and whether the closing `end` came.
#[derive(Default)]
struct Seen {
    arrivals: Vec<Arrival>,
    ended: bool,
}

impl Seen {
    /// Notes one message of the step's output, arrived at `at`; true on `end`.
    fn note(&mut self, at: f64, message: &str) -> bool {
        if message == "end" {
            self.ended = true;
            return true;
        }
        let mut parts = message.split(' ');
        let seq = parts.next().and_then(|s| s.parse().ok());
        let printed = parts.next().and_then(|s| s.parse().ok());
        if let (Some(seq), Some(printed)) = (seq, printed) {
            self.arrivals.push(Arrival { at, seq, printed });
        }
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Viewer {
    WebSocket,
    Sse,
}

impl Viewer {
    fn label(self) -> &'static str {
        match self {
            Viewer::WebSocket => "WebSocket",
            Viewer::Sse => "SSE",
        }
    }
}

/// Connects to the dev server's stream of `run_id`; returns once connected, with the
/// task that reads it until `end` or until `stop`.
async fn connect_viewer(
    viewer: Viewer,
    base: &str,
    run_id: &str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Seen> {
    let path = format!("/logs/streams/{DRIVER}/{run_id}");
    match viewer {
        Viewer::WebSocket => {
            let url = format!("{}{path}", base.replacen("http", "ws", 1));
            let (mut socket, _) =
                tokio_tungstenite::connect_async(url).await.expect("a WebSocket to the dev server");
            tokio::spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let frame = tokio::select! {
                        frame = socket.next() => frame,
                        () = stop.cancelled() => break,
                    };
                    let Some(Ok(frame)) = frame else { break };
                    let at = now();
                    if let WsMessage::Text(text) = frame {
                        let (_timestamp, message): (String, String) =
                            serde_json::from_str(&text).expect("a frame [timestamp, message]");
                        if seen.note(at, &message) {
                            break;
                        }
                    }
                }
                let _ = socket.close(None).await;
                seen
            })
        }
        Viewer::Sse => {
            let response = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .expect("an event stream from the dev server");
            let mut body = response.bytes_stream();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut buffer: Vec<u8> = Vec::new();
                'read: loop {
                    let chunk = tokio::select! {
                        chunk = body.next() => chunk,
                        () = stop.cancelled() => break,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    let at = now();
                    buffer.extend_from_slice(&chunk);
                    // Every complete event of the buffer, read through once.
                    let mut read = 0;
                    while let Some(end) = buffer[read..].windows(2).position(|w| w == b"\n\n") {
                        let event = String::from_utf8_lossy(&buffer[read..read + end]);
                        read += end + 2;
                        for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                            let log: conveyor_sdk::Log =
                                serde_json::from_str(data.trim_start()).expect("an event of Log JSON");
                            if seen.note(at, &log.message) {
                                break 'read;
                            }
                        }
                    }
                    buffer.drain(..read);
                }
                seen
            })
        }
    }
}

/// Notes the lines of `run_id` at two points on their way to the viewer: the driver's
/// live subject (core NATS) and the harness's reading of the stored path (JetStream),
/// which feeds the dev server's streams.
fn tap(server: &DevServer, run_id: &str, stop: CancellationToken) -> tokio::task::JoinHandle<(Seen, Seen)> {
    let client = server.harness().client().clone();
    let subject = format!("live.logs.{run_id}.{DRIVER}");
    let mut stored = server.harness().subscribe_logs();
    let run_id = run_id.to_owned();
    tokio::spawn(async move {
        let mut live = client.subscribe(subject).await.expect("subscribe to the live subject");
        client.flush().await.expect("flush the subscription");
        let (mut on_live, mut on_stored) = (Seen::default(), Seen::default());
        loop {
            tokio::select! {
                message = live.next() => {
                    let Some(message) = message else { break };
                    let at = now();
                    if let Ok(log) = serde_json::from_slice::<conveyor_sdk::Log>(&message.payload) {
                        on_live.note(at, &log.message);
                    }
                }
                log = stored.recv() => match log {
                    Ok(log) if log.runid == run_id => {
                        on_stored.note(now(), &log.message);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                () = stop.cancelled() => break,
            }
        }
        (on_live, on_stored)
    })
}

/// Percentile `p` (0–100) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// Latency figures of one path, in milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    /// p50 of the lines printed in the first and in the last second.
    first_second_p50: f64,
    last_second_p50: f64,
    /// The highest p50 of any one second.
    worst_second_p50: f64,
    /// The latency of the last line printed: how far behind the viewer is at the end.
    end: f64,
}

impl Latency {
    fn of(arrivals: &[Arrival]) -> Self {
        let mut all: Vec<f64> = arrivals.iter().map(|a| (a.at - a.printed) * 1e3).collect();
        all.sort_by(f64::total_cmp);
        let start = arrivals.iter().map(|a| a.printed).fold(f64::INFINITY, f64::min);
        let mut seconds: HashMap<u64, Vec<f64>> = HashMap::new();
        for a in arrivals {
            seconds.entry((a.printed - start) as u64).or_default().push((a.at - a.printed) * 1e3);
        }
        let mut p50s: Vec<(u64, f64)> = seconds
            .into_iter()
            .map(|(second, mut l)| {
                l.sort_by(f64::total_cmp);
                (second, percentile(&l, 50.0))
            })
            .collect();
        p50s.sort_by_key(|(second, _)| *second);
        let p50_at = |i: Option<&(u64, f64)>| i.map_or(f64::NAN, |(_, p)| *p);
        Self {
            p50: percentile(&all, 50.0),
            p99: percentile(&all, 99.0),
            max: all.last().copied().unwrap_or(f64::NAN),
            first_second_p50: p50_at(p50s.first()),
            last_second_p50: p50_at(p50s.last()),
            worst_second_p50: p50s.iter().map(|(_, p)| *p).fold(f64::NAN, f64::max),
            end: arrivals.iter().max_by_key(|a| a.seq).map_or(f64::NAN, |a| (a.at - a.printed) * 1e3),
        }
    }

    fn line(&self) -> String {
        format!(
            "latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, of the last line {:.1} ms; p50 in the first second {:.1} ms, in the last {:.1} ms, worst second {:.1} ms",
            self.p50,
            self.p99,
            self.max,
            self.end,
            self.first_second_p50,
            self.last_second_p50,
            self.worst_second_p50
        )
    }
}

/// Lines of 1..=total missing from `seqs`, and lines seen more than once.
fn lost_and_repeated(total: u64, seqs: impl Iterator<Item = u64>) -> (u64, u64) {
    let mut seen = vec![false; total as usize + 1];
    let mut repeated = 0;
    for seq in seqs.filter(|s| (1..=total).contains(s)) {
        if std::mem::replace(&mut seen[seq as usize], true) {
            repeated += 1;
        }
    }
    (seen[1..].iter().filter(|s| !**s).count() as u64, repeated)
}

/// Lines of `arrivals` that came after a line printed later.
fn out_of_order(arrivals: &[Arrival]) -> usize {
    arrivals.windows(2).filter(|w| w[1].seq < w[0].seq).count()
}

/// What the step prints: `total` lines at a steady `rate`, or as fast as it can.
struct Case {
    /// Lines per second; `None`: a burst.
    rate: Option<u64>,
    total: u64,
    /// How long the printing should take, at most.
    seconds: u64,
}

impl Case {
    fn paced(rate: u64, seconds: u64) -> Self {
        Self { rate: Some(rate), total: rate * seconds, seconds }
    }

    fn burst(total: u64) -> Self {
        Self { rate: None, total, seconds: 10 }
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn script(&self) -> String {
        match self.rate {
            Some(rate) => step_script(rate, self.total),
            None => burst_script(self.total),
        }
    }

    fn label(&self) -> String {
        match self.rate {
            Some(rate) => format!("{rate} lines/s"),
            None => format!("a burst of {} lines", self.total),
        }
    }
}

/// How fast the lines of `arrivals` were printed, in lines per second.
fn printed_rate(arrivals: &[Arrival]) -> f64 {
    let first = arrivals.iter().map(|a| a.printed).fold(f64::INFINITY, f64::min);
    let last = arrivals.iter().map(|a| a.printed).fold(f64::NEG_INFINITY, f64::max);
    arrivals.len() as f64 / (last - first)
}

/// One run through the runner, watched by `viewer` on the dev server; its viewer's
/// latency.
async fn through_the_dev_server(server: &DevServer, case: &Case, viewer: Viewer) -> Latency {
    let harness = server.harness();
    let run_id = uuid::Uuid::new_v4().to_string();
    let stop = CancellationToken::new();
    let connected_at = now();
    let watching = connect_viewer(viewer, &server.url(), &run_id, stop.clone()).await;
    let tapping = tap(server, &run_id, stop.clone());
    let resource = Resource::new(
        "live-logs",
        "pipeline",
        json!({"image": IMAGE, "steps": [{"name": "print", "command": case.script()}]}),
    );
    let mut results = harness.subscribe_results();
    harness.create_with_run_id(resource, &run_id).await.expect("dispatch");
    // Waiting on the result alone: a wait on the harness's state would wake at every
    // line it reads, and take the cores the run needs.
    let waited = tokio::time::timeout(Duration::from_secs(case.seconds) + Duration::from_secs(120), async {
        while let Ok(event) = results.recv().await {
            if event.run_id == run_id {
                return;
            }
        }
    });
    waited.await.expect("the run's result");
    let result = harness.result_within(&run_id, Duration::from_secs(120)).await.expect("the run's result");
    assert!(result.driverresult.success, "the step failed: {}", result.driverresult.message);
    let stopping = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STRAGGLERS).await;
        stopping.cancel();
    });
    let seen = watching.await.expect("the viewer");
    stop.cancel();
    let (on_live, on_stored) = tapping.await.expect("the taps");

    let total = case.total();
    let stored: Vec<u64> = harness
        .logs(&run_id)
        .iter()
        .filter(|l| l.message.contains(' '))
        .filter_map(|l| l.message.split(' ').next()?.parse().ok())
        .collect();
    let (stored_lost, stored_repeated) = lost_and_repeated(total, stored.iter().copied());
    let (lost, repeated) = lost_and_repeated(total, seen.arrivals.iter().map(|a| a.seq));
    let early = seen.arrivals.iter().filter(|a| a.printed < connected_at).count();
    let arrivals: Vec<Arrival> =
        seen.arrivals.iter().copied().filter(|a| a.printed >= connected_at).collect();
    let latency = Latency::of(&arrivals);
    println!(
        "{}, {} viewer: printed {total} at {:.0} lines/s, received {} (lost {lost}, repeated {repeated}, out of order {}, `end` {}), printed before the viewer connected {early}; stored {} of them (lost {stored_lost}, repeated {stored_repeated})\n    {}",
        case.label(),
        viewer.label(),
        printed_rate(&seen.arrivals),
        seen.arrivals.len(),
        out_of_order(&seen.arrivals),
        if seen.ended { "came" } else { "missing" },
        stored.len(),
        latency.line()
    );
    println!("    on the way, the driver's live subject: {}", Latency::of(&on_live.arrivals).line());
    println!(
        "    on the way, the harness reading the stored path: {}",
        Latency::of(&on_stored.arrivals).line()
    );
    latency
}

/// The same step as a raw `docker exec` in a container of the same image and network,
/// its output read straight from Docker.
async fn raw_docker(docker: &bollard::Docker, case: &Case) -> Latency {
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        entrypoint: Some(vec!["/bin/sh".into()]),
        cmd: Some(vec![]),
        open_stdin: Some(true),
        host_config: Some(HostConfig {
            init: Some(true),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = docker.create_container(None, body).await.expect("create a container").id;
    docker.start_container(&container, None).await.expect("start the container");
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), case.script()]),
        ..Default::default()
    };
    let exec = docker.create_exec(&container, options).await.expect("create exec");
    let mut seen = Seen::default();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, Some(StartExecOptions::default())).await.expect("start exec")
    {
        let mut partial = String::new();
        while let Some(Ok(chunk)) = output.next().await {
            let at = now();
            partial.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                seen.note(at, line.trim_end());
            }
        }
    }
    let options = RemoveContainerOptions { force: true, ..Default::default() };
    docker.remove_container(&container, Some(options)).await.expect("remove the container");
    let (lost, _) = lost_and_repeated(case.total(), seen.arrivals.iter().map(|a| a.seq));
    let latency = Latency::of(&seen.arrivals);
    println!(
        "{}, raw docker exec, output read from Docker: printed at {:.0} lines/s, received {} (lost {lost})\n    {}",
        case.label(),
        printed_rate(&seen.arrivals),
        seen.arrivals.len(),
        latency.line()
    );
    latency
}

/// The same lines, paced the same way, published on core NATS by one connection and
/// received by a subscriber on another.
async fn raw_nats(nats_url: &str, case: &Case) -> Latency {
    let publisher = async_nats::connect(nats_url).await.expect("nats-server");
    let subscriber = async_nats::connect(nats_url).await.expect("nats-server");
    let subject = format!("bench.raw.{}", uuid::Uuid::new_v4());
    let mut messages = subscriber.subscribe(subject.clone()).await.expect("subscribe");
    // A flush does not wait for the server to have the subscription: publish until one
    // comes through, so that the first line is not published before it.
    loop {
        publisher.publish(subject.clone(), "ready".into()).await.expect("publish");
        publisher.flush().await.expect("flush");
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), messages.next()).await {
            break;
        }
    }
    let (rate, total) = (case.rate, case.total());
    let publishing = tokio::spawn(async move {
        let start = now();
        let mut n = 0;
        while n < total {
            let due = match rate {
                Some(rate) => (((now() - start) * rate as f64) as u64 + 1).min(total),
                None => total,
            };
            while n < due {
                n += 1;
                let line = format!("{n} {:.6}", now());
                publisher.publish(subject.clone(), line.into()).await.expect("publish");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        publisher.flush().await.expect("flush");
    });
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(case.seconds) + STRAGGLERS;
    while seen.arrivals.len() < total as usize {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, messages.next()).await else { break };
        seen.note(now(), &String::from_utf8_lossy(&message.payload));
    }
    publishing.await.expect("the publisher");
    let (lost, _) = lost_and_repeated(total, seen.arrivals.iter().map(|a| a.seq));
    let latency = Latency::of(&seen.arrivals);
    println!(
        "{}, raw core NATS publish → subscribe: received {} (lost {lost})\n    {}",
        case.label(),
        seen.arrivals.len(),
        latency.line()
    );
    latency
}

fn ratio(what: &str, ours: &Latency, raw: &Latency) {
    println!(
        "    ours ÷ {what} (lower is better): p50 {:.1}×, p99 {:.1}×, max {:.1}×, last line {:.1}×",
        ours.p50 / raw.p50,
        ours.p99 / raw.p99,
        ours.max / raw.max,
        ours.end / raw.end
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let seconds = if quick { 2 } else { 10 };
    // reqwest is built without a TLS provider of its own; the SSE viewer needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let engine = Engine::connect().await.expect("Docker (run scripts/services.sh)");
    let docker = engine.docker().clone();
    docker.inspect_image(IMAGE).await.expect("the test image (run scripts/services.sh)");
    let nats = NatsServer::start().await.expect("nats-server (run scripts/services.sh)");
    let server = DevServer::start(&nats.url(), "127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("the dev server");

    let settings = Settings {
        name: DRIVER.into(),
        container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
        ..Settings::default()
    };
    let runner = CommandRunner::new(engine.clone(), settings);
    let stop = CancellationToken::new();
    let config = Config::default().nats_url(nats.url()).concurrency(1);
    let serving =
        tokio::spawn(Runtime::with_config(runner.clone(), config).run_until(stop.clone().cancelled_owned()));
    server
        .harness()
        .wait_for_pull_requests(DRIVER, 1, Duration::from_secs(30))
        .await
        .expect("the runner serving");

    println!(
        "live-log latency, {seconds} s per rate and viewer; latency = arrival − the time printed in the line"
    );
    // Arguments naming rates or viewers pick those; none picks all.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let picked = |all: &[&str], name: &str| {
        !args.iter().any(|a| all.contains(&a.as_str())) || args.iter().any(|a| a == name)
    };
    let cases: Vec<Case> = [("1000", Case::paced(1_000, seconds)), ("20000", Case::paced(20_000, seconds))]
        .into_iter()
        .chain([
            ("60000", Case { rate: Some(60_000), total: 100_000, seconds: 2 }),
            ("burst", Case::burst(100_000)),
        ])
        .filter(|(name, _)| picked(&["1000", "20000", "60000", "burst"], name))
        .map(|(_, case)| case)
        .collect();
    let viewers: Vec<Viewer> = [(Viewer::WebSocket, "ws"), (Viewer::Sse, "sse")]
        .into_iter()
        .filter(|(_, name)| picked(&["ws", "sse"], name))
        .map(|(viewer, _)| viewer)
        .collect();
    for case in cases {
        let docker_raw = raw_docker(&docker, &case).await;
        let nats_raw = raw_nats(&nats.url(), &case).await;
        for viewer in viewers.iter().copied() {
            let ours = through_the_dev_server(&server, &case, viewer).await;
            ratio("raw docker exec", &ours, &docker_raw);
            ratio("raw core NATS", &ours, &nats_raw);
        }
    }

    stop.cancel();
    serving.await.expect("join the runtime").expect("the runtime");
    runner.finish_removals().await;
    server.shutdown().await;
    let filters = HashMap::from([("label".to_owned(), vec![format!("conveyor.driver={DRIVER}")])]);
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let left = docker.list_containers(Some(options)).await.map(|l| l.len()).unwrap_or(0);
    println!("containers left by the runner: {left}");
}
