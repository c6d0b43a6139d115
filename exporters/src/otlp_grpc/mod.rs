//! The `otlp_grpc` exporter (alias `otlp`): OTLP over gRPC with tonic, on a
//! lazily connecting channel, behind the shared sending queue and retries.

pub mod config;
pub mod raw;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use rustls::pki_types::ServerName;
use serde_yaml_ng::Value;
use tokio::sync::OnceCell;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use weft_pipeline::exporterhelper::{ExportClient, ExportError, QueuedExporter};
use weft_pipeline::otlp_wire::{encode_resource_spans, EncodedTraces};
use weft_pipeline::{
    parse_config, ComponentError, ConfigFieldError, Exporter, ExporterFactory, Payload, Settings,
    Signal,
};

use crate::common::{config_error, user_agent, Compression};
use config::{GrpcTarget, OtlpGrpcConfig};

/// Factory for `otlp_grpc` / `otlp`.
pub struct OtlpGrpcFactory;

impl ExporterFactory for OtlpGrpcFactory {
    fn type_name(&self) -> &'static str {
        "otlp_grpc"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["otlp"]
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<OtlpGrpcConfig>(raw).map(|_| ())
    }

    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError> {
        let cfg = parse_config::<OtlpGrpcConfig>(raw).map_err(config_error)?;
        let client = GrpcClient::new(&settings, &cfg)?;
        Ok(Arc::new(QueuedExporter::new(
            &settings,
            cfg.sending_queue.clone(),
            cfg.retry_on_failure.clone(),
            cfg.timeout,
            Arc::new(client),
        )))
    }
}

/// The service clients over one channel.
struct Clients {
    /// Trace requests go out through this one, already encoded (no copy of
    /// the spans into a request message, and none at all for traces that
    /// arrived encoded).
    raw_traces: tonic::client::Grpc<Channel>,
    metrics: MetricsServiceClient<Channel>,
    logs: LogsServiceClient<Channel>,
}

/// Sends OTLP export requests over gRPC.
pub struct GrpcClient {
    id: String,
    cfg: OtlpGrpcConfig,
    target: GrpcTarget,
    tls: Option<Arc<rustls::ClientConfig>>,
    metadata: MetadataMap,
    auth: crate::common::ClientAuth,
    clients: OnceCell<Clients>,
}

impl GrpcClient {
    pub fn new(settings: &Settings, cfg: &OtlpGrpcConfig) -> Result<GrpcClient, ComponentError> {
        let id = settings.id.to_string();
        let target = cfg
            .target()
            .map_err(|m| ComponentError::new(format!("endpoint: {m}")))?;
        let tls = if target.tls {
            let config = cfg
                .tls
                .client_config(&[b"h2"])
                .map_err(|e| ComponentError::new(format!("tls: {e}")))?;
            Some(Arc::new(config))
        } else {
            None
        };
        let mut metadata = MetadataMap::new();
        for (k, v) in &cfg.headers {
            let key = MetadataKey::from_bytes(k.as_bytes())
                .map_err(|_| ComponentError::new(format!("headers: invalid key {k:?}")))?;
            let value = MetadataValue::try_from(v.as_str())
                .map_err(|_| ComponentError::new(format!("headers: invalid value for {k:?}")))?;
            metadata.insert(key, value);
        }
        Ok(GrpcClient {
            id,
            cfg: cfg.clone(),
            target,
            tls,
            metadata,
            auth: crate::common::ClientAuth::new(settings, cfg.auth.as_ref())?,
            clients: OnceCell::new(),
        })
    }

