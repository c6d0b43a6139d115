//! The `jaeger` receiver's configuration, key for key as the collector's
//! `jaegerreceiver` reads it: `protocols.grpc` (`configgrpc`),
//! `protocols.thrift_http` (`confighttp`) and the agent's UDP protocols
//! `thrift_compact` and `thrift_binary`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

use crate::common::cors::CorsConfig;
use crate::common::net::parse_endpoint;
use crate::common::tls::ServerTlsConfig;
use crate::otlp::config::{GrpcConfig, KNOWN_COMPRESSION};

/// Default gRPC (`api_v2.CollectorService`) listen address.
pub const DEFAULT_GRPC_ENDPOINT: &str = "localhost:14250";
/// Default Thrift-over-HTTP (`POST /api/traces`) listen address.
pub const DEFAULT_THRIFT_HTTP_ENDPOINT: &str = "localhost:14268";
/// Default agent UDP address for compact Thrift.
pub const DEFAULT_THRIFT_COMPACT_ENDPOINT: &str = "localhost:6831";
/// Default agent UDP address for binary Thrift.
pub const DEFAULT_THRIFT_BINARY_ENDPOINT: &str = "localhost:6832";
/// Default limit on one HTTP request body: 20 MiB, compressed or not.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 * 1024 * 1024;
/// The collector's default `max_packet_size`: what Jaeger clients keep
/// their datagrams under.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 65_000;
/// Default number of datagrams waiting to be decoded.
pub const DEFAULT_QUEUE_SIZE: usize = 1000;
/// Default number of datagram decoders.
pub const DEFAULT_WORKERS: usize = 10;

/// `receivers.jaeger`: Jaeger clients, agents and collectors sending spans.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerReceiverConfig {
    /// The transports to serve. At least one must be present; a protocol key
    /// with nothing under it (`thrift_http:`) turns it on with its defaults.
    pub protocols: Protocols,
}

/// `protocols`: which servers the receiver runs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// gRPC `jaeger.api_v2.CollectorService/PostSpans` (default
    /// `localhost:14250`), with every `configgrpc` key of the otlp receiver's
    /// `protocols.grpc`.
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub grpc: Option<GrpcConfig>,
    /// `POST /api/traces` with a binary-Thrift `jaeger.Batch` body (default
    /// `localhost:14268`).
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub thrift_http: Option<ThriftHttpConfig>,
    /// Agent `emitBatch` datagrams in compact Thrift over UDP (default
    /// `localhost:6831`).
    #[serde(default, deserialize_with = "compact_enabled")]
    pub thrift_compact: Option<UdpConfig>,
    /// Agent `emitBatch` datagrams in binary Thrift over UDP (default
    /// `localhost:6832`).
    #[serde(default, deserialize_with = "binary_enabled")]
    pub thrift_binary: Option<UdpConfig>,
}

/// A present key enables the protocol, even when its value is null.
fn present_means_enabled<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// The UDP protocols share a struct; a missing endpoint is each one's own.
fn udp_enabled<'de, D: Deserializer<'de>>(
    d: D,
    default_endpoint: &str,
) -> Result<Option<UdpConfig>, D::Error> {
    let raw = Option::<UdpConfigRaw>::deserialize(d)?.unwrap_or_default();
    Ok(Some(UdpConfig {
        endpoint: raw.endpoint.unwrap_or_else(|| default_endpoint.to_string()),
        queue_size: raw.queue_size,
        max_packet_size: raw.max_packet_size,
        workers: raw.workers,
        socket_buffer_size: raw.socket_buffer_size,
    }))
}

fn compact_enabled<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UdpConfig>, D::Error> {
    udp_enabled(d, DEFAULT_THRIFT_COMPACT_ENDPOINT)
}

fn binary_enabled<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UdpConfig>, D::Error> {
    udp_enabled(d, DEFAULT_THRIFT_BINARY_ENDPOINT)
}

/// The otlp receiver's `GrpcConfig` defaults to port 4317; a `grpc` section
/// without an `endpoint` gets Jaeger's instead, before parsing, so every
/// error still names the key the user wrote.
pub fn with_jaeger_defaults(raw: &Value) -> Value {
    let mut raw = raw.clone();
    let Some(protocols) = raw.get_mut("protocols").and_then(Value::as_mapping_mut) else {
        return raw;
    };
    let key = Value::String("grpc".into());
    match protocols.get_mut(&key) {
        Some(v @ Value::Null) => {
            let mut m = serde_yaml_ng::Mapping::new();
            m.insert("endpoint".into(), DEFAULT_GRPC_ENDPOINT.into());
            *v = Value::Mapping(m);
        }
        Some(Value::Mapping(m)) if !m.contains_key("endpoint") => {
            m.insert("endpoint".into(), DEFAULT_GRPC_ENDPOINT.into());
        }
        _ => {}
    }
    raw
}

