//! `protocols.grpc`: `jaeger.api_v2.CollectorService/PostSpans`, gzip or
//! zstd compressed, on the shared tonic server.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use weft_jaeger::grpc::{CollectorService, CollectorServiceServer};
use weft_jaeger::proto::{PostSpansRequest, PostSpansResponse};
use weft_pipeline::Payload;

use super::decode::translate_post_spans;
use crate::common::grpc::{self, client_metadata, mark_reached, to_status};
use crate::common::ingest::Ingest;
use crate::otlp::config::GrpcConfig;

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
    let service = CollectorServiceServer::new(Handler {
        ingest: ingest.clone(),
        include_metadata: cfg.include_metadata,
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Zstd)
    .max_decoding_message_size(cfg.max_recv_msg_size_bytes());
    let router =
        grpc::server(cfg, ingest.metrics.bad_requests.clone(), guard.clone()).add_service(service);
    grpc::spawn("Jaeger gRPC", router, listener, tls, guard, token)
}

struct Handler {
    ingest: Arc<Ingest>,
    include_metadata: bool,
}

#[tonic::async_trait]
impl CollectorService for Handler {
    async fn post_spans(
        &self,
        req: Request<PostSpansRequest>,
    ) -> Result<Response<PostSpansResponse>, Status> {
        let received_at = Instant::now();
        mark_reached(&req);
        let metadata = self.include_metadata.then(|| client_metadata(&req));
        let caller = self.ingest.caller_grpc(req.metadata());
        let resource_spans = translate_post_spans(req.into_inner()).map_err(|e| {
            self.ingest.bad_request(&e);
            Status::invalid_argument(e.to_string())
        })?;
        self.ingest
            .consume(
                Payload::Traces(resource_spans),
                metadata,
                received_at,
                caller,
            )
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(PostSpansResponse {}))
    }
}
