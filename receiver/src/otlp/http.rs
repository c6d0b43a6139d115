//! OTLP/HTTP: `POST` protobuf or JSON to the per-signal paths, answered in
//! the request's own content type, with the collector's status codes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN,
    RETRY_AFTER, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{ClientMetadata, ConsumeError, Signal};

use super::config::{CorsConfig, HttpConfig};
use super::decode::{decode_request, DecodeError, Encoding, Format};
use super::Ingest;

/// Bodies at least this large are decoded on the blocking pool, so a 20 MiB
/// JSON export does not stall other connections on the same worker.
const BLOCKING_DECODE_THRESHOLD: usize = 64 * 1024;
/// A TLS client gets this long to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The collector's default `read_header_timeout`.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

type Body = Full<Bytes>;

/// google.rpc.Status, the body of every OTLP error response.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC codes used in error bodies.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_UNIMPLEMENTED: i32 = 12;
const CODE_UNAVAILABLE: i32 = 14;

struct State {
    ingest: Arc<Ingest>,
    routes: [(String, Signal); 3],
    limit: usize,
    include_metadata: bool,
    /// Encodings allowed by `compression_algorithms` (None: all weft decodes).
    encodings: Option<Vec<String>>,
    cors: Option<Cors>,
    response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl State {
    fn signal_for(&self, path: &str) -> Option<Signal> {
        self.routes.iter().find(|(p, _)| p == path).map(|(_, s)| *s)
    }
}

/// Accepts connections until `token` is cancelled, then lets open requests
/// finish (the caller bounds how long).
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    cfg: &HttpConfig,
    ingest: Arc<Ingest>,
    token: CancellationToken,
) -> JoinHandle<()> {
    let state = Arc::new(State {
        ingest,
        routes: [
            (cfg.traces_url_path.clone(), Signal::Traces),
            (cfg.metrics_url_path.clone(), Signal::Metrics),
            (cfg.logs_url_path.clone(), Signal::Logs),
        ],
        limit: cfg.max_request_body_bytes(),
        include_metadata: cfg.include_metadata,
        encodings: cfg.compression_algorithms.clone(),
        cors: cfg.cors.as_ref().and_then(Cors::new),
        // validate() checked these parse.
        response_headers: cfg
            .response_headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect(),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(
            cfg.read_header_timeout
                .unwrap_or(DEFAULT_READ_HEADER_TIMEOUT),
        )
        .keep_alive(cfg.keepalives_enabled.unwrap_or(true));
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
                        tracing::debug!(error = %e, "OTLP/HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, peer, req).await) }
            });
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
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        watcher.watch(conn).await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "OTLP/HTTP connection ended with an error");
                }
            });
        }
        // Stop listening first: the port is free while old requests drain.
        drop(listener);
        graceful.shutdown().await;
    })
}

