//! Pulling messages only for free reconcile slots.
//!
//! Each pull request asks for exactly as many messages as there are free slots, and
//! the slots it offers are reserved until a message arrives for them or the server
//! says how many the request will not deliver (status 408/409 with
//! `Nats-Pending-Messages`). So a process never holds a message it cannot start,
//! and another process of the same driver gets it instead. One subscription serves
//! every request.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use async_nats::{StatusCode, Subscriber};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Hands out messages, each with the reconcile slot it may use.
pub(crate) struct Puller {
    consumer: PullConsumer,
    js: async_nats::jetstream::Context,
    slots: Arc<Semaphore>,
    inbox: async_nats::Subject,
    subscription: Subscriber,
    /// Slots offered to the server by requests not yet fulfilled.
    reserved: Vec<OwnedSemaphorePermit>,
    expiry: Duration,
    retry: Duration,
    /// When the server last said anything about our requests.
    last_heard: Instant,
}

impl Puller {
    pub(crate) async fn new(
        consumer: PullConsumer,
        js: async_nats::jetstream::Context,
        client: &async_nats::Client,
        slots: Arc<Semaphore>,
        expiry: Duration,
        retry: Duration,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = async_nats::Subject::from(client.new_inbox());
        let subscription = client.subscribe(inbox.clone()).await?;
        Ok(Self {
            consumer,
            js,
            slots,
            inbox,
            subscription,
            reserved: Vec::new(),
            expiry,
            retry,
            last_heard: Instant::now(),
        })
    }

    /// The next message and its slot; `None` once `stop` is cancelled.
    pub(crate) async fn next(&mut self, stop: &CancellationToken) -> Option<(Message, OwnedSemaphorePermit)> {
        loop {
            // Requests the server has not answered for longer than they live were lost
            // (a reconnect to a restarted server): offer their slots again.
            let silence_limit = self.last_heard + self.expiry + self.expiry / 2 + Duration::from_secs(1);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                incoming = self.subscription.next() => {
                    let Some(incoming) = incoming else {
                        tracing::warn!("the pull subscription ended; subscribing again");
                        self.resubscribe().await;
                        continue;
                    };
                    self.last_heard = Instant::now();
                    if let Some(found) = self.receive(incoming).await {
                        return Some(found);
                    }
                }
                permit = self.slots.clone().acquire_owned() => {
                    let Ok(first) = permit else { return None };
                    self.request(first).await;
                }
                _ = tokio::time::sleep_until(silence_limit), if !self.reserved.is_empty() => {
                    tracing::debug!(slots = self.reserved.len(), "pull requests went unanswered; renewing them");
                    self.reserved.clear();
                    self.last_heard = Instant::now();
                }
            }
        }
    }

    /// Offers `first` and every other free slot in one pull request.
    async fn request(&mut self, first: OwnedSemaphorePermit) {
        let mut offered = vec![first];
        while let Ok(permit) = self.slots.clone().try_acquire_owned() {
            offered.push(permit);
        }
        let batch = BatchConfig { batch: offered.len(), expires: Some(self.expiry), ..Default::default() };
        match self.consumer.request_batch(batch, self.inbox.clone()).await {
            Ok(()) => {
                if self.reserved.is_empty() {
                    self.last_heard = Instant::now();
                }
                self.reserved.extend(offered);
            }
            Err(error) => {
                tracing::warn!(%error, "requesting messages failed; retrying");
                drop(offered);
                tokio::time::sleep(self.retry).await;
            }
        }
    }

    async fn receive(&mut self, incoming: async_nats::Message) -> Option<(Message, OwnedSemaphorePermit)> {
        match incoming.status {
            None | Some(StatusCode::OK) => {
                let message = Message { message: incoming, context: self.js.clone() };
                match self.reserved.pop() {
                    Some(permit) => Some((message, permit)),
                    None => {
                        // Delivered for a request given up on: let another slot take it.
                        if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
                            tracing::debug!(%error, "returning an unexpected message failed");
                        }
                        None
                    }
                }
            }
            Some(StatusCode::IDLE_HEARTBEAT) => None,
            Some(status) => {
                let unfulfilled = incoming
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok());
                match unfulfilled {
                    Some(n) => {
                        let keep = self.reserved.len().saturating_sub(n);
                        self.reserved.truncate(keep);
                    }
                    None => {
                        tracing::warn!(
                            %status, description = ?incoming.description,
                            "a pull request ended without saying what it left; renewing all"
                        );
                        self.reserved.clear();
                        tokio::time::sleep(self.retry.min(Duration::from_millis(500))).await;
                    }
                }
                None
            }
        }
    }

    async fn resubscribe(&mut self) {
        self.reserved.clear();
        loop {
            let client = self.js.client();
            match client.subscribe(self.inbox.clone()).await {
                Ok(subscription) => {
                    self.subscription = subscription;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "subscribing for pulled messages failed; retrying");
                    tokio::time::sleep(self.retry).await;
                }
            }
        }
    }
}
