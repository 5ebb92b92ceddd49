//! A NATS cluster of three JetStream nodes on loopback, started for a test.

use std::ffi::OsString;
use std::time::Duration;

use async_nats::jetstream::stream::{self, ClusterInfo, StorageType};
use async_nats::jetstream::Context;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::nats_server::NatsServer;
use super::TestingError;

/// How many nodes a [`NatsCluster`] has.
const NODES: usize = 3;
/// The cluster's name, as every node is told.
const CLUSTER_NAME: &str = "conveyor-test";
/// How long starting the cluster, or finding a stream's leader, may take.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The stream created and deleted again to learn that the cluster takes replicated streams.
const PROBE_STREAM: &str = "conveyor-cluster-probe";
/// How long one question about leaders may go unanswered: a stream without a leader
/// does not answer at all.
const LEADER_QUESTION_TIMEOUT: Duration = Duration::from_millis(250);
/// How often leaders are asked about while there are none.
const LEADER_POLL: Duration = Duration::from_millis(50);
/// How long a leader asked to step down in favour of a node has to do it before it is
/// asked again.
const LEADER_ASK_AGAIN: Duration = Duration::from_secs(2);

/// Three `nats-server` nodes (2.10 or newer) forming one JetStream cluster on free
/// loopback ports, each with its own store directory; killed when dropped.
///
/// The nodes are named `node-0`, `node-1` and `node-2` (the names JetStream reports
/// as a stream's leader); each routes to the other two. The binary is found as for
/// [`NatsServer`].
///
/// ```no_run
/// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
/// use conveyor_sdk::testing::NatsCluster;
/// let mut cluster = NatsCluster::start().await?;
/// let config = conveyor_sdk::Config::default().nats_urls(cluster.urls());
/// // … create replicated streams, serve, dispatch …
/// let leader = cluster.stream_leader("messages").await?;
/// cluster.kill(leader).await; // SIGKILL: the others elect a new leader
/// cluster.restart(leader).await?; // same port, same store: it catches up
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    js: Context,
}

