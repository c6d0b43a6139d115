//! The `otlp_http` exporter (alias `otlphttp`): OTLP/HTTP with protobuf or
//! JSON bodies, behind the shared sending queue and retries.

pub mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;
use prost::Message;
use serde_yaml_ng::Value;
use weft_pipeline::exporterhelper::{ExportClient, ExportError, QueuedExporter};
use weft_pipeline::otlp_wire::EncodedTraces;
use weft_pipeline::{
    parse_config, ComponentError, ConfigFieldError, Exporter, ExporterFactory, Payload, Settings,
    Signal,
};

use crate::common::{config_error, cpu_bound, header_map, http_client, HttpClientOptions};
use config::{Encoding, OtlpHttpConfig};

/// Factory for `otlp_http` / `otlphttp`.
pub struct OtlpHttpFactory;

impl ExporterFactory for OtlpHttpFactory {
    fn type_name(&self) -> &'static str {
        "otlp_http"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["otlphttp"]
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<OtlpHttpConfig>(raw).map(|_| ())
    }

    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError> {
        let cfg = parse_config::<OtlpHttpConfig>(raw).map_err(config_error)?;
        let client = HttpClient::new(&settings, &cfg)?;
        Ok(Arc::new(QueuedExporter::new(
            &settings,
            cfg.sending_queue.clone(),
            cfg.retry_on_failure.clone(),
            cfg.timeout,
            Arc::new(client),
        )))
    }
}

/// Sends OTLP export requests over HTTP.
pub struct HttpClient {
    id: String,
    cfg: OtlpHttpConfig,
    client: reqwest::Client,
    urls: [Option<String>; 3],
    headers: HeaderMap,
    auth: crate::common::ClientAuth,
}

