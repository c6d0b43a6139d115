//! The `otlp` receiver's configuration, key for key as the collector's
//! `otlpreceiver` reads it (`protocols.grpc` from `configgrpc`, `protocols.http`
//! from `confighttp`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use weft_pipeline::{ComponentConfig, ConfigFieldError};

pub use crate::common::cors::CorsConfig;
pub use crate::common::net::parse_endpoint;
pub use crate::common::tls::ServerTlsConfig;

/// Default gRPC listen address, as in the collector.
pub const DEFAULT_GRPC_ENDPOINT: &str = "localhost:4317";
/// Default HTTP listen address, as in the collector.
pub const DEFAULT_HTTP_ENDPOINT: &str = "localhost:4318";
/// Default limit on one HTTP request body: 20 MiB, compressed or not.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 * 1024 * 1024;
/// Default limit on one decoded gRPC message, in MiB.
pub const DEFAULT_MAX_RECV_MSG_SIZE_MIB: u64 = 4;

/// `receivers.otlp`: accepts OTLP over gRPC and HTTP (protobuf or JSON).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    /// The transports to serve. At least one must be present; a protocol key
    /// with nothing under it (`grpc:`) turns that protocol on with its defaults.
    pub protocols: Protocols,
}

/// `protocols`: which servers the receiver runs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC (`TraceService`, `MetricsService`, `LogsService`).
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP (`POST /v1/traces` and friends).
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub http: Option<HttpConfig>,
}

/// A present key enables the protocol, even when its value is null.
fn present_means_enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `protocols.grpc`, the collector's `configgrpc.ServerConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on. `localhost` binds the loopback address only;
    /// `0.0.0.0:4317` or `:4317` listen on every interface.
    pub endpoint: String,
    /// Network type: `tcp` (also `tcp4`, `tcp6`). Unix sockets are not supported.
    pub transport: String,
    /// Serve TLS with this certificate and key. Absent: plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Check each request's credentials with this authenticator extension
    /// (`authenticator: bearertokenauth`); refused requests get 401 / UNAUTHENTICATED.
    pub auth: Option<weft_pipeline::auth::AuthConfig>,
    /// Largest decoded request message, in MiB (default 4).
    pub max_recv_msg_size_mib: u64,
    /// HTTP/2 concurrent streams per connection (default: no explicit limit).
    pub max_concurrent_streams: Option<u32>,
    /// Accepted for compatibility; the socket read buffer is left to the kernel.
    pub read_buffer_size: Option<u64>,
    /// Accepted for compatibility; the socket write buffer is left to the kernel.
    pub write_buffer_size: Option<u64>,
    /// Connection keepalive and age limits.
    pub keepalive: Option<KeepaliveConfig>,
    /// Attach the peer address and request metadata to every batch.
    pub include_metadata: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: DEFAULT_GRPC_ENDPOINT.to_string(),
            transport: "tcp".to_string(),
            tls: None,
            auth: None,
            max_recv_msg_size_mib: DEFAULT_MAX_RECV_MSG_SIZE_MIB,
            max_concurrent_streams: None,
            read_buffer_size: None,
            write_buffer_size: None,
            keepalive: None,
            include_metadata: false,
        }
    }
}

impl GrpcConfig {
    /// The decoded message limit in bytes (0 MiB means the default, as in the collector).
    pub fn max_recv_msg_size_bytes(&self) -> usize {
        let mib = if self.max_recv_msg_size_mib == 0 {
            DEFAULT_MAX_RECV_MSG_SIZE_MIB
        } else {
            self.max_recv_msg_size_mib
        };
        usize::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }
}

/// `protocols.grpc.keepalive`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    pub server_parameters: Option<KeepaliveServerParameters>,
    pub enforcement_policy: Option<KeepaliveEnforcementPolicy>,
}

/// `protocols.grpc.keepalive.server_parameters`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveServerParameters {
    /// Accepted for compatibility: idle connections are not closed early.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub max_connection_idle: Option<Duration>,
    /// Close connections (gracefully) after this long.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub max_connection_age: Option<Duration>,
    /// After `max_connection_age`, force the close after this much more time.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub max_connection_age_grace: Option<Duration>,
    /// Send an HTTP/2 PING after this much inactivity.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub time: Option<Duration>,
    /// Close the connection when a PING is not answered within this time.
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub timeout: Option<Duration>,
}

/// `protocols.grpc.keepalive.enforcement_policy`: accepted for compatibility;
/// the HTTP/2 server does not police client pings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveEnforcementPolicy {
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub min_time: Option<Duration>,
    pub permit_without_stream: bool,
}

