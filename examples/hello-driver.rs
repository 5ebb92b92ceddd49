//! A complete custom Conveyor driver: it handles resources of type `greeting`
//! (`{"who": "world", "times": 3}`), logs a greeting per time, and succeeds.
//!
//! Serve against a NATS server of a running Conveyor server (or `scripts/services.sh`):
//!
//! ```text
//! cargo run --example hello-driver
//! ```
//!
//! Or see one run go through without a Conveyor server: `--demo` plays the server's
//! part (its streams, one dispatched resource), prints the run's log and result and exits.
//!
//! ```text
//! cargo run --example hello-driver -- --demo
//! ```

use conveyor_sdk::schemars::JsonSchema;
use conveyor_sdk::{Config, Driver, DriverResult, ReconcileError, ResourceType, Run, Runtime};
use serde::Deserialize;

/// The spec of a `greeting`; its JSON Schema is derived from this type.
#[derive(Deserialize, JsonSchema)]
struct Greeting {
    /// Whom to greet.
    who: String,
    /// How many times (default 1).
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

struct HelloDriver;

#[conveyor_sdk::async_trait]
impl Driver for HelloDriver {
    type Spec = Greeting;

    fn name(&self) -> &str {
        "hello-driver"
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::owned_from::<Greeting>("greeting")]
    }

    async fn reconcile(&self, run: Run<Greeting>) -> Result<DriverResult, ReconcileError> {
        let spec = run.spec();
        for i in 1..=spec.times {
            run.log().log(format!("hello, {}! ({i}/{})", spec.who, spec.times)).await;
        }
        Ok(DriverResult::success(format!("greeted {} {} times", spec.who, spec.times)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(env_filter()).init();
    let nats_url = std::env::var("CONVEYOR_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let config = Config::default().nats_url(&nats_url);
    // With the SDK's `client` feature, the runtime registers the `greeting` definition
    // with the API server: `cargo run --example hello-driver --features client`.
    #[cfg(feature = "client")]
    let config = match std::env::var("CONVEYOR_API_URL") {
        Ok(api_url) => config.api_url(api_url),
        Err(_) => config,
    };
    if std::env::args().any(|a| a == "--demo") {
        return demo::run(config, &nats_url).await;
    }
    Runtime::with_config(HelloDriver, config).run().await?;
    Ok(())
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())
}

/// Plays the Conveyor server for one run, with the SDK's test harness.
mod demo {
    use conveyor_sdk::testing::Harness;
    use conveyor_sdk::{Config, Resource, Runtime};
    use tokio_util::sync::CancellationToken;

    pub async fn run(config: Config, nats_url: &str) -> Result<(), Box<dyn std::error::Error>> {
        let harness = Harness::start(nats_url).await?;
        let stop = CancellationToken::new();
        let serving = tokio::spawn(
            Runtime::with_config(super::HelloDriver, config).run_until(stop.clone().cancelled_owned()),
        );
        // Stream `messages` keeps an event only for consumers that exist: wait for ours.
        harness.wait_for_pull_requests("hello-driver", 1, std::time::Duration::from_secs(30)).await?;
        let resource = Resource::new("demo", "greeting", serde_json::json!({"who": "world", "times": 3}));
        let run = harness.create(resource).await?;
        let event = harness.result(&run.run_id).await?;
        for log in harness.logs_in_server_order(&run.run_id) {
            println!("{} {}", log.timestamp, log.message);
        }
        println!("result: success={} message={:?}", event.driverresult.success, event.driverresult.message);
        stop.cancel();
        serving.await??;
        Ok(())
    }
}