fn signal_index(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

impl HttpClient {
    pub fn new(settings: &Settings, cfg: &OtlpHttpConfig) -> Result<HttpClient, ComponentError> {
        let id = settings.id.to_string();
        let client = http_client(HttpClientOptions {
            tls: &cfg.tls,
            proxy_url: cfg.proxy_url.as_deref(),
            idle_conn_timeout: cfg.idle_conn_timeout,
            max_idle_conns_per_host: cfg.max_idle_conns_per_host,
            disable_keep_alives: cfg.disable_keep_alives,
        })?;
        let mut headers = header_map(&cfg.headers)?;
        let content_type = match cfg.encoding {
            Encoding::Proto => "application/x-protobuf",
            Encoding::Json => "application/json",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(token) = cfg.compression.token() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        Ok(HttpClient {
            id,
            cfg: cfg.clone(),
            client,
            urls: Signal::ALL.map(|s| cfg.signal_url(s)),
            headers,
            auth: crate::common::ClientAuth::new(settings, cfg.auth.as_ref())?,
        })
    }

    fn encode(&self, payload: &Payload) -> Result<Vec<u8>, ExportError> {
        match self.cfg.encoding {
            Encoding::Proto => Ok(encode_proto(payload)),
            Encoding::Json => crate::otlp_json::encode_request(payload)
                .map_err(|e| ExportError::permanent(format!("cannot encode OTLP/JSON: {e}"))),
        }
    }
}

/// The payload as an `Export*ServiceRequest` protobuf: every request type
/// holds its resources in field 1, so no owned request needs building.
pub fn encode_proto(payload: &Payload) -> Vec<u8> {
    use prost::encoding::message;
    match payload {
        Payload::Traces(items) => {
            let mut buf = Vec::with_capacity(message::encoded_len_repeated(1, items));
            items.iter().for_each(|m| message::encode(1, m, &mut buf));
            buf
        }
        Payload::Metrics(items) => {
            let mut buf = Vec::with_capacity(message::encoded_len_repeated(1, items));
            items.iter().for_each(|m| message::encode(1, m, &mut buf));
            buf
        }
        Payload::Logs(items) => {
            let mut buf = Vec::with_capacity(message::encoded_len_repeated(1, items));
            items.iter().for_each(|m| message::encode(1, m, &mut buf));
            buf
        }
    }
}

/// The `partial_success` every `Export*ServiceResponse` carries in field 1.
#[derive(Clone, PartialEq, Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

fn is_proto(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/x-protobuf"))
}

/// Reads `partialSuccess` from a 2xx body: (rejected count, message).
fn partial_success(headers: &HeaderMap, body: &[u8]) -> Option<(i64, String)> {
    if body.is_empty() {
        return None;
    }
    if is_json(headers) {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let p = v
            .get("partialSuccess")
            .or_else(|| v.get("partial_success"))?;
        let rejected = ["rejectedSpans", "rejectedDataPoints", "rejectedLogRecords"]
            .iter()
            .filter_map(|k| p.get(*k))
            .find_map(|n| {
                n.as_i64()
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0);
        let message = p
            .get("errorMessage")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        return Some((rejected, message));
    }
    let resp = ExportResponse::decode(body).ok()?;
    resp.partial_success.map(|p| (p.rejected, p.error_message))
}

/// The server's explanation of a failure: a `google.rpc.Status` (protobuf
/// or JSON) when it sent one, else the start of the body as text.
pub(crate) fn error_message(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    if is_proto(headers) {
        if let Ok(status) = tonic_types::pb::Status::decode(body) {
            return Some(status.message);
        }
    }
    if is_json(headers) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
                return Some(m.to_string());
            }
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// `Retry-After`: delay in seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The collector's retryable HTTP statuses.
pub fn is_retryable_status(code: StatusCode) -> bool {
    matches!(
        code,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

#[async_trait]
impl ExportClient for HttpClient {
    fn sends_encoded_traces(&self) -> bool {
        self.cfg.encoding == Encoding::Proto
    }

    async fn export_encoded(&self, traces: &EncodedTraces) -> Result<(), ExportError> {
        self.post(Signal::Traces, || Ok(traces.bytes().to_vec()))
            .await
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        self.post(payload.signal(), || self.encode(payload)).await
    }
}

impl HttpClient {
    /// Encodes (on a blocking-capable thread), compresses and sends one request.
    async fn post(
        &self,
        signal: Signal,
        encode: impl FnOnce() -> Result<Vec<u8>, ExportError>,
    ) -> Result<(), ExportError> {
        let Some(url) = &self.urls[signal_index(signal)] else {
            return Err(ExportError::permanent(format!(
                "no endpoint for {signal}: set `endpoint` or `{signal}_endpoint`"
            )));
        };
        let compression = self.cfg.compression;
        let level = self.cfg.compression_params.as_ref().and_then(|p| p.level);
        let body = cpu_bound(|| {
            let body = encode()?;
            compression
                .compress(body, level)
                .map_err(|e| ExportError::permanent(format!("cannot compress the request: {e}")))
        })?;

        let response = self
            .client
            .post(url)
            .headers(with_trace_context(self.auth.apply(&self.headers)?))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                ExportError::retryable(format!("failed to make an HTTP request to {url}: {e}"))
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        // A body that cannot be read changes nothing about the outcome.
        let body = response.bytes().await.unwrap_or_default();

        if status.is_success() {
            if let Some((rejected, message)) = partial_success(&headers, &body) {
                if rejected != 0 || !message.is_empty() {
                    tracing::warn!(
                        exporter = %self.id,
                        signal = %signal,
                        rejected = rejected,
                        message = %message,
                        "Partial success response from the OTLP/HTTP server"
                    );
                }
            }
            return Ok(());
        }

        let mut message = format!(
            "error exporting items, request to {url} responded with HTTP Status Code {}",
            status.as_u16()
        );
        if let Some(m) = error_message(&headers, &body) {
            message.push_str(", Message=");
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

/// `headers` plus weft's own send span's context, when it traces itself with
/// propagators.
fn with_trace_context(mut headers: HeaderMap) -> HeaderMap {
    if let Some(h) = weft_pipeline::self_trace::outgoing_headers() {
        for (k, v) in h.iter() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(name, value);
            }
        }
    }
    headers
}
