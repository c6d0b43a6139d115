//! The `datadog` receiver's configuration: the collector's `datadogreceiver`
//! keys (its own plus those of `confighttp.ServerConfig` it embeds).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

use crate::common::cors::CorsConfig;
use crate::common::net::parse_endpoint;
use crate::common::tls::ServerTlsConfig;
use crate::otlp::config::KNOWN_COMPRESSION;

/// Default listen address: the Datadog Agent's trace port, loopback only.
pub const DEFAULT_ENDPOINT: &str = "localhost:8126";
/// Default time allowed to read one whole request, as in the collector.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit on one request body: 20 MiB, the collector's HTTP server default.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 * 1024 * 1024;
/// Default number of traces whose `_dd.p.tid` is remembered.
pub const DEFAULT_TRACE_ID_CACHE_SIZE: usize = 10_000;
/// The collector's default `read_header_timeout`.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// `receivers.datadog`: accepts traces from Datadog tracing libraries on the
/// Agent's trace API (`/v0.3`, `/v0.4`, `/v0.5`, `/v0.7` traces, `/info`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogReceiverConfig {
    /// `host:port` to listen on (default `localhost:8126`). `localhost` binds
    /// the loopback address only; `0.0.0.0:8126` or `:8126` every interface.
    pub endpoint: String,
    /// Time allowed to read a request body once its headers are in (default
    /// 1m); a body still arriving after it is answered 408. Headers get
    /// `read_header_timeout`, at most this long.
    #[serde(with = "weft_pipeline::config::duration")]
    pub read_timeout: Duration,
    /// How many traces' upper 64 trace-id bits (`_dd.p.tid`) are remembered,
    /// so later chunks of a trace that lack the tag still get the 128-bit id
    /// (default 10000; least recently used forgotten first). `0` turns the
    /// memory off: only spans in a chunk that carries the tag get it.
    pub trace_id_cache_size: usize,
    /// Largest request body in bytes, before and after decompression
    /// (default 20 MiB). `0` means the default.
    pub max_request_body_size: u64,
    /// Attach the peer address and request headers to every batch.
    pub include_metadata: bool,
    /// Serve TLS with this certificate and key. Absent: plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Check each request's credentials with this authenticator extension
    /// (`authenticator: bearertokenauth`); refused requests get 401 / UNAUTHENTICATED.
    pub auth: Option<weft_pipeline::auth::AuthConfig>,
    /// Browser cross-origin access; off unless `allowed_origins` is set.
    pub cors: Option<CorsConfig>,
    /// Headers added to every response.
    pub response_headers: BTreeMap<String, String>,
    /// Content-Encodings to accept. Default: all that weft decodes (identity,
    /// gzip, zstd, deflate, zlib). Tracers send uncompressed bodies.
    pub compression_algorithms: Option<Vec<String>>,
    /// Time allowed to read a request's headers (default 1m, and never more
    /// than `read_timeout`).
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub read_header_timeout: Option<Duration>,
    /// Accepted for compatibility.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub write_timeout: Option<Duration>,
    /// Accepted for compatibility.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub idle_timeout: Option<Duration>,
    /// HTTP/1.1 keep-alive (default true).
    pub keepalives_enabled: Option<bool>,
}

impl Default for DatadogReceiverConfig {
    fn default() -> Self {
        DatadogReceiverConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            trace_id_cache_size: DEFAULT_TRACE_ID_CACHE_SIZE,
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE,
            include_metadata: false,
            tls: None,
            auth: None,
            cors: None,
            response_headers: BTreeMap::new(),
            compression_algorithms: None,
            read_header_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            keepalives_enabled: None,
        }
    }
}

