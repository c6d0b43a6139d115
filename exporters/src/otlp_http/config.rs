//! Configuration of the `otlp_http` exporter (alias `otlphttp`), key for key
//! as the collector's OTLP/HTTP exporter.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::exporterhelper::{QueueSettings, RetrySettings, TimeoutSettings};
use weft_pipeline::{ComponentConfig, ConfigFieldError, Signal};

use crate::common::{check_http_url, validate_headers, Compression};
use crate::tls::TlsClientSettings;

/// Request body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/x-protobuf`.
    #[default]
    Proto,
    /// `application/json` (OTLP/JSON).
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpConfig {
    /// Base URL; the signal paths `/v1/traces`, `/v1/metrics` and `/v1/logs`
    /// are appended (`http://host:4318` → `http://host:4318/v1/traces`).
    pub endpoint: Option<String>,
    /// Full URL for traces, used as written; overrides `endpoint`.
    pub traces_endpoint: Option<String>,
    /// Full URL for metrics, used as written; overrides `endpoint`.
    pub metrics_endpoint: Option<String>,
    /// Full URL for logs, used as written; overrides `endpoint`.
    pub logs_endpoint: Option<String>,
    /// `proto` (default) or `json`.
    pub encoding: Encoding,
    /// Request compression: `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// `compression_params.level`: the compression level (gzip 1-9, zstd 1-22).
    pub compression_params: Option<CompressionParams>,
    /// Extra HTTP headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Add the credentials of this authenticator extension to every request
    /// (`authenticator: bearertokenauth/client`).
    pub auth: Option<weft_pipeline::auth::AuthConfig>,
    /// Client TLS settings for `https://` URLs.
    pub tls: TlsClientSettings,
    /// Per-request timeout. Default 30s, as the collector's HTTP client.
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

/// `compression_params`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionParams {
    pub level: Option<i32>,
}

impl Default for OtlpHttpConfig {
    fn default() -> Self {
        OtlpHttpConfig {
            endpoint: None,
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            encoding: Encoding::Proto,
            compression: Compression::Gzip,
            compression_params: None,
            headers: BTreeMap::new(),
            auth: None,
            tls: TlsClientSettings::default(),
            timeout: TimeoutSettings {
                timeout: Duration::from_secs(30),
            },
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

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl OtlpHttpConfig {
    /// The URL a signal is posted to, or None when neither `endpoint` nor
    /// the signal's own endpoint is set.
    pub fn signal_url(&self, signal: Signal) -> Option<String> {
        let own = match signal {
            Signal::Traces => &self.traces_endpoint,
            Signal::Metrics => &self.metrics_endpoint,
            Signal::Logs => &self.logs_endpoint,
        };
        if let Some(url) = non_empty(own) {
            return Some(url.to_string());
        }
        let base = non_empty(&self.endpoint)?;
        let sep = if base.ends_with('/') { "" } else { "/" };
        Some(format!("{base}{sep}v1/{}", signal.as_str()))
    }
}

impl ComponentConfig for OtlpHttpConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        let urls = [
            ("endpoint", &self.endpoint),
            ("traces_endpoint", &self.traces_endpoint),
            ("metrics_endpoint", &self.metrics_endpoint),
            ("logs_endpoint", &self.logs_endpoint),
        ];
        if urls.iter().all(|(_, u)| non_empty(u).is_none()) {
            return Err(ConfigFieldError::new(
                "at least one endpoint must be specified (`endpoint` or `traces_endpoint`/`metrics_endpoint`/`logs_endpoint`)",
            ));
        }
        for (key, url) in urls {
            if let Some(url) = non_empty(url) {
                check_http_url(key, url)?;
            }
        }
        if let Some(p) = non_empty(&self.proxy_url) {
            check_http_url("proxy_url", p)?;
        }
        if let Some(level) = self.compression_params.as_ref().and_then(|p| p.level) {
            let ok = match self.compression {
                Compression::Gzip => (1..=9).contains(&level),
                Compression::Zstd => (1..=22).contains(&level),
                Compression::None => true,
            };
            if !ok {
                return Err(ConfigFieldError::at(
                    &["compression_params", "level"],
                    format!(
                        "level {level} is out of range for this compression (gzip 1-9, zstd 1-22)"
                    ),
                ));
            }
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

    fn parse(yaml: &str) -> Result<OtlpHttpConfig, ConfigFieldError> {
        parse_config(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn signal_urls() {
        let cfg = parse("endpoint: http://h:4318").unwrap();
        assert_eq!(
            cfg.signal_url(Signal::Traces).as_deref(),
            Some("http://h:4318/v1/traces")
        );
        let cfg = parse("endpoint: https://h/otlp/").unwrap();
        assert_eq!(
            cfg.signal_url(Signal::Logs).as_deref(),
            Some("https://h/otlp/v1/logs")
        );
        let cfg =
            parse("{endpoint: 'http://h:4318', metrics_endpoint: 'http://m:9/ingest'}").unwrap();
        assert_eq!(
            cfg.signal_url(Signal::Metrics).as_deref(),
            Some("http://m:9/ingest")
        );
        let cfg = parse("traces_endpoint: http://t:1/x").unwrap();
        assert_eq!(cfg.signal_url(Signal::Logs), None);
    }

    #[test]
    fn defaults_and_errors() {
        let cfg = parse("endpoint: http://h:4318").unwrap();
        assert_eq!(cfg.encoding, Encoding::Proto);
        assert_eq!(cfg.compression, Compression::Gzip);
        assert_eq!(cfg.timeout.timeout, Duration::from_secs(30));
        assert_eq!(cfg.sending_queue.num_consumers, 10);
        assert_eq!(
            parse("{endpoint: 'http://h', encoding: json}")
                .unwrap()
                .encoding,
            Encoding::Json
        );

        let err = parse("{}").unwrap_err();
        assert!(
            err.message.contains("at least one endpoint"),
            "{}",
            err.message
        );
        let err = parse("endpoint: h:4318").unwrap_err();
        assert_eq!(err.path, vec!["endpoint"]);
        let err = parse("{endpoint: 'http://h', encoding: xml}").unwrap_err();
        assert_eq!(err.path, vec!["encoding"]);
        let err = parse("{endpoint: 'http://h', compression: lz4}").unwrap_err();
        assert_eq!(err.path, vec!["compression"]);
        let err = parse("{endpoint: 'http://h', compression_params: {level: 30}}").unwrap_err();
        assert_eq!(err.path, vec!["compression_params", "level"]);
        let err = parse("{endpoint: 'http://h', tls: {min_version: '1.1'}}").unwrap_err();
        assert_eq!(err.path, vec!["tls", "min_version"]);
    }
}
