//! What an operator sees in the driver's own diagnostics.

mod common;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Records the fields of every span named `run`.
#[derive(Clone, Default)]
struct RunSpans(Arc<Mutex<Vec<HashMap<String, String>>>>);

struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for RunSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "run" {
            let mut fields = Fields(HashMap::new());
            attrs.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[tokio::test]
async fn each_run_is_a_span_with_driver_run_id_and_resource() {
    let spans = RunSpans::default();
    // The test's runtime is single-threaded: every task runs under this subscriber.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;
    let run = harness.create(job("traced", json!({"mode": "ok"}))).await.unwrap();
    harness.result(&run.run_id).await.unwrap();
    serving.shutdown().await.unwrap();

    let spans = spans.0.lock().unwrap().clone();
    let span = spans.iter().find(|s| s.get("run_id") == Some(&run.run_id)).expect("a span for the run");
    assert_eq!(span["driver"], DRIVER);
    assert_eq!(span["resource_type"], TYPE);
    assert_eq!(span["resource_name"], "traced");
    assert_eq!(span["attempt"], "1");
}
