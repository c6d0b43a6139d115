//! The status page's JSON API (`/api/...`) and its embedded assets.
//!
//! Read only: every route answers GET (and HEAD); anything else is 405.
//! Errors are JSON `{"error": "..."}` with 400 (a bad query parameter),
//! 404 (no such trace or route).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Request;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::hub::StatusHub;
use super::tap::TraceSummary;
use crate::telemetry::{Series, Telemetry};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Most traces one list answer holds.
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
/// Most spans one trace answer holds (the page draws a row per span).
pub const MAX_TRACE_SPANS: usize = 5000;

#[derive(Clone)]
pub struct ApiState {
    pub hub: Arc<StatusHub>,
    pub telemetry: Telemetry,
    /// The host name of the configured endpoint, lower case, accepted in the
    /// `Host` header besides IP addresses and `localhost`.
    pub endpoint_host: String,
}

/// The host part of `host:port` (`[::1]:55679` gives `::1`), lower case.
pub fn endpoint_host(endpoint: &str) -> String {
    let host = match endpoint.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => endpoint,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// Whether a `Host` header may reach the page: an IP address, `localhost`, or
/// the configured endpoint's name. Any other name is how a web page from
/// elsewhere reaches a localhost service by DNS rebinding.
pub(super) fn host_allowed(host: &str, endpoint_host: &str) -> bool {
    let name = endpoint_host_of_header(host);
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || (!endpoint_host.is_empty() && name == endpoint_host)
}

fn endpoint_host_of_header(host: &str) -> String {
    let h = host.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_ascii_lowercase();
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_ascii_lowercase(),
        _ => h.to_ascii_lowercase(),
    }
    .trim_end_matches('.')
    .to_string()
}

async fn check_host(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the status page is read only: GET (or HEAD) only",
        );
    }
    if let Some(host) = req.headers().get(header::HOST) {
        let ok = host
            .to_str()
            .is_ok_and(|h| host_allowed(h, &st.endpoint_host));
        if !ok {
            return error(
                StatusCode::FORBIDDEN,
                "host name not allowed: open the page by IP address, localhost, or the \
                 endpoint's configured name",
            );
        }
    }
    next.run(req).await
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .route("/api/pipelines", get(pipelines))
        .route("/api/metrics", get(metrics))
        .route("/api/config", get(config))
        .route("/api/reloads", get(reloads))
        .route("/api/traces", get(traces))
        .route("/api/traces/{trace_id}", get(trace))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// A refused request: its status and what was wrong, answered as