/// `protocols.http`, the collector's `confighttp.ServerConfig` plus the OTLP paths.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on. `localhost` binds the loopback address only.
    pub endpoint: String,
    /// Serve TLS with this certificate and key. Absent: plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Check each request's credentials with this authenticator extension
    /// (`authenticator: bearertokenauth`); refused requests get 401 / UNAUTHENTICATED.
    pub auth: Option<weft_pipeline::auth::AuthConfig>,
    /// Browser cross-origin access; off unless `allowed_origins` is set.
    pub cors: Option<CorsConfig>,
    /// Attach the peer address and request headers to every batch.
    pub include_metadata: bool,
    /// Largest request body in bytes, before and after decompression (default 20 MiB).
    pub max_request_body_size: u64,
    /// Path for trace exports (default `/v1/traces`).
    pub traces_url_path: String,
    /// Path for metric exports (default `/v1/metrics`).
    pub metrics_url_path: String,
    /// Path for log exports (default `/v1/logs`).
    pub logs_url_path: String,
    /// Content-Encodings to accept. Default: all that weft decodes
    /// (identity, gzip, zstd, deflate, zlib); `snappy` and `lz4` are accepted
    /// here for compatibility but requests using them are answered 400.
    pub compression_algorithms: Option<Vec<String>>,
    /// Headers added to every response.
    pub response_headers: BTreeMap<String, String>,
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

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: DEFAULT_HTTP_ENDPOINT.to_string(),
            tls: None,
            auth: None,
            cors: None,
            include_metadata: false,
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE,
            traces_url_path: "/v1/traces".to_string(),
            metrics_url_path: "/v1/metrics".to_string(),
            logs_url_path: "/v1/logs".to_string(),
            compression_algorithms: None,
            response_headers: BTreeMap::new(),
            read_header_timeout: None,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            keepalives_enabled: None,
        }
    }
}

