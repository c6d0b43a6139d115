//! Configuration of the `zipkin` exporter, key for key as the collector's
//! `zipkinexporter` (its own keys plus `confighttp.ClientConfig` and the
//! exporter helper's queue, retry and timeout).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use weft_pipeline::exporterhelper::{QueueSettings, RetrySettings, TimeoutSettings};
use weft_pipeline::{ComponentConfig, ConfigFieldError};

use crate::common::{check_http_url, validate_headers, Compression};
use crate::tls::TlsClientSettings;

/// The collector's name for spans whose resource has no service name.
pub const DEFAULT_SERVICE_NAME: &str = "<missing service name>";

/// The span encoding sent to the Zipkin server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Zipkin v2 JSON, `application/json`.
    #[default]
    Json,
    /// Zipkin v2 proto3 `ListOfSpans`, `application/x-protobuf`.
    Proto,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinExporterConfig {
    /// The full URL spans are posted to, e.g.
    /// `http://zipkin:9411/api/v2/spans` (required; used as written).
    pub endpoint: Option<String>,
    /// `json` (default) or `proto`.
    pub format: Format,
    /// Local endpoint service name for spans whose resource has no
    /// `service.name` (nor `faas.name`, `k8s.deployment.name`,
    /// `process.executable.name`). Default `<missing service name>`.
    pub default_service_name: String,
    /// Request compression: `none` (default, as the collector's HTTP
    /// client), `gzip` or `zstd`.
    #[serde(deserialize_with = "compression_default_none")]
    pub compression: Compression,
    /// Extra HTTP headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Add the credentials of this authenticator extension to every request
    /// (`authenticator: bearertokenauth/client`).
    pub auth: Option<weft_pipeline::auth::AuthConfig>,
    /// Client TLS settings for `https://` endpoints.
    pub tls: TlsClientSettings,
    /// Per-request timeout (default 5s).
    pub timeout: TimeoutSettings,
    /// Retries of retryable failures.
    pub retry_on_failure: RetrySettings,
    /// The in-memory sending queue.
    pub sending_queue: QueueSettings,
    /// HTTP proxy for all requests (`http://proxy:3128`).
    pub proxy_url: Option<String>,
    /// How long an idle keep-alive connection stays open (default 90s).
    #[serde(with = "weft_pipeline::config::duration::option")]
    pub idle_conn_timeout: Option<Duration>,
    /// Most idle connections kept per host.
    pub max_idle_conns_per_host: Option<usize>,
    /// Open a new connection for every request.
    pub disable_keep_alives: bool,
    /// Accepted for compatibility; no effect.
    pub read_buffer_size: Option<usize>,
    /// Accepted for compatibility; no effect.
    pub write_buffer_size: Option<usize>,
    /// Accepted for compatibility; no effect.
    pub max_idle_conns: Option<usize>,
}

impl Default for ZipkinExporterConfig {
    fn default() -> Self {
        ZipkinExporterConfig {
            endpoint: None,
            format: Format::Json,
            default_service_name: DEFAULT_SERVICE_NAME.to_string(),
            compression: Compression::None,
            headers: BTreeMap::new(),
            auth: None,
            tls: TlsClientSettings::default(),
            timeout: TimeoutSettings::default(),
            retry_on_failure: RetrySettings::default(),
            sending_queue: QueueSettings::default(),
            proxy_url: None,
            idle_conn_timeout: None,
            max_idle_conns_per_host: None,
            disable_keep_alives: false,
            read_buffer_size: None,
            write_buffer_size: None,
            max_idle_conns: None,
        }
    }
}

/// A null `compression` keeps this exporter's default, which is none.
fn compression_default_none<'de, D: Deserializer<'de>>(d: D) -> Result<Compression, D::Error> {
    Ok(Option::<Compression>::deserialize(d)?.unwrap_or(Compression::None))
}

