//! The HTTP/1.1 and HTTP/2 server loop every HTTP receiver runs: accept,
//! optional TLS, one task per connection, and a graceful stop that frees the
//! port at once while requests already read finish.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, ORIGIN};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::cors::{Cors, CorsConfig};
use super::guard::Guard;

/// Response bodies are always complete buffers.
pub(crate) type Body = Full<Bytes>;

/// A TLS client gets this long to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings from the collector's `confighttp` keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerOptions {
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// HTTP/1.1 keep-alive.
    pub keep_alive: bool,
}

/// Accepts connections until `token` is cancelled, then lets open requests
/// finish (the caller bounds how long). `name` labels log lines. A request
/// `guard` refuses is answered 401 without reaching `handler`.
pub(crate) fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    options: ServerOptions,
    guard: Guard,
    handler: H,
    token: CancellationToken,
) -> JoinHandle<()>
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(options.keep_alive);
    let acceptor = tls.map(TlsAcceptor::from);

    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::debug!(server = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let check = guard.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                // Browsers send CORS preflights without credentials: they are
                // answered (or refused) by the CORS rules, not the authenticator.
                let refused = if Cors::is_preflight(&req) {
                    None
                } else {
                    check.check(req.headers()).err()
                };
                let response = refused.is_none().then(|| handler(peer, req));
                async move {
                    Ok::<_, Infallible>(match (response, refused) {
                        (Some(r), _) => r.await,
                        (None, reason) => unauthorized(reason),
                    })
                }
            });
            let guard = guard.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let result = match acceptor {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn).await
                    }
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(
                            TLS_HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                guard.tls_failed();
                                tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                guard.tls_failed();
                                tracing::debug!(server = name, %peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        watcher.watch(conn).await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
                }
            });
        }
        // Stop listening first: the port is free while old requests drain.
        drop(listener);
        graceful.shutdown().await;
    })
}

/// The answer to a request the authenticator refused.
fn unauthorized(reason: Option<weft_pipeline::auth::AuthError>) -> Response<Body> {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        format!(
            "Unauthorized: {}\n",
            reason.map_or_else(|| "not authenticated".to_string(), |e| e.to_string())
        ),
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    r
}

/// Why a request body could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The body passed the limit; reading stopped there.
    TooLarge,
    /// The connection failed while the body was read.
    Io(hyper::Error),
}

/// Reads the body, giving up as soon as it passes `limit` bytes.
pub(crate) async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Io)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A plain-text response.
pub(crate) fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What wraps every answer of a server: CORS and the configured
/// `response_headers`.
pub(crate) struct Decorations {
    cors: Option<Cors>,
    response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Decorations {
    /// Headers that do not parse are skipped; config validation reports them.
    pub(crate) fn new(
        cors: Option<&CorsConfig>,
        response_headers: &BTreeMap<String, String>,
    ) -> Decorations {
        Decorations {
            cors: cors.and_then(Cors::new),
            response_headers: response_headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
        }
    }

    /// Answers CORS preflights itself; hands every other request to `route`
    /// and decorates its answer.
    pub(crate) async fn handle<F, Fut>(&self, req: Request<Incoming>, route: F) -> Response<Body>
    where
        F: FnOnce(Request<Incoming>) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let origin = req.headers().get(ORIGIN).cloned();
        let mut resp = match (&self.cors, &origin) {
            (Some(cors), Some(origin)) if Cors::is_preflight(&req) => cors.preflight(origin, &req),
            _ => {
                let mut resp = route(req).await;
                if let (Some(cors), Some(origin)) = (&self.cors, &origin) {
                    cors.decorate(origin, &mut resp);
                }
                resp
            }
        };
        for (k, v) in &self.response_headers {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
        resp
    }
}
