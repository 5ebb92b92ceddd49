//! The tutorial over HTTPS: the dev server with a certificate of a test CA,
//! simple-runner registering its definition through it, a resource created and its
//! log watched over WSS and over Server-Sent Events; and what a client that does not
//! trust the certificate is told.

use std::path::PathBuf;
use std::time::Duration;

use conveyor_sdk::client::{Client, ClientError, Transport};
use conveyor_sdk::testing::{DevServer, Harness, NatsServer};
use conveyor_sdk::{CancellationToken, Config, Resource};
use futures_util::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

#[path = "common.rs"]
mod common;

/// A test CA and a server certificate of it, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// The CA, and a server certificate for `names` (host names or IP addresses).
    fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "conveyor test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let server = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path("ca.pem")).unwrap()
    }

    /// The dev server on `nats`, serving HTTPS with the server certificate.
    async fn dev_server(&self, nats: &NatsServer) -> DevServer {
        let harness = Harness::start(&nats.url()).await.unwrap();
        let (cert, key) = (self.path("server.pem"), self.path("server.key"));
        DevServer::start_with_tls(harness, "127.0.0.1:0".parse().unwrap(), None, &cert, &key).await.unwrap()
    }
}

fn tutorial_resource() -> Resource {
    serde_json::from_value(common::tutorial_resource()).unwrap()
}

#[tokio::test]
async fn the_tutorial_runs_over_https_and_its_log_streams_over_wss_and_sse() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let server = pki.dev_server(&nats).await;
    assert!(server.url().starts_with("https://127.0.0.1:"), "{}", server.url());
    let client = Client::builder(server.url()).root_certificate(pki.ca_pem()).build().unwrap();

    let stop = CancellationToken::new();
    // The CA as `simple-runner serve --tls-ca` hands it to the runtime; the definition
    // arrives over HTTPS once the consumer exists.
    let config = Config::default().nats_url(nats.url()).api_url(server.url()).api_root_ca(pki.path("ca.pem"));
    let serving = common::serve_simple_runner(config, &client, &stop).await;

    let created = client.create_resource(&tutorial_resource()).await.unwrap();
    assert_eq!(created.message, "Resource created successfully");

    // wss://…/logs/streams/command-runner/<runid>, trusted through the same CA.
    let mut wss =
        client.stream_logs_with("command-runner", &created.runid, Transport::WebSocket).await.unwrap();
    let mut messages = Vec::new();
    let read = async {
        while let Some(line) = wss.next().await {
            let line = line.unwrap();
            let done = line.message == "run succeeded" || line.message == "run failed";
            messages.push(line.message);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the run's log did not finish in time");
    assert_eq!(messages.last().map(String::as_str), Some("run succeeded"), "{messages:#?}");
    assert!(messages.iter().any(|m| m == "NAME=\"Conveyor test image\""), "{messages:#?}");

    // The same lines over Server-Sent Events, stored ones first.
    let mut sse =
        client.stream_logs_with("command-runner", &created.runid, Transport::ServerSentEvents).await.unwrap();
    for expected in &messages {
        let line = tokio::time::timeout(Duration::from_secs(10), sse.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(&line.message, expected);
    }
    stop.cancel();
    serving.await.unwrap().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_the_client_does_not_trust_is_refused_with_the_url_and_the_reason() {
    let pki = Pki::new(&["127.0.0.1"]);
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let server = pki.dev_server(&nats).await;

    // Only the system's roots: the test CA is unknown.
    let stranger = Client::new(server.url()).unwrap();
    let error = stranger.health().await.unwrap_err();
    let text = conveyor_sdk::error_text(&error);
    let ClientError::UntrustedCertificate { url, reason, .. } = &error else {
        panic!("expected an untrusted certificate, got {text}");
    };
    assert_eq!(url, &format!("{}/health", server.url()));
    assert!(reason.contains("not signed by a certificate authority the client trusts"), "{reason}");
    assert!(
        text.starts_with(&format!("the TLS certificate of {}/health is not trusted", server.url())),
        "{text}"
    );

    // The WebSocket transport says the same of its wss:// URL.
    let error = stranger.stream_logs_with("command-runner", "run-1", Transport::WebSocket).await.unwrap_err();
    let wss = format!("{}/logs/streams/command-runner/run-1", server.url().replacen("https", "wss", 1));
    assert!(
        matches!(&error, ClientError::UntrustedCertificate { url, .. } if *url == wss),
        "{}",
        conveyor_sdk::error_text(&error)
    );

    // With the CA, the same server answers.
    let trusting = Client::builder(server.url()).root_certificate(pki.ca_pem()).build().unwrap();
    assert_eq!(trusting.health().await.unwrap().status, "healthy");
    server.shutdown().await;

    // A certificate of the trusted CA, but for another name.
    let elsewhere = Pki::new(&["conveyor.example"]);
    let server = elsewhere.dev_server(&nats).await;
    let client = Client::builder(server.url()).root_certificate(elsewhere.ca_pem()).build().unwrap();
    let error = client.health().await.unwrap_err();
    assert!(
        matches!(&error, ClientError::UntrustedCertificate { reason, .. } if reason.contains("host name")),
        "{}",
        conveyor_sdk::error_text(&error)
    );
    server.shutdown().await;
}
