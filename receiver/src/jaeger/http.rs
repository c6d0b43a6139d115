//! `protocols.thrift_http`: `POST /api/traces` with a binary-Thrift
//! `jaeger.Batch` body, answered as the collector answers (202 Accepted,
//! 400 for a body or content type it cannot read).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{
    HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{ClientMetadata, ConsumeError, Payload};

use super::config::ThriftHttpConfig;
use super::decode::decode_thrift_http_body;
use crate::common::http::{read_body, serve, text, Body, Decorations, ReadError, ServerOptions};
use crate::common::ingest::Ingest;
use crate::otlp::decode::{decompress, DecodeError as BodyError, Encoding};

/// The one path, as Jaeger collectors serve it.
pub const PATH: &str = "/api/traces";
/// Bodies at least this large are decoded on the blocking pool.
const BLOCKING_DECODE_THRESHOLD: usize = 64 * 1024;
/// The collector's default `read_header_timeout`.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Media types the collector accepts for a Thrift batch.
const THRIFT_TYPES: [&str; 2] = [
    "application/x-thrift",
    "application/vnd.apache.thrift.binary",
];

struct State {
    ingest: Arc<Ingest>,
    limit: usize,
    include_metadata: bool,
    /// Encodings allowed by `compression_algorithms` (None: all weft decodes).
    encodings: Option<Vec<String>>,
    decorations: Decorations,
}

/// Serves until `token` is cancelled, then lets open requests finish (the
/// caller bounds how long).
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    guard: crate::common::guard::Guard,
    cfg: &ThriftHttpConfig,
    ingest: Arc<Ingest>,
    token: CancellationToken,
) -> JoinHandle<()> {
    let state = Arc::new(State {
        ingest,
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
    serve(
        "Jaeger Thrift/HTTP",
        listener,
        tls,
        options,
        guard,
        handler,
        token,
    )
}

/// A rejected request, counted and answered as text.
fn reject(state: &State, code: StatusCode, why: String) -> Response<Body> {
    state.ingest.bad_request(&why);
    text(code, format!("{why}\n"))
}

fn header(req: &Request<Incoming>, name: &http::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The media type of a Content-Type value, lowercased, if it is one.
fn media_type(content_type: &str) -> Option<String> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let (kind, sub) = mime.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    (token(kind) && token(sub)).then(|| mime.to_ascii_lowercase())
}

async fn route(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let received_at = Instant::now();
    if req.uri().path() != PATH {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    if req.method() != Method::POST {
        let mut resp = reject(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed, use POST", req.method()),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let content_type = header(&req, &CONTENT_TYPE).unwrap_or_default();
    match media_type(&content_type) {
        None => {
            return reject(
                state,
                StatusCode::BAD_REQUEST,
                format!("Cannot parse content type: {content_type:?}"),
            )
        }
        Some(m) if !THRIFT_TYPES.contains(&m.as_str()) => {
            return reject(
                state,
                StatusCode::BAD_REQUEST,
                format!("Unsupported content type: {m}"),
            )
        }
        Some(_) => {}
    }
    let encoding = match header(&req, &CONTENT_ENCODING) {
        None => Encoding::Identity,
        Some(enc) => {
            let allowed = match Encoding::parse(&enc) {
                None => None,
                Some(Encoding::Identity) => Some(Encoding::Identity),
                Some(e) => state
                    .encodings
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|a| a == e.config_name()))
                    .then_some(e),
            };
            match allowed {
                Some(e) => e,
                None => {
                    return reject(
                        state,
                        StatusCode::BAD_REQUEST,
                        format!("unsupported Content-Encoding: {enc}"),
                    )
                }
            }
        }
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.limit as u64) {
        return too_large(state);
    }
    let caller = state.ingest.caller_http(req.headers());
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
        Err(ReadError::TooLarge) => return too_large(state),
        Err(ReadError::Io(e)) => {
            return reject(
                state,
                StatusCode::BAD_REQUEST,
                format!("Unable to process request body: {e}"),
            )
        }
    };

    let limit = state.limit;
    let offload = body.len() >= BLOCKING_DECODE_THRESHOLD;
    let work = move || -> Result<_, (StatusCode, String)> {
        let plain = decompress(encoding, &body, limit).map_err(|e| match e {
            BodyError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes"),
            ),
            other => (StatusCode::BAD_REQUEST, other.to_string()),
        })?;
        decode_thrift_http_body(&plain).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("Unable to process request body: {e}"),
            )
        })
    };
    let decoded = if offload {
        tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoder failed: {e}"),
            ))
        })
    } else {
        work()
    };
    let resource_spans = match decoded {
        Ok(rs) => rs,
        Err((code, why)) => return reject(state, code, why),
    };
    match state
        .ingest
        .consume(
            Payload::Traces(resource_spans),
            metadata,
            received_at,
            caller,
        )
        .await
    {
        Ok(()) => text(StatusCode::ACCEPTED, ""),
        Err(e) => refusal(&e),
    }
}

fn too_large(state: &State) -> Response<Body> {
    reject(
        state,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {} bytes", state.limit),
    )
}

/// A retryable refusal is 503 (with Retry-After when the delay is known);
/// anything else is the collector's 500.
fn refusal(e: &ConsumeError) -> Response<Body> {
    match e {
        ConsumeError::Retryable { retry_after, .. } => {
            // A refusal that says when to come back is "too many requests".
            let code = match retry_after {
                Some(_) => StatusCode::TOO_MANY_REQUESTS,
                None => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut resp = text(code, format!("Cannot submit Jaeger batch: {e}\n"));
            if let Some(after) = retry_after {
                // Whole seconds, rounded up: "0" would invite an immediate retry.
                let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            resp
        }
        _ => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Cannot submit Jaeger batch: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::media_type;

    #[test]
    fn media_types_parse_like_go() {
        assert_eq!(
            media_type("application/x-thrift").as_deref(),
            Some("application/x-thrift")
        );
        assert_eq!(
            media_type("Application/X-Thrift; charset=utf-8").as_deref(),
            Some("application/x-thrift")
        );
        assert_eq!(media_type(""), None);
        assert_eq!(media_type("thrift"), None);
        assert_eq!(media_type("application/"), None);
        assert_eq!(media_type("a b/c"), None);
    }
}
