//! Pulling messages only for free reconcile slots.
//!
//! Each pull request asks for exactly as many messages as there are free slots, and
//! the slots it offers are reserved until a message arrives for them or the server
//! says how many the request will not deliver (status 408/409 with
//! `Nats-Pending-Messages`). So a process never holds a message it cannot start,
//! and another process of the same driver gets it instead. One subscription serves
//! every request.
//!
//! A pull request waits on the server. When the client is connected again after it
//! lost its connection (the server restarted, or the node of a cluster it was
//! connected to died), the requests made before are lost with the connection: their
//! slots are offered again at once, on the client's connection event. While the
//! client is disconnected no request is made. A consumer whose leader changed
//! (409 `Leadership Change`) is asked again at once; one without a leader, while one
//! is elected (503), and any other refusal, after a pause that doubles from 50 ms to
//! half a second. Requests the server has said nothing about for one and a half
//! expiries and a second are given up too: the last resort, for requests lost without
//! the client noticing.

use std::future::Future;
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

use super::setup::{ConnectionChanges, Link};

/// The pause before asking again a consumer that refused a request; it doubles with
/// each refusal in a row.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest such pause (or the retry interval, when that is shorter).
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

/// While messages wait on the server (the requests were filled whole), free slots are
/// gathered until half of them are free, or this long after the first, and offered in
/// one request: a request per message would cost the server about as much again as
/// the message.
const GATHER: Duration = Duration::from_millis(1);

/// The NATS side of pulling: the consumer's requests, the inbox their messages come
/// to, and the client's connection.
pub(crate) trait Source: Send {
    /// What a worker is handed for a delivered message.
    type Delivery: Send;

    /// Sends a pull request.
    fn request(&mut self, batch: BatchConfig) -> impl Future<Output = Result<(), async_nats::Error>> + Send;

    /// The next message on the inbox; `None` once its subscription has ended.
    fn incoming(&mut self) -> impl Future<Output = Option<async_nats::Message>> + Send;

    /// Subscribes to the inbox again.
    fn resubscribe(&mut self) -> impl Future<Output = Result<(), async_nats::Error>> + Send;

    /// The client's connection now.
    fn link(&self) -> Link;

    /// A delivered message, for a worker.
    fn delivery(&self, incoming: async_nats::Message) -> Self::Delivery;

    /// Hands a delivered message back to the consumer, for another slot.
    fn give_back(&self, delivery: Self::Delivery) -> impl Future<Output = ()> + Send;
}

/// A durable pull consumer, its requests answered on one inbox of the client.
pub(crate) struct Nats {
    consumer: PullConsumer,
    js: async_nats::jetstream::Context,
    client: async_nats::Client,
    inbox: async_nats::Subject,
    subscription: Subscriber,
}

impl Source for Nats {
    type Delivery = Message;

    async fn request(&mut self, batch: BatchConfig) -> Result<(), async_nats::Error> {
        Ok(self.consumer.request_batch(batch, self.inbox.clone()).await?)
    }

    async fn incoming(&mut self) -> Option<async_nats::Message> {
        self.subscription.next().await
    }

    async fn resubscribe(&mut self) -> Result<(), async_nats::Error> {
        self.subscription = self.client.subscribe(self.inbox.clone()).await?;
        Ok(())
    }

    fn link(&self) -> Link {
        Link::of(&self.client)
    }

    fn delivery(&self, incoming: async_nats::Message) -> Message {
        Message { message: incoming, context: self.js.clone() }
    }

    async fn give_back(&self, delivery: Message) {
        if let Err(error) = delivery.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(%error, "returning an unexpected message failed");
        }
    }
}

/// Hands out messages, each with the reconcile slot it may use.
pub(crate) struct Puller<S: Source = Nats> {
    source: S,
    changes: ConnectionChanges,
    slots: Arc<Semaphore>,
    offered: Offered,
    expiry: Duration,
    retry: Duration,
    /// The client's connection as last seen: requests are made while it is connected;
    /// those made before it connected again are lost.
    link: Link,
    /// No request before this: the consumer refused one, or sending one failed.
    paused_until: Option<Instant>,
    /// The pause after the next refusal in a row.
    next_pause: Duration,
    /// Whether messages wait on the server: its last request was filled whole.
    backlog: bool,
    /// Free slots gathered for the next request, and until when: at most
    /// `gather_at` (half the slots), at most [`GATHER`].
    gathering: Vec<OwnedSemaphorePermit>,
    gather_at: usize,
    gather_until: Option<Instant>,
}