impl ZipkinExporterConfig {
    /// The endpoint, trimmed; None when unset or empty.
    pub fn url(&self) -> Option<&str> {
        self.endpoint
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

impl ComponentConfig for ZipkinExporterConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        let Some(url) = self.url() else {
            return Err(ConfigFieldError::at(
                &["endpoint"],
                "endpoint required: the Zipkin server's span URL, e.g. http://localhost:9411/api/v2/spans",
            ));
        };
        check_http_url("endpoint", url)?;
        if let Some(p) = self.proxy_url.as_deref().filter(|p| !p.trim().is_empty()) {
            check_http_url("proxy_url", p)?;
        }
        self.tls.validate("tls")?;
        validate_headers(&self.headers)?;
        self.retry_on_failure.validate("retry_on_failure")?;
        self.sending_queue.validate("sending_queue")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_pipeline::parse_config;

    fn parse(yaml: &str) -> Result<ZipkinExporterConfig, ConfigFieldError> {
        parse_config(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn defaults_are_the_collectors() {
        let cfg = parse("endpoint: http://zipkin:9411/api/v2/spans").unwrap();
        assert_eq!(cfg.url(), Some("http://zipkin:9411/api/v2/spans"));
        assert_eq!(cfg.format, Format::Json);
        assert_eq!(cfg.default_service_name, "<missing service name>");
        assert_eq!(cfg.compression, Compression::None);
        assert_eq!(cfg.timeout.timeout, Duration::from_secs(5));
        assert!(cfg.retry_on_failure.enabled);
        assert_eq!(cfg.sending_queue.num_consumers, 10);
        assert_eq!(cfg.sending_queue.queue_size, 1000);
        let cfg = parse("{endpoint: 'http://z/api/v2/spans', compression: ~}").unwrap();
        assert_eq!(cfg.compression, Compression::None);
    }

    #[test]
    fn collector_keys_parse() {
        let cfg = parse(
            r#"
endpoint: https://zipkin.example.com/api/v2/spans
format: proto
default_service_name: unknown-service
compression: gzip
headers: {x-tenant: acme}
timeout: 10s
tls: {insecure_skip_verify: true}
retry_on_failure: {initial_interval: 1s}
sending_queue: {queue_size: 50}
write_buffer_size: 524288
"#,
        )
        .unwrap();
        assert_eq!(cfg.format, Format::Proto);
        assert_eq!(cfg.default_service_name, "unknown-service");
        assert_eq!(cfg.compression, Compression::Gzip);
        assert_eq!(cfg.headers["x-tenant"], "acme");
        assert_eq!(cfg.timeout.timeout, Duration::from_secs(10));
        assert!(cfg.tls.insecure_skip_verify);
        assert_eq!(cfg.sending_queue.queue_size, 50);
    }

    #[test]
    fn errors_name_their_key() {
        let cases: &[(&str, &[&str])] = &[
            ("{}", &["endpoint"]),
            ("endpoint: ''", &["endpoint"]),
            ("endpoint: zipkin:9411", &["endpoint"]),
            ("{endpoint: 'http://z', format: thrift}", &["format"]),
            ("{endpoint: 'http://z', compression: lz4}", &["compression"]),
            (
                "{endpoint: 'http://z', tls: {min_version: '1.1'}}",
                &["tls", "min_version"],
            ),
            (
                "{endpoint: 'http://z', headers: {'bad header': x}}",
                &["headers", "bad header"],
            ),
            (
                "{endpoint: 'http://z', sending_queue: {storage: 'not an id'}}",
                &["sending_queue", "storage"],
            ),
            ("{endpoint: 'http://z', endpiont: x}", &["endpiont"]),
        ];
        for (yaml, path) in cases {
            let err = parse(yaml).unwrap_err();
            assert_eq!(err.path, *path, "{yaml}: {}", err.message);
        }
        assert!(parse("{}")
            .unwrap_err()
            .message
            .starts_with("endpoint required"));
    }
}
