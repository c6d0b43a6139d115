//! Server TLS, the collector's `configtls.ServerConfig`: the config keys and a
//! rustls configuration built from them, with the ring crypto provider named
//! explicitly so nothing depends on a process-wide default being installed.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use serde::Deserialize;

/// `tls` of a server, the collector's `configtls.ServerConfig`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// PEM certificate chain file.
    pub cert_file: Option<String>,
    /// PEM certificate chain inline.
    pub cert_pem: Option<String>,
    /// PEM private key file.
    pub key_file: Option<String>,
    /// PEM private key inline.
    pub key_pem: Option<String>,
    /// Accepted for compatibility; a server does not use it.
    pub ca_file: Option<String>,
    /// Accepted for compatibility; a server does not use it.
    pub ca_pem: Option<String>,
    /// Require client certificates signed by a CA in this PEM file.
    pub client_ca_file: Option<String>,
    /// Lowest TLS version: `1.2` (default) or `1.3`.
    pub min_version: Option<String>,
    /// Highest TLS version: `1.2` or `1.3` (default).
    pub max_version: Option<String>,
    /// Accepted for compatibility; certificates are read when the receiver starts.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub reload_interval: Option<Duration>,
    /// Accepted for compatibility; a server does not use it.
    pub include_system_ca_certs_pool: bool,
}

impl ServerTlsConfig {
    /// Checks the keys that can be checked without reading files; returns the
    /// offending key and the message.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.cert_file.is_some() && self.cert_pem.is_some() {
            return Err((
                "cert_pem",
                "use either cert_file or cert_pem, not both".into(),
            ));
        }
        if self.key_file.is_some() && self.key_pem.is_some() {
            return Err(("key_pem", "use either key_file or key_pem, not both".into()));
        }
        let has_cert = self.cert_file.is_some() || self.cert_pem.is_some();
        let has_key = self.key_file.is_some() || self.key_pem.is_some();
        match (has_cert, has_key) {
            (true, true) => {}
            (false, _) => {
                return Err((
                    "cert_file",
                    "a TLS server needs a certificate (cert_file or cert_pem)".into(),
                ))
            }
            (true, false) => {
                return Err((
                    "key_file",
                    "a TLS server needs a private key (key_file or key_pem)".into(),
                ))
            }
        }
        let min = tls_version(self.min_version.as_deref()).map_err(|m| ("min_version", m))?;
        let max = tls_version(self.max_version.as_deref()).map_err(|m| ("max_version", m))?;
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                return Err((
                    "max_version",
                    "max_version is lower than min_version".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `1.2` -> Some(12), `1.3` -> Some(13), absent or empty -> None.
pub(crate) fn tls_version(v: Option<&str>) -> Result<Option<u8>, String> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some("1.2") => Ok(Some(12)),
        Some("1.3") => Ok(Some(13)),
        Some(other @ ("1.0" | "1.1")) => {
            Err(format!("TLS {other} is not supported: use 1.2 or 1.3"))
        }
        Some(other) => Err(format!("unknown TLS version {other:?}: use 1.2 or 1.3")),
    }
}

/// Builds the rustls server configuration; `alpn` lists the protocols to
/// offer (`h2` for gRPC, `h2` and `http/1.1` for HTTP). Errors name the file.
pub fn server_config(tls: &ServerTlsConfig, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let certs: Vec<CertificateDer<'static>> = match (&tls.cert_file, &tls.cert_pem) {
        (Some(path), _) => CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read TLS certificate {path}: {e}"))?,
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot read tls.cert_pem: {e}"))?,
        (None, None) => return Err("TLS needs cert_file or cert_pem".to_string()),
    };
    if certs.is_empty() {
        return Err(match &tls.cert_file {
            Some(path) => format!("no certificate found in {path}"),
            None => "no certificate found in tls.cert_pem".to_string(),
        });
    }
    let key = match (&tls.key_file, &tls.key_pem) {
        (Some(path), _) => PrivateKeyDer::from_pem_file(path)
            .map_err(|e| format!("cannot read TLS private key {path}: {e}"))?,
        (None, Some(pem)) => PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("cannot read tls.key_pem: {e}"))?,
        (None, None) => return Err("TLS needs key_file or key_pem".to_string()),
    };

    let min = tls_version(tls.min_version.as_deref())?.unwrap_or(12);
    let max = tls_version(tls.max_version.as_deref())?.unwrap_or(13);
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if min <= 13 && max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err("min_version is higher than max_version".to_string());
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match &tls.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read client CA file {path}: {e}"))?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("bad certificate in client CA file {path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("no certificate found in client CA file {path}"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA file {path}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not form a usable pair: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
