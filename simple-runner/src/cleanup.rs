//! Containers left by a runner that died: found by label, removed when no live runner
//! owns them.
//!
//! Every runner process answers on `conveyor.runners.<driver>.<instance>` while it
//! lives. A container whose instance does not answer (NATS says "no responders") is
//! an orphan; one whose instance answers, or whose owner cannot be asked, is left alone.

use std::time::Duration;

use futures_util::StreamExt;

use conveyor_sdk::error_text;

use crate::docker::{labels, Engine};

fn liveness_subject(driver: &str, instance: &str) -> String {
    format!("conveyor.runners.{driver}.{instance}")
}

/// Answers liveness questions about this instance for as long as the task runs.
///
/// ```no_run
/// # async fn demo(runner: simple_runner::CommandRunner) -> Result<(), async_nats::ConnectError> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let settings = runner.settings();
/// tokio::spawn(simple_runner::cleanup::answer_liveness(
///     client,
///     settings.name.clone(),
///     settings.instance.clone(),
/// ));
/// # Ok(())
/// # }
/// ```
pub async fn answer_liveness(client: async_nats::Client, driver: String, instance: String) {
    let subject = liveness_subject(&driver, &instance);
    let mut questions = match client.subscribe(subject.clone()).await {
        Ok(questions) => questions,
        Err(error) => {
            tracing::warn!(%error, %subject, "cannot answer liveness questions; other runners may remove this runner's containers");
            return;
        }
    };
    while let Some(question) = questions.next().await {
        if let Some(reply) = question.reply {
            let _ = client.publish(reply, "alive".into()).await;
        }
    }
}

/// Removes the containers of `driver` whose owner is no longer alive; returns how many.
/// Containers of `instance` (this runner) are kept.
///
/// ```no_run
/// # async fn demo(runner: simple_runner::CommandRunner) -> Result<(), async_nats::ConnectError> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let (settings, engine) = (runner.settings(), runner.engine());
/// let removed = simple_runner::cleanup::remove_orphans(engine, &client, &settings.name, &settings.instance).await;
/// println!("removed {removed} containers left by runners that are gone");
/// # Ok(())
/// # }
/// ```
pub async fn remove_orphans(
    engine: &Engine,
    client: &async_nats::Client,
    driver: &str,
    instance: &str,
) -> usize {
    let containers = match engine.containers_of(driver).await {
        Ok(containers) => containers,
        Err(error) => {
            tracing::warn!(error = %error_text(&error), "cannot look for containers left by a dead runner");
            return 0;
        }
    };
    let mut removed = 0;
    for (id, container_labels) in containers {
        let owner = container_labels.get(labels::INSTANCE).cloned().unwrap_or_default();
        if owner == instance {
            continue;
        }
        let alive = if owner.is_empty() {
            false
        } else {
            let question = client.request(liveness_subject(driver, &owner), "".into());
            match tokio::time::timeout(Duration::from_secs(2), question).await {
                Ok(Ok(_)) => true,
                Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => false,
                // Unsure (a timeout, a broken connection): leave it.
                Ok(Err(_)) | Err(_) => true,
            }
        };
        if !alive && engine.remove(&id).await {
            removed += 1;
            engine.metrics().orphan_reaped();
            tracing::info!(
                container = %id,
                run_id = container_labels.get(labels::RUN_ID).map(String::as_str).unwrap_or(""),
                "removed a container left by a runner that is gone"
            );
        }
    }
    removed
}
