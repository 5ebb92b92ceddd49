//! Start-up: connecting, waiting for the server's stream, the durable consumer; and
//! telling the puller when the connection changes.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use async_nats::Statistics;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{Config, Error};
use crate::protocol::subjects;

/// Connects to NATS (any of the configured servers), retrying while none can be
/// reached. `None` when stopped first.
///
/// The client's connection events wake [`ConnectionChanges::of`] the client.
pub(crate) async fn connect(
    config: &Config,
    name: &str,
    stop: &CancellationToken,
) -> Result<Option<async_nats::Client>, Error> {
    let (url, retry) = (config.nats_url.as_str(), config.retry_interval);
    let servers = config.nats_servers()?;
    loop {
        let (wake, woken) = watch::channel(());
        let wake = Arc::new(wake);
        let options = config.nats_connect_options().await?;
        let options = options.name(format!("conveyor-driver/{name}")).max_reconnects(None).event_callback(
            move |event| {
                if matches!(event, async_nats::Event::Connected | async_nats::Event::Disconnected) {
                    wake.send_replace(());
                }
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from NATS; reconnecting")
                        }
                        async_nats::Event::Connected => tracing::info!("connected to NATS"),
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            },
        );
        match options.connect(servers.clone()).await {
            Ok(client) => {
                ConnectionChanges::register(&client, woken);
                return Ok(Some(client));
            }
            Err(error) => {
                tracing::warn!(%url, %error, "cannot reach any NATS server; is the Conveyor server running? retrying");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// The client's connection, as the puller needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    /// How often the client has connected (the first time included).
    pub(crate) connects: u64,
    /// Whether it is connected now.
    pub(crate) connected: bool,
}

impl Link {
    /// The connection of `client` now.
    pub(crate) fn of(client: &async_nats::Client) -> Self {
        Self {
            connects: client.statistics().connects.load(std::sync::atomic::Ordering::Relaxed),
            connected: client.connection_state() == State::Connected,
        }
    }
}

/// How often the connection of a client the runtime was given is looked at: its
/// events go to whoever connected it.
const CONNECTION_POLL: Duration = Duration::from_millis(100);

/// What wakes on the connection events of each client [`connect`] made, under the
/// client's statistics (which every clone of a client shares), until serving on it
/// begins and takes it.
type Registered = Vec<(Weak<Statistics>, watch::Receiver<()>)>;
static CONNECTION_EVENTS: Mutex<Registered> = Mutex::new(Vec::new());

/// Completes when a client may have connected or disconnected; [`Link::of`] says
/// what it is now.
#[derive(Debug)]
pub(crate) enum ConnectionChanges {
    /// On the client's events, `Connected` and `Disconnected`: a client [`connect`] made.
    Events(watch::Receiver<()>),
    /// Every [`CONNECTION_POLL`]: a client of the caller's
    /// ([`Runtime::run_with_client`](super::Runtime::run_with_client)).
    Polled(tokio::time::Interval),
}

impl ConnectionChanges {
    /// The changes of `client`: its events when [`connect`] made it, else a poll.
    pub(crate) fn of(client: &async_nats::Client) -> Self {
        let statistics = Arc::as_ptr(&client.statistics());
        let events = CONNECTION_EVENTS.lock().ok().and_then(|mut registered| {
            registered.retain(|(client, _)| client.strong_count() > 0);
            let found =
                registered.iter().position(|(client, _)| std::ptr::eq(client.as_ptr(), statistics))?;
            Some(registered.swap_remove(found).1)
        });
        match events {
            Some(events) => Self::Events(events),
            None => {
                let mut every = tokio::time::interval(CONNECTION_POLL);
                every.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Self::Polled(every)
            }
        }
    }

    /// Keeps what wakes on the events of `client` for [`of`](Self::of).
    fn register(client: &async_nats::Client, events: watch::Receiver<()>) {
        if let Ok(mut registered) = CONNECTION_EVENTS.lock() {
            registered.retain(|(client, _)| client.strong_count() > 0);
            registered.push((Arc::downgrade(&client.statistics()), events));
        }
    }

    /// Completes when the client may have connected or disconnected since the last time.
    pub(crate) async fn changed(&mut self) {
        match self {
            Self::Events(events) => {
                if events.changed().await.is_err() {
                    // The client is gone, and its events with it.
                    std::future::pending::<()>().await;
                }
            }
            Self::Polled(every) => {
                every.tick().await;
            }
        }
    }
}

/// Waits until the server has created stream `messages`. `None` when stopped first.
pub(crate) async fn wait_for_stream(
    js: &Context,
    retry: Duration,
    stop: &CancellationToken,
) -> Option<Stream> {
    let mut said = false;
    loop {
        match js.get_stream(subjects::MESSAGES_STREAM).await {
            Ok(stream) => return Some(stream),
            Err(error) => {
                if !said {
                    tracing::warn!(
                        stream = subjects::MESSAGES_STREAM,
                        %error,
                        "the stream of resource events does not exist yet: waiting for the Conveyor server to create it"
                    );
                    said = true;
                } else {
                    tracing::debug!(%error, "still waiting for stream `messages`");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// The filter subjects of a driver's consumer.
pub(crate) fn filter_subjects(driver: &str, types: &[String]) -> Vec<String> {
    let mut subjects: Vec<String> =
        types.iter().flat_map(|t| [subjects::resource(t), subjects::driver_resource(driver, t)]).collect();
    subjects.sort();
    subjects.dedup();
    subjects
}

/// Creates or updates the driver's durable pull consumer, and checks that the server
/// kept its filter subjects.
pub(crate) async fn ensure_consumer(
    stream: &Stream,
    driver: &str,
    types: &[String],
    ack_wait: Duration,
) -> Result<async_nats::jetstream::consumer::PullConsumer, Error> {
    let filters = filter_subjects(driver, types);
    let config = pull::Config {
        durable_name: Some(driver.to_owned()),
        name: Some(driver.to_owned()),
        description: Some(format!("Conveyor driver {driver}")),
        filter_subjects: filters.clone(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        replay_policy: ReplayPolicy::Instant,
        ack_wait,
        // Deliveries are counted and given up on by the runtime, which publishes a
        // failure result; the server must not stop delivering silently.
        max_deliver: -1,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    let mut consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| Error::Consumer { driver: driver.to_owned(), source: Box::new(e) })?;
    let info = consumer
        .info()
        .await
        .map_err(|e| Error::Consumer { driver: driver.to_owned(), source: Box::new(e) })?;
    let mut kept = info.config.filter_subjects.clone();
    if kept.is_empty() {
        kept.extend(info.config.filter_subject.split_whitespace().map(str::to_owned));
    }
    kept.sort();
    if kept != filters {
        return Err(Error::FilterSubjectsIgnored { wanted: filters, kept });
    }
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that is not connected (nothing listens there); it keeps trying.
    async fn unconnected_client() -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap_or_else(|e| panic!("a client that connects in the background: {e}"))
    }

    #[tokio::test]
    async fn the_clients_the_runtime_connected_are_followed_on_their_events_and_others_are_polled() {
        let (ours, theirs) = (unconnected_client().await, unconnected_client().await);
        let (wake, woken) = watch::channel(());
        ConnectionChanges::register(&ours, woken);
        assert!(matches!(ConnectionChanges::of(&theirs), ConnectionChanges::Polled(_)));
        // A clone is the same client: its events are found under the clone too.
        let mut changes = ConnectionChanges::of(&ours.clone());
        assert!(matches!(changes, ConnectionChanges::Events(_)));
        wake.send_replace(());
        tokio::time::timeout(Duration::from_secs(5), changes.changed()).await.expect("woken by the event");
        // Serving on a client takes its events: a second serving on it polls.
        assert!(matches!(ConnectionChanges::of(&ours), ConnectionChanges::Polled(_)));
        assert_eq!(Link::of(&ours), Link { connects: 0, connected: false });
    }

    #[test]
    fn filters_cover_standalone_and_pipeline_subjects_of_every_type() {
        let f = filter_subjects("command-runner", &["pipeline".into(), "build".into()]);
        assert_eq!(
            f,
            [
                "drivers.command-runner.resources.build",
                "drivers.command-runner.resources.pipeline",
                "resources.build",
                "resources.pipeline",
            ]
        );
    }
}