/// `{"error": "..."}`.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(json!({ "error": self.message }))).into_response()
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError {
        code: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    ApiError {
        code,
        message: message.into(),
    }
    .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page or API route")
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The query parameters, refusing any not in `allowed`.
fn params(q: Params, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(map) = q.map_err(|e| bad(format!("bad query string: {}", e.body_text())))?;
    let mut unknown: Vec<&String> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        return Err(bad(format!(
            "unknown query parameter {}; this route takes {}",
            names.join(", "),
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    Ok(map)
}

fn series_json(s: &Series, skip: Option<&str>) -> Value {
    let labels: Map<String, Value> = s
        .labels
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "name": s.name,
        "type": if s.counter { "counter" } else { "gauge" },
        "labels": labels,
        "value": s.value,
    })
}

/// A component's series (those labelled with its kind and id), and their
/// totals by name.
fn component(kind: &str, id: &str, all: &[Series]) -> Value {
    let mine: Vec<&Series> = all
        .iter()
        .filter(|s| s.labels.iter().any(|(k, v)| k == kind && v == id))
        .collect();
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for s in &mine {
        let t = totals.entry(s.name.as_str()).or_default();
        *t = t.saturating_add(s.value);
    }
    json!({
        "id": id,
        "type": id.split('/').next().unwrap_or(id),
        "totals": totals,
        "series": mine.iter().map(|s| series_json(s, Some(kind))).collect::<Vec<_>>(),
    })
}

async fn pipelines(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    params(q, &[])?;
    let graph = st.hub.graph();
    let all = st.telemetry.snapshot();
    let pipelines: Vec<Value> = graph
        .pipelines
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "signal": p.signal,
                "receivers": p.receivers.iter().map(|r| component("receiver", r, &all)).collect::<Vec<_>>(),
                "processors": p.processors.iter().map(|r| component("processor", r, &all)).collect::<Vec<_>>(),
                "exporters": p.exporters.iter().map(|r| component("exporter", r, &all)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let taps: Vec<Value> = st
        .hub
        .taps()
        .iter()
        .map(|t| {
            let (spans, batches) = t.held();
            json!({
                "pipeline": t.pipeline(),
                "spans_held": spans,
                "batches_held": batches,
                "skipped_spans": t.skipped_spans(),
            })
        })
        .collect();
    Ok(Json(json!({
        "started_unix_ms": st.hub.started_unix_ms(),
        "pipelines": pipelines,
        "extensions": graph.extensions,
        "tap": {
            "on": st.hub.tap_on(),
            "max_spans_per_pipeline": st.hub.max_spans(),
            "pipelines": taps,
        },
    }))
    .into_response())
}

async fn metrics(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q, &["name"])?;
    let name = p.get("name");
    let series: Vec<Value> = st
        .telemetry
        .snapshot()
        .iter()
        .filter(|s| name.is_none_or(|n| &s.name == n))
        .map(|s| series_json(s, None))
        .collect();
    Ok(Json(json!({ "series": series })).into_response())
}

async fn config(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    params(q, &[])?;
    let (yaml, loaded) = st.hub.config();
    Ok(Json(json!({ "yaml": yaml, "loaded_unix_ms": loaded })).into_response())
}

async fn reloads(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    params(q, &[])?;
    Ok(Json(json!({ "reloads": st.hub.reloads() })).into_response())
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(format!("{name} must be true or false, got {v:?}"))),
    }
}

/// The pipeline taps a request reads: one named pipeline, or all of them.
fn chosen_taps(
    st: &ApiState,
    p: &HashMap<String, String>,
) -> Result<Vec<Arc<super::tap::TapBuffer>>, ApiError> {
    let taps = st.hub.taps();
    let Some(want) = p.get("pipeline") else {
        return Ok(taps);
    };
    let names: Vec<String> = taps.iter().map(|t| t.pipeline().to_string()).collect();
    let one: Vec<_> = taps.into_iter().filter(|t| t.pipeline() == want).collect();
    if one.is_empty() {
        return Err(bad(format!(
            "pipeline {want:?} is not a running traces pipeline (running: {})",
            names.join(", ")
        )));
    }
    Ok(one)
}

/// The indexes of `taps`, assembled off the async workers (decoding the held
/// batches may take a while).
async fn indexes(
    st: &ApiState,
    taps: Vec<Arc<super::tap::TapBuffer>>,
) -> Result<Vec<Arc<super::tap::TraceIndex>>, ApiError> {
    let hub = st.hub.clone();
    tokio::task::spawn_blocking(move || taps.iter().map(|t| t.index(&hub)).collect())
        .await
        .map_err(|e| ApiError {
            code: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("assembling the traces failed: {e}"),
        })
}