/// One request, start to finish; also adds CORS and configured headers.
async fn handle(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let origin = req.headers().get(ORIGIN).cloned();
    let mut resp = match (&state.cors, &origin) {
        (Some(cors), Some(origin)) if Cors::is_preflight(&req) => cors.preflight(origin, &req),
        _ => {
            let mut resp = route(state, peer, req).await;
            if let (Some(cors), Some(origin)) = (&state.cors, &origin) {
                cors.decorate(origin, &mut resp);
            }
            resp
        }
    };
    for (k, v) in &state.response_headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

async fn route(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let received_at = Instant::now();
    let Some(signal) = state.signal_for(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let ingest = &state.ingest;
    if req.method() != Method::POST {
        ingest.bad_request(&format_args!("{} {}", req.method(), req.uri().path()));
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed, supported: [POST]",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let content_type = header_str(&req, &CONTENT_TYPE).unwrap_or_default();
    let Some(format) = Format::from_content_type(&content_type) else {
        ingest.bad_request(&format_args!("unsupported content type {content_type:?}"));
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 unsupported media type, supported: [application/json, application/x-protobuf]",
        );
    };
    let content_encoding = header_str(&req, &CONTENT_ENCODING);
    if let Some(enc) = &content_encoding {
        let allowed = match Encoding::parse(enc) {
            None => false,
            Some(Encoding::Identity) => true,
            Some(e) => state
                .encodings
                .as_ref()
                .is_none_or(|list| list.iter().any(|a| a == e.config_name())),
        };
        if !allowed {
            let e = DecodeError::UnsupportedEncoding(enc.clone());
            ingest.bad_request(&e);
            return status(
                format,
                StatusCode::BAD_REQUEST,
                CODE_INVALID_ARGUMENT,
                &e.to_string(),
            );
        }
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.limit as u64) {
        return too_large(state, format);
    }

    let metadata = state.include_metadata.then(|| ClientMetadata {
        peer: Some(peer.to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });

    let body = match read_body(req.into_body(), state.limit).await {
        Ok(b) => b,
        Err(ReadError::TooLarge) => return too_large(state, format),
        Err(ReadError::Io(e)) => {
            ingest.bad_request(&format_args!("cannot read the request body: {e}"));
            return status(
                format,
                StatusCode::BAD_REQUEST,
                CODE_INVALID_ARGUMENT,
                &format!("cannot read the request body: {e}"),
            );
        }
    };

    let limit = state.limit;
    let decoded = if body.len() >= BLOCKING_DECODE_THRESHOLD {
        let ct = content_type.clone();
        let ce = content_encoding.clone();
        tokio::task::spawn_blocking(move || {
            decode_request(signal, &ct, ce.as_deref(), &body, limit)
        })
        .await
        .unwrap_or_else(|e| Err(DecodeError::Protobuf(format!("decoder failed: {e}"))))
    } else {
        decode_request(
            signal,
            &content_type,
            content_encoding.as_deref(),
            &body,
            limit,
        )
    };
    let payload = match decoded {
        Ok(p) => p,
        Err(e) => {
            ingest.bad_request(&e);
            let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return status(format, code, CODE_INVALID_ARGUMENT, &e.to_string());
        }
    };

    match ingest.consume(payload, metadata, received_at).await {
        Ok(()) => success(format),
        Err(e) => refusal(format, &e),
    }
}

fn header_str(req: &Request<Incoming>, name: &HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

enum ReadError {
    TooLarge,
    Io(hyper::Error),
}

/// Reads the body, giving up as soon as it passes `limit` bytes.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, ReadError> {
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

fn too_large(state: &State, format: Format) -> Response<Body> {
    let e = DecodeError::TooLarge { limit: state.limit };
    state.ingest.bad_request(&e);
    status(
        format,
        StatusCode::PAYLOAD_TOO_LARGE,
        CODE_INVALID_ARGUMENT,
        &e.to_string(),
    )
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn with_body(format: Format, code: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

/// 200 with an empty Export*ServiceResponse: no partial success to report.
fn success(format: Format) -> Response<Body> {
    let body = match format {
        Format::Protobuf => Bytes::new(),
        Format::Json => Bytes::from_static(b"{}"),
    };
    with_body(format, StatusCode::OK, body)
}

/// An error answer carrying a google.rpc.Status in the request's encoding.
fn status(format: Format, http: StatusCode, code: i32, message: &str) -> Response<Body> {
    let body = match format {
        Format::Protobuf => Bytes::from(
            RpcStatus {
                code,
                message: message.to_string(),
            }
            .encode_to_vec(),
        ),
        Format::Json => {
            Bytes::from(serde_json::json!({ "code": code, "message": message }).to_string())
        }
    };
    with_body(format, http, body)
}

fn refusal(format: Format, e: &ConsumeError) -> Response<Body> {
    let msg = e.to_string();
    match e {
        ConsumeError::Retryable { retry_after, .. } => {
            let mut resp = status(
                format,
                StatusCode::SERVICE_UNAVAILABLE,
                CODE_UNAVAILABLE,
                &msg,
            );
            if let Some(after) = retry_after {
                // Whole seconds, rounded up: "0" would invite an immediate retry.
                let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            resp
        }
        ConsumeError::Permanent(_) => {
            status(format, StatusCode::BAD_REQUEST, CODE_INVALID_ARGUMENT, &msg)
        }
        ConsumeError::NoPipeline(_) => {
            status(format, StatusCode::NOT_FOUND, CODE_UNIMPLEMENTED, &msg)
        }
    }
}

/// CORS as the collector configures it (rs/cors with credentials allowed):
/// allowed origins are echoed back, preflights answered 204.
struct Cors {
    origins: Vec<String>,
    any_origin: bool,
    headers: Vec<String>,
    any_header: bool,
    max_age: Option<u64>,
}

impl Cors {
    /// None when no origin is allowed: CORS is then off, as in the collector.
    fn new(cfg: &CorsConfig) -> Option<Cors> {
        if cfg.allowed_origins.is_empty() {
            return None;
        }
        // As the collector documents: these are always allowed, and
        // X-Requested-With when no list is configured.
        let mut headers: Vec<String> = [
            "accept",
            "accept-language",
            "content-type",
            "content-language",
            "origin",
        ]
        .map(String::from)
        .to_vec();
        if cfg.allowed_headers.is_empty() {
            headers.push("x-requested-with".into());
        }
        headers.extend(cfg.allowed_headers.iter().map(|h| h.to_ascii_lowercase()));
        Some(Cors {
            any_origin: cfg.allowed_origins.iter().any(|o| o == "*"),
            origins: cfg
                .allowed_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            any_header: headers.iter().any(|h| h == "*"),
            headers,
            max_age: cfg.max_age.filter(|&a| a > 0),
        })
    }

    fn is_preflight<B>(req: &Request<B>) -> bool {
        req.method() == Method::OPTIONS
            && req.headers().contains_key("access-control-request-method")
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        if self.any_origin {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.to_ascii_lowercase();
        self.origins
            .iter()
            .any(|pattern| match pattern.split_once('*') {
                None => *pattern == origin,
                Some((prefix, suffix)) => {
                    origin.len() >= prefix.len() + suffix.len()
                        && origin.starts_with(prefix)
                        && origin.ends_with(suffix)
                }
            })
    }

    fn preflight<B>(&self, origin: &HeaderValue, req: &Request<B>) -> Response<Body> {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.append(VARY, HeaderValue::from_static("Origin"));
        h.append(
            VARY,
            HeaderValue::from_static("Access-Control-Request-Method"),
        );
        h.append(
            VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
        if !self.origin_allowed(origin) {
            return resp;
        }
        let method = req
            .headers()
            .get("access-control-request-method")
            .and_then(|m| m.to_str().ok())
            .map(|m| m.to_ascii_uppercase())
            .unwrap_or_default();
        if !matches!(method.as_str(), "GET" | "POST" | "HEAD") {
            return resp;
        }
        let requested = req
            .headers()
            .get("access-control-request-headers")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let all_allowed = self.any_header
            || requested
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .all(|s| self.headers.contains(&s));
        if !all_allowed {
            return resp;
        }
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", origin.clone());
        if let Ok(m) = HeaderValue::from_str(&method) {
            h.insert("access-control-allow-methods", m);
        }
        if !requested.trim().is_empty() {
            if let Ok(v) = HeaderValue::from_str(requested) {
                h.insert("access-control-allow-headers", v);
            }
        }
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        if let Some(age) = self.max_age {
            h.insert("access-control-max-age", HeaderValue::from(age));
        }
        resp
    }

    fn decorate(&self, origin: &HeaderValue, resp: &mut Response<Body>) {
        let h = resp.headers_mut();
        h.append(VARY, HeaderValue::from_static("Origin"));
        if self.origin_allowed(origin) {
            h.insert("access-control-allow-origin", origin.clone());
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }
}
