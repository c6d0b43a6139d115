//! The `datadog` receiver: the Datadog Agent's trace API (`localhost:8126`)
//! for Datadog tracing libraries, as the collector's `datadogreceiver`.
//!
//! Tracers send `/v0.3`, `/v0.4`, `/v0.5` or `/v0.7` trace payloads and poll
//! `/info`; spans are translated to OTLP (see `translate`) and handed to the
//! traces pipeline.

pub mod config;
pub mod decode;
pub mod translate;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{
    parse_config, ClientMetadata, ComponentError, ComponentId, ConfigFieldError, ConsumeError,
    Lifecycle, Payload, Receiver, ReceiverFactory, ReceiverOutputs, Settings, Signal,
};

use crate::common::http::{read_body, serve, text, Body, Decorations, ReadError, ServerOptions};
use crate::common::ingest::Ingest;
use crate::common::running::Running;
use crate::common::{net, tls};
use crate::otlp::decode::{decompress, DecodeError as BodyError, Encoding};

pub use config::DatadogReceiverConfig;
pub use decode::{decode_payload, ApiVersion, DdPayload, DecodeError};
pub use translate::{TraceIdCache, TracerHeaders};

/// Bodies at least this large are decoded on the blocking pool.
const BLOCKING_DECODE_THRESHOLD: usize = 64 * 1024;
/// The answer to v0.4 and later: the Agent's shape, with no per-service
/// rates, so tracers keep sampling by their own rules.
const RATES_RESPONSE: &str = r#"{"rate_by_service":{}}"#;

/// Registers `datadog` in the registry.
pub struct DatadogReceiverFactory;

impl ReceiverFactory for DatadogReceiverFactory {
    fn type_name(&self) -> &'static str {
        "datadog"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn check_config(&self, raw: &serde_yaml_ng::Value) -> Result<(), ConfigFieldError> {
        parse_config::<DatadogReceiverConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &serde_yaml_ng::Value,
        outputs: ReceiverOutputs,
    ) -> Result<Arc<dyn Receiver>, ComponentError> {
        let config = parse_config::<DatadogReceiverConfig>(raw)
            .map_err(|e| ComponentError::new(format!("{}: {}", settings.id, e.message)))?;
        Ok(Arc::new(DatadogReceiver::new(&settings, config, outputs)))
    }
}

/// One `datadog` receiver instance.
pub struct DatadogReceiver {
    id: ComponentId,
    config: DatadogReceiverConfig,
    ingest: Arc<Ingest>,
    /// Shared by every request, kept across restarts of the same instance.
    trace_ids: Arc<StdMutex<TraceIdCache>>,
    running: Mutex<Option<Running>>,
    bound: StdMutex<Option<SocketAddr>>,
}

