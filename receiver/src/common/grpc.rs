//! What the gRPC receivers share: a tonic server built from the collector's
//! `configgrpc` keys, TLS accepted off the serving task, counting of calls
//! tonic rejects before a handler runs, and the mapping of pipeline
//! refusals to gRPC status codes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::Server;
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::layer::util::{Identity, Stack};
use weft_pipeline::{ClientMetadata, ConsumeError, Counter};

use super::guard::Guard;
use crate::otlp::config::GrpcConfig;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server type every gRPC receiver builds: tonic with the reject counter.
pub(crate) type GrpcServer = Server<Stack<CountRejectsLayer, Identity>>;
/// A [`GrpcServer`] with its services added.
pub(crate) type GrpcRouter = Router<Stack<CountRejectsLayer, Identity>>;

/// A tonic server with the connection settings of `cfg` (streams,
/// keepalive, connection age) that counts rejected calls in `bad_requests`.
pub(crate) fn server(cfg: &GrpcConfig, bad_requests: Counter, guard: Guard) -> GrpcServer {
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
    server.layer(CountRejectsLayer {
        bad_requests,
        guard,
    })
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `token` is
/// cancelled; tonic then stops accepting and waits for open calls (the
/// caller bounds how long). `name` labels the log line of a failure.
pub(crate) fn spawn(
    name: &'static str,
    router: GrpcRouter,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    guard: Guard,
    token: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let signal = token.clone().cancelled_owned();
        let result = match tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            Some(cfg) => {
                let incoming = tls_incoming(listener, TlsAcceptor::from(cfg), guard, token);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        if let Err(e) = result {
            tracing::error!(server = name, error = %e, "gRPC server stopped");
        }
    })
}

/// Accepted TLS connections, handshaken concurrently so one slow client
/// cannot hold up the others. Ends, dropping the listener, on cancellation.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    guard: Guard,
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
                        tracing::debug!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let guard = guard.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(tls).await;
                    }
                    Ok(Err(e)) => {
                        guard.tls_failed();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        guard.tls_failed();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
}

/// Handlers call this first: a call that reached its handler is not
/// counted as rejected, whatever it answers.
pub(crate) fn mark_reached<T>(req: &Request<T>) {
    if let Some(reached) = req.extensions().get::<Reached>() {
        reached.0.store(true, Ordering::Relaxed);
    }
}

/// The peer address and request metadata, for `include_metadata`.
pub(crate) fn client_metadata<T>(req: &Request<T>) -> ClientMetadata {
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
pub(crate) fn to_status(e: &ConsumeError) -> Status {
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

/// Set by a handler once tonic has decoded the request and called it.
#[derive(Clone)]
struct Reached(Arc<AtomicBool>);

/// tonic answers a message over `max_recv_msg_size_mib` with OUT_OF_RANGE,
/// which OTLP clients treat as retryable: they would resend a message that can
/// never fit. The collector answers RESOURCE_EXHAUSTED without RetryInfo, which
/// clients treat as permanent; say the same.
fn too_large_is_resource_exhausted<RB>(resp: &mut http::Response<RB>) {
    let headers = resp.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        // grpc-message is percent-encoded on the wire.
        .is_some_and(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .replace("%20", " ")
                .contains("message length too large")
        });
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

/// Counts calls tonic rejects before any handler runs (undecodable or
/// oversized messages, unknown compression, unknown methods): an error
/// status on a call that never reached a handler.
#[derive(Clone)]
pub(crate) struct CountRejectsLayer {
    bad_requests: Counter,
    guard: Guard,
}

impl<S> tower::Layer<S> for CountRejectsLayer {
    type Service = CountRejects<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRejects {
            inner,
            bad_requests: self.bad_requests.clone(),
            guard: self.guard.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct CountRejects<S> {
    inner: S,
    bad_requests: Counter,
    guard: Guard,
}

impl<S, B, RB> tower::Service<http::Request<B>> for CountRejects<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Err(e) = self.guard.check(req.headers()) {
            let resp = Status::unauthenticated(e.to_string()).into_http();
            return Box::pin(async move { Ok(resp) });
        }
        let reached = Arc::new(AtomicBool::new(false));
        req.extensions_mut().insert(Reached(reached.clone()));
        let path = req.uri().path().to_string();
        let fut = self.inner.call(req);
        let bad_requests = self.bad_requests.clone();
        Box::pin(async move {
            let mut resp = fut.await?;
            if !reached.load(Ordering::Relaxed) {
                too_large_is_resource_exhausted(&mut resp);
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
                    tracing::debug!(path, code, message, "rejected gRPC call");
                }
            }
            Ok(resp)
        })
    }
}
