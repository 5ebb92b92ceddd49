//! Start-up: connecting, waiting for the server's stream, the durable consumer.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use tokio_util::sync::CancellationToken;

use super::{Config, Error};
use crate::protocol::subjects;

/// Connects to NATS (any of the configured servers), retrying while none can be
/// reached. `None` when stopped first.
pub(crate) async fn connect(
    config: &Config,
    name: &str,
    stop: &CancellationToken,
) -> Result<Option<async_nats::Client>, Error> {
    let (url, retry) = (config.nats_url.as_str(), config.retry_interval);
    let servers = config.nats_servers()?;
    loop {
        let options = config.nats_connect_options().await?;
        let options = options.name(format!("conveyor-driver/{name}")).max_reconnects(None).event_callback(
            |event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            },
        );
        match options.connect(servers.clone()).await {
            Ok(client) => return Ok(Some(client)),
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
