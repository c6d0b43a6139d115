//! The `zipkin` receiver: Zipkin's span API on `localhost:9411`, as the
//! collector's `zipkinreceiver`. `POST /api/v2/spans` takes v2 JSON or
//! proto3, `POST /api/v1/spans` v1 JSON; accepted requests get 202.
//!
//! Bodies are decoded by [`decode_zipkin`], translated to OTLP by the
//! `weft-zipkin` crate and handed to the traces pipeline through `Ingest`,
//! which keeps the collector's receiver counters (transport `http`).

pub mod config;
pub mod decode;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use async_trait::async_trait;
use http::header::{
    HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{
    parse_config, ClientMetadata, ComponentError, ComponentId, ConfigFieldError, ConsumeError,
    Lifecycle, Receiver, ReceiverFactory, ReceiverOutputs, Settings, Signal,
};

use crate::common::http::{read_body, serve, text, Body, Decorations, ReadError, ServerOptions};
use crate::common::ingest::Ingest;
use crate::common::running::Running;
use crate::common::{net, tls};
use crate::otlp::decode::Encoding;

pub use config::ZipkinReceiverConfig;
pub use decode::{decode_zipkin, ApiVersion, DecodeError, Format};

/// Bodies at least this large are decoded on the blocking pool, so a big
/// JSON batch does not stall other connections on the same worker.
const BLOCKING_DECODE_THRESHOLD: usize = 64 * 1024;

/// Registers `zipkin` in the registry.
pub struct ZipkinReceiverFactory;

impl ReceiverFactory for ZipkinReceiverFactory {
    fn type_name(&self) -> &'static str {
        "zipkin"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn check_config(&self, raw: &serde_yaml_ng::Value) -> Result<(), ConfigFieldError> {
        parse_config::<ZipkinReceiverConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &serde_yaml_ng::Value,
        outputs: ReceiverOutputs,
    ) -> Result<Arc<dyn Receiver>, ComponentError> {
        let config = parse_config::<ZipkinReceiverConfig>(raw)
            .map_err(|e| ComponentError::new(format!("{}: {}", settings.id, e.message)))?;
        Ok(Arc::new(ZipkinReceiver::new(&settings, config, outputs)))
    }
}

/// One `zipkin` receiver instance.
pub struct ZipkinReceiver {
    id: ComponentId,
    config: ZipkinReceiverConfig,
    ingest: Arc<Ingest>,
    running: Mutex<Option<Running>>,
    bound: StdMutex<Option<SocketAddr>>,
}

impl ZipkinReceiver {
    pub fn new(
        settings: &Settings,
        config: ZipkinReceiverConfig,
        outputs: ReceiverOutputs,
    ) -> ZipkinReceiver {
        ZipkinReceiver {
            id: settings.id.clone(),
            ingest: Ingest::new(settings, "http", outputs),
            config,
            running: Mutex::new(None),
            bound: StdMutex::new(None),
        }
    }

    /// The address the server listens on, once started (the real port when
    /// the endpoint asked for port 0).
    pub fn addr(&self) -> Option<SocketAddr> {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_addr(&self, addr: Option<SocketAddr>) {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    fn error(&self, msg: impl std::fmt::Display) -> ComponentError {
        ComponentError::new(format!("{} receiver: {msg}", self.id))
    }
}

#[async_trait]
impl Lifecycle for ZipkinReceiver {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let cfg = &self.config;
        let tls = match &cfg.tls {
            Some(t) => {
                Some(tls::server_config(t, &[b"h2", b"http/1.1"]).map_err(|e| self.error(e))?)
            }
            None => None,
        };
        let guard = self
            .ingest
            .guard(cfg.auth.as_ref())
            .map_err(|e| self.error(e))?;
        let listener = net::bind(&cfg.endpoint).await.map_err(|e| self.error(e))?;
        let addr = listener.local_addr().ok();
        let state = Arc::new(State {
            ingest: self.ingest.clone(),
            limit: cfg.max_request_body_bytes(),
            include_metadata: cfg.include_metadata,
            parse_string_tags: cfg.parse_string_tags,
            encodings: cfg.compression_algorithms.clone(),
            decorations: Decorations::new(cfg.cors.as_ref(), &cfg.response_headers),
        });
        let options = ServerOptions {
            header_read_timeout: cfg
                .read_header_timeout
                .unwrap_or(config::DEFAULT_READ_HEADER_TIMEOUT),
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
        let token = CancellationToken::new();
        let task = serve(
            "Zipkin",
            listener,
            tls,
            options,
            guard,
            handler,
            token.clone(),
        );
        tracing::info!(
            receiver = %self.id,
            endpoint = %crate::common::net::shown(addr),
            "Zipkin server listening"
        );
        self.set_addr(addr);
        *running = Some(Running {
            token,
            tasks: vec![("http", task)],
        });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let Some(running) = self.running.lock().await.take() else {
            return Ok(());
        };
        self.set_addr(None);
        running.stop(&self.id).await;
        Ok(())
    }
}

impl Receiver for ZipkinReceiver {}

struct State {
    ingest: Arc<Ingest>,
    limit: usize,
    include_metadata: bool,
    parse_string_tags: bool,
    /// Encodings allowed by `compression_algorithms` (None: all weft decodes).
    encodings: Option<Vec<String>>,
    decorations: Decorations,
}

fn header(req: &Request<Incoming>, name: &http::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// A rejected request, counted and answered as text.
fn reject(state: &State, code: StatusCode, why: &dyn std::fmt::Display) -> Response<Body> {
    state.ingest.bad_request(why);
    text(code, format!("{why}\n"))
}

async fn route(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let received_at = Instant::now();
    let Some(version) = ApiVersion::from_path(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    if req.method() != Method::POST {
        let mut resp = reject(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            &format_args!("method {} not allowed, use POST", req.method()),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let content_type = header(&req, &CONTENT_TYPE).unwrap_or_default();
    if let Err(e) = Format::for_request(version, &content_type) {
        return reject(state, StatusCode::UNSUPPORTED_MEDIA_TYPE, &e);
    }
    let content_encoding = header(&req, &CONTENT_ENCODING);
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
            return reject(state, StatusCode::BAD_REQUEST, &e);
        }
    }
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
                &format_args!("cannot read the request body: {e}"),
            )
        }
    };

    let (limit, parse_string_tags) = (state.limit, state.parse_string_tags);
    let offload = body.len() >= BLOCKING_DECODE_THRESHOLD;
    let decode = move || {
        decode_zipkin(
            version,
            &content_type,
            content_encoding.as_deref(),
            &body,
            limit,
            parse_string_tags,
        )
    };
    let decoded = if offload {
        tokio::task::spawn_blocking(decode)
            .await
            .unwrap_or_else(|e| {
                Err(DecodeError::Decompress {
                    encoding: "identity",
                    message: format!("decoder failed: {e}"),
                })
            })
    } else {
        decode()
    };
    let payload = match decoded {
        Ok(p) => p,
        Err(e) => {
            let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return reject(state, code, &e);
        }
    };

    match state
        .ingest
        .consume(payload, metadata, received_at, caller)
        .await
    {
        // As Zipkin's API: accepted for processing, nothing to say.
        Ok(()) => text(StatusCode::ACCEPTED, ""),
        Err(e) => refusal(&e),
    }
}

fn too_large(state: &State) -> Response<Body> {
    let e = DecodeError::TooLarge { limit: state.limit };
    reject(state, StatusCode::PAYLOAD_TOO_LARGE, &e)
}

/// The pipeline's refusal: permanent is 400; anything else 503 (with
/// Retry-After when known), so Zipkin reporters retry.
fn refusal(e: &ConsumeError) -> Response<Body> {
    let msg = format!("{e}\n");
    match e {
        ConsumeError::Permanent(_) => text(StatusCode::BAD_REQUEST, msg),
        ConsumeError::Retryable { retry_after, .. } => {
            // A refusal that says when to come back is "too many requests".
            let code = match retry_after {
                Some(_) => StatusCode::TOO_MANY_REQUESTS,
                None => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut resp = text(code, msg);
            if let Some(after) = retry_after {
                // Whole seconds, rounded up: "0" would invite an immediate retry.
                let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            resp
        }
        ConsumeError::NoPipeline(_) => text(StatusCode::SERVICE_UNAVAILABLE, msg),
    }
}
