//! The `zipkin` receiver's configuration: the collector's `zipkinreceiver`
//! keys (`parse_string_tags` and those of the `confighttp.ServerConfig` it
//! embeds).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

use crate::common::cors::CorsConfig;
use crate::common::net::parse_endpoint;
use crate::common::tls::ServerTlsConfig;
use crate::otlp::config::KNOWN_COMPRESSION;

/// Default listen address: Zipkin's port, loopback only.
pub const DEFAULT_ENDPOINT: &str = "localhost:9411";
/// Default limit on one request body: 20 MiB, the collector's HTTP server default.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 * 1024 * 1024;
/// The collector's default `read_header_timeout`.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// `receivers.zipkin`: accepts Zipkin v2 spans (JSON or proto3) at
/// `/api/v2/spans` and v1 JSON spans at `/api/v1/spans`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinReceiverConfig {
    /// `host:port` to listen on (default `localhost:9411`). `localhost` binds
    /// the loopback address only; `0.0.0.0:9411` or `:9411` every interface.
    pub endpoint: String,
    /// Turn string tags (and v1 binary annotations) that read as numbers or
    /// booleans (`12`, `1.5`, `true`) into int, double and bool attributes
    /// (default false: every tag stays a string).
    pub parse_string_tags: bool,
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
    /// Browser cross-origin access (zipkin-js in a page); off unless
    /// `allowed_origins` is set.
    pub cors: Option<CorsConfig>,
    /// Headers added to every response.
    pub response_headers: BTreeMap<String, String>,
    /// Content-Encodings to accept. Default: all that weft decodes (identity,
    /// gzip, zstd, deflate, zlib); `snappy` and `lz4` are accepted here for
    /// compatibility but requests using them are answered 400.
    pub compression_algorithms: Option<Vec<String>>,
    /// Time allowed to read a request's headers (default 1m).
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub read_header_timeout: Option<Duration>,
    /// Accepted for compatibility.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub read_timeout: Option<Duration>,
    /// Accepted for compatibility.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub write_timeout: Option<Duration>,
    /// Accepted for compatibility.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub idle_timeout: Option<Duration>,
    /// HTTP/1.1 keep-alive (default true).
    pub keepalives_enabled: Option<bool>,
}

impl Default for ZipkinReceiverConfig {
    fn default() -> Self {
        ZipkinReceiverConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            parse_string_tags: false,
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE,
            include_metadata: false,
            tls: None,
            auth: None,
            cors: None,
            response_headers: BTreeMap::new(),
            compression_algorithms: None,
            read_header_timeout: None,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            keepalives_enabled: None,
        }
    }
}

impl ZipkinReceiverConfig {
    /// The body limit in bytes (0 means the default, as in the collector).
    pub fn max_request_body_bytes(&self) -> usize {
        let n = if self.max_request_body_size == 0 {
            DEFAULT_MAX_REQUEST_BODY_SIZE
        } else {
            self.max_request_body_size
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

impl ComponentConfig for ZipkinReceiverConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        parse_endpoint(&self.endpoint).map_err(|m| ConfigFieldError::at(&["endpoint"], m))?;
        if let Some(tls) = &self.tls {
            tls.validate()
                .map_err(|(k, m)| ConfigFieldError::at(&["tls", k], m))?;
        }
        for (i, a) in self.compression_algorithms.iter().flatten().enumerate() {
            if !KNOWN_COMPRESSION.contains(&a.as_str()) {
                return Err(ConfigFieldError::at(
                    &["compression_algorithms", &i.to_string()],
                    format!(
                        "unsupported compression {a:?}: use one of gzip, zstd, zlib, deflate, snappy, lz4"
                    ),
                ));
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

    fn parse(yaml: &str) -> Result<ZipkinReceiverConfig, ConfigFieldError> {
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("test yaml");
        parse_config::<ZipkinReceiverConfig>(&raw)
    }

    #[test]
    fn null_section_means_every_default() {
        let cfg = parse("~").unwrap();
        assert_eq!(cfg, ZipkinReceiverConfig::default());
        assert_eq!(cfg.endpoint, "localhost:9411");
        assert!(!cfg.parse_string_tags);
        assert_eq!(cfg.max_request_body_bytes(), 20 * 1024 * 1024);
        assert_eq!(
            parse("max_request_body_size: 0")
                .unwrap()
                .max_request_body_bytes(),
            20 << 20
        );
    }

    #[test]
    fn collector_keys_parse() {
        let cfg = parse(
            r#"
endpoint: 0.0.0.0:19411
parse_string_tags: true
max_request_body_size: 1048576
include_metadata: true
read_header_timeout: 2m
read_timeout: 30s
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
        assert_eq!(cfg.endpoint, "0.0.0.0:19411");
        assert!(cfg.parse_string_tags);
        assert_eq!(cfg.max_request_body_bytes(), 1048576);
        assert_eq!(cfg.read_header_timeout, Some(Duration::from_secs(120)));
        assert_eq!(cfg.keepalives_enabled, Some(false));
        assert_eq!(cfg.tls.unwrap().cert_file.as_deref(), Some("server.crt"));
        assert_eq!(cfg.response_headers["X-Served-By"], "weft");
        assert_eq!(cfg.compression_algorithms.unwrap(), ["gzip", "zstd"]);
    }

    #[test]
    fn errors_name_their_key() {
        let cases: &[(&str, &[&str])] = &[
            ("endpiont: localhost:1\n", &["endpiont"]),
            ("endpoint: localhost\n", &["endpoint"]),
            ("parse_string_tags: maybe\n", &["parse_string_tags"]),
            ("read_header_timeout: soon\n", &["read_header_timeout"]),
            ("tls:\n  cert_file: a\n", &["tls", "key_file"]),
            (
                "compression_algorithms: [gzip, brotli]\n",
                &["compression_algorithms", "1"],
            ),
            (
                "response_headers:\n  \"bad header\": x\n",
                &["response_headers", "bad header"],
            ),
            ("protocols:\n  http:\n", &["protocols"]),
        ];
        for (yaml, path) in cases {
            let err = parse(yaml).unwrap_err();
            assert_eq!(err.path, *path, "{yaml}: {}", err.message);
        }
        assert_eq!(
            parse("endpoint: localhost\n").unwrap_err().message,
            "invalid endpoint \"localhost\": expected host:port"
        );
    }
}
