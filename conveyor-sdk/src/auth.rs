//! Authentication with a Conveyor server that runs with `auth_enabled`.
//!
//! Every HTTP request carries `Authorization: Bearer <JWT>`: a short-lived token signed
//! with the client's private key (RS256, ES256, ES384 or ES512), with claims `iat`, `exp` and
//! `cnf: {"x5t#S256": <base64url SHA-256 of the leaf certificate>}`, and the header
//! `x5c`: the certificate chain, leaf first. [`ClientIdentity`] makes such tokens;
//! [`TokenVerifier`] checks them as the server does.

mod algorithm;
mod es512;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use self::algorithm::{algorithm_of, Alg, SigningKey};

/// How long a token lives by default.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(120);

/// How far in the future `iat` may be (clocks differ a little).
const CLOCK_SKEW: u64 = 60;

/// Why a certificate, key or token was refused.
///
/// ```
/// use conveyor_sdk::auth::{AuthError, TokenVerifier};
/// let verifier = TokenVerifier::from_pem(b"no PEM here");
/// assert!(matches!(verifier, Err(AuthError::NoCertificate)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM text holds no certificate.
    #[error("no certificate in the PEM text")]
    NoCertificate,
    /// The PEM text is malformed: a section without its end, or whose base64 is invalid.
    #[error("the PEM text is malformed")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// A certificate's base64 text in `x5c` could not be decoded.
    #[error("a certificate is not valid base64")]
    CertificateEncoding(#[source] base64::DecodeError),
    /// A certificate could not be parsed.
    #[error("a certificate is not valid DER")]
    Certificate(#[source] x509_parser::error::X509Error),
    /// The key's algorithm is not RSA, EC P-256, EC P-384 or EC P-521.
    #[error("unsupported key algorithm (use RSA, EC P-256, EC P-384 or EC P-521)")]
    UnsupportedKey,
    /// The private key could not be loaded.
    #[error("the private key is not usable")]
    Key(#[source] jsonwebtoken::errors::Error),
    /// The P-521 private key could not be loaded (PKCS#8 or SEC1 PEM expected).
    #[error("the P-521 private key is not usable")]
    P521Key(#[source] p521::pkcs8::Error),
    /// Signing the token failed.
    #[error("signing the token failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    /// The token is not a JWT, or its header is unusable.
    #[error("the token is malformed")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    /// The token's header carries no certificate chain (`x5c`).
    #[error("the token carries no certificate chain (x5c)")]
    NoChain,
    /// The chain does not lead to a trusted root.
    #[error("the certificate chain is not trusted: {reason}")]
    Untrusted {
        /// Which link of the chain fails, or how the token disagrees with it.
        reason: String,
        /// The signature check that failed, when one did.
        #[source]
        source: Option<x509_parser::error::X509Error>,
    },
    /// A certificate of the chain is outside its validity period.
    #[error("a certificate of the chain is expired or not yet valid")]
    CertificateExpired,
    /// The token's signature does not verify with the leaf certificate's key.
    #[error("the token's signature does not match its certificate")]
    BadSignature(#[source] jsonwebtoken::errors::Error),
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token was issued in the future.
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// The token's `cnf.x5t#S256` does not match the leaf certificate.
    #[error("the token is not bound to its certificate (cnf thumbprint mismatch)")]
    ThumbprintMismatch,
}

#[derive(Serialize, Deserialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    thumbprint: String,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iat: u64,
    exp: u64,
    cnf: Confirmation,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// The DER of every certificate in a PEM text, in order; none at all is an error too.
fn certificates(pem_text: &[u8]) -> Result<Vec<Vec<u8>>, AuthError> {
    let found: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem_text)
        .map(|certificate| certificate.map(|der| der.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(AuthError::Pem)?;
    if found.is_empty() {
        return Err(AuthError::NoCertificate);
    }
    Ok(found)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, AuthError> {
    X509Certificate::from_der(der).map(|(_, cert)| cert).map_err(|e| AuthError::Certificate(e.into()))
}

/// A client's certificate chain and private key: it signs the tokens of its requests.
///
/// ```no_run
/// # fn demo() -> Result<(), conveyor_sdk::auth::AuthError> {
/// let identity = conveyor_sdk::auth::ClientIdentity::from_files("client-chain.pem", "client.key")?;
/// let header = format!("Bearer {}", identity.token()?);
/// # Ok(()) }
/// ```
///
/// Most callers hand the identity to a client, which signs each request:
/// `conveyor_sdk::client::ClientBuilder::identity`.
#[derive(Clone)]
pub struct ClientIdentity {
    chain_b64: Vec<String>,
    key: SigningKey,
    algorithm: Alg,
    thumbprint: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("algorithm", &self.algorithm)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// From a certificate chain (PEM, leaf first) and the leaf's private key (PEM;
    /// PKCS#8, or PKCS#1 for RSA, or SEC1 for P-521). The algorithm follows from the
    /// certificate's key: RSA → RS256, P-256 → ES256, P-384 → ES384, P-521 → ES512.
    ///
    /// ```
    /// use conveyor_sdk::auth::ClientIdentity;
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let identity = ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    /// assert_eq!(identity.algorithm(), "ES256"); // rcgen's default key is P-256
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, AuthError> {
        let chain = certificates(chain_pem)?;
        let leaf = parse(&chain[0])?;
        let algorithm = algorithm_of(&leaf)?;
        let key = match algorithm {
            Alg::Jwt(Algorithm::RS256) => {
                SigningKey::Jwt(EncodingKey::from_rsa_pem(key_pem).map_err(AuthError::Key)?)
            }
            Alg::Jwt(_) => SigningKey::Jwt(EncodingKey::from_ec_pem(key_pem).map_err(AuthError::Key)?),
            Alg::Es512 => SigningKey::Es512(es512::Key::from_pem(key_pem)?),
        };
        Ok(Self {
            thumbprint: thumbprint(&chain[0]),
            chain_b64: chain.iter().map(|der| STANDARD.encode(der)).collect(),
            key,
            algorithm,
        })
    }

    /// [`from_pem`](Self::from_pem), from files.
    ///
    /// ```
    /// use conveyor_sdk::auth::{AuthError, ClientIdentity};
    /// let missing = ClientIdentity::from_files("/nonexistent/chain.pem", "/nonexistent/key.pem");
    /// assert!(matches!(missing, Err(AuthError::Read { .. })));
    /// ```
    pub fn from_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, AuthError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| AuthError::Read { path: path.display().to_string(), source })
        };
        Self::from_pem(&read(chain.as_ref())?, &read(key.as_ref())?)
    }

    /// A fresh token, valid for [`DEFAULT_TOKEN_LIFETIME`].
    ///
    /// ```
    /// use conveyor_sdk::auth::{ClientIdentity, TokenVerifier};
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let identity = ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    /// let authorization = format!("Bearer {}", identity.token()?);
    /// let verifier = TokenVerifier::from_pem(ca_pem.as_bytes())?;
    /// assert_eq!(verifier.verify_header(&authorization)?.thumbprint, identity.thumbprint());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn token(&self) -> Result<String, AuthError> {
        self.token_valid_for(DEFAULT_TOKEN_LIFETIME)
    }

    /// A fresh token valid for `lifetime`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conveyor_sdk::auth::{AuthError, ClientIdentity, TokenVerifier};
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let identity = ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    /// let verifier = TokenVerifier::from_pem(ca_pem.as_bytes())?;
    /// let long = identity.token_valid_for(Duration::from_secs(600))?;
    /// assert!(verifier.verify(&long).is_ok());
    /// let expired = identity.token_valid_for(Duration::ZERO)?;
    /// assert!(matches!(verifier.verify(&expired), Err(AuthError::Expired)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn token_valid_for(&self, lifetime: Duration) -> Result<String, AuthError> {
        let iat = now();
        let claims = Claims {
            iat,
            exp: iat + lifetime.as_secs(),
            cnf: Confirmation { thumbprint: self.thumbprint.clone() },
        };
        match &self.key {
            SigningKey::Jwt(key) => {
                let Alg::Jwt(algorithm) = self.algorithm else {
                    return Err(AuthError::UnsupportedKey);
                };
                let mut header = Header::new(algorithm);
                header.x5c = Some(self.chain_b64.clone());
                jsonwebtoken::encode(&header, &claims, key).map_err(AuthError::Sign)
            }
            SigningKey::Es512(key) => {
                let header = es512::Header {
                    alg: es512::NAME.into(),
                    typ: Some("JWT".into()),
                    x5c: Some(self.chain_b64.clone()),
                };
                es512::sign(&header, &claims, key)
            }
        }
    }

    /// The base64url SHA-256 of the leaf certificate, as in `cnf.x5t#S256`.
    ///
    /// ```
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let identity = conveyor_sdk::auth::ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    /// assert_eq!(identity.thumbprint().len(), 43); // 32 bytes, base64url without padding
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The signing algorithm (`RS256`, `ES256`, `ES384`, `ES512`).
    ///
    /// ```
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let identity = conveyor_sdk::auth::ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    /// assert_eq!(identity.algorithm(), "ES256");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn algorithm(&self) -> &'static str {
        self.algorithm.name()
    }
}

