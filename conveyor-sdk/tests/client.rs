//! The client against the dev server, and against servers that misbehave on purpose.

use std::time::Duration;

use conveyor_sdk::client::{Client, ClientError, LogQuery, Pipeline, PipelineStep, Transport};
use conveyor_sdk::testing::{DevServer, NatsServer};
use conveyor_sdk::{Resource, ResourceDefinition};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn dev_server() -> (NatsServer, DevServer, Client) {
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let server = DevServer::start(&nats.url(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::new(server.url()).unwrap();
    (nats, server, client)
}

fn definition() -> ResourceDefinition {
    ResourceDefinition::new(
        "job",
        json!({"type": "object", "required": ["steps"], "properties": {"steps": {"type": "array"}}}),
    )
}

fn status(error: ClientError) -> (u16, String) {
    match error {
        ClientError::Server { status, message } => (status, message),
        other => panic!("expected an error answer of the server, got {other:?}"),
    }
}

#[tokio::test]
async fn resource_definitions_follow_the_contract() {
    let (_nats, _server, client) = dev_server().await;
    let created = client.create_definition(&definition()).await.unwrap();
    assert!(!created.id.is_empty());
    assert_eq!(status(client.create_definition(&definition()).await.unwrap_err()).0, 400);
    let applied = client.apply_definition(&definition().version("2.0.0")).await.unwrap();
    assert_eq!(applied.version, "2.0.0");
    assert_eq!(client.get_definition("job").await.unwrap().version, "2.0.0");
    let updated = client.update_definition(&definition().description("jobs")).await.unwrap();
    assert_eq!(updated.description, "jobs");
    let (code, message) = status(client.get_definition("nope").await.unwrap_err());
    assert_eq!((code, message.as_str()), (404, "resource definition \"nope\" not found"));
    client.delete_definition("job").await.unwrap();
    assert_eq!(status(client.delete_definition("job").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn resources_are_validated_versioned_and_listed() {
    let (_nats, _server, client) = dev_server().await;
    let job = Resource::new("build-1", "job", json!({"steps": []}));
    let (code, message) = status(client.create_resource(&job).await.unwrap_err());
    assert_eq!(code, 404, "{message}");
    client.apply_definition(&definition()).await.unwrap();
    let (code, message) =
        status(client.create_resource(&Resource::new("bad", "job", json!({"steps": 1}))).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(message.contains("/spec/steps"), "{message}");

    let created = client.create_resource(&job).await.unwrap();
    assert_eq!(created.message, "Resource created successfully");
    assert_eq!(created.version, "1");

    let stored = client.get_resource("job", "build-1").await.unwrap();
    assert!(!stored.id.is_empty());
    let mut changed = stored.clone();
    changed.spec = json!({"steps": ["lint"]});
    let updated = client.update_resource(&changed).await.unwrap();
    assert_eq!(updated.resource.metadata["version"], "2");
    assert_eq!(client.get_resource_version("job", "build-1", "1").await.unwrap().spec, json!({"steps": []}));
    assert_eq!(
        client.get_resource_version("job", "build-1", "2").await.unwrap().spec,
        json!({"steps": ["lint"]})
    );
    assert_eq!(status(client.get_resource_version("job", "build-1", "9").await.unwrap_err()).0, 404);
    assert_eq!(client.list_resources().await.unwrap().len(), 1);
    assert_eq!(client.list_resources_of("job").await.unwrap().len(), 1);
    assert!(client.list_resources_of("other").await.unwrap().is_empty());
    client.delete_resource("job", "build-1").await.unwrap();
    assert_eq!(status(client.get_resource("job", "build-1").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn pipelines_health_and_trailing_slashes() {
    let (_nats, server, client) = dev_server().await;
    let pipeline = Pipeline::new("ci", "job").step(PipelineStep::new("build", "command-runner"));
    client.create_pipeline(&pipeline).await.unwrap();
    assert_eq!(client.get_pipeline("ci").await.unwrap(), pipeline);
    let longer = pipeline.clone().step(PipelineStep::new("report", "reporter"));
    assert_eq!(client.update_pipeline(&longer).await.unwrap().steps.len(), 2);
    client.delete_pipeline("ci").await.unwrap();
    assert_eq!(status(client.get_pipeline("ci").await.unwrap_err()).0, 404);

    assert_eq!(client.health().await.unwrap().status, "healthy");
    // reqwest is built with rustls and no crypto provider of its own (conveyor-sdk
    // brings its own to its client): a plain reqwest client needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    for path in ["/health", "/health/", "/resources", "/resources/", "/resource-definitions/apply/"] {
        let method = if path.starts_with("/resource-definitions") {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let mut request = http.request(method, format!("{}{path}", server.url()));
        if path.starts_with("/resource-definitions") {
            request = request.json(&definition());
        }
        let answer = request.send().await.unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
    }
    assert!(client.logs(&LogQuery::run("nothing")).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_and_a_silent_one_are_typed_errors() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::new(format!("http://127.0.0.1:{closed}")).unwrap();
    assert!(matches!(client.health().await, Err(ClientError::Connect { .. })));

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let (socket, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let client = Client::builder(url).timeout(Duration::from_millis(300)).build().unwrap();
    assert!(matches!(client.health().await, Err(ClientError::Timeout { .. })));
    held.abort();
}

/// Serves one HTTP request with `head` and the chunks of `events`; then ends the body
/// properly (`clean`) or drops the connection.
async fn event_server(events: Vec<&'static str>, clean: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await.unwrap();
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        for event in events {
            socket.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes()).await.unwrap();
        }
        if clean {
            socket.write_all(b"0\r\n\r\n").await.unwrap();
        }
        socket.flush().await.unwrap();
    });
    url
}

#[tokio::test]
async fn an_event_stream_ends_cleanly_when_the_server_closes_it() {
    let fixture = include_str!("fixtures/log-stream.sse.txt");
    let url = event_server(vec![fixture], true).await;
    let client = Client::new(url).unwrap();
    let lines: Vec<_> = client.stream_logs("command-runner", "fbdf5edf").await.unwrap().collect().await;
    let messages: Vec<String> = lines.into_iter().map(|l| l.unwrap().message).collect();
    assert_eq!(messages, ["/", "total 8"], "heartbeat comments carry no line");
}

#[tokio::test]
async fn a_dropped_event_stream_is_an_error_the_caller_sees() {
    let url = event_server(
        vec!["data: {\"runid\":\"r\",\"driver\":\"d\",\"timestamp\":\"t\",\"message\":\"one\"}\n\n"],
        false,
    )
    .await;
    let client = Client::new(url).unwrap();
    let mut stream = client.stream_logs_with("d", "r", Transport::ServerSentEvents).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().message, "one");
    assert!(matches!(stream.next().await, Some(Err(ClientError::Stream { .. }))));
}

#[tokio::test]
async fn a_websocket_only_server_is_read_over_websocket_automatically() {
    // The seed tutorial's server: a WebSocket endpoint that refuses plain requests.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut peek = [0u8; 2048];
            let n = socket.peek(&mut peek).await.unwrap();
            let request = String::from_utf8_lossy(&peek[..n]).to_lowercase();
            if !request.contains("upgrade: websocket") {
                let _ = socket.read(&mut peek).await;
                let body = "Bad Request";
                let answer =
                    format!("HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                socket.write_all(answer.as_bytes()).await.unwrap();
                continue;
            }
            let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
            for frame in include_str!("fixtures/log-stream.websocket.frames").lines() {
                futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(frame))
                    .await
                    .unwrap();
            }
            ws.close(None).await.unwrap();
            return;
        }
    });
    let client = Client::new(url).unwrap();
    let lines: Vec<_> = client.stream_logs("command-runner", "run-1").await.unwrap().collect().await;
    let lines: Vec<_> = lines.into_iter().map(|l| l.unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].timestamp, "1764324646");
    assert_eq!(lines[1].message, "total 8");
    assert_eq!(lines[2].runid, "run-1");
}

#[tokio::test]
async fn the_dev_server_dispatches_exactly_as_the_real_server() {
    let (_nats, server, client) = dev_server().await;
    client.apply_definition(&definition()).await.unwrap();
    let nats = server.harness().client();
    let mut standalone = nats.subscribe("resources.job").await.unwrap();
    let mut first_step = nats.subscribe("drivers.builder.resources.job").await.unwrap();
    nats.flush().await.unwrap();

    let created = client.create_resource(&Resource::new("alone", "job", json!({"steps": []}))).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), standalone.next()).await.unwrap().unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(raw["event"], "create");
    assert_eq!(raw["run_id"], created.runid.as_str());
    assert_eq!(raw["id"].as_str().unwrap().len(), 24);
    let payload = raw["payload"].as_str().expect("the payload is a JSON string, as the real server sends it");
    let resource: Resource = serde_json::from_str(payload).unwrap();
    assert_eq!(resource.name, "alone");
    assert_eq!(resource.metadata["version"], "1");

    client
        .create_pipeline(&Pipeline::new("ci", "job").step(PipelineStep::new("build", "builder")))
        .await
        .unwrap();
    let mut piped = Resource::new("piped", "job", json!({"steps": []}));
    piped.pipeline = Some("ci".into());
    let created = client.create_resource(&piped).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), first_step.next()).await.unwrap().unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(raw["run_id"], created.runid.as_str());
    assert_eq!(raw["event"], "create");
    let resource: Resource = serde_json::from_str(raw["payload"].as_str().unwrap()).unwrap();
    assert_eq!(resource.pipeline(), Some("ci"));
}

