//! OTLP/gRPC: the `TraceService`, `MetricsService` and `LogsService` Export
//! calls, gzip or zstd compressed, mapped onto the pipeline's consumers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use weft_pipeline::{ClientMetadata, ConsumeError, Counter, Payload};

use super::config::GrpcConfig;
use super::decode::validate_ids;
use super::Ingest;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `token` is cancelled; tonic then stops accepting and waits
/// for open calls (the caller bounds how long).
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    cfg: &GrpcConfig,
    ingest: Arc<Ingest>,
    token: CancellationToken,
) -> JoinHandle<()> {
    let limit = cfg.max_recv_msg_size_bytes();
    let handler = Arc::new(Handler {
        ingest: ingest.clone(),
        include_metadata: cfg.include_metadata,
    });
    let traces = TraceServiceServer::from_arc(handler.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit);
    let metrics = MetricsServiceServer::from_arc(handler.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::from_arc(handler)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit);

    let mut server = Server::builder().max_concurrent_streams(cfg.max_concurrent_streams);
    if let Some(p) = cfg
        .keepalive
        .as_ref()
        .and_then(|k| k.server_parameters.as_ref())
    {
        server = server
            .http2_keepalive_interval(p.time)
            .http2_keepalive_timeout(p.timeout);
        if let Some(age) = p.max_connection_age {
            server = server.max_connection_age(age);
        }
        if let Some(grace) = p.max_connection_age_grace {
            server = server.max_connection_age_grace(grace);
        }
    }
    let router = server
        .layer(CountRejectsLayer {
            bad_requests: ingest.metrics.bad_requests.clone(),
        })
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs);

    tokio::spawn(async move {
        let signal = token.clone().cancelled_owned();
        let result = match tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            Some(cfg) => {
                let incoming = tls_incoming(listener, TlsAcceptor::from(cfg), token);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "OTLP/gRPC server stopped");
        }
    })
}

/// Accepted TLS connections, handshaken concurrently so one slow client
/// cannot hold up the others. Ends, dropping the listener, on cancellation.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    token: CancellationToken,
) -> impl futures_util::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsStream<TcpStream>>(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = token.cancelled() => break,
                _ = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!(error = %e, "OTLP/gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(tls).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
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
        if let Some(reached) = req.extensions().get::<Reached>() {
            reached.0.store(true, Ordering::Relaxed);
        }
        let metadata = self.include_metadata.then(|| client_metadata(&req));
        let payload = into(req.into_inner());
        if let Err(e) = validate_ids(&payload) {
            self.ingest.bad_request(&e);
            return Err(Status::invalid_argument(e.to_string()));
        }
        self.ingest
            .consume(payload, metadata, received_at)
            .await
            .map_err(|e| to_status(&e))
    }
}

fn client_metadata<T>(req: &Request<T>) -> ClientMetadata {
    ClientMetadata {
        peer: req.remote_addr().map(|a| a.to_string()),
        headers: req
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    }
}

/// Retryable refusals are UNAVAILABLE (with RetryInfo when the delay is
/// known), permanent ones INVALID_ARGUMENT, as the collector answers.
fn to_status(e: &ConsumeError) -> Status {
    match e {
        ConsumeError::Retryable {
            message,
            retry_after: Some(after),
        } => Status::with_error_details(
            Code::Unavailable,
            message.clone(),
            ErrorDetails::with_retry_info(Some(*after)),
        ),
        ConsumeError::Retryable { message, .. } => Status::unavailable(message.clone()),
        ConsumeError::Permanent(message) => Status::invalid_argument(message.clone()),
        ConsumeError::NoPipeline(_) => Status::unimplemented(e.to_string()),
    }
}

#[tonic::async_trait]
impl TraceService for Handler {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.export(request, |r| Payload::Traces(r.resource_spans))
            .await
            .map(|()| Response::new(ExportTraceServiceResponse::default()))
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

/// Set by a handler once tonic has decoded the request and called it.
#[derive(Clone)]
struct Reached(Arc<AtomicBool>);

/// Counts calls tonic rejects before any handler runs (undecodable or
/// oversized messages, unknown compression, unknown methods): an error
/// status on a call that never reached a handler.
#[derive(Clone)]
struct CountRejectsLayer {
    bad_requests: Counter,
}

impl<S> tower::Layer<S> for CountRejectsLayer {
    type Service = CountRejects<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRejects {
            inner,
            bad_requests: self.bad_requests.clone(),
        }
    }
}

#[derive(Clone)]
struct CountRejects<S> {
    inner: S,
    bad_requests: Counter,
}

impl<S, B, RB> tower::Service<http::Request<B>> for CountRejects<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let reached = Arc::new(AtomicBool::new(false));
        req.extensions_mut().insert(Reached(reached.clone()));
        let path = req.uri().path().to_string();
        let fut = self.inner.call(req);
        let bad_requests = self.bad_requests.clone();
        Box::pin(async move {
            let resp = fut.await?;
            if !reached.load(Ordering::Relaxed) {
                // A call that fails before its handler is answered
                // trailers-only, so the status is in the headers.
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok());
                if let Some(code) = code.filter(|&c| c != 0) {
                    bad_requests.inc();
                    let message = resp
                        .headers()
                        .get("grpc-message")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .unwrap_or_default();
                    tracing::debug!(path, code, message, "rejected OTLP/gRPC call");
                }
            }
            Ok(resp)
        })
    }
}
