//! The `zipkin` exporter: traces as Zipkin v2 JSON or proto3 posted to a
//! Zipkin server's span URL, behind the shared sending queue and retries,
//! translated as the collector's `zipkinexporter` does (see `weft-zipkin`).

pub mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde_yaml_ng::Value;
use weft_pipeline::exporterhelper::{ExportClient, ExportError, QueuedExporter};
use weft_pipeline::{
    parse_config, ComponentError, ConfigFieldError, Exporter, ExporterFactory, Payload, Settings,
    Signal,
};

use crate::common::{config_error, cpu_bound, header_map, http_client, HttpClientOptions};
use crate::otlp_http::{error_message, is_retryable_status, parse_retry_after};
use config::{Format, ZipkinExporterConfig};

/// Factory for `zipkin`.
pub struct ZipkinFactory;

impl ExporterFactory for ZipkinFactory {
    fn type_name(&self) -> &'static str {
        "zipkin"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<ZipkinExporterConfig>(raw).map(|_| ())
    }

    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError> {
        let cfg = parse_config::<ZipkinExporterConfig>(raw).map_err(config_error)?;
        let client = ZipkinClient::new(&settings, &cfg)?;
        Ok(Arc::new(QueuedExporter::new(
            &settings,
            cfg.sending_queue.clone(),
            cfg.retry_on_failure.clone(),
            cfg.timeout,
            Arc::new(client),
        )))
    }
}

/// Posts translated spans to one Zipkin span URL.
pub struct ZipkinClient {
    id: String,
    url: String,
    format: Format,
    default_service_name: String,
    compression: crate::common::Compression,
    client: reqwest::Client,
    headers: HeaderMap,
    auth: crate::common::ClientAuth,
}

impl ZipkinClient {
    pub fn new(
        settings: &Settings,
        cfg: &ZipkinExporterConfig,
    ) -> Result<ZipkinClient, ComponentError> {
        let url = cfg
            .url()
            .ok_or_else(|| ComponentError::new("endpoint required"))?
            .to_string();
        let client = http_client(HttpClientOptions {
            tls: &cfg.tls,
            proxy_url: cfg.proxy_url.as_deref(),
            idle_conn_timeout: cfg.idle_conn_timeout,
            max_idle_conns_per_host: cfg.max_idle_conns_per_host,
            disable_keep_alives: cfg.disable_keep_alives,
        })?;
        let mut headers = header_map(&cfg.headers)?;
        let content_type = match cfg.format {
            Format::Json => "application/json",
            Format::Proto => "application/x-protobuf",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(token) = cfg.compression.token() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        Ok(ZipkinClient {
            id: settings.id.to_string(),
            url,
            format: cfg.format,
            default_service_name: cfg.default_service_name.clone(),
            compression: cfg.compression,
            client,
            headers,
            auth: crate::common::ClientAuth::new(settings, cfg.auth.as_ref())?,
        })
    }

    /// The request body for a payload, or None when no span could be
    /// translated.
    fn encode(&self, payload: &Payload) -> Result<Option<Vec<u8>>, ExportError> {
        let Payload::Traces(resource_spans) = payload else {
            return Err(ExportError::permanent(format!(
                "the zipkin exporter takes traces, not {}",
                payload.signal()
            )));
        };
        let translated = weft_zipkin::from_otlp(resource_spans, &self.default_service_name);
        if translated.invalid > 0 {
            tracing::warn!(
                exporter = %self.id,
                dropped = translated.invalid,
                "spans without a valid trace id or span id cannot be sent to Zipkin; dropped"
            );
        }
        if translated.spans.is_empty() {
            return Ok(None);
        }
        let body = match self.format {
            Format::Json => weft_zipkin::json::encode(&translated.spans),
            Format::Proto => weft_zipkin::proto::encode(&translated.spans),
        };
        self.compression
            .compress(body, None)
            .map(Some)
            .map_err(|e| ExportError::permanent(format!("cannot compress the request: {e}")))
    }
}

#[async_trait]
impl ExportClient for ZipkinClient {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let Some(body) = cpu_bound(|| self.encode(payload))? else {
            return Ok(());
        };
        let url = &self.url;
        let response = self
            .client
            .post(url)
            .headers(self.auth.apply(&self.headers)?)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                ExportError::retryable(format!("failed to push trace data to {url}: {e}"))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        // A body that cannot be read changes nothing about the outcome.
        let body = response.bytes().await.unwrap_or_default();
        let mut message = format!(
            "failed to push trace data to {url}: HTTP status {}",
            status.as_u16()
        );
        if let Some(m) = error_message(&headers, &body) {
            message.push_str(": ");
            message.push_str(&m);
        }
        if is_retryable_status(status) {
            let retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            Err(ExportError::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(ExportError::Permanent(message))
        }
    }
}
