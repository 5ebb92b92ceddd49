//! The streams the Conveyor server creates at start-up.

use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;

use crate::protocol::subjects;
use crate::testing::TestingError;

/// Creates the three streams the Conveyor server creates at start-up (or leaves them
/// as they are): `messages` (Interest), `pipeline-engine` and `logs-engine` (WorkQueue).
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) -> Result<(), conveyor_sdk::testing::TestingError> {
/// conveyor_sdk::testing::create_server_streams(&async_nats::jetstream::new(client)).await?;
/// # Ok(()) }
/// ```
pub async fn create_server_streams(js: &Context) -> Result<(), TestingError> {
    create_replicated_server_streams(js, 1).await
}

/// [`create_server_streams`] with `replicas` copies of each stream, on as many nodes of
/// a NATS cluster (a server set up for clusters does this). Streams that exist are
/// left as they are.
///
/// ```no_run
/// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
/// let cluster = conveyor_sdk::testing::NatsCluster::start().await?;
/// conveyor_sdk::testing::create_replicated_server_streams(cluster.jetstream(), 3).await?;
/// let harness = conveyor_sdk::testing::Harness::start(&cluster.url_list()).await?;
/// # Ok(()) }
/// ```
pub async fn create_replicated_server_streams(js: &Context, replicas: usize) -> Result<(), TestingError> {
    let streams = [
        (subjects::MESSAGES_STREAM, vec!["resources.>", "events.>", "drivers.>"], RetentionPolicy::Interest),
        (subjects::PIPELINE_STREAM, vec!["pipelines.>"], RetentionPolicy::WorkQueue),
        (subjects::LOGS_STREAM, vec!["logs.>"], RetentionPolicy::WorkQueue),
    ];
    for (name, subjects, retention) in streams {
        js.get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: subjects.into_iter().map(str::to_owned).collect(),
            retention,
            storage: StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| TestingError::nats(format!("creating stream {name}"), e))?;
    }
    Ok(())
}