    /// A channel to the endpoint with the configured TLS, keepalive and
    /// authority; it connects lazily on the first request and reconnects by
    /// itself after failures. Other gRPC exporters build theirs here too.
    pub fn channel(&self) -> Result<Channel, String> {
        let mut endpoint = Endpoint::from_shared(format!("http://{}", self.target.authority))
            .map_err(|e| format!("invalid endpoint: {e}"))?
            .user_agent(user_agent())
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true);
        if let Some(k) = &self.cfg.keepalive {
            if !k.time.is_zero() {
                endpoint = endpoint
                    .http2_keep_alive_interval(k.time)
                    .keep_alive_timeout(k.timeout)
                    .keep_alive_while_idle(k.permit_without_stream);
            }
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let authority = self
            .cfg
            .authority
            .clone()
            .unwrap_or_else(|| self.target.authority.clone());
        let origin: Uri = format!("{scheme}://{authority}")
            .parse()
            .map_err(|e| format!("invalid authority {authority:?}: {e}"))?;
        endpoint = endpoint.origin(origin);

        let channel = match &self.tls {
            None => endpoint.connect_lazy(),
            Some(config) => {
                let name = self
                    .cfg
                    .tls
                    .server_name_override
                    .clone()
                    .unwrap_or_else(|| self.target.host.clone());
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|_| format!("{name:?} is not a valid TLS server name"))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let (host, port) = (self.target.host.clone(), self.target.port);
                // tonic's own TLS cannot skip verification or override the
                // checked name, so the TLS handshake happens here instead.
                let connect = tower::service_fn(move |_: Uri| {
                    let connector = connector.clone();
                    let server_name = server_name.clone();
                    let host = host.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                        tcp.set_nodelay(true)?;
                        let tls = connector.connect(server_name, tcp).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(tls))
                    }
                });
                endpoint.connect_with_connector_lazy(connect)
            }
        };
        Ok(channel)
    }

    /// Builds the clients on first use.
    fn build(&self) -> Result<Clients, String> {
        let channel = self.channel()?;
        let mut raw_traces = tonic::client::Grpc::new(channel.clone());
        let mut metrics = MetricsServiceClient::new(channel.clone());
        let mut logs = LogsServiceClient::new(channel);
        let encoding = match self.cfg.compression {
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
            Compression::None => None,
        };
        if let Some(enc) = encoding {
            raw_traces = raw_traces.send_compressed(enc);
            metrics = metrics.send_compressed(enc);
            logs = logs.send_compressed(enc);
        }
        for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
            raw_traces = raw_traces.accept_compressed(enc);
            metrics = metrics.accept_compressed(enc);
            logs = logs.accept_compressed(enc);
        }
        Ok(Clients {
            raw_traces,
            metrics,
            logs,
        })
    }

    async fn clients(&self) -> Result<&Clients, ExportError> {
        self.clients
            .get_or_try_init(|| async { self.build() })
            .await
            .map_err(ExportError::Permanent)
    }

    /// A request carrying the configured `headers` and the attempt's deadline.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = self.metadata.clone();
        match self.auth.headers() {
            Ok(h) => {
                for (k, v) in h {
                    let key = MetadataKey::from_bytes(k.as_str().as_bytes());
                    let value = MetadataValue::try_from(v.as_bytes());
                    if let (Ok(key), Ok(mut value)) = (key, value) {
                        value.set_sensitive(true);
                        req.metadata_mut().insert(key, value);
                    }
                }
            }
            // The server refuses the request and the attempt fails with its answer.
            Err(e) => tracing::warn!(exporter = %self.id, "{e}; sending without credentials"),
        }
        // weft's own send span, when it traces itself with propagators.
        if let Some(h) = weft_pipeline::self_trace::outgoing_headers() {
            for (k, v) in h.iter() {
                let key = MetadataKey::from_bytes(k.as_bytes());
                let value = MetadataValue::try_from(v.as_str());
                if let (Ok(key), Ok(value)) = (key, value) {
                    req.metadata_mut().insert(key, value);
                }
            }
        }
        if !self.cfg.timeout.timeout.is_zero() {
            req.set_timeout(self.cfg.timeout.timeout);
        }
        req
    }

    fn partial_success(&self, signal: Signal, rejected: i64, message: &str) {
        if rejected != 0 || !message.is_empty() {
            tracing::warn!(
                exporter = %self.id,
                signal = %signal,
                rejected = rejected,
                message = %message,
                "Partial success response from the OTLP gRPC server"
            );
        }
    }
}

impl GrpcClient {
    /// One trace export call with an encoded `ExportTraceServiceRequest`.
    async fn export_trace_bytes(&self, clients: &Clients, body: Bytes) -> Result<(), ExportError> {
        let mut grpc = clients.raw_traces.clone();
        grpc.ready().await.map_err(|e| {
            classify_status(&Status::unknown(format!("Service was not ready: {e}")))
        })?;
        let path = http::uri::PathAndQuery::from_static(raw::TRACE_EXPORT_PATH);
        let resp = grpc
            .unary(self.request(body), path, raw::RawTraceCodec)
            .await
            .map_err(|s| classify_status(&s))?;
        if let Some(p) = resp.into_inner().partial_success {
            self.partial_success(Signal::Traces, p.rejected_spans, &p.error_message);
        }
        Ok(())
    }
}

/// The collector's rules for which gRPC failures are worth retrying.
pub fn classify_status(status: &Status) -> ExportError {
    let retry_info = status.get_details_retry_info();
    let delay = retry_info.as_ref().and_then(|r| r.retry_delay);
    let message = format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    );
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_info.is_some(),
        _ => false,
    };
    if retryable {
        ExportError::Retryable {
            message,
            retry_after: delay,
        }
    } else {
        ExportError::Permanent(message)
    }
}

#[async_trait]
impl ExportClient for GrpcClient {
    async fn start(&self) -> Result<(), ComponentError> {
        self.clients()
            .await
            .map(|_| ())
            .map_err(|e| ComponentError::new(format!("exporter {}: {e}", self.id)))
    }

    fn sends_encoded_traces(&self) -> bool {
        true
    }

    async fn export_encoded(&self, traces: &EncodedTraces) -> Result<(), ExportError> {
        let clients = self.clients().await?;
        self.export_trace_bytes(clients, traces.bytes().clone())
            .await
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let clients = self.clients().await?;
        match payload {
            Payload::Traces(rs) => {
                self.export_trace_bytes(clients, encode_resource_spans(rs))
                    .await?;
            }
            Payload::Metrics(rm) => {
                let req = self.request(ExportMetricsServiceRequest {
                    resource_metrics: rm.clone(),
                });
                let resp = clients
                    .metrics
                    .clone()
                    .export(req)
                    .await
                    .map_err(|s| classify_status(&s))?;
                if let Some(p) = resp.into_inner().partial_success {
                    self.partial_success(Signal::Metrics, p.rejected_data_points, &p.error_message);
                }
            }
            Payload::Logs(rl) => {
                let req = self.request(ExportLogsServiceRequest {
                    resource_logs: rl.clone(),
                });
                let resp = clients
                    .logs
                    .clone()
                    .export(req)
                    .await
                    .map_err(|s| classify_status(&s))?;
                if let Some(p) = resp.into_inner().partial_success {
                    self.partial_success(Signal::Logs, p.rejected_log_records, &p.error_message);
                }
            }
        }
        Ok(())
    }
}
