//! Server TLS for both OTLP transports: a rustls configuration built from the
//! collector's `tls` keys, with the ring crypto provider named explicitly so
//! nothing depends on a process-wide default being installed.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::config::{tls_version, ServerTlsConfig};

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
