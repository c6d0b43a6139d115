//! Settings and helpers the exporters share: compression, headers, the HTTP
//! client, config error formatting.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};
use weft_pipeline::{ComponentError, ConfigFieldError};

use crate::tls::TlsClientSettings;

/// `compression` of the OTLP exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The `Content-Encoding` / `grpc-encoding` token.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }

    /// Compresses a request body; `level` None is the codec's default.
    pub fn compress(self, body: Vec<u8>, level: Option<i32>) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(body),
            Compression::Gzip => {
                let level = level
                    .map(|l| flate2::Compression::new(l.clamp(1, 9) as u32))
                    .unwrap_or_default();
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), level);
                enc.write_all(&body)?;
                enc.finish()
            }
            Compression::Zstd => zstd::bulk::compress(&body, level.unwrap_or(0)),
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Compression, D::Error> {
        // A null value keeps the default, as the collector does.
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("gzip") => Ok(Compression::Gzip),
            Some("zstd") => Ok(Compression::Zstd),
            Some("none") | Some("") => Ok(Compression::None),
            Some(other) => Err(serde::de::Error::custom(format!(
                "unsupported compression {other:?}: weft supports gzip, zstd and none"
            ))),
        }
    }
}

/// Checks that every header name and value can go on the wire.
pub fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ConfigFieldError> {
    for (name, value) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigFieldError::at(
                &["headers", name],
                format!("{name:?} is not a valid header name"),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(ConfigFieldError::at(
                &["headers", name],
                "the value is not a valid header value (control characters?)",
            ));
        }
    }
    Ok(())
}

/// The configured `headers` as a header map; errors name the header.
/// The `auth` of an exporter: an authenticator extension's credentials,
/// fetched for every request (a token file may have been rotated).
#[derive(Clone, Default)]
pub struct ClientAuth(Option<std::sync::Arc<dyn weft_pipeline::auth::ClientAuthenticator>>);

impl ClientAuth {
    pub fn new(
        settings: &weft_pipeline::Settings,
        auth: Option<&weft_pipeline::auth::AuthConfig>,
    ) -> Result<ClientAuth, ComponentError> {
        Ok(ClientAuth(match auth {
            Some(a) => Some(weft_pipeline::auth::client_authenticator(
                &settings.host,
                a,
            )?),
            None => None,
        }))
    }

    /// The credential headers to add; an authenticator that cannot give
    /// them (an unreadable token file) fails the attempt, retryably.
    pub fn headers(
        &self,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, weft_pipeline::exporterhelper::ExportError> {
        match &self.0 {
            None => Ok(Vec::new()),
            Some(a) => a.headers().map_err(|e| {
                weft_pipeline::exporterhelper::ExportError::retryable(format!("auth: {e}"))
            }),
        }
    }

    /// `base` with the credential headers added.
    pub fn apply(
        &self,
        base: &HeaderMap,
    ) -> Result<HeaderMap, weft_pipeline::exporterhelper::ExportError> {
        let mut h = base.clone();
        for (k, v) in self.headers()? {
            h.insert(k, v);
        }
        Ok(h)
    }
}

pub fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, ComponentError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| ComponentError::new(format!("headers: invalid name {k:?}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| ComponentError::new(format!("headers: invalid value for {k:?}")))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// The HTTP client keys (of the collector's `confighttp.ClientConfig`) the
/// HTTP exporters honour.
pub struct HttpClientOptions<'a> {
    pub tls: &'a TlsClientSettings,
    pub proxy_url: Option<&'a str>,
    pub idle_conn_timeout: Option<Duration>,
    pub max_idle_conns_per_host: Option<usize>,
    pub disable_keep_alives: bool,
}

/// An HTTP/1.1 and HTTP/2 client with weft's User-Agent and TLS settings.
pub fn http_client(opts: HttpClientOptions<'_>) -> Result<reqwest::Client, ComponentError> {
    let tls = opts
        .tls
        .client_config(&[b"h2", b"http/1.1"])
        .map_err(|e| ComponentError::new(format!("tls: {e}")))?;
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent())
        .tls_backend_preconfigured(tls);
    if let Some(proxy) = opts.proxy_url.filter(|p| !p.trim().is_empty()) {
        let proxy = reqwest::Proxy::all(proxy)
            .map_err(|e| ComponentError::new(format!("proxy_url: {e}")))?;
        builder = builder.proxy(proxy);
    }
    if let Some(t) = opts.idle_conn_timeout {
        builder = builder.pool_idle_timeout(t);
    }
    if let Some(n) = opts.max_idle_conns_per_host {
        builder = builder.pool_max_idle_per_host(n);
    }
    if opts.disable_keep_alives {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder
        .build()
        .map_err(|e| ComponentError::new(format!("cannot build the HTTP client: {e}")))
}

/// Checks that a URL key holds an `http://` or `https://` URL with a host.
pub fn check_http_url(key: &str, url: &str) -> Result<(), ConfigFieldError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(ConfigFieldError::at(
            &[key],
            format!("{url:?} must be an http:// or https:// URL with a host"),
        )),
        Err(e) => Err(ConfigFieldError::at(
            &[key],
            format!("{url:?} is not a valid URL: {e}"),
        )),
    }
}

/// A config error turned into a create-time error that names the key.
pub fn config_error(e: ConfigFieldError) -> ComponentError {
    if e.path.is_empty() {
        ComponentError::new(e.message)
    } else {
        ComponentError::new(format!("{}: {}", e.path.join("::"), e.message))
    }
}

/// The `User-Agent` weft's exporters send.
pub fn user_agent() -> String {
    format!("weft/{}", env!("CARGO_PKG_VERSION"))
}

/// Runs CPU- or disk-bound work (encoding, compression, file writes) without
/// stalling the other tasks of a multi-threaded runtime's worker.
pub fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
