//! ES512 (ECDSA on P-521 with SHA-512, RFC 7518 §3.4), which jsonwebtoken does not
//! offer: tokens are signed and checked here as standard compact JWS, the signature
//! being `r ‖ s`, 66 bytes each.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use p521::ecdsa::signature::{Signer as _, Verifier as _};
use p521::ecdsa::{Signature, SigningKey, VerifyingKey};
use p521::pkcs8::DecodePrivateKey as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::AuthError;

/// The JWS name of the algorithm.
pub(super) const NAME: &str = "ES512";

/// The JOSE header of an ES512 token.
#[derive(Serialize, Deserialize)]
pub(super) struct Header {
    pub(super) alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) x5c: Option<Vec<String>>,
}

/// A P-521 private key.
#[derive(Clone)]
pub(super) struct Key(SigningKey);

impl Key {
    /// From PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub(super) fn from_pem(pem: &[u8]) -> Result<Self, AuthError> {
        let text = String::from_utf8_lossy(pem);
        let secret = p521::SecretKey::from_pkcs8_pem(&text)
            .or_else(|pkcs8| p521::SecretKey::from_sec1_pem(&text).map_err(|_| pkcs8))
            .map_err(AuthError::P521Key)?;
        let key = SigningKey::from_bytes(&secret.to_bytes())
            .map_err(|_| AuthError::Key(ErrorKind::InvalidEcdsaKey.into()))?;
        Ok(Self(key))
    }
}

/// A compact JWS of `claims` with `header`, signed with `key`.
pub(super) fn sign<C: Serialize>(header: &Header, claims: &C, key: &Key) -> Result<String, AuthError> {
    let encode = |json: Result<Vec<u8>, serde_json::Error>| {
        json.map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
            .map_err(|e| AuthError::Sign(ErrorKind::Json(std::sync::Arc::new(e)).into()))
    };
    let signing_input =
        format!("{}.{}", encode(serde_json::to_vec(header))?, encode(serde_json::to_vec(claims))?);
    let signature: Signature = key.0.sign(signing_input.as_bytes());
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
}

/// The header of `token`, when it is a JWS whose header is JSON.
pub(super) fn header(token: &str) -> Option<Header> {
    let encoded = token.split('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()
}

/// The claims of `token` once its signature verifies with the P-521 public key
/// `public` (a SEC1 point, as in a certificate).
pub(super) fn verify<C: DeserializeOwned>(token: &str, public: &[u8]) -> Result<C, AuthError> {
    let malformed = || AuthError::Malformed(ErrorKind::InvalidToken.into());
    let bad_signature = || AuthError::BadSignature(ErrorKind::InvalidSignature.into());
    let (signing_input, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
    let (_, claims) = signing_input.split_once('.').ok_or_else(malformed)?;
    let key = VerifyingKey::from_sec1_bytes(public).map_err(|_| bad_signature())?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
    let signature = Signature::from_slice(&signature).map_err(|_| bad_signature())?;
    key.verify(signing_input.as_bytes(), &signature).map_err(|_| bad_signature())?;
    let claims = URL_SAFE_NO_PAD.decode(claims).map_err(|_| malformed())?;
    serde_json::from_slice(&claims)
        .map_err(|e| AuthError::Malformed(ErrorKind::Json(std::sync::Arc::new(e)).into()))
}
