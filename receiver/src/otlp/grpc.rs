//! OTLP/gRPC: the `TraceService`, `MetricsService` and `LogsService` Export
//! calls, gzip or zstd compressed, mapped onto the pipeline's consumers.
//! Traces stay encoded (`grpc_traces.rs`).

use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use weft_pipeline::Payload;

use super::config::GrpcConfig;
use super::decode::validate_ids;
use super::grpc_traces::{RawTraceServer, TraceHandler};
use crate::common::grpc;
use crate::common::grpc::{client_metadata, mark_reached, to_status};
use crate::common::ingest::Ingest;

/// Serves until `token` is cancelled; tonic then stops accepting and waits
/// for open calls (the caller bounds how long).
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    guard: crate::common::guard::Guard,
    cfg: &GrpcConfig,
    ingest: Arc<Ingest>,
    token: CancellationToken,
) -> JoinHandle<()> {
    let limit = cfg.max_recv_msg_size_bytes();
    let handler = Arc::new(Handler {
        ingest: ingest.clone(),
        include_metadata: cfg.include_metadata,
    });
    let traces = RawTraceServer::new(
        TraceHandler {
            ingest: ingest.clone(),
            include_metadata: cfg.include_metadata,
        },
        limit,
    );
    let metrics = MetricsServiceServer::from_arc(handler.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::from_arc(handler)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit);

    let router = grpc::server(cfg, ingest.metrics.bad_requests.clone(), guard.clone())
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs);
    grpc::spawn("OTLP/gRPC", router, listener, tls, guard, token)
}

struct Handler {
    ingest: Arc<Ingest>,
    include_metadata: bool,
}

impl Handler {
    async fn export<T>(
        &self,
        req: Request<T>,
        into: impl FnOnce(T) -> Payload,
    ) -> Result<(), Status> {
        let received_at = Instant::now();
        mark_reached(&req);
        let metadata = self.include_metadata.then(|| client_metadata(&req));
        let caller = self.ingest.caller_grpc(req.metadata());
        let payload = into(req.into_inner());
        if let Err(e) = validate_ids(&payload) {
            self.ingest.bad_request(&e);
            return Err(Status::invalid_argument(e.to_string()));
        }
        self.ingest
            .consume(payload, metadata, received_at, caller)
            .await
            .map_err(|e| to_status(&e))
    }
}

#[tonic::async_trait]
impl MetricsService for Handler {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.export(request, |r| Payload::Metrics(r.resource_metrics))
            .await
            .map(|()| Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Handler {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.export(request, |r| Payload::Logs(r.resource_logs))
            .await
            .map(|()| Response::new(ExportLogsServiceResponse::default()))
    }
}
