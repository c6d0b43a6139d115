//! The `tls` section of the OTLP exporters, as the collector's client TLS
//! settings spell it, and the rustls client configuration built from it.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use weft_pipeline::ConfigFieldError;

/// Client TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientSettings {
    /// Use plaintext (no TLS) for a gRPC endpoint without a scheme.
    pub insecure: bool,
    /// Accept any server certificate. For testing only.
    pub insecure_skip_verify: bool,
    /// PEM file with the CA certificates that sign the server's certificate.
    /// Without it (or `ca_pem`), the system's roots are used.
    pub ca_file: Option<PathBuf>,
    /// The same, inline.
    pub ca_pem: Option<String>,
    /// Also trust the system's roots when `ca_file`/`ca_pem` is set.
    pub include_system_ca_certs_pool: bool,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The same, inline.
    pub cert_pem: Option<String>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// The same, inline.
    pub key_pem: Option<String>,
    /// The name the server certificate is checked against (and sent as SNI
    /// over gRPC) instead of the endpoint's host.
    pub server_name_override: Option<String>,
    /// Lowest TLS version: `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// Highest TLS version: `"1.2"` or `"1.3"` (default).
    pub max_version: Option<String>,
}

/// A failure to build the TLS client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path:?}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate found in the {0}")]
    NoCertificate(&'static str),
    #[error("no PEM private key found in the key")]
    NoKey,
    #[error("invalid TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid CA certificates: {0}")]
    Verifier(String),
    #[error("invalid server_name_override {0:?}")]
    ServerName(String),
}

fn parse_version(v: &str) -> Option<u8> {
    match v.trim() {
        "1.2" => Some(2),
        "1.3" => Some(3),
        _ => None,
    }
}

impl TlsClientSettings {
    /// Checks the values; `key` is the section's key (`tls`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigFieldError> {
        if self.ca_file.is_some() && self.ca_pem.is_some() {
            return Err(ConfigFieldError::at(
                &[key],
                "set either `ca_file` or `ca_pem`, not both",
            ));
        }
        let cert = self.cert_file.is_some() || self.cert_pem.is_some();
        let private = self.key_file.is_some() || self.key_pem.is_some();
        if cert != private {
            return Err(ConfigFieldError::at(
                &[key],
                "a client certificate needs both a certificate (`cert_file`/`cert_pem`) and a key (`key_file`/`key_pem`)",
            ));
        }
        for (name, v) in [
            ("min_version", &self.min_version),
            ("max_version", &self.max_version),
        ] {
            if let Some(v) = v {
                if parse_version(v).is_none() {
                    return Err(ConfigFieldError::at(
                        &[key, name],
                        format!(
                            "unsupported TLS version {v:?}: weft speaks TLS \"1.2\" and \"1.3\""
                        ),
                    ));
                }
            }
        }
        let min = self
            .min_version
            .as_deref()
            .and_then(parse_version)
            .unwrap_or(2);
        let max = self
            .max_version
            .as_deref()
            .and_then(parse_version)
            .unwrap_or(3);
        if min > max {
            return Err(ConfigFieldError::at(
                &[key, "min_version"],
                "`min_version` is above `max_version`",
            ));
        }
        if let Some(name) = &self.server_name_override {
            if ServerName::try_from(name.clone()).is_err() {
                return Err(ConfigFieldError::at(
                    &[key, "server_name_override"],
                    format!("{name:?} is not a valid DNS name or IP address"),
                ));
            }
        }
        Ok(())
    }

    /// Builds the rustls client configuration (reads the PEM files).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        let provider = crypto_provider();
        let min = self
            .min_version
            .as_deref()
            .and_then(parse_version)
            .unwrap_or(2);
        let max = self
            .max_version
            .as_deref()
            .and_then(parse_version)
            .unwrap_or(3);
        let mut versions = Vec::new();
        if min <= 3 && max >= 3 {
            versions.push(&rustls::version::TLS13);
        }
        if min <= 2 && max >= 2 {
            versions.push(&rustls::version::TLS12);
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?;

        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure_skip_verify {
            Arc::new(AcceptAnyServerCert(provider.clone()))
        } else {
            let roots = Arc::new(self.root_store()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            match &self.server_name_override {
                Some(name) => Arc::new(CheckNameAs {
                    inner: webpki,
                    name: ServerName::try_from(name.clone())
                        .map_err(|_| TlsError::ServerName(name.clone()))?,
                }),
                None => webpki,
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.client_identity()? {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        let custom = match (&self.ca_file, &self.ca_pem) {
            (Some(path), _) => Some(read_file("ca_file", path)?),
            (None, Some(pem)) => Some(pem.clone().into_bytes()),
            (None, None) => None,
        };
        let custom_given = custom.is_some();
        if let Some(pem) = custom {
            let certs = pem_certs(&pem, "CA certificates")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::NoCertificate("CA certificates"));
            }
        }
        if !custom_given || self.include_system_ca_certs_pool {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!(error = %e, "skipping an unreadable system CA certificate");
            }
            roots.add_parsable_certificates(native.certs);
        }
        Ok(roots)
    }

    #[allow(clippy::type_complexity)]
    fn client_identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        let cert = match (&self.cert_file, &self.cert_pem) {
            (Some(path), _) => read_file("cert_file", path)?,
            (None, Some(pem)) => pem.clone().into_bytes(),
            (None, None) => return Ok(None),
        };
        let key = match (&self.key_file, &self.key_pem) {
            (Some(path), _) => read_file("key_file", path)?,
            (None, Some(pem)) => pem.clone().into_bytes(),
            (None, None) => return Err(TlsError::NoKey),
        };
        let certs = pem_certs(&cert, "client certificate")?;
        let key = rustls_pemfile::private_key(&mut Cursor::new(&key))
            .ok()
            .flatten()
            .ok_or(TlsError::NoKey)?;
        Ok(Some((certs, key)))
    }
}

/// The process-wide crypto provider when the binary installed one, else ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read_file(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    let file = File::open(path).map_err(|source| TlsError::Read {
        what,
        path: path.clone(),
        source,
    })?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut BufReader::new(file), &mut out).map_err(|source| {
        TlsError::Read {
            what,
            path: path.clone(),
            source,
        }
    })?;
    Ok(out)
}

fn pem_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut Cursor::new(pem))
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

/// `insecure_skip_verify`: any certificate is accepted, but handshake
/// signatures are still checked so the session keys are sound.
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl fmt::Debug for AcceptAnyServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcceptAnyServerCert")
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `server_name_override`: the certificate is checked against the configured
/// name instead of the host the connection went to.
#[derive(Debug)]
struct CheckNameAs {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for CheckNameAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