impl NatsCluster {
    /// Starts the three nodes and waits (up to 30 s) until the cluster takes streams
    /// with three replicas.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// assert_eq!(cluster.urls().len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn start() -> Result<Self, TestingError> {
        let (client_ports, route_ports) = {
            let ports = free_ports(2 * NODES)?;
            let (clients, routes) = ports.split_at(NODES);
            (clients.to_vec(), routes.to_vec())
        };
        let route = |port: u16| format!("nats://127.0.0.1:{port}");
        let mut nodes = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let others: Vec<String> =
                route_ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| route(*p)).collect();
            let args: Vec<OsString> = [
                "--name".to_owned(),
                node_name(i),
                "--cluster_name".to_owned(),
                CLUSTER_NAME.to_owned(),
                "--cluster".to_owned(),
                route(route_ports[i]),
                "--routes".to_owned(),
                others.join(","),
            ]
            .into_iter()
            .map(OsString::from)
            .collect();
            nodes.push(NatsServer::start_on(client_ports[i], args).await?);
        }
        let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
        let client = async_nats::ConnectOptions::new()
            .name("conveyor-test-cluster")
            .max_reconnects(None)
            .connect(urls.clone())
            .await
            .map_err(|e| TestingError::nats(format!("connecting to {}", urls.join(",")), e))?;
        let mut js = async_nats::jetstream::new(client);
        // A request to a node that was just killed must not hold a wait for long.
        js.set_timeout(Duration::from_secs(1));
        let cluster = Self { nodes, js };
        cluster.wait_until_replicated_streams_work().await?;
        Ok(cluster)
    }

    /// The client URL of every node, `nats://127.0.0.1:<port>`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// let config = conveyor_sdk::Config::default().nats_urls(cluster.urls());
    /// # Ok(()) }
    /// ```
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Every node's client URL in one comma-separated list, as
    /// [`Config::nats_url`](crate::Config::nats_url) and
    /// [`Harness::start`](crate::testing::Harness::start) take it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// let harness = conveyor_sdk::testing::Harness::start(&cluster.url_list()).await?;
    /// # Ok(()) }
    /// ```
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// The name of node `i` (`node-<i>`), as JetStream reports it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// assert_eq!(cluster.name(1), "node-1");
    /// # Ok(()) }
    /// ```
    pub fn name(&self, i: usize) -> String {
        node_name(i)
    }

    /// A JetStream context on the cluster (connected to any node; its requests time
    /// out after 1 s).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// conveyor_sdk::testing::create_replicated_server_streams(cluster.jetstream(), 3).await?;
    /// # Ok(()) }
    /// ```
    pub fn jetstream(&self) -> &Context {
        &self.js
    }

    /// Kills node `i` (SIGKILL, as a crash would); its store stays on disk. Does
    /// nothing to a node that is not running.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let mut cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// cluster.kill(0).await;
    /// assert!(!cluster.is_running(0));
    /// # Ok(()) }
    /// ```
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i) {
            node.stop().await;
        }
    }

    /// Starts node `i` again (killing it first if it runs) on the same ports and
    /// store, and waits until it is ready; it rejoins the cluster and catches up.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let mut cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// cluster.kill(2).await;
    /// cluster.restart(2).await?;
    /// assert!(cluster.is_running(2));
    /// # Ok(()) }
    /// ```
    pub async fn restart(&mut self, i: usize) -> Result<(), TestingError> {
        match self.nodes.get_mut(i) {
            Some(node) => node.restart().await,
            None => Err(TestingError::NoSuchNode { node: i, nodes: NODES }),
        }
    }

    /// Whether node `i` runs (it was not killed, or was restarted since).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// assert!((0..3).all(|i| cluster.is_running(i)));
    /// # Ok(()) }
    /// ```
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(NatsServer::is_running)
    }

    /// Makes node `i` the leader of consumer `consumer` of `stream`: asks its leader to
    /// step down in favour of node `i` (JetStream 2.11 or newer takes a preferred
    /// node), again every 2 s while another node leads it, and waits (up to 30 s) until
    /// node `i` does. Pull requests waiting on the old leader end with status 409.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let mut cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// // … a driver serving creates its consumer on stream `messages` …
    /// let leader = cluster.stream_leader("messages").await?;
    /// cluster.lead_consumer("messages", "command-runner", leader).await?;
    /// cluster.kill(leader).await; // the stream and the consumer lose their leader at once
    /// # Ok(()) }
    /// ```
    pub async fn lead_consumer(&self, stream: &str, consumer: &str, i: usize) -> Result<(), TestingError> {
        if i >= NODES {
            return Err(TestingError::NoSuchNode { node: i, nodes: NODES });
        }
        let deadline = Instant::now() + READY_WITHIN;
        let mut js = self.js.clone();
        js.set_timeout(LEADER_QUESTION_TIMEOUT);
        let mut ask_at = Instant::now();
        loop {
            let leader = match js.get_stream_no_info(stream).await {
                Ok(handle) => match handle.consumer_info(consumer).await {
                    Ok(info) => info.cluster.and_then(|c| c.leader),
                    Err(error) => Some(error.to_string()),
                },
                Err(error) => Some(error.to_string()),
            };
            if leader.as_deref().and_then(node_index) == Some(i) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TestingError::Timeout {
                    what: format!(
                        "{} to lead consumer {consumer} of stream {stream} (last: {leader:?})",
                        node_name(i)
                    ),
                    after: READY_WITHIN,
                });
            }
            if now >= ask_at {
                let subject = format!("CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}");
                let preferred = serde_json::json!({ "placement": { "preferred": node_name(i) } });
                // The answer says little: whether the consumer moved is asked above.
                let _: Result<serde_json::Value, _> = self.js.request(subject, &preferred).await;
                ask_at = now + LEADER_ASK_AGAIN;
            }
            // JetStream announces no event for an election: ask until there is a leader.
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Waits (up to 30 s) until every stream of the cluster, and every consumer of
    /// each, is led by a running node: after a node was killed, the others take a few
    /// seconds to elect new leaders for what it led. Until then, what needs a stream or
    /// consumer without a leader (storing a message, a pull request) gets no answer,
    /// or no responder.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let mut cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// conveyor_sdk::testing::create_replicated_server_streams(cluster.jetstream(), 3).await?;
    /// let leader = cluster.stream_leader("messages").await?;
    /// let killed = std::time::Instant::now();
    /// cluster.kill(leader).await;
    /// cluster.wait_for_leaders().await?;
    /// println!("the cluster elected new leaders within {:?}", killed.elapsed());
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_leaders(&self) -> Result<(), TestingError> {
        let deadline = Instant::now() + READY_WITHIN;
        let mut js = self.js.clone();
        js.set_timeout(LEADER_QUESTION_TIMEOUT);
        loop {
            let last = match self.leaderless(&js).await {
                Ok(leaderless) if leaderless.is_empty() => return Ok(()),
                Ok(leaderless) => format!("without a running leader: {}", leaderless.join(", ")),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                return Err(TestingError::Timeout {
                    what: format!("every stream and consumer to be led by a running node (last: {last})"),
                    after: READY_WITHIN,
                });
            }
            // JetStream announces no event for an election: ask until there are leaders.
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// The streams and consumers that no running node leads, as `stream S` and
    /// `consumer S/C`.
    async fn leaderless(&self, js: &Context) -> Result<Vec<String>, String> {
        let mut leaderless = Vec::new();
        let mut streams = js.streams();
        while let Some(info) = streams.next().await {
            let info = info.map_err(|e| format!("listing the streams: {e}"))?;
            let name = info.config.name;
            if !self.is_led(info.cluster.as_ref()) {
                leaderless.push(format!("stream {name}"));
                continue;
            }
            let stream = js.get_stream_no_info(&name).await.map_err(|e| format!("stream {name}: {e}"))?;
            let mut consumers = stream.consumers();
            while let Some(consumer) = consumers.next().await {
                let consumer = consumer.map_err(|e| format!("listing the consumers of {name}: {e}"))?;
                if !self.is_led(consumer.cluster.as_ref()) {
                    leaderless.push(format!("consumer {name}/{}", consumer.name));
                }
            }
        }
        Ok(leaderless)
    }

    /// Whether a running node leads what `cluster` describes.
    fn is_led(&self, cluster: Option<&ClusterInfo>) -> bool {
        cluster.and_then(|c| c.leader.as_deref()).and_then(node_index).is_some_and(|i| self.is_running(i))
    }

    /// The node that leads `stream` (the one JetStream's stream info names in
    /// `cluster.leader`), waiting up to 30 s until a running node does: after its
    /// leader was killed, the others take a few seconds to elect a new one.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
    /// let mut cluster = conveyor_sdk::testing::NatsCluster::start().await?;
    /// conveyor_sdk::testing::create_replicated_server_streams(cluster.jetstream(), 3).await?;
    /// let leader = cluster.stream_leader("messages").await?;
    /// cluster.kill(leader).await;
    /// let next = cluster.stream_leader("messages").await?;
    /// assert_ne!(next, leader);
    /// # Ok(()) }
    /// ```
    pub async fn stream_leader(&self, stream: &str) -> Result<usize, TestingError> {
        let deadline = Instant::now() + READY_WITHIN;
        let mut js = self.js.clone();
        js.set_timeout(LEADER_QUESTION_TIMEOUT);
        loop {
            let last = match js.get_stream_no_info(stream).await {
                Ok(handle) => match handle.get_info().await {
                    Ok(info) => {
                        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
                        match leader.as_deref().and_then(node_index) {
                            Some(i) if self.is_running(i) => return Ok(i),
                            _ => format!("leader {leader:?}"),
                        }
                    }
                    Err(error) => error.to_string(),
                },
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TestingError::Timeout {
                    what: format!("a running node to lead stream {stream} (last: {last})"),
                    after: READY_WITHIN,
                });
            }
            // JetStream announces no event for an election: ask until there is a leader.
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Creates (and deletes again) a stream with a replica on every node until that
    /// works: every node has joined and the cluster has a JetStream meta leader.
    async fn wait_until_replicated_streams_work(&self) -> Result<(), TestingError> {
        let deadline = Instant::now() + READY_WITHIN;
        let config = stream::Config {
            name: PROBE_STREAM.to_owned(),
            subjects: vec![PROBE_STREAM.to_owned()],
            num_replicas: NODES,
            storage: StorageType::Memory,
            ..Default::default()
        };
        loop {
            match self.js.get_or_create_stream(config.clone()).await {
                Ok(_) => {
                    return self
                        .js
                        .delete_stream(PROBE_STREAM)
                        .await
                        .map(drop)
                        .map_err(|e| TestingError::nats(format!("deleting stream {PROBE_STREAM}"), e));
                }
                Err(error) if Instant::now() >= deadline => {
                    return Err(TestingError::nats(
                        format!("creating a stream with {NODES} replicas on a fresh cluster"),
                        error,
                    ));
                }
                // No event says that the cluster has formed: try until it has.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix("node-")?.parse().ok().filter(|i| *i < NODES)
}

/// `n` distinct free loopback ports: all are held until all are found.
fn free_ports(n: usize) -> Result<Vec<u16>, TestingError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TestingError::Spawn)?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(TestingError::Spawn)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_map_back_to_their_index() {
        for i in 0..NODES {
            assert_eq!(node_index(&node_name(i)), Some(i));
        }
        assert_eq!(node_index("node-3"), None);
        assert_eq!(node_index("other-0"), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(6).unwrap_or_default();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!((ports.len(), unique.len()), (6, 6));
    }
}