#[tokio::test]
async fn a_posted_log_line_is_stored_and_reaches_the_live_stream_of_its_run() {
    let (_nats, _server, client) = dev_server().await;
    let mut live = client.stream_logs_with("notifier", "run-7", Transport::ServerSentEvents).await.unwrap();
    let line = conveyor_sdk::Log {
        runid: "run-7".into(),
        driver: "notifier".into(),
        pipeline: Some("ci".into()),
        timestamp: "2026-11-23T21:30:46.123456789Z".into(),
        message: "mail sent".into(),
    };
    client.create_log(&line).await.unwrap();
    // Stored by the time the server answered.
    assert_eq!(client.logs(&LogQuery::run("run-7")).await.unwrap(), std::slice::from_ref(&line));
    assert!(client.logs(&LogQuery::run("run-7").pipeline("other")).await.unwrap().is_empty());
    let streamed =
        tokio::time::timeout(Duration::from_secs(10), live.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(streamed, line);

    let nameless = conveyor_sdk::Log { runid: "two words".into(), ..line };
    let (code, message) = status(client.create_log(&nameless).await.unwrap_err());
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("runid"), "{message}");
    assert_eq!(
        client.logs(&LogQuery::default()).await.unwrap().len(),
        1,
        "nothing stored of the refused line"
    );
}