/// A client whose token was accepted.
///
/// ```
/// use conveyor_sdk::auth::{ClientIdentity, TokenVerifier};
/// # let ca_key = rcgen::KeyPair::generate()?;
/// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
/// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
/// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
/// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
/// # let key = rcgen::KeyPair::generate()?;
/// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
/// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
/// # let leaf = leaf.signed_by(&key, &ca)?;
/// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
/// let identity = ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
/// let client = TokenVerifier::from_pem(ca_pem.as_bytes())?.verify(&identity.token()?)?;
/// assert_eq!(client.subject, "CN=driver-1");
/// assert_eq!(client.thumbprint, identity.thumbprint());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    /// The leaf certificate's subject.
    pub subject: String,
    /// The leaf certificate's thumbprint.
    pub thumbprint: String,
    /// When the token expires, Unix seconds.
    pub expires_at: u64,
}

/// Checks tokens as the Conveyor server does: the `x5c` chain against trusted roots,
/// the signature with the leaf's key, the `cnf` thumbprint, and expiry.
///
/// ```no_run
/// # fn demo(authorization: &str) -> Result<(), conveyor_sdk::auth::AuthError> {
/// let verifier = conveyor_sdk::auth::TokenVerifier::from_pem(&std::fs::read("ca.pem").unwrap_or_default())?;
/// let client = verifier.verify_header(authorization)?;
/// println!("request from {}", client.subject);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    roots: Vec<Vec<u8>>,
}