impl HttpConfig {
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

/// Content-Encodings the collector's HTTP server knows; weft decodes all but
/// snappy and lz4.
pub(crate) const KNOWN_COMPRESSION: &[&str] =
    &["", "gzip", "zstd", "zlib", "deflate", "snappy", "lz4"];

impl ComponentConfig for OtlpReceiverConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            return Err(ConfigFieldError::new(
                "must specify at least one protocol when using the OTLP receiver",
            ));
        }
        if let Some(g) = &self.protocols.grpc {
            parse_endpoint(&g.endpoint).map_err(|m| field_error("grpc", &["endpoint"], m))?;
            match g.transport.as_str() {
                "" | "tcp" | "tcp4" | "tcp6" => {}
                other => {
                    return Err(field_error(
                        "grpc",
                        &["transport"],
                        format!("transport {other:?} is not supported: use tcp"),
                    ))
                }
            }
            if let Some(tls) = &g.tls {
                tls.validate()
                    .map_err(|(k, m)| field_error("grpc", &["tls", k], m))?;
            }
            if g.max_concurrent_streams == Some(0) {
                return Err(field_error(
                    "grpc",
                    &["max_concurrent_streams"],
                    "must be greater than 0",
                ));
            }
        }
        if let Some(h) = &self.protocols.http {
            parse_endpoint(&h.endpoint).map_err(|m| field_error("http", &["endpoint"], m))?;
            if let Some(tls) = &h.tls {
                tls.validate()
                    .map_err(|(k, m)| field_error("http", &["tls", k], m))?;
            }
            let paths = [
                ("traces_url_path", &h.traces_url_path),
                ("metrics_url_path", &h.metrics_url_path),
                ("logs_url_path", &h.logs_url_path),
            ];
            for (key, path) in paths {
                if !path.starts_with('/') {
                    return Err(field_error(
                        "http",
                        &[key],
                        format!("{path:?} must start with \"/\""),
                    ));
                }
            }
            for (i, (ka, a)) in paths.iter().enumerate() {
                if let Some((kb, _)) = paths[i + 1..].iter().find(|(_, b)| b == a) {
                    return Err(field_error(
                        "http",
                        &[kb],
                        format!("{a:?} is already used by {ka}"),
                    ));
                }
            }
            if let Some(algos) = &h.compression_algorithms {
                for (i, a) in algos.iter().enumerate() {
                    if !KNOWN_COMPRESSION.contains(&a.as_str()) {
                        return Err(field_error("http", &["compression_algorithms", &i.to_string()],
                            format!(
                                "unsupported compression {a:?}: use one of gzip, zstd, zlib, deflate, snappy, lz4"
                            ),
                        ));
                    }
                }
            }
            for (name, value) in &h.response_headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(value).is_err()
                {
                    return Err(field_error(
                        "http",
                        &["response_headers", name],
                        "not a valid HTTP header",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A validation error at `protocols.<proto>.<keys...>`.
fn field_error(proto: &str, keys: &[&str], message: impl Into<String>) -> ConfigFieldError {
    let mut path = vec!["protocols".to_string(), proto.to_string()];
    path.extend(keys.iter().map(|k| k.to_string()));
    ConfigFieldError {
        path,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_pipeline::parse_config;

    fn parse(yaml: &str) -> Result<OtlpReceiverConfig, ConfigFieldError> {
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("test yaml");
        parse_config::<OtlpReceiverConfig>(&raw)
    }

    #[test]
    fn null_protocol_enables_it_with_defaults() {
        let cfg = parse("protocols:\n  grpc:\n").unwrap();
        assert_eq!(cfg.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(cfg.protocols.http, None);
        let g = cfg.protocols.grpc.unwrap();
        assert_eq!(g.endpoint, "localhost:4317");
        assert_eq!(g.max_recv_msg_size_bytes(), 4 * 1024 * 1024);

        let cfg = parse("protocols:\n  http:\n").unwrap();
        let h = cfg.protocols.http.unwrap();
        assert_eq!(h.endpoint, "localhost:4318");
        assert_eq!(h.traces_url_path, "/v1/traces");
        assert_eq!(h.metrics_url_path, "/v1/metrics");
        assert_eq!(h.logs_url_path, "/v1/logs");
        assert_eq!(h.max_request_body_bytes(), 20 * 1024 * 1024);
        assert_eq!(cfg.protocols.grpc, None);
    }

    #[test]
    fn no_protocol_is_an_error() {
        for yaml in ["~", "protocols: {}", "protocols:\n"] {
            let err = parse(yaml).unwrap_err();
            assert_eq!(
                err.message, "must specify at least one protocol when using the OTLP receiver",
                "{yaml}"
            );
        }
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let err = parse("protocols:\n  htttp:\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "htttp"]);
        assert!(
            err.message.contains("unknown field `htttp`"),
            "{}",
            err.message
        );

        let err = parse("protocols:\n  http:\n    endpiont: x\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "http", "endpiont"]);
        assert!(
            err.message.contains("unknown field `endpiont`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn full_collector_config_parses() {
        let cfg = parse(
            r#"
protocols:
  grpc:
    endpoint: 0.0.0.0:14317
    transport: tcp
    max_recv_msg_size_mib: 16
    max_concurrent_streams: 100
    read_buffer_size: 524288
    write_buffer_size: 524288
    include_metadata: true
    keepalive:
      server_parameters:
        max_connection_idle: 11s
        max_connection_age: 12s
        max_connection_age_grace: 13s
        time: 30s
        timeout: 5s
      enforcement_policy:
        min_time: 10s
        permit_without_stream: true
    tls:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt
      min_version: "1.2"
  http:
    endpoint: "[::1]:14318"
    include_metadata: true
    max_request_body_size: 1048576
    traces_url_path: /t
    metrics_url_path: /m
    logs_url_path: /l
    cors:
      allowed_origins: ["https://*.example.com"]
      allowed_headers: ["X-Custom"]
      max_age: 7200
    response_headers:
      X-Served-By: weft
"#,
        )
        .unwrap();
        let g = cfg.protocols.grpc.unwrap();
        assert_eq!(g.max_recv_msg_size_bytes(), 16 * 1024 * 1024);
        assert_eq!(g.max_concurrent_streams, Some(100));
        let ka = g.keepalive.unwrap().server_parameters.unwrap();
        assert_eq!(ka.time, Some(Duration::from_secs(30)));
        assert_eq!(ka.max_connection_age_grace, Some(Duration::from_secs(13)));
        assert_eq!(g.tls.unwrap().client_ca_file.as_deref(), Some("ca.crt"));
        let h = cfg.protocols.http.unwrap();
        assert_eq!(h.max_request_body_bytes(), 1048576);
        assert_eq!(h.cors.unwrap().max_age, Some(7200));
        assert_eq!(h.traces_url_path, "/t");
    }

    #[test]
    fn validation_errors_carry_key_paths() {
        let err = parse("protocols:\n  grpc:\n    endpoint: nohostport\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "grpc", "endpoint"]);
        let err = parse("protocols:\n  http:\n    endpoint: localhost:99999\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "http", "endpoint"]);
        let err = parse("protocols:\n  http:\n    tls:\n      cert_file: a\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "http", "tls", "key_file"]);
        let err =
            parse("protocols:\n  grpc:\n    tls:\n      cert_file: a\n      key_file: b\n      min_version: '1.1'\n")
                .unwrap_err();
        assert_eq!(err.path, vec!["protocols", "grpc", "tls", "min_version"]);
        let err = parse("protocols:\n  http:\n    logs_url_path: v1/logs\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "http", "logs_url_path"]);
        let err = parse(
            "protocols:\n  grpc:\n    keepalive:\n      server_parameters:\n        time: soon\n",
        )
        .unwrap_err();
        assert_eq!(
            err.path,
            vec![
                "protocols",
                "grpc",
                "keepalive",
                "server_parameters",
                "time"
            ]
        );
    }
}
