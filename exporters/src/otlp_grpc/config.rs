//! Configuration of the `otlp_grpc` exporter (alias `otlp`), key for key as
//! the collector's OTLP gRPC exporter.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::exporterhelper::{QueueSettings, RetrySettings, TimeoutSettings};
use weft_pipeline::{ComponentConfig, ConfigFieldError};

use crate::common::{validate_headers, Compression};
use crate::tls::TlsClientSettings;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpGrpcConfig {
    /// Required. `host:port` (TLS unless `tls.insecure` is true),
    /// `http://host:port` (plaintext) or `https://host:port` (TLS, whatever
    /// `tls.insecure` says). `dns:///host:port` is accepted as `host:port`.
    pub endpoint: String,
    /// Client TLS settings.
    pub tls: TlsClientSettings,
    /// Request compression: `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// Extra gRPC metadata sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Add the credentials of this authenticator extension to every request
    /// (`authenticator: bearertokenauth/client`).
    pub auth: Option<weft_pipeline::auth::AuthConfig>,
    /// Per-attempt deadline, also sent as `grpc-timeout`. Default 5s.
    pub timeout: TimeoutSettings,
    /// Retries of retryable failures.
    pub retry_on_failure: RetrySettings,
    /// The in-memory sending queue.
    pub sending_queue: QueueSettings,
    /// Accepted for compatibility (`pick_first`, `round_robin`); weft keeps
    /// one HTTP/2 connection to the endpoint.
    pub balancer_name: Option<String>,
    /// HTTP/2 keepalive pings.
    pub keepalive: Option<KeepaliveSettings>,
    /// Overrides the `:authority` of requests (virtual hosting behind a proxy).
    pub authority: Option<String>,
    /// Accepted for compatibility; a lazily connecting channel always waits
    /// for the connection within the attempt's timeout.
    pub wait_for_ready: bool,
}

/// `keepalive`: HTTP/2 PING frames that detect dead connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveSettings {
    /// Interval between pings on an idle connection.
    #[serde(with = "weft_pipeline::config::duration")]
    pub time: Duration,
    /// How long to wait for a ping's acknowledgement before closing.
    #[serde(with = "weft_pipeline::config::duration")]
    pub timeout: Duration,
    /// Ping even when no request is in flight.
    pub permit_without_stream: bool,
}

impl Default for KeepaliveSettings {
    fn default() -> Self {
        KeepaliveSettings {
            time: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            permit_without_stream: false,
        }
    }
}

/// Where and how to connect, derived from `endpoint` and `tls.insecure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// Host as written, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `host:port` as written (IPv6 keeps its brackets).
    pub authority: String,
    pub tls: bool,
}

impl OtlpGrpcConfig {
    /// Parses `endpoint` into a connection target.
    pub fn target(&self) -> Result<GrpcTarget, String> {
        let raw = self.endpoint.trim();
        if raw.is_empty() {
            return Err("requires a non-empty \"endpoint\"".into());
        }
        let (rest, tls) = if let Some(r) = raw.strip_prefix("http://") {
            (r, false)
        } else if let Some(r) = raw.strip_prefix("https://") {
            (r, true)
        } else if raw.starts_with("unix:") {
            return Err("unix socket endpoints are not supported".into());
        } else if let Some(r) = raw.strip_prefix("dns:///") {
            (r, !self.tls.insecure)
        } else if raw.contains("://") {
            return Err(format!(
                "unsupported scheme in {raw:?}: use host:port, http://host:port or https://host:port"
            ));
        } else {
            (raw, !self.tls.insecure)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "{raw:?} has a path: the gRPC endpoint is host:port only"
            ));
        }
        let authority = http::uri::Authority::from_str(rest)
            .map_err(|e| format!("invalid endpoint {raw:?}: {e}"))?;
        let port = authority
            .port_u16()
            .ok_or_else(|| format!("missing port in endpoint {raw:?}"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(GrpcTarget {
            host,
            port,
            authority: authority.as_str().to_string(),
            tls,
        })
    }
}