impl TokenVerifier {
    /// Trusts the root CA certificates in `roots_pem`.
    ///
    /// ```
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let verifier = conveyor_sdk::auth::TokenVerifier::from_pem(ca_pem.as_bytes())?;
    /// assert!(verifier.verify("not a token").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_pem(roots_pem: &[u8]) -> Result<Self, AuthError> {
        let roots = certificates(roots_pem)?;
        for root in &roots {
            parse(root)?;
        }
        Ok(Self { roots })
    }

    /// Checks the value of an `Authorization` header: `Bearer <token>`.
    ///
    /// ```
    /// use conveyor_sdk::auth::{AuthError, ClientIdentity, TokenVerifier};
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let identity = ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    /// let verifier = TokenVerifier::from_pem(ca_pem.as_bytes())?;
    /// let client = verifier.verify_header(&format!("Bearer {}", identity.token()?))?;
    /// assert_eq!(client.subject, "CN=driver-1");
    /// assert!(matches!(verifier.verify_header("Basic dXNlcjpwdw=="), Err(AuthError::NotBearer)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify_header(&self, authorization: &str) -> Result<VerifiedClient, AuthError> {
        let token = authorization.strip_prefix("Bearer ").ok_or(AuthError::NotBearer)?;
        self.verify(token.trim())
    }

    /// Checks a token.
    ///
    /// ```
    /// use conveyor_sdk::auth::{AuthError, ClientIdentity, TokenVerifier};
    /// # let ca_key = rcgen::KeyPair::generate()?;
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # ca.distinguished_name.push(rcgen::DnType::CommonName, "conveyor CA");
    /// # let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
    /// # let key = rcgen::KeyPair::generate()?;
    /// # let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    /// # leaf.distinguished_name.push(rcgen::DnType::CommonName, "driver-1");
    /// # let leaf = leaf.signed_by(&key, &ca)?;
    /// # let (ca_pem, chain_pem, key_pem) = (ca.pem(), leaf.pem(), key.serialize_pem());
    /// let identity = ClientIdentity::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    /// let verifier = TokenVerifier::from_pem(ca_pem.as_bytes())?;
    /// let client = verifier.verify(&identity.token()?)?;
    /// assert!(client.expires_at > 0);
    /// assert!(matches!(verifier.verify("not.a.token"), Err(AuthError::Malformed(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self, token: &str) -> Result<VerifiedClient, AuthError> {
        let (alg, x5c) = match jsonwebtoken::decode_header(token) {
            Ok(header) => (Alg::Jwt(header.alg), header.x5c),
            // jsonwebtoken knows no ES512: such a header is read here.
            Err(error) => match es512::header(token) {
                Some(header) if header.alg == es512::NAME => (Alg::Es512, header.x5c),
                _ => return Err(AuthError::Malformed(error)),
            },
        };
        let chain: Vec<Vec<u8>> = x5c
            .as_ref()
            .filter(|c| !c.is_empty())
            .ok_or(AuthError::NoChain)?
            .iter()
            .map(|c| STANDARD.decode(c).map_err(AuthError::CertificateEncoding))
            .collect::<Result<_, _>>()?;
        let certs: Vec<X509Certificate<'_>> = chain.iter().map(|der| parse(der)).collect::<Result<_, _>>()?;
        self.check_chain(&certs)?;

        let leaf = &certs[0];
        let algorithm = algorithm_of(leaf)?;
        if alg != algorithm {
            return Err(AuthError::Untrusted {
                reason: format!("the token says {alg} but its certificate holds a key for {algorithm}"),
                source: None,
            });
        }
        let public = leaf.public_key().subject_public_key.data.as_ref();
        let claims: Claims = match algorithm {
            Alg::Jwt(algorithm) => {
                let key = match algorithm {
                    Algorithm::RS256 => DecodingKey::from_rsa_der(public),
                    _ => DecodingKey::from_ec_der(public),
                };
                let mut validation = Validation::new(algorithm);
                validation.validate_exp = false; // checked below, without leeway
                validation.required_spec_claims.clear();
                jsonwebtoken::decode::<Claims>(token, &key, &validation)
                    .map_err(AuthError::BadSignature)?
                    .claims
            }
            Alg::Es512 => es512::verify(token, public)?,
        };
        let now = now();
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        if claims.iat > now + CLOCK_SKEW {
            return Err(AuthError::IssuedInFuture);
        }
        let leaf_thumbprint = thumbprint(&chain[0]);
        if claims.cnf.thumbprint != leaf_thumbprint {
            return Err(AuthError::ThumbprintMismatch);
        }
        Ok(VerifiedClient {
            subject: leaf.subject().to_string(),
            thumbprint: leaf_thumbprint,
            expires_at: claims.exp,
        })
    }

    /// Each certificate is valid now and signed by the next; the last is signed by a
    /// trusted root (or is one).
    fn check_chain(&self, certs: &[X509Certificate<'_>]) -> Result<(), AuthError> {
        for cert in certs {
            if !cert.validity().is_valid() {
                return Err(AuthError::CertificateExpired);
            }
        }
        for pair in certs.windows(2) {
            pair[0].verify_signature(Some(pair[1].public_key())).map_err(|e| AuthError::Untrusted {
                reason: format!("{} is not signed by {}", pair[0].subject(), pair[1].subject()),
                source: Some(e),
            })?;
        }
        let last = certs.last().ok_or(AuthError::NoChain)?;
        for root_der in &self.roots {
            let root = parse(root_der)?;
            if root_der.as_slice() == last.as_ref() || last.verify_signature(Some(root.public_key())).is_ok()
            {
                if !root.validity().is_valid() {
                    return Err(AuthError::CertificateExpired);
                }
                return Ok(());
            }
        }
        Err(AuthError::Untrusted {
            reason: format!("{} is not signed by a trusted root", last.subject()),
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";

    fn section(label: &str, der: &[u8]) -> String {
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", STANDARD.encode(der))
    }

    #[test]
    fn every_certificate_of_a_pem_text_is_read_in_order_and_other_sections_are_skipped() {
        let text = [
            "a comment before\n".to_owned(),
            section("PRIVATE KEY", b"key"),
            section("CERTIFICATE", b"leaf"),
            section("CERTIFICATE", b"issuer"),
        ]
        .concat();
        let found = certificates(text.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(found, Ok(vec![b"leaf".to_vec(), b"issuer".to_vec()]));
    }

    #[test]
    fn a_pem_text_without_a_certificate_is_refused_as_such() {
        for text in ["", "no PEM here", &section("PRIVATE KEY", b"key")] {
            assert!(matches!(certificates(text.as_bytes()), Err(AuthError::NoCertificate)), "{text:?}");
        }
    }

    #[test]
    fn a_malformed_certificate_section_is_refused_not_skipped() {
        let not_base64 = format!("{BEGIN}\nnot base64!\n{END}\n");
        let cut_off = format!("{}{BEGIN}\nAAAA\n", section("CERTIFICATE", b"leaf"));
        for text in [not_base64, cut_off] {
            let read = certificates(text.as_bytes());
            assert!(matches!(read, Err(AuthError::Pem(_))), "{text:?}: {read:?}");
        }
    }
}