impl Puller<Nats> {
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
        let source = Nats { consumer, js, client: client.clone(), inbox, subscription };
        Ok(Self::with_source(source, ConnectionChanges::of(client), slots, expiry, retry))
    }
}

impl<S: Source> Puller<S> {
    fn with_source(
        source: S,
        changes: ConnectionChanges,
        slots: Arc<Semaphore>,
        expiry: Duration,
        retry: Duration,
    ) -> Self {
        let link = source.link();
        // No slot is taken yet: all of them are free.
        let gather_at = (slots.available_permits() / 2).max(1);
        Self {
            source,
            changes,
            slots,
            offered: Offered::default(),
            expiry,
            retry,
            link,
            paused_until: None,
            next_pause: FIRST_PAUSE,
            backlog: false,
            gathering: Vec::new(),
            gather_at,
            gather_until: None,
        }
    }

    /// The next message and its slot; `None` once `stop` is cancelled.
    pub(crate) async fn next(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<(S::Delivery, OwnedSemaphorePermit)> {
        loop {
            let silence_limit = self.offered.silence_limit(self.expiry);
            let paused_until = self.paused_until;
            let may_request = self.link.connected && paused_until.is_none();
            let gather_until = self.gather_until;
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                () = self.changes.changed() => self.connection_changed(),
                incoming = self.source.incoming() => {
                    let Some(incoming) = incoming else {
                        if !self.resubscribe(stop).await {
                            return None;
                        }
                        continue;
                    };
                    if let Some(found) = self.receive(incoming).await {
                        return Some(found);
                    }
                }
                () = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)), if paused_until.is_some() => {
                    self.paused_until = None;
                }
                permit = self.slots.clone().acquire_owned(), if may_request => {
                    let Ok(free) = permit else { return None };
                    self.gathering.push(free);
                    if self.backlog && self.gathering.len() < self.gather_at {
                        self.gather_until.get_or_insert_with(|| Instant::now() + GATHER);
                    } else {
                        self.request().await;
                    }
                }
                () = tokio::time::sleep_until(gather_until.unwrap_or_else(Instant::now)), if may_request && gather_until.is_some() => {
                    self.request().await;
                }
                () = tokio::time::sleep_until(silence_limit.unwrap_or_else(Instant::now)), if silence_limit.is_some() => {
                    tracing::debug!(slots = self.offered.len(), "pull requests went unanswered; renewing them");
                    self.offered.release_all();
                }
            }
        }
    }

    /// Takes note of the client's connection: requests made before it connected again
    /// are lost, and their slots are offered again at once.
    fn connection_changed(&mut self) {
        let now = self.source.link();
        if now.connects > self.link.connects {
            let lost = self.offered.release_all();
            self.backlog = false;
            tracing::debug!(slots = lost, "connected again: requesting messages anew");
            self.paused_until = None;
            self.next_pause = FIRST_PAUSE;
        }
        self.link = now;
    }

    /// Offers the slots gathered and every other free slot in one pull request.
    async fn request(&mut self) {
        self.gather_until = None;
        let mut offered = std::mem::take(&mut self.gathering);
        while let Ok(permit) = self.slots.clone().try_acquire_owned() {
            offered.push(permit);
        }
        let batch = BatchConfig { batch: offered.len(), expires: Some(self.expiry), ..Default::default() };
        match self.source.request(batch).await {
            Ok(()) => self.offered.add(offered),
            Err(error) => {
                tracing::warn!(%error, "requesting messages failed; retrying");
                drop(offered);
                self.paused_until = Some(Instant::now() + self.retry);
            }
        }
    }

    async fn receive(
        &mut self,
        incoming: async_nats::Message,
    ) -> Option<(S::Delivery, OwnedSemaphorePermit)> {
        self.offered.heard();
        match incoming.status {
            None | Some(StatusCode::OK) => {
                self.next_pause = FIRST_PAUSE;
                let delivery = self.source.delivery(incoming);
                // Beyond the slots offered (a request thought lost delivered after all),
                // a free slot may take it.
                let offered = self.offered.take();
                // Every slot offered is filled: more messages may be waiting, until a
                // request ends unfilled.
                if offered.is_some() && self.offered.len() == 0 {
                    self.backlog = true;
                }
                match offered.or_else(|| self.slots.clone().try_acquire_owned().ok()) {
                    Some(permit) => Some((delivery, permit)),
                    None => {
                        self.source.give_back(delivery).await;
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
                        self.next_pause = FIRST_PAUSE;
                        self.backlog = false;
                        self.offered.unfulfilled(n);
                    }
                    None if status == StatusCode::REQUEST_TERMINATED
                        && incoming.description.as_deref() == Some("Leadership Change") =>
                    {
                        // The requests were the old leader's; the new one takes new ones.
                        let lost = self.offered.release_all();
                        tracing::debug!(
                            slots = lost,
                            "the consumer's leader changed; requesting messages anew"
                        );
                    }
                    None => {
                        let lost = self.offered.release_all();
                        let pause = self.next_pause;
                        self.next_pause = (pause * 2).min(LONGEST_PAUSE.min(self.retry)).max(FIRST_PAUSE);
                        self.paused_until = Some(Instant::now() + pause);
                        let (description, first) = (incoming.description, pause == FIRST_PAUSE);
                        // Said once per run of refusals: an election takes a few seconds.
                        if first && status == StatusCode::NO_RESPONDERS {
                            tracing::warn!(
                                slots = lost,
                                "the consumer has no leader (being elected?); requesting again after pauses"
                            );
                        } else if first {
                            tracing::warn!(
                                %status, ?description, slots = lost,
                                "a pull request ended without saying what it left; requesting again after pauses"
                            );
                        } else {
                            tracing::debug!(%status, ?description, slots = lost, ?pause, "a pull request was refused again");
                        }
                    }
                }
                None
            }
        }
    }

    /// Subscribes to the inbox again; `false` when stopped first.
    async fn resubscribe(&mut self, stop: &CancellationToken) -> bool {
        tracing::warn!("the pull subscription ended; subscribing again");
        self.offered.release_all();
        loop {
            match self.source.resubscribe().await {
                Ok(()) => return true,
                Err(error) => tracing::warn!(%error, "subscribing for pulled messages failed; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                () = tokio::time::sleep(self.retry) => {}
            }
        }
    }
}

