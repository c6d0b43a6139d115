//! Configuration of the `jaeger` exporter: the keys of the collector's
//! former `jaeger` (gRPC) and `jaeger_thrift` (HTTP) exporters in one
//! section, told apart by `protocol`.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Deserialize;
use weft_pipeline::exporterhelper::{QueueSettings, RetrySettings, TimeoutSettings};
use weft_pipeline::{ComponentConfig, ConfigFieldError};

use crate::common::{check_http_url, validate_headers, Compression};
use crate::otlp_grpc::config::{KeepaliveSettings, OtlpGrpcConfig};
use crate::tls::TlsClientSettings;

/// The gRPC port of a Jaeger collector, used when `endpoint` names none.
pub const DEFAULT_GRPC_PORT: u16 = 14250;
/// The Thrift-over-HTTP port of a Jaeger collector.
pub const DEFAULT_THRIFT_HTTP_PORT: u16 = 14268;
/// The path a Jaeger collector takes Thrift batches on.
pub const THRIFT_HTTP_PATH: &str = "/api/traces";

/// How the exporter talks to the Jaeger collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JaegerProtocol {
    /// `jaeger.api_v2.CollectorService/PostSpans` over gRPC.
    #[default]
    Grpc,
    /// A binary-Thrift `jaeger.Batch` in `POST /api/traces`.
    ThriftHttp,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerExporterConfig {
    /// `grpc` (default) or `thrift_http`.
    pub protocol: JaegerProtocol,
    /// Required. For `grpc`: `host:port` (TLS unless `tls.insecure` is true),
    /// `http://host:port` or `https://host:port`; without a port, 14250.
    /// For `thrift_http`: a URL such as `http://jaeger:14268/api/traces`
    /// (an empty path means `/api/traces`), or `host[:port]` for
    /// `http://host:port/api/traces` with port 14268 by default.
    pub endpoint: String,
    /// Client TLS settings (gRPC, and `https://` URLs for `thrift_http`).
    pub tls: TlsClientSettings,
    /// gRPC request compression: `none` (the default, as the collector's
    /// Jaeger exporter), `gzip` or `zstd`. `thrift_http` sends bodies as is.
    pub compression: Option<Compression>,
    /// Extra gRPC metadata or HTTP headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Add the credentials of this authenticator extension to every request
    /// (`authenticator: bearertokenauth/client`).
    pub auth: Option<weft_pipeline::auth::AuthConfig>,
    /// Per-attempt deadline. Default 5s.
    pub timeout: TimeoutSettings,
    /// Retries of retryable failures.
    pub retry_on_failure: RetrySettings,
    /// The in-memory sending queue.
    pub sending_queue: QueueSettings,
    /// gRPC only; accepted for compatibility (`pick_first`, `round_robin`).
    pub balancer_name: Option<String>,
    /// gRPC only: HTTP/2 keepalive pings.
    pub keepalive: Option<KeepaliveSettings>,
    /// gRPC only: overrides the `:authority` of requests.
    pub authority: Option<String>,
    /// gRPC only; accepted for compatibility.
    pub wait_for_ready: bool,
}

