//! Certificate-bound tokens, with certificates generated here.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use conveyor_sdk::auth::{AuthError, ClientIdentity, TokenVerifier};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `key`, as PEM.
    fn leaf(&self, name: &str, key: &KeyPair) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.signed_by(key, &self.issuer).unwrap().pem()
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.issuer).unwrap()
    }
}

/// An RSA key as PKCS#8 PEM, made by the openssl command line.
fn rsa_key_pem() -> String {
    let output = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("the openssl command is needed to make an RSA test key (Debian package openssl)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn a_good_es256_token_is_accepted() {
    let ca = Ca::new("conveyor test CA");
    let key = KeyPair::generate().unwrap();
    let identity =
        ClientIdentity::from_pem(ca.leaf("driver-1", &key).as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
    assert_eq!(identity.algorithm(), "ES256");
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    let client = verifier.verify(&identity.token().unwrap()).unwrap();
    assert!(client.subject.contains("driver-1"), "{}", client.subject);
    assert_eq!(client.thumbprint, identity.thumbprint());
}

#[test]
fn a_good_rs256_token_is_accepted_through_the_authorization_header() {
    let ca = Ca::new("conveyor test CA");
    let key_pem = rsa_key_pem();
    let key = KeyPair::from_pem(&key_pem).unwrap();
    let identity =
        ClientIdentity::from_pem(ca.leaf("rsa-driver", &key).as_bytes(), key_pem.as_bytes()).unwrap();
    assert_eq!(identity.algorithm(), "RS256");
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    let header = format!("Bearer {}", identity.token().unwrap());
    assert!(verifier.verify_header(&header).is_ok());
}

/// Runs the openssl command line in `dir`, failing the test with its output.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output =
        Command::new("openssl").current_dir(dir).args(args).output().expect(
            "the openssl command is needed to make a P-521 test certificate (Debian package openssl)",
        );
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn an_es512_token_of_a_p521_certificate_verifies_and_a_tampered_one_does_not() {
    // rcgen's ring backend has no P-521: the key and the leaf (signed by an rcgen CA)
    // come from the openssl command line.
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "conveyor test CA");
    let ca = CertifiedIssuer::self_signed(params, ca_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    openssl(
        dir.path(),
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521", "-out", "leaf.key"],
    );
    openssl(dir.path(), &["ec", "-in", "leaf.key", "-out", "leaf.sec1.key"]);
    openssl(dir.path(), &["req", "-new", "-key", "leaf.key", "-subj", "/CN=driver-521", "-out", "leaf.csr"]);
    openssl(
        dir.path(),
        &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "7"]
            .into_iter()
            .chain(["-days", "1", "-out", "leaf.pem"])
            .collect::<Vec<_>>(),
    );
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();

    for key in ["leaf.key", "leaf.sec1.key"] {
        let identity = ClientIdentity::from_pem(&read("leaf.pem"), &read(key)).unwrap();
        assert_eq!(identity.algorithm(), "ES512", "{key}");
        let token = identity.token().unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "ES512");
        assert_eq!(header["x5c"].as_array().map(Vec::len), Some(1));
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.rsplit('.').next().unwrap());
        assert_eq!(signature.unwrap().len(), 132, "r and s, 66 bytes each");
        let client = verifier.verify(&token).unwrap();
        assert_eq!(
            (client.subject.as_str(), client.thumbprint.as_str()),
            ("CN=driver-521", identity.thumbprint())
        );

        // Another expiry in the claims, the signature kept: refused.
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap(),
        )
        .unwrap();
        claims["exp"] = (claims["exp"].as_u64().unwrap() + 3600).into();
        let forged_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let tampered = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(matches!(verifier.verify(&tampered), Err(AuthError::BadSignature(_))), "{key}");
    }

    // A token that says ES512 for a P-256 certificate is refused before its signature.
    let other = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "driver-256");
    let other_leaf = params.signed_by(&other, &ca).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"alg": "ES512", "x5c": [base64::engine::general_purpose::STANDARD.encode(other_leaf.der())]});
    let claimed = format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(b"{}"), b64(&[0; 132]));
    let refused = verifier.verify(&claimed);
    assert!(
        matches!(&refused, Err(AuthError::Untrusted { reason, .. }) if reason.contains("ES512")),
        "{refused:?}"
    );
}

