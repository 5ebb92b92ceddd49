//! The loop of a runtime, in four phases:
//!
//! 1. **prepare**: check the driver, compile its schemas, wait for the server's
//!    stream, create the durable consumer, open the bucket of run records, write this
//!    replica's liveness record (when kept), listen for cancel requests, register the
//!    resource definitions, start the driver's housekeeping;
//! 2. **serve**: pull a message for each free reconcile slot and hand it to a
//!    worker ([`worker::handle`]) until the shutdown signal;
//! 3. **drain**: let runs in progress finish within the grace period, then cancel
//!    the rest, whose messages are delivered again later;
//! 4. **end**: stop the housekeeping, await the driver's
//!    [`shutdown`](crate::Driver::shutdown), delete the liveness record. This happens
//!    however serving ended, once the driver was handed to [`serve`].

use std::sync::Arc;

use async_nats::jetstream::consumer::PullConsumer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cancel::{self, InFlight};
use super::observe::Observer;
use super::records::RunRecords;
use super::supersede::{self, Supersede};
use super::worker::{self, Shared};
use super::{pull, setup, Config, Error};
use crate::driver::Driver;
use crate::liveness::{Liveness, Replicas};
use crate::protocol::subjects;
use crate::validate::SpecValidator;

/// Serves `driver` on `client` until `stop` is cancelled, then ends: the driver's
/// shutdown awaited, its liveness record deleted.
pub(super) async fn serve<D: Driver>(
    driver: Arc<D>,
    config: Config,
    client: async_nats::Client,
    stop: CancellationToken,
    observer: Observer,
) -> Result<(), Error> {
    // Ends the task that waits for the shutdown future, however this returns.
    let _stop_guard = stop.clone().drop_guard();
    observer.connected(&client);
    let mut liveness = None;
    let served = serve_until_stopped(driver.clone(), config, &client, &stop, observer, &mut liveness).await;
    driver.shutdown().await;
    if let Some(liveness) = liveness {
        liveness.stop().await;
    }
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "flushing the NATS connection at shutdown failed");
    }
    tracing::info!(driver = %driver.name(), "stopped");
    served
}

/// Prepares, serves and drains; leaves the liveness record, once written, in
/// `liveness` for the end.
async fn serve_until_stopped<D: Driver>(
    driver: Arc<D>,
    config: Config,
    client: &async_nats::Client,
    stop: &CancellationToken,
    observer: Observer,
    liveness: &mut Option<Liveness>,
) -> Result<(), Error> {
    let Some(prepared) = prepare(driver, config, client, stop, observer, liveness).await? else {
        return Ok(());
    };
    let Prepared { shared, consumer, mut background, housekeeping } = prepared;
    let runs = serve_messages(&shared, consumer, client, stop).await;
    shared.observer.stopping();
    let served = match runs {
        Ok(runs) => {
            drain(&shared, runs).await;
            Ok(())
        }
        Err(error) => Err(error),
    };
    housekeeping.cancel();
    background.shutdown().await;
    served
}

/// What serving needs once the driver is checked and its consumer exists.
struct Prepared<D: Driver> {
    shared: Arc<Shared<D>>,
    consumer: PullConsumer,
    /// Work beside the loop (registering definitions, answering cancel requests,
    /// housekeeping), ended at shutdown.
    background: JoinSet<()>,
    /// Stops the housekeeping.
    housekeeping: CancellationToken,
}