/// `protocols.thrift_http`, the collector's `confighttp.ServerConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThriftHttpConfig {
    /// `host:port` to listen on. `localhost` binds the loopback address only;
    /// `0.0.0.0:14268` or `:14268` listen on every interface.
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
    /// Largest request body in bytes, before and after decompression
    /// (default 20 MiB). `0` means the default.
    pub max_request_body_size: u64,
    /// Content-Encodings to accept. Default: all that weft decodes
    /// (identity, gzip, zstd, deflate, zlib).
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

impl Default for ThriftHttpConfig {
    fn default() -> Self {
        ThriftHttpConfig {
            endpoint: DEFAULT_THRIFT_HTTP_ENDPOINT.to_string(),
            tls: None,
            auth: None,
            cors: None,
            include_metadata: false,
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE,
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

impl ThriftHttpConfig {
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

/// `protocols.thrift_compact` / `protocols.thrift_binary`: an agent's UDP
/// server (the collector's `ProtocolUDP`).
#[derive(Debug, Clone, PartialEq)]
pub struct UdpConfig {
    /// `host:port` to listen on (defaults `localhost:6831` compact,
    /// `localhost:6832` binary).
    pub endpoint: String,
    /// Datagrams waiting for a worker; when full, new ones are dropped and
    /// counted in `weft_receiver_udp_packets_dropped` (default 1000).
    pub queue_size: usize,
    /// Largest datagram accepted, in bytes (default 65000); a larger one is
    /// dropped and counted as a bad request.
    pub max_packet_size: usize,
    /// Datagrams decoded and handed to the pipeline at once (default 10).
    pub workers: usize,
    /// The socket's receive buffer in bytes; 0 leaves the kernel's default.
    pub socket_buffer_size: usize,
}

/// The keys as written; `endpoint` differs between the two protocols.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct UdpConfigRaw {
    endpoint: Option<String>,
    queue_size: usize,
    max_packet_size: usize,
    workers: usize,
    socket_buffer_size: usize,
}

impl Default for UdpConfigRaw {
    fn default() -> Self {
        UdpConfigRaw {
            endpoint: None,
            queue_size: DEFAULT_QUEUE_SIZE,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            workers: DEFAULT_WORKERS,
            socket_buffer_size: 0,
        }
    }
}

impl ComponentConfig for JaegerReceiverConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        let p = &self.protocols;
        if p.grpc.is_none()
            && p.thrift_http.is_none()
            && p.thrift_compact.is_none()
            && p.thrift_binary.is_none()
        {
            return Err(ConfigFieldError::new(
                "must specify at least one protocol when using the Jaeger receiver",
            ));
        }
        if let Some(g) = &p.grpc {
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
        if let Some(h) = &p.thrift_http {
            parse_endpoint(&h.endpoint)
                .map_err(|m| field_error("thrift_http", &["endpoint"], m))?;
            if let Some(tls) = &h.tls {
                tls.validate()
                    .map_err(|(k, m)| field_error("thrift_http", &["tls", k], m))?;
            }
            if let Some(algos) = &h.compression_algorithms {
                for (i, a) in algos.iter().enumerate() {
                    if !KNOWN_COMPRESSION.contains(&a.as_str()) {
                        return Err(field_error(
                            "thrift_http",
                            &["compression_algorithms", &i.to_string()],
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
                        "thrift_http",
                        &["response_headers", name],
                        "not a valid HTTP header",
                    ));
                }
            }
        }
        for (name, udp) in [
            ("thrift_compact", &p.thrift_compact),
            ("thrift_binary", &p.thrift_binary),
        ] {
            let Some(u) = udp else { continue };
            parse_endpoint(&u.endpoint).map_err(|m| field_error(name, &["endpoint"], m))?;
            for (key, v) in [
                ("queue_size", u.queue_size),
                ("max_packet_size", u.max_packet_size),
                ("workers", u.workers),
            ] {
                if v == 0 {
                    return Err(field_error(name, &[key], "must be greater than 0"));
                }
            }
        }
        let endpoints = [
            ("grpc", p.grpc.as_ref().map(|g| &g.endpoint), "tcp"),
            (
                "thrift_http",
                p.thrift_http.as_ref().map(|h| &h.endpoint),
                "tcp",
            ),
            (
                "thrift_compact",
                p.thrift_compact.as_ref().map(|u| &u.endpoint),
                "udp",
            ),
            (
                "thrift_binary",
                p.thrift_binary.as_ref().map(|u| &u.endpoint),
                "udp",
            ),
        ];
        for (i, (a, ea, na)) in endpoints.iter().enumerate() {
            for (b, eb, nb) in &endpoints[i + 1..] {
                if let (Some(ea), Some(eb)) = (ea, eb) {
                    if ea == eb && na == nb && !ea.ends_with(":0") {
                        return Err(field_error(
                            b,
                            &["endpoint"],
                            format!("{eb:?} is already used by protocols::{a}"),
                        ));
                    }
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

    fn parse(yaml: &str) -> Result<JaegerReceiverConfig, ConfigFieldError> {
        let raw: Value = serde_yaml_ng::from_str(yaml).expect("test yaml");
        parse_config::<JaegerReceiverConfig>(&with_jaeger_defaults(&raw))
    }

    #[test]
    fn each_protocol_alone_with_its_defaults() {
        let cfg = parse("protocols:\n  grpc:\n").unwrap();
        let g = cfg.protocols.grpc.unwrap();
        assert_eq!(g.endpoint, "localhost:14250");
        assert_eq!(g.max_recv_msg_size_bytes(), 4 << 20);
        assert_eq!(cfg.protocols.thrift_http, None);

        let cfg = parse("protocols:\n  grpc:\n    include_metadata: true\n").unwrap();
        let g = cfg.protocols.grpc.unwrap();
        assert_eq!(g.endpoint, "localhost:14250");
        assert!(g.include_metadata);

        let cfg = parse("protocols:\n  thrift_http:\n").unwrap();
        let h = cfg.protocols.thrift_http.unwrap();
        assert_eq!(h, ThriftHttpConfig::default());
        assert_eq!(h.endpoint, "localhost:14268");
        assert_eq!(h.max_request_body_bytes(), 20 << 20);

        let cfg = parse("protocols:\n  thrift_compact:\n  thrift_binary: {}\n").unwrap();
        let c = cfg.protocols.thrift_compact.unwrap();
        let b = cfg.protocols.thrift_binary.unwrap();
        assert_eq!(
            c,
            UdpConfig {
                endpoint: "localhost:6831".into(),
                queue_size: 1000,
                max_packet_size: 65_000,
                workers: 10,
                socket_buffer_size: 0,
            }
        );
        assert_eq!(b.endpoint, "localhost:6832");
        assert_eq!(cfg.protocols.grpc, None);
    }

    #[test]
    fn the_collectors_example_parses() {
        let cfg = parse(
            r#"
protocols:
  grpc:
    endpoint: 0.0.0.0:14260
    max_recv_msg_size_mib: 8
    keepalive:
      server_parameters:
        time: 30s
  thrift_http:
    endpoint: 0.0.0.0:14269
    max_request_body_size: 1048576
    compression_algorithms: [gzip]
    cors:
      allowed_origins: ["*"]
    response_headers:
      X-Served-By: weft
  thrift_binary:
    endpoint: 0.0.0.0:6832
    queue_size: 5000
    max_packet_size: 131072
    workers: 50
    socket_buffer_size: 8388608
  thrift_compact:
    endpoint: 127.0.0.1:16831
"#,
        )
        .unwrap();
        let p = cfg.protocols;
        assert_eq!(p.grpc.unwrap().endpoint, "0.0.0.0:14260");
        assert_eq!(p.thrift_http.unwrap().max_request_body_bytes(), 1048576);
        let b = p.thrift_binary.unwrap();
        assert_eq!(
            (
                b.queue_size,
                b.max_packet_size,
                b.workers,
                b.socket_buffer_size
            ),
            (5000, 131_072, 50, 8_388_608)
        );
        let c = p.thrift_compact.unwrap();
        assert_eq!((c.endpoint.as_str(), c.workers), ("127.0.0.1:16831", 10));
    }

    #[test]
    fn errors_name_their_key() {
        for yaml in ["~", "protocols: {}", "protocols:\n"] {
            assert_eq!(
                parse(yaml).unwrap_err().message,
                "must specify at least one protocol when using the Jaeger receiver",
                "{yaml}"
            );
        }
        let err = parse("protocols:\n  thrift_htttp:\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "thrift_htttp"]);
        assert!(
            err.message.contains("unknown field `thrift_htttp`"),
            "{}",
            err.message
        );
        let err = parse("protocols:\n  thrift_compact:\n    worker: 3\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "thrift_compact", "worker"]);
        let err = parse("protocols:\n  grpc:\n    endpiont: x\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "grpc", "endpiont"]);
        let err = parse("protocols:\n  thrift_binary:\n    endpoint: nope\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "thrift_binary", "endpoint"]);
        let err = parse("protocols:\n  thrift_compact:\n    queue_size: 0\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "thrift_compact", "queue_size"]);
        assert_eq!(err.message, "must be greater than 0");
        let err = parse("protocols:\n  thrift_http:\n    traces_url_path: /x\n").unwrap_err();
        assert_eq!(
            err.path,
            vec!["protocols", "thrift_http", "traces_url_path"]
        );
        let err =
            parse("protocols:\n  grpc:\n    endpoint: localhost:9\n  thrift_http:\n    endpoint: localhost:9\n")
                .unwrap_err();
        assert_eq!(err.path, vec!["protocols", "thrift_http", "endpoint"]);
        // TCP and UDP may share a port number.
        parse("protocols:\n  grpc:\n    endpoint: localhost:9\n  thrift_compact:\n    endpoint: localhost:9\n")
            .unwrap();
    }
}