impl JaegerExporterConfig {
    /// The gRPC endpoint with Jaeger's port added when none is given.
    pub fn grpc_endpoint(&self) -> String {
        let raw = self.endpoint.trim();
        let (scheme, rest) = match raw.find("://") {
            Some(i) => raw.split_at(i + 3),
            None => ("", raw),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        match http::uri::Authority::from_str(rest) {
            Ok(a) if a.port().is_none() => format!("{scheme}{rest}:{DEFAULT_GRPC_PORT}"),
            _ => raw.to_string(),
        }
    }

    /// The settings of the otlp_grpc exporter that speak the same gRPC, so
    /// the connection is built (and validated) the same way.
    pub fn grpc_settings(&self) -> OtlpGrpcConfig {
        OtlpGrpcConfig {
            endpoint: self.grpc_endpoint(),
            tls: self.tls.clone(),
            compression: self.compression.unwrap_or(Compression::None),
            headers: self.headers.clone(),
            auth: self.auth.clone(),
            timeout: self.timeout,
            retry_on_failure: self.retry_on_failure.clone(),
            sending_queue: self.sending_queue.clone(),
            balancer_name: self.balancer_name.clone(),
            keepalive: self.keepalive.clone(),
            authority: self.authority.clone(),
            wait_for_ready: self.wait_for_ready,
        }
    }

    /// The URL Thrift batches are posted to.
    pub fn thrift_http_url(&self) -> Result<String, String> {
        let raw = self.endpoint.trim();
        if raw.is_empty() {
            return Err("requires a non-empty \"endpoint\"".into());
        }
        let mut url = if raw.contains("://") {
            reqwest::Url::parse(raw).map_err(|e| format!("{raw:?} is not a valid URL: {e}"))?
        } else {
            if raw.contains('/') || raw.contains('?') {
                return Err(format!(
                    "{raw:?} has a path: write the full URL, as http://{raw}"
                ));
            }
            let authority = http::uri::Authority::from_str(raw)
                .map_err(|e| format!("{raw:?} is not a valid host[:port]: {e}"))?;
            let with_port = match authority.port() {
                Some(_) => raw.to_string(),
                None => format!("{raw}:{DEFAULT_THRIFT_HTTP_PORT}"),
            };
            reqwest::Url::parse(&format!("http://{with_port}"))
                .map_err(|e| format!("{raw:?} is not a valid host[:port]: {e}"))?
        };
        if url.path().is_empty() || url.path() == "/" {
            url.set_path(THRIFT_HTTP_PATH);
        }
        Ok(url.to_string())
    }
}

impl ComponentConfig for JaegerExporterConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        match self.protocol {
            JaegerProtocol::Grpc => self.grpc_settings().validate(),
            JaegerProtocol::ThriftHttp => {
                let url = self
                    .thrift_http_url()
                    .map_err(|m| ConfigFieldError::at(&["endpoint"], m))?;
                check_http_url("endpoint", &url)?;
                if self.compression.is_some_and(|c| c != Compression::None) {
                    return Err(ConfigFieldError::at(
                        &["compression"],
                        "protocol thrift_http sends uncompressed bodies: remove `compression` or use protocol grpc",
                    ));
                }
                for (key, set) in [
                    ("balancer_name", self.balancer_name.is_some()),
                    ("keepalive", self.keepalive.is_some()),
                    ("authority", self.authority.is_some()),
                ] {
                    if set {
                        return Err(ConfigFieldError::at(
                            &[key],
                            format!("`{key}` applies to protocol grpc only"),
                        ));
                    }
                }
                self.tls.validate("tls")?;
                validate_headers(&self.headers)?;
                self.retry_on_failure.validate("retry_on_failure")?;
                self.sending_queue.validate("sending_queue")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weft_pipeline::parse_config;

    fn parse(yaml: &str) -> Result<JaegerExporterConfig, ConfigFieldError> {
        parse_config(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn grpc_endpoints_get_the_jaeger_port() {
        let ep = |yaml: &str| parse(yaml).unwrap().grpc_endpoint();
        assert_eq!(ep("endpoint: jaeger"), "jaeger:14250");
        assert_eq!(ep("endpoint: jaeger:9999"), "jaeger:9999");
        assert_eq!(ep("endpoint: http://jaeger"), "http://jaeger:14250");
        assert_eq!(ep("endpoint: 'https://jaeger/'"), "https://jaeger:14250");
        assert_eq!(ep("endpoint: '[::1]'"), "[::1]:14250");
        let t = parse("{endpoint: jaeger, tls: {insecure: true}}")
            .unwrap()
            .grpc_settings()
            .target()
            .unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("jaeger", 14250, false));
    }

    #[test]
    fn thrift_http_urls() {
        let url = |yaml: &str| parse(yaml).unwrap().thrift_http_url().unwrap();
        let p = "protocol: thrift_http\n";
        assert_eq!(
            url(&format!("{p}endpoint: jaeger")),
            "http://jaeger:14268/api/traces"
        );
        assert_eq!(
            url(&format!("{p}endpoint: jaeger:80")),
            "http://jaeger/api/traces"
        );
        assert_eq!(
            url(&format!("{p}endpoint: http://jaeger:14268")),
            "http://jaeger:14268/api/traces"
        );
        assert_eq!(
            url(&format!(
                "{p}endpoint: https://jaeger.example.com/api/traces?format=jaeger.thrift"
            )),
            "https://jaeger.example.com/api/traces?format=jaeger.thrift"
        );
        assert_eq!(
            url(&format!("{p}endpoint: http://gw:8080/jaeger/api/traces")),
            "http://gw:8080/jaeger/api/traces"
        );
    }

    #[test]
    fn defaults_and_errors() {
        let cfg = parse("endpoint: jaeger:14250").unwrap();
        assert_eq!(cfg.protocol, JaegerProtocol::Grpc);
        assert_eq!(cfg.compression, None);
        assert_eq!(cfg.grpc_settings().compression, Compression::None);
        assert_eq!(cfg.timeout.timeout, Duration::from_secs(5));
        assert_eq!(cfg.sending_queue.queue_size, 1000);
        assert!(cfg.retry_on_failure.enabled);

        let err = parse("{}").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        let err = parse("protocol: thrift_http").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        let err = parse("{endpoint: j, protocol: thrift}").unwrap_err();
        assert_eq!(err.path, vec!["protocol"]);
        let err = parse("{endpoint: 'ftp://j', protocol: thrift_http}").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        let err = parse("{endpoint: 'j/x', protocol: thrift_http}").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        let err = parse("{endpoint: j, protocol: thrift_http, compression: gzip}").unwrap_err();
        assert_eq!(err.path, vec!["compression"]);
        let err = parse("{endpoint: j, protocol: thrift_http, keepalive: {time: 1s}}").unwrap_err();
        assert_eq!(err.path, vec!["keepalive"]);
        let err = parse("{endpoint: 'http://j/x/y', protocol: grpc}").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        let err = parse("{endpoint: j, headers: {'bad key': v}}").unwrap_err();
        assert_eq!(err.path, vec!["headers", "bad key"]);
        let err = parse("{endpoint: j, sending_queue: {num_consumers: 0}}").unwrap_err();
        assert_eq!(err.path, vec!["sending_queue", "num_consumers"]);
        let err = parse("{endpoint: j, endpiont: k}").unwrap_err();
        assert_eq!(err.path, vec!["endpiont"]);
        parse("{endpoint: j, protocol: thrift_http, compression: none}").unwrap();
    }
}