#[tokio::test]
async fn a_viewer_joining_a_run_gets_its_stored_lines_once_in_order_then_the_new_ones() {
    let (_nats, _server, client) = dev_server().await;
    let line = |run: &str, second: u32, message: &str| conveyor_sdk::Log {
        runid: run.into(),
        driver: "builder".into(),
        pipeline: None,
        timestamp: format!("2026-11-23T21:30:{second:02}.000000000Z"),
        message: message.into(),
    };
    // Stored out of timestamp order, with a line of another run in between.
    for log in [line("run-8", 2, "second"), line("run-9", 1, "other run"), line("run-8", 1, "first")] {
        client.create_log(&log).await.unwrap();
    }
    let mut live = client.stream_logs_with("builder", "run-8", Transport::ServerSentEvents).await.unwrap();
    client.create_log(&line("run-8", 3, "third")).await.unwrap();
    let mut streamed = Vec::new();
    while streamed.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(10), live.next()).await;
        let log = next.expect("the stream's next line within 10 s").expect("a line").expect("no error");
        streamed.push(log.message);
    }
    assert_eq!(streamed, ["first", "second", "third"]);
    let more = tokio::time::timeout(Duration::from_millis(200), live.next()).await;
    assert!(more.is_err(), "nothing more, in particular no line twice and none of run-9: {more:?}");
}

#[tokio::test]
async fn a_broadcast_message_reaches_every_driver_of_its_resource_type() {
    let (_nats, server, client) = dev_server().await;
    let nats = server.harness().client();
    let mut drivers = nats.subscribe("resources.job").await.unwrap();
    nats.flush().await.unwrap();
    let message = conveyor_sdk::DriverMessage {
        event: conveyor_sdk::Event::Other("refresh".into()),
        payload: Resource::new("build-1", "job", json!({"steps": []})),
        id: String::new(),
        run_id: "run-9".into(),
    };
    client.broadcast_message(&message).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), drivers.next()).await.unwrap().unwrap();
    let received = conveyor_sdk::DriverMessage::decode(&received.payload).unwrap();
    assert_eq!((received.event.as_str(), received.run_id.as_str()), ("refresh", "run-9"));
    assert_eq!(received.payload, message.payload);
    assert_eq!(received.id.len(), 24, "the server gives the message an id");

    let typeless = conveyor_sdk::DriverMessage { payload: Resource::new("x", "", json!({})), ..message };
    let (code, text) = status(client.broadcast_message(&typeless).await.unwrap_err());
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("resource type"), "{text}");
}
