//! The runtime on a NATS server that requires mutual TLS.

mod common;

use std::path::PathBuf;

use common::*;
use conveyor_sdk::testing::{Harness, NatsServer};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (name, sans) in
            [("server", vec!["localhost".to_owned(), "127.0.0.1".to_owned()]), ("client", vec![])]
        {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans).unwrap().signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn tls_options(pki: &Pki, with_certificate: bool) -> async_nats::ConnectOptions {
    let options =
        async_nats::ConnectOptions::new().add_root_certificates(pki.path("ca.pem")).require_tls(true);
    if with_certificate {
        options.add_client_certificate(pki.path("client.pem"), pki.path("client.key"))
    } else {
        options
    }
}

#[tokio::test]
async fn the_runtime_connects_with_its_certificate_and_a_client_without_one_is_refused() {
    let pki = Pki::new();
    let nats =
        NatsServer::start_with_tls(&pki.path("server.pem"), &pki.path("server.key"), &pki.path("ca.pem"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let refused = tls_options(&pki, false).connect(nats.url()).await;
    assert!(refused.is_err(), "NATS must refuse a client without a certificate");

    let harness = Harness::start_with(&nats.url(), tls_options(&pki, true)).await.unwrap();
    let config = config(&nats)
        .nats_root_ca(pki.path("ca.pem"))
        .nats_client_certificate(pki.path("client.pem"), pki.path("client.key"));
    let serving = serve(TestDriver::new(), config, &harness).await;
    let run = harness.create(job("secure", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    serving.shutdown().await.unwrap();
}
