//! Which algorithm signs a client's tokens: the certificate's key decides.

use jsonwebtoken::{Algorithm, EncodingKey};
use x509_parser::prelude::X509Certificate;

use super::{es512, AuthError};

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// A token's signing algorithm: one jsonwebtoken offers, or ES512, done here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    Jwt(Algorithm),
    Es512,
}

impl Alg {
    /// The JWS name (`ES256`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Alg::Jwt(Algorithm::RS256) => "RS256",
            Alg::Jwt(Algorithm::ES256) => "ES256",
            Alg::Jwt(Algorithm::ES384) => "ES384",
            Alg::Es512 => es512::NAME,
            Alg::Jwt(_) => "unsupported",
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alg::Jwt(algorithm) => write!(f, "{algorithm:?}"),
            Alg::Es512 => f.write_str(es512::NAME),
        }
    }
}

/// The signing key of a [`ClientIdentity`](super::ClientIdentity).
#[derive(Clone)]
pub(super) enum SigningKey {
    Jwt(EncodingKey),
    Es512(es512::Key),
}

/// The JWT algorithm for a certificate's public key.
pub(super) fn algorithm_of(cert: &X509Certificate<'_>) -> Result<Alg, AuthError> {
    let spki = cert.public_key();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA => Ok(Alg::Jwt(Algorithm::RS256)),
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => Ok(Alg::Jwt(Algorithm::ES256)),
                OID_P384 => Ok(Alg::Jwt(Algorithm::ES384)),
                OID_P521 => Ok(Alg::Es512),
                _ => Err(AuthError::UnsupportedKey),
            }
        }
        _ => Err(AuthError::UnsupportedKey),
    }
}