#[test]
fn a_chain_through_an_intermediate_is_accepted() {
    let ca = Ca::new("root");
    let intermediate = ca.intermediate("intermediate");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    let leaf = params.signed_by(&key, &intermediate).unwrap().pem();
    let chain = format!("{leaf}{}", intermediate.pem());
    let identity = ClientIdentity::from_pem(chain.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    assert!(verifier.verify(&identity.token().unwrap()).is_ok());
    // Without the intermediate, the leaf does not lead to the root.
    let alone = ClientIdentity::from_pem(leaf.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    assert!(matches!(verifier.verify(&alone.token().unwrap()), Err(AuthError::Untrusted { .. })));
}

#[test]
fn a_token_signed_with_another_key_is_refused() {
    let ca = Ca::new("conveyor test CA");
    let (key, other) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let impostor =
        ClientIdentity::from_pem(ca.leaf("driver", &key).as_bytes(), other.serialize_pem().as_bytes())
            .unwrap();
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    assert!(matches!(verifier.verify(&impostor.token().unwrap()), Err(AuthError::BadSignature(_))));
}

#[test]
fn a_chain_from_a_foreign_ca_is_refused() {
    let (ca, foreign) = (Ca::new("trusted"), Ca::new("foreign"));
    let key = KeyPair::generate().unwrap();
    let identity =
        ClientIdentity::from_pem(foreign.leaf("driver", &key).as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    assert!(matches!(verifier.verify(&identity.token().unwrap()), Err(AuthError::Untrusted { .. })));
}

#[test]
fn an_expired_token_is_refused() {
    let ca = Ca::new("conveyor test CA");
    let key = KeyPair::generate().unwrap();
    let identity =
        ClientIdentity::from_pem(ca.leaf("driver", &key).as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    let expired = identity.token_valid_for(Duration::ZERO).unwrap();
    assert!(matches!(verifier.verify(&expired), Err(AuthError::Expired)));
}

#[test]
fn a_token_not_bound_to_its_certificate_is_refused() {
    let ca = Ca::new("conveyor test CA");
    let key = KeyPair::generate().unwrap();
    let leaf = ca.leaf("driver", &key);
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    // Sign claims with a wrong thumbprint, with the right key and chain.
    let der = base64::engine::general_purpose::STANDARD
        .decode(leaf.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(der)]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"iat": now, "exp": now + 60, "cnf": {"x5t#S256": "not-the-thumbprint"}});
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &signing).unwrap();
    assert!(matches!(verifier.verify(&token), Err(AuthError::ThumbprintMismatch)));
}

#[test]
fn a_token_without_a_chain_or_a_bearer_header_is_refused() {
    let ca = Ca::new("conveyor test CA");
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    let key = KeyPair::generate().unwrap();
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let token = jsonwebtoken::encode(&header, &serde_json::json!({"iat": 1, "exp": 2}), &signing).unwrap();
    assert!(matches!(verifier.verify(&token), Err(AuthError::NoChain)));
    assert!(matches!(verifier.verify_header("Basic abc"), Err(AuthError::NotBearer)));
    assert!(matches!(verifier.verify("not a token"), Err(AuthError::Malformed(_))));
}

#[tokio::test]
async fn the_dev_server_with_auth_accepts_good_tokens_and_refuses_the_rest() {
    use conveyor_sdk::client::{Client, ClientError};
    use conveyor_sdk::testing::{DevServer, Harness, NatsServer};

    let (ca, foreign) = (Ca::new("trusted"), Ca::new("foreign"));
    let key = KeyPair::generate().unwrap();
    let identity = || {
        ClientIdentity::from_pem(ca.leaf("driver", &key).as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    };
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let verifier = TokenVerifier::from_pem(ca.pem().as_bytes()).unwrap();
    let harness = Harness::start(&nats.url()).await.unwrap();
    let server =
        DevServer::start_with(harness, "127.0.0.1:0".parse().unwrap(), Some(verifier)).await.unwrap();

    let anonymous = Client::new(server.url()).unwrap();
    assert_eq!(anonymous.health().await.unwrap().status, "healthy", "health needs no token");
    let refused = anonymous.list_resources().await.unwrap_err();
    assert!(matches!(refused, ClientError::Server { status: 401, .. }), "{refused:?}");

    let trusted = Client::builder(server.url()).identity(identity()).build().unwrap();
    assert!(trusted.list_resources().await.unwrap().is_empty());

    let foreign_key = KeyPair::generate().unwrap();
    let outsider = ClientIdentity::from_pem(
        foreign.leaf("outsider", &foreign_key).as_bytes(),
        foreign_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let outsider = Client::builder(server.url()).identity(outsider).build().unwrap();
    assert!(matches!(outsider.list_resources().await, Err(ClientError::Server { status: 401, .. })));

    // reqwest is built with rustls and no crypto provider of its own (conveyor-sdk
    // brings its own to its client): a plain reqwest client needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let expired = identity().token_valid_for(Duration::ZERO).unwrap();
    let answer = reqwest::Client::new()
        .get(format!("{}/resources/", server.url()))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("expired"), "{body}");

    // A driver registers its definition with its identity.
    struct Owner;
    #[conveyor_sdk::async_trait]
    impl conveyor_sdk::Driver for Owner {
        type Spec = serde_json::Value;
        fn name(&self) -> &str {
            "owner"
        }
        fn resources(&self) -> Vec<conveyor_sdk::ResourceType> {
            let schema = serde_json::json!({"type": "object"});
            vec![conveyor_sdk::ResourceType::owned(conveyor_sdk::ResourceDefinition::new("owned", schema))]
        }
        async fn reconcile(
            &self,
            _: conveyor_sdk::Run<serde_json::Value>,
        ) -> Result<conveyor_sdk::DriverResult, conveyor_sdk::ReconcileError> {
            Ok(conveyor_sdk::DriverResult::success("ok"))
        }
    }
    let stop = conveyor_sdk::CancellationToken::new();
    let config =
        conveyor_sdk::Config::default().nats_url(nats.url()).api_url(server.url()).api_identity(identity());
    let serving = tokio::spawn(
        conveyor_sdk::Runtime::with_config(Owner, config).run_until(stop.clone().cancelled_owned()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while trusted.get_definition("owned").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the driver never registered its definition");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    serving.await.unwrap().unwrap();
}