/// The slots offered by pull requests not yet fulfilled, and when the server last
/// said anything about them.
#[derive(Debug)]
struct Offered {
    permits: Vec<OwnedSemaphorePermit>,
    last_heard: Instant,
}

impl Default for Offered {
    fn default() -> Self {
        Self { permits: Vec::new(), last_heard: Instant::now() }
    }
}

impl Offered {
    fn len(&self) -> usize {
        self.permits.len()
    }

    /// A request offers `permits`.
    fn add(&mut self, permits: Vec<OwnedSemaphorePermit>) {
        if self.permits.is_empty() {
            self.last_heard = Instant::now();
        }
        self.permits.extend(permits);
    }

    /// The server said something about the requests.
    fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// A slot for a message delivered.
    fn take(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permits.pop()
    }

    /// A request ended with `n` of its messages not delivered: their slots are free.
    fn unfulfilled(&mut self, n: usize) {
        self.permits.truncate(self.permits.len().saturating_sub(n));
    }

    /// Every request is given up: all slots are free. Returns how many there were.
    fn release_all(&mut self) -> usize {
        let n = self.permits.len();
        self.permits.clear();
        n
    }

    /// When requests the server has said nothing about are presumed lost: once they
    /// would have expired, and a half expiry and a second more.
    fn silence_limit(&self, expiry: Duration) -> Option<Instant> {
        (!self.permits.is_empty()).then(|| self.last_heard + expiry + expiry / 2 + Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::{mpsc, watch};
    use tokio::task::JoinHandle;

    use super::*;

    const EXPIRY: Duration = Duration::from_secs(30);
    const RETRY: Duration = Duration::from_secs(2);
    const SLOTS: usize = 4;

    /// The NATS side, played by the test: it notes each request, delivers what the
    /// test sends, and says what the test sets of the connection.
    struct Fake {
        requests: mpsc::UnboundedSender<(Instant, usize)>,
        inbox: mpsc::UnboundedReceiver<async_nats::Message>,
        link: Arc<Mutex<Link>>,
        given_back: mpsc::UnboundedSender<()>,
    }

    impl Source for Fake {
        type Delivery = async_nats::Message;

        async fn request(&mut self, batch: BatchConfig) -> Result<(), async_nats::Error> {
            self.requests.send((Instant::now(), batch.batch))?;
            Ok(())
        }

        async fn incoming(&mut self) -> Option<async_nats::Message> {
            match self.inbox.recv().await {
                Some(message) => Some(message),
                None => std::future::pending().await,
            }
        }

        async fn resubscribe(&mut self) -> Result<(), async_nats::Error> {
            Ok(())
        }

        fn link(&self) -> Link {
            *self.link.lock().unwrap()
        }

        fn delivery(&self, incoming: async_nats::Message) -> async_nats::Message {
            incoming
        }

        async fn give_back(&self, _: async_nats::Message) {
            let _ = self.given_back.send(());
        }
    }

    /// A puller of [`SLOTS`] slots serving in the background, on a client connected
    /// once, and the test's ends of its NATS side.
    struct Served {
        requests: mpsc::UnboundedReceiver<(Instant, usize)>,
        inbox: mpsc::UnboundedSender<async_nats::Message>,
        link: Arc<Mutex<Link>>,
        events: watch::Sender<()>,
        delivered: mpsc::UnboundedReceiver<OwnedSemaphorePermit>,
        given_back: mpsc::UnboundedReceiver<()>,
        stop: CancellationToken,
        task: JoinHandle<()>,
    }

    fn serve() -> Served {
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        let (delivered_tx, delivered) = mpsc::unbounded_channel();
        let (events, woken) = watch::channel(());
        let link = Arc::new(Mutex::new(Link { connects: 1, connected: true }));
        let (given_back_tx, given_back) = mpsc::unbounded_channel();
        let fake =
            Fake { requests: requests_tx, inbox: inbox_rx, link: link.clone(), given_back: given_back_tx };
        let slots = Arc::new(Semaphore::new(SLOTS));
        let mut puller = Puller::with_source(fake, ConnectionChanges::Events(woken), slots, EXPIRY, RETRY);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                while let Some((_, slot)) = puller.next(&stop).await {
                    if delivered_tx.send(slot).is_err() {
                        return;
                    }
                }
            }
        });
        Served { requests, inbox, link, events, delivered, given_back, stop, task }
    }

    fn message(
        status: Option<StatusCode>,
        description: Option<&str>,
        pending: Option<usize>,
    ) -> async_nats::Message {
        let headers = pending.map(|n| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Pending-Messages", n.to_string());
            headers
        });
        async_nats::Message {
            subject: "_INBOX.pull".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers,
            status,
            description: description.map(str::to_owned),
            length: 0,
        }
    }

    impl Served {
        /// The next pull request: when it was made, and for how many messages.
        async fn request(&mut self) -> (Instant, usize) {
            self.requests.recv().await.expect("the puller makes a request")
        }

        fn no_request(&mut self) {
            assert!(self.requests.try_recv().is_err(), "no request is made");
        }

        /// The client's connection is now this, and the client says so.
        fn connection(&self, connects: u64, connected: bool) {
            *self.link.lock().unwrap() = Link { connects, connected };
            self.events.send_replace(());
        }

        fn send(&self, message: async_nats::Message) {
            self.inbox.send(message).expect("the puller reads its inbox");
        }

        /// Delivers a message; returns the slot the puller handed out with it.
        async fn deliver(&mut self) -> OwnedSemaphorePermit {
            self.send(message(None, None, None));
            self.delivered.recv().await.expect("the puller hands out the message")
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.expect("the puller stops");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_offers_the_slots_of_the_lost_requests_again_at_once() {
        let mut served = serve();
        assert_eq!(served.request().await.1, SLOTS);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let reconnected = Instant::now();
        served.connection(2, true);
        assert_eq!(served.request().await, (reconnected, SLOTS), "at once, for every slot");
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_reconnect_unanswered_requests_are_given_up_only_after_the_silence_limit() {
        let mut served = serve();
        let (first, _) = served.request().await;
        let (again, slots) = served.request().await;
        assert_eq!((again - first, slots), (EXPIRY + EXPIRY / 2 + Duration::from_secs(1), SLOTS));
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_event_of_the_connection_the_requests_were_made_on_renews_nothing() {
        let mut served = serve();
        served.request().await;
        served.connection(1, true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        served.no_request();
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_is_made_while_disconnected_and_every_slot_is_offered_on_reconnecting() {
        let mut served = serve();
        served.request().await;
        served.connection(1, false);
        drop(served.deliver().await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        served.no_request();
        let back = Instant::now();
        served.connection(2, true);
        assert_eq!(served.request().await, (back, SLOTS));
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_without_a_leader_is_asked_again_after_pauses_that_double_up_to_half_a_second() {
        let mut served = serve();
        let (mut last, _) = served.request().await;
        for pause in [50, 100, 200, 400, 500, 500].map(Duration::from_millis) {
            served.send(message(Some(StatusCode::NO_RESPONDERS), None, None));
            let (at, slots) = served.request().await;
            assert_eq!((at - last, slots), (pause, SLOTS));
            last = at;
        }
        // A delivery shows a leader: the next refusal pauses 50 ms again.
        drop(served.deliver().await);
        assert_eq!(served.request().await.1, 1, "the slot the delivery used");
        let refused = Instant::now();
        served.send(message(Some(StatusCode::NO_RESPONDERS), None, None));
        assert_eq!(served.request().await, (refused + Duration::from_millis(50), SLOTS));
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_leadership_change_is_answered_with_a_request_for_every_slot_at_once() {
        let mut served = serve();
        served.request().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let changed = Instant::now();
        served.send(message(Some(StatusCode::REQUEST_TERMINATED), Some("Leadership Change"), None));
        assert_eq!(served.request().await, (changed, SLOTS));
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_ends_frees_only_the_slots_it_left_unfilled() {
        let mut served = serve();
        served.request().await;
        let _running = served.deliver().await;
        let ended = Instant::now();
        served.send(message(Some(StatusCode::TIMEOUT), Some("Request Timeout"), Some(SLOTS - 1)));
        assert_eq!(served.request().await, (ended, SLOTS - 1));
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_beyond_the_offered_slots_takes_a_free_slot_else_goes_back() {
        let mut served = serve();
        served.request().await;
        let mut running = Vec::new();
        for _ in 0..SLOTS {
            running.push(served.deliver().await);
        }
        // Disconnected, a slot that frees is not offered; a late message takes it.
        served.connection(1, false);
        running.pop();
        running.push(served.deliver().await);
        served.send(message(Some(StatusCode::IDLE_HEARTBEAT), None, None));
        served.send(message(None, None, None));
        served.given_back.recv().await.expect("no slot left: the message goes back");
        assert!(served.delivered.try_recv().is_err(), "nothing is handed out without a slot");
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn while_messages_wait_slots_freed_one_by_one_are_offered_together() {
        let mut served = serve();
        assert_eq!(served.request().await.1, SLOTS);
        // Every slot offered is filled: messages wait on the server.
        let mut slots = Vec::new();
        for _ in 0..SLOTS {
            slots.push(served.deliver().await);
        }
        // One slot freed is kept for the next until half of them are free.
        drop(slots.pop());
        tokio::task::yield_now().await;
        served.no_request();
        let freed = Instant::now();
        drop(slots.pop());
        let (at, batch) = served.request().await;
        assert_eq!((at, batch), (freed, SLOTS / 2), "half the slots, offered at once");
        // A slot alone is offered at most GATHER after it was freed.
        for _ in 0..SLOTS / 2 {
            slots.push(served.deliver().await);
        }
        let freed = Instant::now();
        drop(slots.pop());
        let (at, batch) = served.request().await;
        assert_eq!((at - freed, batch), (GATHER, 1));
        served.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_messages_waiting_a_freed_slot_is_offered_at_once() {
        let mut served = serve();
        assert_eq!(served.request().await.1, SLOTS);
        let slot = served.deliver().await;
        // The request ends with the rest unfilled: nothing waits on the server.
        served.send(message(Some(StatusCode::TIMEOUT), Some("Request Timeout"), Some(SLOTS - 1)));
        assert_eq!(served.request().await.1, SLOTS - 1);
        let freed = Instant::now();
        drop(slot);
        assert_eq!(served.request().await, (freed, 1));
        served.stop().await;
    }
}