impl ComponentConfig for OtlpGrpcConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        self.target()
            .map_err(|m| ConfigFieldError::at(&["endpoint"], m))?;
        self.tls.validate("tls")?;
        validate_headers(&self.headers)?;
        for name in self.headers.keys() {
            if tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
                .is_err()
            {
                return Err(ConfigFieldError::at(
                    &["headers", name],
                    format!("{name:?} is not a valid gRPC metadata key (binary `-bin` keys are not supported)"),
                ));
            }
        }
        if let Some(b) = &self.balancer_name {
            if !matches!(b.as_str(), "" | "pick_first" | "round_robin") {
                return Err(ConfigFieldError::at(
                    &["balancer_name"],
                    format!("unknown balancer {b:?}: use pick_first or round_robin"),
                ));
            }
        }
        if let Some(a) = &self.authority {
            if http::uri::Authority::from_str(a).is_err() {
                return Err(ConfigFieldError::at(
                    &["authority"],
                    format!("{a:?} is not a valid authority (host[:port])"),
                ));
            }
        }
        self.retry_on_failure.validate("retry_on_failure")?;
        self.sending_queue.validate("sending_queue")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_pipeline::parse_config;

    fn parse(yaml: &str) -> Result<OtlpGrpcConfig, ConfigFieldError> {
        parse_config(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    fn target(yaml: &str) -> GrpcTarget {
        parse(yaml).unwrap().target().unwrap()
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            target("endpoint: collector:4317"),
            GrpcTarget {
                host: "collector".into(),
                port: 4317,
                authority: "collector:4317".into(),
                tls: true
            }
        );
        assert!(!target("{endpoint: 'collector:4317', tls: {insecure: true}}").tls);
        assert!(!target("endpoint: http://127.0.0.1:4317").tls);
        assert!(target("{endpoint: 'https://h:443', tls: {insecure: true}}").tls);
        let v6 = target("endpoint: 'http://[::1]:4317/'");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4317));
        assert_eq!(v6.authority, "[::1]:4317");
        assert_eq!(target("endpoint: dns:///h:1").host, "h");
    }

    #[test]
    fn defaults_and_errors() {
        let cfg = parse("endpoint: h:4317").unwrap();
        assert_eq!(cfg.compression, Compression::Gzip);
        assert_eq!(cfg.timeout.timeout, Duration::from_secs(5));
        assert_eq!(cfg.sending_queue.queue_size, 1000);
        assert_eq!(
            cfg.retry_on_failure.max_elapsed_time,
            Duration::from_secs(300)
        );

        let err = parse("{}").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        assert!(err.message.contains("non-empty"), "{}", err.message);
        let err = parse("endpoint: h").unwrap_err();
        assert!(err.message.contains("missing port"), "{}", err.message);
        let err = parse("{endpoint: 'h:1', compression: snappy}").unwrap_err();
        assert_eq!(err.path, vec!["compression"]);
        assert!(
            err.message.contains("gzip, zstd and none"),
            "{}",
            err.message
        );
        let err = parse("{endpoint: 'h:1', tls: {insecure_skp_verify: true}}").unwrap_err();
        assert_eq!(err.path, vec!["tls", "insecure_skp_verify"]);
        let c = parse("{endpoint: 'h:1', sending_queue: {storage: file_storage}}").unwrap();
        assert_eq!(c.sending_queue.storage.as_deref(), Some("file_storage"));
        let err = parse("{endpoint: 'h:1', headers: {'bad key': v}}").unwrap_err();
        assert_eq!(err.path, vec!["headers", "bad key"]);
        assert_eq!(
            parse("{endpoint: 'h:1', compression: none}")
                .unwrap()
                .compression,
            Compression::None
        );
        let cfg = parse(
            "{endpoint: 'h:1', balancer_name: round_robin, keepalive: {time: 20s}, wait_for_ready: true}",
        )
        .unwrap();
        assert_eq!(cfg.keepalive.unwrap().time, Duration::from_secs(20));
    }
}