/// `GET /api/traces?service=&min_duration=&errors=&ebpf=&pipeline=&limit=`
async fn traces(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    let p = params(
        q,
        &[
            "service",
            "min_duration",
            "errors",
            "ebpf",
            "pipeline",
            "limit",
        ],
    )?;
    let min_duration = match p.get("min_duration") {
        None => Duration::ZERO,
        Some(v) => crate::config::duration::parse(v)
            .map_err(|e| bad(format!("min_duration: {e} (write it as 250ms, 1.5s, 2m)")))?,
    };
    let errors = p
        .get("errors")
        .map(|v| parse_bool("errors", v))
        .transpose()?;
    let ebpf = p.get("ebpf").map(|v| parse_bool("ebpf", v)).transpose()?;
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, got {v:?}"
                )))
            }
        },
    };
    let service = p.get("service").filter(|s| !s.is_empty());
    let taps = chosen_taps(&st, &p)?;
    let min_ns = min_duration.as_nanos().min(u64::MAX as u128) as u64;
    let mut matched: Vec<TraceSummary> = Vec::new();
    let mut services: Vec<String> = Vec::new();
    let mut total = 0usize;
    for idx in indexes(&st, taps).await? {
        total += idx.traces.len();
        for t in &idx.traces {
            services.extend(t.summary.services.iter().cloned());
            let s = &t.summary;
            if s.duration_ns < min_ns
                || errors.is_some_and(|e| s.error != e)
                || ebpf.is_some_and(|e| s.has_ebpf != e)
                || service.is_some_and(|want| !s.services.iter().any(|x| x == want))
            {
                continue;
            }
            matched.push(s.clone());
        }
    }
    // Newest first across pipelines.
    matched.sort_by(|a, b| {
        b.newest_seq
            .cmp(&a.newest_seq)
            .then(b.start_unix_nano.cmp(&a.start_unix_nano))
    });
    services.sort();
    services.dedup();
    let matching = matched.len();
    matched.truncate(limit);
    Ok(Json(json!({
        "traces": matched,
        "matching": matching,
        "held": total,
        "services": services,
    }))
    .into_response())
}

/// `GET /api/traces/{trace_id}?pipeline=`: one trace with its spans in
/// waterfall order.
async fn trace(
    State(st): State<ApiState>,
    Path(trace_id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let p = params(q, &["pipeline"])?;
    let id = trace_id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "trace id must be 32 hex digits, got {trace_id:?}"
        )));
    }
    let taps = chosen_taps(&st, &p)?;
    for idx in indexes(&st, taps).await? {
        if let Some(t) = idx.get(&id) {
            if t.spans.len() <= MAX_TRACE_SPANS {
                return Ok(Json(t).into_response());
            }
            // The first rows of the waterfall, and how many were left out.
            let mut body = serde_json::to_value(&t.summary).unwrap_or_default();
            if let Some(m) = body.as_object_mut() {
                m.insert(
                    "spans".into(),
                    serde_json::to_value(&t.spans[..MAX_TRACE_SPANS]).unwrap_or_default(),
                );
                m.insert(
                    "spans_left_out".into(),
                    json!(t.spans.len() - MAX_TRACE_SPANS),
                );
            }
            return Ok(Json(body).into_response());
        }
    }
    Err(ApiError {
        code: StatusCode::NOT_FOUND,
        message: format!(
            "trace {id} is not among the traces held (it may have been pushed out of the tap)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Batch, Payload};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[tokio::test]
    async fn a_huge_trace_answers_its_first_spans_and_how_many_were_left_out() {
        let hub = Arc::new(StatusHub::default());
        hub.open_tap(20_000);
        hub.set_graph(super::super::GraphView {
            pipelines: vec![super::super::PipelineView {
                id: "traces".into(),
                signal: "traces".into(),
                receivers: vec![],
                processors: vec![],
                exporters: vec![],
            }],
            extensions: vec![],
        });
        let n = MAX_TRACE_SPANS + 7;
        let spans: Vec<Span> = (0..n as u64)
            .map(|i| Span {
                trace_id: vec![0xab; 16],
                span_id: (i + 1).to_be_bytes().to_vec(),
                parent_span_id: if i == 0 {
                    vec![]
                } else {
                    1u64.to_be_bytes().to_vec()
                },
                name: format!("s{i}"),
                start_time_unix_nano: 10 + i,
                end_time_unix_nano: 20 + i,
                ..Default::default()
            })
            .collect();
        hub.tap("traces").push(&Batch::new(
            Payload::Traces(vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }]),
            Arc::from("otlp"),
        ));
        let st = ApiState {
            hub,
            telemetry: Telemetry::new(),
            endpoint_host: "localhost".into(),
        };
        let r = trace(State(st), Path("ab".repeat(16)), Ok(Query(HashMap::new())))
            .await
            .expect("found");
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["spans"].as_array().map(Vec::len), Some(MAX_TRACE_SPANS));
        assert_eq!(v["spans_left_out"], json!(7));
        assert_eq!(v["span_count"], json!(n));
        assert_eq!(v["spans"][0]["name"], json!("s0"));
    }
}