/// Checks the driver and sets up its consumer. `None` when stopped first.
async fn prepare<D: Driver>(
    driver: Arc<D>,
    config: Config,
    client: &async_nats::Client,
    stop: &CancellationToken,
    observer: Observer,
    liveness: &mut Option<Liveness>,
) -> Result<Option<Prepared<D>>, Error> {
    let name = driver.name().to_owned();
    if !subjects::is_token(&name) {
        return Err(Error::InvalidName(name));
    }
    let types = driver.resources();
    if types.is_empty() {
        return Err(Error::NoResourceTypes(name));
    }
    let validator = SpecValidator::new(&types)?;
    let type_names: Vec<String> = types.iter().map(|t| t.name().to_owned()).collect();

    let js = async_nats::jetstream::new(client.clone());
    let Some(stream) = setup::wait_for_stream(&js, config.retry_interval, stop).await else {
        return Ok(None);
    };
    let consumer = setup::ensure_consumer(&stream, &name, &type_names, config.ack_wait).await?;
    let replicas = stream.cached_info().config.num_replicas;
    let records = RunRecords::open(&js, &name, config.run_record_ttl, replicas).await;
    let in_flight = InFlight::default();
    let supersede =
        Supersede::open(&js, config.supersede, &name, &config.instance, config.run_record_ttl, replicas)
            .await
            .reaching(client.clone(), in_flight.clone());
    // What a replica makes may be taken for an orphan by the others until its record
    // exists: none is taken before.
    let bucket = match config.liveness_ttl {
        Some(ttl) => {
            let Some(kept) = keep_liveness(client, &name, &config, ttl, stop).await else {
                return Ok(None);
            };
            let bucket = kept.bucket().clone();
            *liveness = Some(kept);
            Some(bucket)
        }
        None => None,
    };
    tracing::info!(driver = %name, resource_types = ?type_names, concurrency = config.concurrency, "consuming resource events");

    // Only now that the consumer exists may the server accept resources for us.
    let mut background = JoinSet::new();
    #[cfg(feature = "client")]
    super::register::start(&config, &types, stop, &mut background)?;
    background.spawn(cancel::listen(client.clone(), name.clone(), in_flight.clone(), config.store_backoff));
    background.spawn(supersede::answer(
        client.clone(),
        name.clone(),
        config.instance.clone(),
        in_flight.clone(),
        config.store_backoff,
    ));
    let housekeeping = CancellationToken::new();
    let replicas = Replicas::new(name.clone(), config.instance.clone(), bucket);
    background.spawn(housekeep(driver.clone(), replicas, config.housekeeping_interval, housekeeping.clone()));

    let shared = Arc::new(Shared {
        driver,
        name,
        validator,
        js,
        client: client.clone(),
        run_cancel: CancellationToken::new(),
        finishing: Arc::new(Semaphore::new(config.max_finishing)),
        config,
        observer,
        records,
        in_flight,
        supersede,
    });
    Ok(Some(Prepared { shared, consumer, background, housekeeping }))
}

/// This replica's liveness record, written; tried again every retry interval until
/// it is. `None` when stopped first.
async fn keep_liveness(
    client: &async_nats::Client,
    driver: &str,
    config: &Config,
    ttl: std::time::Duration,
    stop: &CancellationToken,
) -> Option<Liveness> {
    loop {
        match Liveness::start(client.clone(), driver, &config.instance, ttl).await {
            Ok(liveness) => {
                tracing::info!(
                    instance = %config.instance,
                    ttl = %humantime::format_duration(liveness.ttl()),
                    "liveness record written"
                );
                return Some(liveness);
            }
            Err(error) => tracing::warn!(
                error = %crate::error_text(&error),
                retry_in = %humantime::format_duration(config.retry_interval),
                "cannot write this replica's liveness record; no run is taken until it is written"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(config.retry_interval) => {}
        }
    }
}

/// Calls the driver's housekeeping every `every`, the first time at once, until
/// `stop` is cancelled (which also stops one in progress).
async fn housekeep<D: Driver>(
    driver: Arc<D>,
    replicas: Replicas,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            () = driver.housekeeping(&replicas) => {}
        }
    }
}

/// Pulls a message for each free reconcile slot and starts a worker on it, until
/// `stop` is cancelled. Returns the runs still in progress.
async fn serve_messages<D: Driver>(
    shared: &Arc<Shared<D>>,
    consumer: PullConsumer,
    client: &async_nats::Client,
    stop: &CancellationToken,
) -> Result<JoinSet<()>, Error> {
    let config = &shared.config;
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut puller = pull::Puller::new(
        consumer,
        shared.js.clone(),
        client,
        slots,
        config.pull_expiry,
        config.retry_interval,
    )
    .await
    .map_err(|error| Error::Consumer { driver: shared.name.clone(), source: Box::new(error) })?;
    shared.observer.consumer_bound();
    let mut runs = JoinSet::new();
    while let Some((message, slot)) = puller.next(stop).await {
        while runs.try_join_next().is_some() {}
        runs.spawn(worker::handle(shared.clone(), message, slot));
    }
    Ok(runs)
}

/// Shutdown: no more pulling; let runs finish within the grace period, then cancel
/// what is left (those messages are delivered again).
async fn drain<D: Driver>(shared: &Shared<D>, mut runs: JoinSet<()>) {
    let grace = shared.config.grace_period;
    if !runs.is_empty() {
        tracing::info!(runs = runs.len(), ?grace, "shutting down: waiting for runs in progress");
    }
    let drained =
        tokio::time::timeout(grace, async { while runs.join_next().await.is_some() {} }).await.is_ok();
    if !drained {
        tracing::warn!(runs = runs.len(), "grace period over: cancelling runs in progress");
        shared.run_cancel.cancel();
        while runs.join_next().await.is_some() {}
    }
}
