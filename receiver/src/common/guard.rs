//! What a server checks before a request reaches its handler: the `auth`
//! authenticator's verdict on the request's headers, and the counting of
//! failed TLS handshakes (mutual TLS refusals among them).

use std::sync::Arc;

use http::HeaderMap;
use weft_pipeline::auth::{AuthError, ServerAuthenticator};
use weft_pipeline::Counter;

#[derive(Clone)]
pub(crate) struct Guard {
    auth: Option<Arc<dyn ServerAuthenticator>>,
    unauthenticated: Counter,
    tls_failures: Counter,
}

impl Guard {
    pub(crate) fn new(
        auth: Option<Arc<dyn ServerAuthenticator>>,
        unauthenticated: Counter,
        tls_failures: Counter,
    ) -> Guard {
        Guard {
            auth,
            unauthenticated,
            tls_failures,
        }
    }

    /// Ok when no authenticator is configured or it accepts the headers;
    /// a refusal is counted. The error names what was wrong, never a token.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        match &self.auth {
            None => Ok(()),
            Some(a) => a.authenticate(headers).inspect_err(|e| {
                self.unauthenticated.inc();
                tracing::debug!(reason = %e, "request refused: not authenticated");
            }),
        }
    }

    pub(crate) fn tls_failed(&self) {
        self.tls_failures.inc();
    }
}
