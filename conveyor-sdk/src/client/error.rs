//! [`ClientError`], and how a failed request or an error answer becomes one.

use reqwest::StatusCode;

use crate::client::tls::untrusted_because;

/// Errors of the client.
///
/// Each failure keeps its cause as the [`source`](std::error::Error::source);
/// [`error_text`](crate::report::error_text) puts the whole chain on one line.
///
/// ```
/// use conveyor_sdk::client::{Client, ClientError};
/// let refused = Client::new("localhost:8080");
/// assert!(matches!(refused, Err(ClientError::InvalidUrl(_))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not a usable http(s) URL.
    #[error("invalid server URL {0:?}")]
    InvalidUrl(String),
    /// The server could not be reached.
    #[error("cannot reach the Conveyor server at {url}")]
    Connect {
        /// What was requested.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server did not answer in time.
    #[error("the Conveyor server did not answer {url} in time")]
    Timeout {
        /// What was requested.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status and its `{"error": …}` text.
    #[error("the Conveyor server answered {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's error text (or the body, when it was not `{"error": …}`).
        message: String,
    },
    /// The answer was not what the contract describes.
    #[error("unexpected answer from {url}")]
    Decode {
        /// What was requested.
        url: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// Another HTTP failure (a broken connection while reading, …).
    #[error("HTTP request to {url} failed")]
    Http {
        /// What was requested.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// A token could not be made from the client's identity.
    #[error("cannot sign the request's token")]
    #[cfg(feature = "auth")]
    Auth(#[source] crate::auth::AuthError),
    /// The live log stream could not be opened, or broke while it was read.
    #[error("the live log stream of {url} broke")]
    Stream {
        /// The stream.
        url: String,
        /// Why: an HTTP, WebSocket or header error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server's TLS certificate was refused: the reason says why.
    #[error("the TLS certificate of {url} is not trusted: {reason}")]
    UntrustedCertificate {
        /// What was requested.
        url: String,
        /// Why the certificate was refused, in words.
        reason: String,
        /// The failed request or WebSocket handshake, down to the TLS library's refusal.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A root CA certificate given to the client is not PEM, or the PEM text holds none.
    #[error("a root CA certificate given to the client is not a PEM certificate")]
    RootCertificate(#[source] rustls::pki_types::pem::Error),
    /// TLS could not be set up with the given root CA certificates.
    #[error("cannot set up TLS with the given root CA certificates")]
    Tls(#[source] rustls::Error),
    /// The server answered a live log request with something other than an event stream.
    #[error("the Conveyor server did not answer {url} with an event stream")]
    NotEventStream {
        /// The stream.
        url: String,
    },
}

/// A request that got no answer: the server's certificate refused, cannot connect,
/// timed out, or broke.
pub(super) fn transport_error(url: String, source: reqwest::Error) -> ClientError {
    if let Some(reason) = untrusted_because(&source) {
        ClientError::UntrustedCertificate { url, reason, source: Box::new(source) }
    } else if source.is_timeout() {
        ClientError::Timeout { url, source }
    } else if source.is_connect() {
        ClientError::Connect { url, source }
    } else {
        ClientError::Http { url, source }
    }
}

/// An error status, with the server's `{"error": …}` text (or the body, when it is not that).
pub(super) fn server_error(status: StatusCode, body: &str) -> ClientError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let message =
        serde_json::from_str::<ErrorBody>(body).map(|b| b.error).unwrap_or_else(|_| body.trim().to_owned());
    ClientError::Server { status: status.as_u16(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_carry_the_error_text() {
        let e = server_error(StatusCode::NOT_FOUND, r#"{"error":"resource definition not found"}"#);
        assert!(
            matches!(e, ClientError::Server { status: 404, ref message } if message == "resource definition not found")
        );
        let e = server_error(StatusCode::BAD_GATEWAY, "upstream down\n");
        assert!(matches!(e, ClientError::Server { status: 502, ref message } if message == "upstream down"));
    }
}