impl DatadogReceiverConfig {
    /// The body limit in bytes (0 means the default, as in the collector).
    pub fn max_request_body_bytes(&self) -> usize {
        let n = if self.max_request_body_size == 0 {
            DEFAULT_MAX_REQUEST_BODY_SIZE
        } else {
            self.max_request_body_size
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// The time a client has to send its headers: `read_header_timeout`,
    /// capped by `read_timeout` as Go's server caps it.
    pub fn header_read_timeout(&self) -> Duration {
        self.read_header_timeout
            .unwrap_or(DEFAULT_READ_HEADER_TIMEOUT)
            .min(self.read_timeout)
    }
}

impl ComponentConfig for DatadogReceiverConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        parse_endpoint(&self.endpoint).map_err(|m| ConfigFieldError::at(&["endpoint"], m))?;
        if self.read_timeout.is_zero() {
            return Err(ConfigFieldError::at(
                &["read_timeout"],
                "must be greater than 0",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate()
                .map_err(|(k, m)| ConfigFieldError::at(&["tls", k], m))?;
        }
        if let Some(algos) = &self.compression_algorithms {
            for (i, a) in algos.iter().enumerate() {
                if !KNOWN_COMPRESSION.contains(&a.as_str()) {
                    return Err(ConfigFieldError::at(
                        &["compression_algorithms", &i.to_string()],
                        format!(
                            "unsupported compression {a:?}: use one of gzip, zstd, zlib, deflate, snappy, lz4"
                        ),
                    ));
                }
            }
        }
        for (name, value) in &self.response_headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(ConfigFieldError::at(
                    &["response_headers", name],
                    "not a valid HTTP header",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_pipeline::parse_config;

    fn parse(yaml: &str) -> Result<DatadogReceiverConfig, ConfigFieldError> {
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("test yaml");
        parse_config::<DatadogReceiverConfig>(&raw)
    }

    #[test]
    fn null_section_means_every_default() {
        let cfg = parse("~").unwrap();
        assert_eq!(cfg, DatadogReceiverConfig::default());
        assert_eq!(cfg.endpoint, "localhost:8126");
        assert_eq!(cfg.read_timeout, Duration::from_secs(60));
        assert_eq!(cfg.trace_id_cache_size, 10_000);
        assert_eq!(cfg.max_request_body_bytes(), 20 * 1024 * 1024);
        assert_eq!(cfg.header_read_timeout(), Duration::from_secs(60));
    }

    #[test]
    fn collector_keys_parse() {
        let cfg = parse(
            r#"
endpoint: 0.0.0.0:18126
read_timeout: 30s
trace_id_cache_size: 500
max_request_body_size: 1048576
include_metadata: true
read_header_timeout: 2m
write_timeout: 10s
idle_timeout: 1m
keepalives_enabled: false
compression_algorithms: [gzip, zstd]
response_headers:
  X-Served-By: weft
cors:
  allowed_origins: ["https://*.example.com"]
tls:
  cert_file: server.crt
  key_file: server.key
"#,
        )
        .unwrap();
        assert_eq!(cfg.endpoint, "0.0.0.0:18126");
        assert_eq!(cfg.read_timeout, Duration::from_secs(30));
        assert_eq!(cfg.trace_id_cache_size, 500);
        assert_eq!(cfg.max_request_body_bytes(), 1048576);
        // A header timeout longer than the whole-request timeout is capped.
        assert_eq!(cfg.header_read_timeout(), Duration::from_secs(30));
        assert_eq!(cfg.keepalives_enabled, Some(false));
        assert_eq!(cfg.tls.unwrap().cert_file.as_deref(), Some("server.crt"));
        assert_eq!(cfg.response_headers["X-Served-By"], "weft");
        assert_eq!(
            parse("max_request_body_size: 0")
                .unwrap()
                .max_request_body_bytes(),
            20 << 20
        );
        assert_eq!(
            parse("trace_id_cache_size: 0").unwrap().trace_id_cache_size,
            0
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_path() {
        let err = parse("endpiont: localhost:1\n").unwrap_err();
        assert_eq!(err.path, vec!["endpiont"]);
        assert!(
            err.message.contains("unknown field `endpiont`"),
            "{}",
            err.message
        );
        // The collector's metrics/logs intake proxy is not part of weft.
        let err = parse("intake:\n  behavior: disable\n").unwrap_err();
        assert_eq!(err.path, vec!["intake"]);
        let err = parse("endpoint: localhost\n").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        assert_eq!(
            err.message,
            "invalid endpoint \"localhost\": expected host:port"
        );
        let err = parse("read_timeout: soon\n").unwrap_err();
        assert_eq!(err.path, vec!["read_timeout"]);
        let err = parse("read_timeout: 0s\n").unwrap_err();
        assert_eq!(err.path, vec!["read_timeout"]);
        assert_eq!(err.message, "must be greater than 0");
        let err = parse("trace_id_cache_size: -1\n").unwrap_err();
        assert_eq!(err.path, vec!["trace_id_cache_size"]);
        let err = parse("tls:\n  cert_file: a\n").unwrap_err();
        assert_eq!(err.path, vec!["tls", "key_file"]);
        let err = parse("compression_algorithms: [gzip, brotli]\n").unwrap_err();
        assert_eq!(err.path, vec!["compression_algorithms", "1"]);
        let err = parse("response_headers:\n  \"bad header\": x\n").unwrap_err();
        assert_eq!(err.path, vec!["response_headers", "bad header"]);
    }
}