impl DatadogReceiver {
    pub fn new(
        settings: &Settings,
        config: DatadogReceiverConfig,
        outputs: ReceiverOutputs,
    ) -> DatadogReceiver {
        DatadogReceiver {
            id: settings.id.clone(),
            ingest: Ingest::new(settings, "http", outputs),
            trace_ids: Arc::new(StdMutex::new(TraceIdCache::new(config.trace_id_cache_size))),
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
impl Lifecycle for DatadogReceiver {
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
            trace_ids: self.trace_ids.clone(),
            limit: cfg.max_request_body_bytes(),
            read_timeout: cfg.read_timeout,
            include_metadata: cfg.include_metadata,
            encodings: cfg.compression_algorithms.clone(),
            decorations: Decorations::new(cfg.cors.as_ref(), &cfg.response_headers),
            info: Bytes::from(info_body()),
        });
        let options = ServerOptions {
            header_read_timeout: cfg.header_read_timeout(),
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
            "Datadog",
            listener,
            tls,
            options,
            guard,
            handler,
            token.clone(),
        );
        tracing::info!(receiver = %self.id, endpoint = %crate::common::net::shown(addr), "Datadog trace API listening");
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

impl Receiver for DatadogReceiver {}

/// The `/info` answer: only what this receiver implements, so tracers do
/// not compute stats or drop unsampled traces for an Agent that is not there.
pub fn info_body() -> String {
    let endpoints: Vec<&str> = ApiVersion::ALL.iter().map(|v| v.path()).collect();
    serde_json::json!({
        "version": format!("weft-{}", env!("CARGO_PKG_VERSION")),
        "endpoints": endpoints,
        "client_drop_p0s": false,
        "span_meta_structs": false,
        "long_running_spans": false,
        "span_events": false,
    })
    .to_string()
}

struct State {
    ingest: Arc<Ingest>,
    trace_ids: Arc<StdMutex<TraceIdCache>>,
    limit: usize,
    read_timeout: Duration,
    include_metadata: bool,
    /// Encodings allowed by `compression_algorithms` (None: all weft decodes).
    encodings: Option<Vec<String>>,
    decorations: Decorations,
    info: Bytes,
}

async fn route(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/" => text(StatusCode::OK, Bytes::new()),
        "/info" => json(StatusCode::OK, state.info.clone()),
        path => match ApiVersion::from_path(path) {
            Some(version) => traces(state, version, peer, req).await,
            None => text(StatusCode::NOT_FOUND, "404 page not found\n"),
        },
    }
}

fn json(code: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// A rejected request, counted and answered as text.
fn reject(state: &State, code: StatusCode, why: String) -> Response<Body> {
    state.ingest.bad_request(&why);
    text(code, format!("{why}\n"))
}

async fn traces(
    state: &State,
    version: ApiVersion,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let received_at = Instant::now();
    if req.method() != Method::PUT && req.method() != Method::POST {
        let mut resp = reject(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed, use PUT or POST", req.method()),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
        return resp;
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.limit as u64) {
        return too_large(state);
    }
    let encoding = match header(&req, CONTENT_ENCODING.as_str()) {
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
    let content_type = header(&req, CONTENT_TYPE.as_str()).unwrap_or_default();
    let tracer = TracerHeaders {
        lang: header(&req, "datadog-meta-lang"),
        lang_version: header(&req, "datadog-meta-lang-version"),
        tracer_version: header(&req, "datadog-meta-tracer-version"),
        container_id: header(&req, "datadog-container-id"),
    };
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

    let body =
        match tokio::time::timeout(state.read_timeout, read_body(req.into_body(), state.limit))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(ReadError::TooLarge)) => return too_large(state),
            Ok(Err(ReadError::Io(e))) => {
                return reject(
                    state,
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            }
            Err(_) => {
                return reject(
                    state,
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within read_timeout ({}s)",
                        state.read_timeout.as_secs_f64()
                    ),
                )
            }
        };
    if body.is_empty() {
        // Some tracers probe an endpoint with an empty body; like the
        // collector, answer with a non-404 error and count nothing.
        return text(
            StatusCode::BAD_REQUEST,
            "empty payload: nothing to decode\n",
        );
    }

    let limit = state.limit;
    let offload = body.len() >= BLOCKING_DECODE_THRESHOLD;
    let cache = state.trace_ids.clone();
    let work = move || {
        process(
            version,
            &content_type,
            encoding,
            &body,
            limit,
            &tracer,
            &cache,
        )
    };
    let result = if offload {
        tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
            Err(Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoder failed: {e}"),
            ))
        })
    } else {
        work()
    };
    let resource_spans = match result {
        Ok(rs) => rs,
        Err(r) => return reject(state, r.code, r.message),
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
        Ok(()) => match version {
            ApiVersion::V03 => text(StatusCode::OK, "OK"),
            _ => json(
                StatusCode::OK,
                Bytes::from_static(RATES_RESPONSE.as_bytes()),
            ),
        },
        Err(e) => refusal(&e),
    }
}

/// A request refused before reaching the pipeline.
struct Rejection {
    code: StatusCode,
    message: String,
}

impl Rejection {
    fn new(code: StatusCode, message: String) -> Rejection {
        Rejection { code, message }
    }
}

/// Decompress, decode and translate one body. Pure apart from the trace-id
/// cache.
fn process(
    version: ApiVersion,
    content_type: &str,
    encoding: Encoding,
    body: &[u8],
    limit: usize,
    tracer: &TracerHeaders,
    cache: &StdMutex<TraceIdCache>,
) -> Result<Vec<ResourceSpans>, Rejection> {
    let plain = decompress(encoding, body, limit).map_err(|e| match e {
        BodyError::TooLarge { limit } => Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        ),
        other => Rejection::new(StatusCode::BAD_REQUEST, other.to_string()),
    })?;
    let payload = decode_payload(version, content_type, &plain).map_err(|e| {
        Rejection::new(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            format!("cannot decode the {version} payload: {e}"),
        )
    })?;
    let highs = {
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        translate::resolve_trace_id_highs(&payload, &mut cache)
    };
    Ok(translate::translate(&payload, tracer, &highs))
}

fn too_large(state: &State) -> Response<Body> {
    reject(
        state,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {} bytes", state.limit),
    )
}

/// The pipeline's refusal: retryable is 503, or 429 with Retry-After when a delay is known;
/// permanent 400.
fn refusal(e: &ConsumeError) -> Response<Body> {
    let msg = format!("{e}\n");
    match e {
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
        ConsumeError::Permanent(_) => text(StatusCode::BAD_REQUEST, msg),
        // Not a version problem: a 404 would make tracers downgrade the API.
        ConsumeError::NoPipeline(_) => text(StatusCode::SERVICE_UNAVAILABLE, msg),
    }
}
