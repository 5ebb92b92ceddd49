//! The client's one TLS setup, shared by HTTPS (REST, Server-Sent Events) and WSS:
//! rustls with the ring provider, trusting the system's root CAs and those given to
//! [`ClientBuilder::root_certificate`](super::ClientBuilder::root_certificate).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

use crate::client::error::ClientError;

/// The TLS client configuration: the system's roots, then each PEM text's certificates.
pub(super) fn client_config(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    for pem in extra_roots {
        for certificate in certificates(pem)? {
            roots.add(certificate).map_err(ClientError::Tls)?;
        }
    }
    // reqwest is built without a crypto provider of its own: make ring the process's
    // default when nothing else chose one, so that a plain reqwest client elsewhere in
    // the process finds one too. Another provider already installed is left alone.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates of a PEM text; none at all is an error too.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let found: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(ClientError::RootCertificate)?;
    if found.is_empty() {
        return Err(ClientError::RootCertificate(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(found)
}

/// The system's root CAs, read once per process. A system without any (a bare
/// container) still trusts the roots given to the client.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "a system root CA certificate could not be read");
        }
        found.certs
    })
}

/// Why a server's certificate was refused, when that is why `error` happened: the
/// words of [`ClientError::UntrustedCertificate`].
pub(super) fn untrusted_because(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error(error) {
            return Some(reason(problem));
        }
        next = error.source();
    }
    None
}

/// The TLS library's error in `error`, also inside I/O errors (nested ones too: an
/// I/O error's `source` skips the error it wraps).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner as &(dyn std::error::Error + 'static))
}

fn reason(problem: &CertificateError) -> String {
    match problem {
        CertificateError::UnknownIssuer => "it is not signed by a certificate authority the client trusts \
             (the system's, or one given with ClientBuilder::root_certificate)"
            .into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not issued for this host name".into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".into()
        }
        CertificateError::Revoked => "it has been revoked".into(),
        other => format!("it was refused ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_certificate_that_is_not_pem_is_refused() {
        assert!(matches!(certificates(b"no certificate here"), Err(ClientError::RootCertificate(_))));
        let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(matches!(certificates(broken), Err(ClientError::RootCertificate(_))));
    }

    #[test]
    fn a_certificate_refusal_deep_in_an_error_chain_is_found_and_explained() {
        let refusal = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refusal);
        let io = std::io::Error::other(io); // wrapped again, as the HTTPS connector does
        let reason = untrusted_because(&io).expect("the refusal inside the I/O errors");
        assert!(reason.contains("not signed by a certificate authority the client trusts"), "{reason}");
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(untrusted_because(&expired).as_deref(), Some("it has expired"));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(untrusted_because(&other), None);
    }
}
