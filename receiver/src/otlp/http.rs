//! OTLP/HTTP: `POST` protobuf or JSON to the per-signal paths, answered in
//! the request's own content type, with the collector's status codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{ClientMetadata, ConsumeError, Signal};

use super::config::HttpConfig;
use super::decode::{decode_request_wire, DecodeError, Decoded, Encoding, Format};
use crate::common::http::{read_body, serve, text, Body, Decorations, ReadError, ServerOptions};
use crate::common::ingest::Ingest;

/// Bodies at least this large are decoded on the blocking pool, so a 20 MiB
/// JSON export does not stall other connections on the same worker.
const BLOCKING_DECODE_THRESHOLD: usize = 64 * 1024;
/// The collector's default `read_header_timeout`.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

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
    decorations: Decorations,
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
    guard: crate::common::guard::Guard,
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
        decorations: Decorations::new(cfg.cors.as_ref(), &cfg.response_headers),
    });
    let options = ServerOptions {
        header_read_timeout: cfg
            .read_header_timeout
            .unwrap_or(DEFAULT_READ_HEADER_TIMEOUT),
        keep_alive: cfg.keepalives_enabled.unwrap_or(true),
    };
    let handler = move |peer: SocketAddr, req: Request<Incoming>| {
        let state = state.clone();
        async move {
            state
                .decorations
                .handle(req, |req| route(&state, peer, req))
                .await
        }
    };
    serve("OTLP/HTTP", listener, tls, options, guard, handler, token)
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

    let caller = ingest.caller_http(req.headers());
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
            decode_request_wire(signal, &ct, ce.as_deref(), body, limit)
        })
        .await
        .unwrap_or_else(|e| Err(DecodeError::Protobuf(format!("decoder failed: {e}"))))
    } else {
        decode_request_wire(
            signal,
            &content_type,
            content_encoding.as_deref(),
            body,
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

    let result = match payload {
        Decoded::Payload(p) => ingest.consume(p, metadata, received_at, caller).await,
        Decoded::Traces(t) => {
            ingest
                .consume_encoded(t, metadata, received_at, caller)
                .await
        }
    };
    match result {
        Ok(()) => success(format),
        Err(e) => refusal(format, &e),
    }
}

fn header_str(req: &Request<Incoming>, name: &HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
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
            // A refusal that says when to come back is "too many requests".
            let code = match retry_after {
                Some(_) => StatusCode::TOO_MANY_REQUESTS,
                None => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut resp = status(format, code, CODE_UNAVAILABLE, &msg);
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
