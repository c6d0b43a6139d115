//! The `jaeger` exporter: spans to a Jaeger collector, as
//! `api_v2.CollectorService/PostSpans` over gRPC (`protocol: grpc`, the
//! connection built as the otlp_grpc exporter builds it) or as binary-Thrift
//! batches in `POST /api/traces` (`protocol: thrift_http`), behind the
//! shared sending queue and retries.
//!
//! Each resource becomes one Jaeger batch and one request, translated as the
//! collector's translator does (see `weft_jaeger`).

pub mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde_yaml_ng::Value;
use tokio::sync::OnceCell;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use weft_jaeger::grpc::CollectorServiceClient;
use weft_jaeger::proto::{batch_to_proto, PostSpansRequest};
use weft_jaeger::thrift::{encode_batch, Protocol};
use weft_pipeline::exporterhelper::{ExportClient, ExportError, QueuedExporter};
use weft_pipeline::{
    parse_config, ComponentError, ConfigFieldError, Exporter, ExporterFactory, Payload, Settings,
    Signal,
};

use crate::common::{
    config_error, cpu_bound, header_map, http_client, Compression, HttpClientOptions,
};
use crate::otlp_grpc::{classify_status, GrpcClient};
use crate::otlp_http::{is_retryable_status, parse_retry_after};
use config::{JaegerExporterConfig, JaegerProtocol};

/// The media type of a Thrift batch.
pub const THRIFT_CONTENT_TYPE: &str = "application/x-thrift";

/// Factory for `jaeger`.
pub struct JaegerFactory;

impl ExporterFactory for JaegerFactory {
    fn type_name(&self) -> &'static str {
        "jaeger"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<JaegerExporterConfig>(raw).map(|_| ())
    }

    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError> {
        let cfg = parse_config::<JaegerExporterConfig>(raw).map_err(config_error)?;
        let client: Arc<dyn ExportClient> = match cfg.protocol {
            JaegerProtocol::Grpc => Arc::new(JaegerGrpc::new(&settings, &cfg)?),
            JaegerProtocol::ThriftHttp => Arc::new(JaegerThriftHttp::new(&settings, &cfg)?),
        };
        Ok(Arc::new(QueuedExporter::new(
            &settings,
            cfg.sending_queue.clone(),
            cfg.retry_on_failure.clone(),
            cfg.timeout,
            client,
        )))
    }
}

/// The spans of a payload as Jaeger batches; other signals are refused
/// (the factory only joins traces pipelines).
fn batches(payload: &Payload) -> Result<Vec<weft_jaeger::model::Batch>, ExportError> {
    match payload {
        Payload::Traces(rs) => Ok(cpu_bound(|| weft_jaeger::from_otlp(rs))),
        other => Err(ExportError::permanent(format!(
            "the jaeger exporter sends traces only, not {}",
            other.signal()
        ))),
    }
}

/// `protocol: grpc`.
pub struct JaegerGrpc {
    id: String,
    /// The otlp_grpc client owns the channel settings, headers and deadline.
    connection: GrpcClient,
    compression: Option<CompressionEncoding>,
    client: OnceCell<CollectorServiceClient<Channel>>,
}

impl JaegerGrpc {
    pub fn new(
        settings: &Settings,
        cfg: &JaegerExporterConfig,
    ) -> Result<JaegerGrpc, ComponentError> {
        let grpc = cfg.grpc_settings();
        Ok(JaegerGrpc {
            id: settings.id.to_string(),
            connection: GrpcClient::new(settings, &grpc)?,
            compression: match grpc.compression {
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
                Compression::None => None,
            },
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<CollectorServiceClient<Channel>, ExportError> {
        self.client
            .get_or_try_init(|| async {
                let mut client = CollectorServiceClient::new(self.connection.channel()?)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd);
                if let Some(enc) = self.compression {
                    client = client.send_compressed(enc);
                }
                Ok::<_, String>(client)
            })
            .await
            .cloned()
            .map_err(ExportError::Permanent)
    }
}

#[async_trait]
impl ExportClient for JaegerGrpc {
    async fn start(&self) -> Result<(), ComponentError> {
        self.client()
            .await
            .map(|_| ())
            .map_err(|e| ComponentError::new(format!("exporter {}: {e}", self.id)))
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let mut client = self.client().await?;
        for batch in batches(payload)? {
            let req = self.connection.request(PostSpansRequest {
                batch: Some(batch_to_proto(&batch)),
            });
            client
                .post_spans(req)
                .await
                .map_err(|s| classify_status(&s))?;
        }
        Ok(())
    }
}

/// `protocol: thrift_http`.
pub struct JaegerThriftHttp {
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
    auth: crate::common::ClientAuth,
}

impl JaegerThriftHttp {
    pub fn new(
        settings: &Settings,
        cfg: &JaegerExporterConfig,
    ) -> Result<JaegerThriftHttp, ComponentError> {
        let url = cfg
            .thrift_http_url()
            .map_err(|m| ComponentError::new(format!("endpoint: {m}")))?;
        let client = http_client(HttpClientOptions {
            tls: &cfg.tls,
            proxy_url: None,
            idle_conn_timeout: None,
            max_idle_conns_per_host: None,
            disable_keep_alives: false,
        })?;
        let mut headers = header_map(&cfg.headers)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(THRIFT_CONTENT_TYPE));
        Ok(JaegerThriftHttp {
            url,
            client,
            headers,
            auth: crate::common::ClientAuth::new(settings, cfg.auth.as_ref())?,
        })
    }
}

#[async_trait]
impl ExportClient for JaegerThriftHttp {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let url = &self.url;
        for batch in batches(payload)? {
            let body = cpu_bound(|| encode_batch(&batch, Protocol::Binary));
            let response = self
                .client
                .post(url)
                .headers(self.auth.apply(&self.headers)?)
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    ExportError::retryable(format!("failed to make an HTTP request to {url}: {e}"))
                })?;
            let status = response.status();
            if status.is_success() {
                continue;
            }
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // A body that cannot be read changes nothing about the outcome.
            let body = response.bytes().await.unwrap_or_default();
            let mut message = format!(
                "error exporting spans, request to {url} responded with HTTP Status Code {}",
                status.as_u16()
            );
            let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
            if !text.trim().is_empty() {
                message.push_str(", Message=");
                message.push_str(text.trim());
            }
            return Err(if is_retryable_status(status) {
                ExportError::Retryable {
                    message,
                    retry_after,
                }
            } else {
                ExportError::Permanent(message)
            });
        }
        Ok(())
    }
}
