//! Sending: `connections` tasks, each with its own connection, each sending
//! one request at a time, paced to the asked rate or as fast as answers come.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::payload::Format;

/// The protocols a run can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP over gRPC (`/opentelemetry.proto.collector.trace.v1.TraceService/Export`).
    OtlpGrpc,
    /// OTLP/HTTP with a protobuf body (`/v1/traces`).
    OtlpHttp,
    /// OTLP/HTTP with a JSON body (`/v1/traces`).
    OtlpHttpJson,
    /// Datadog agent API v0.5 msgpack (`/v0.5/traces`).
    DatadogV05,
    /// Zipkin v2 JSON (`/api/v2/spans`).
    ZipkinJson,
}

impl Protocol {
    pub fn format(self) -> Format {
        match self {
            Protocol::OtlpGrpc | Protocol::OtlpHttp => Format::OtlpProto,
            Protocol::OtlpHttpJson => Format::OtlpJson,
            Protocol::DatadogV05 => Format::DatadogV05,
            Protocol::ZipkinJson => Format::ZipkinJson,
        }
    }

    fn default_path(self) -> &'static str {
        match self {
            Protocol::OtlpGrpc => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Protocol::OtlpHttp | Protocol::OtlpHttpJson => "/v1/traces",
            Protocol::DatadogV05 => "/v0.5/traces",
            Protocol::ZipkinJson => "/api/v2/spans",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Protocol::OtlpGrpc => "application/grpc",
            Protocol::OtlpHttp => "application/x-protobuf",
            Protocol::OtlpHttpJson | Protocol::ZipkinJson => "application/json",
            Protocol::DatadogV05 => "application/msgpack",
        }
    }
}

/// Body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn name(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    fn apply(self, body: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Write;
        match self {
            Compression::None => Ok(body.to_vec()),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(body)?;
                e.finish()
            }
            Compression::Zstd => zstd::encode_all(body, 1),
        }
    }
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub protocol: Protocol,
    pub endpoint: String,
    pub compression: Compression,
    /// Spans per second over all connections; 0 sends as fast as answers come.
    pub rate: u64,
    pub connections: usize,
    pub duration: Duration,
    pub spans_per_request: u64,
    pub request_timeout: Duration,
    pub headers: Vec<(String, String)>,
}

/// Span outcomes, counted as answers arrive.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub sent: AtomicU64,
    pub acknowledged: AtomicU64,
    /// Refused with a retryable answer (503, 429, UNAVAILABLE,
    /// RESOURCE_EXHAUSTED) or rejected in a partial success.
    pub refused: AtomicU64,
    /// Errors, timeouts and other answers.
    pub failed: AtomicU64,
    /// The first few failure reasons, for the report.
    pub first_errors: std::sync::Mutex<Vec<String>>,
    /// Microseconds from sending each acknowledged request to its answer.
    pub latencies_us: std::sync::Mutex<Vec<u32>>,
}

impl Counters {
    /// The `q` quantile (0..=1) of the acknowledged requests' latencies, in ms.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        let mut l = self
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if l.is_empty() {
            return None;
        }
        l.sort_unstable();
        let i = ((l.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(l[i] as f64 / 1000.0)
    }

    fn error(&self, spans: u64, why: String) {
        self.failed.fetch_add(spans, Ordering::Relaxed);
        let mut e = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() < 5 && !e.contains(&why) {
            e.push(why);
        }
    }
}

enum Outcome {
    Ok { rejected: u64 },
    Refused,
    Failed(String),
}

/// Prepared request bodies, already framed and compressed.
struct Prepared {
    uri: http::Uri,
    bodies: Vec<Bytes>,
}

fn prepare(plan: &Plan, bodies: Vec<Bytes>) -> anyhow::Result<Prepared> {
    let mut uri: http::Uri = plan.endpoint.parse()?;
    if uri.path() == "/" || uri.path().is_empty() {
        let base = plan.endpoint.trim_end_matches('/');
        uri = format!("{base}{}", plan.protocol.default_path()).parse()?;
    }
    let bodies = bodies
        .into_iter()
        .map(|b| -> anyhow::Result<Bytes> {
            let packed = plan.compression.apply(&b)?;
            if plan.protocol == Protocol::OtlpGrpc {
                let mut framed = Vec::with_capacity(packed.len() + 5);
                framed.push(u8::from(plan.compression != Compression::None));
                framed.extend_from_slice(&(packed.len() as u32).to_be_bytes());
                framed.extend_from_slice(&packed);
                Ok(Bytes::from(framed))
            } else {
                Ok(Bytes::from(packed))
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Prepared { uri, bodies })
}

fn grpc_status(headers: Option<&http::HeaderMap>) -> Option<i32> {
    headers?
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn send_one(
    client: &Client<HttpConnector, Full<Bytes>>,
    plan: &Plan,
    uri: &http::Uri,
    body: Bytes,
) -> Outcome {
    let mut req = Request::builder()
        .method(if plan.protocol == Protocol::DatadogV05 {
            Method::PUT
        } else {
            Method::POST
        })
        .uri(uri.clone())
        .header("content-type", plan.protocol.content_type());
    if plan.protocol == Protocol::OtlpGrpc {
        req = req.header("te", "trailers");
        if let Some(c) = plan.compression.name() {
            req = req.header("grpc-encoding", c);
        }
        req = req.header(
            "grpc-timeout",
            format!("{}m", plan.request_timeout.as_millis()),
        );
    } else if let Some(c) = plan.compression.name() {
        req = req.header("content-encoding", c);
    }
    if plan.protocol == Protocol::DatadogV05 {
        req = req.header("x-datadog-trace-count", "1");
    }
    for (k, v) in &plan.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = match req.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("bad request: {e}")),
    };
    let answer = tokio::time::timeout(plan.request_timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let collected = resp.into_body().collect().await?;
        let trailers = collected.trailers().cloned();
        Ok::<_, anyhow::Error>((status, headers, trailers, collected.to_bytes()))
    })
    .await;
    let (status, headers, trailers, body) = match answer {
        Err(_) => return Outcome::Failed("timeout".into()),
        Ok(Err(e)) => return Outcome::Failed(format!("{e:#}")),
        Ok(Ok(a)) => a,
    };
    if plan.protocol == Protocol::OtlpGrpc {
        if status != StatusCode::OK {
            return Outcome::Failed(format!("HTTP {status}"));
        }
        let code = grpc_status(trailers.as_ref()).or_else(|| grpc_status(Some(&headers)));
        return match code {
            Some(0) => {
                let msg = body.get(5..).unwrap_or_default();
                let rejected = ExportTraceServiceResponse::decode(msg)
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| p.rejected_spans.max(0) as u64);
                Outcome::Ok { rejected }
            }
            Some(8) | Some(14) => Outcome::Refused,
            Some(c) => Outcome::Failed(format!("grpc-status {c}")),
            None => Outcome::Failed("no grpc-status".into()),
        };
    }
    if status.is_success() {
        let rejected = if matches!(plan.protocol, Protocol::OtlpHttp) {
            ExportTraceServiceResponse::decode(&body[..])
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_spans.max(0) as u64)
        } else {
            0
        };
        Outcome::Ok { rejected }
    } else if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Refused
    } else {
        Outcome::Failed(format!("HTTP {status}"))
    }
}

/// Runs the plan and returns the counters once every request is answered.
pub async fn run(plan: Plan, bodies: Vec<Bytes>) -> anyhow::Result<(Arc<Counters>, Duration)> {
    let prepared = Arc::new(prepare(&plan, bodies)?);
    let counters = Arc::new(Counters::default());
    let plan = Arc::new(plan);
    let start = Instant::now();
    let deadline = start + plan.duration;
    // Seconds between two requests of one connection at the asked rate.
    let interval = (plan.rate > 0).then(|| {
        Duration::from_secs_f64(
            plan.spans_per_request as f64 * plan.connections as f64 / plan.rate as f64,
        )
    });
    let mut tasks = Vec::new();
    for c in 0..plan.connections {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_max_idle_per_host(1);
        if plan.protocol == Protocol::OtlpGrpc {
            builder.http2_only(true);
        }
        let client: Client<HttpConnector, Full<Bytes>> = builder.build(connector);
        let (plan, prepared, counters) = (plan.clone(), prepared.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let n = prepared.bodies.len();
            let mut k = c * 7919;
            // Connections start spread over one interval.
            let mut next = start
                + interval.map_or(Duration::ZERO, |i| {
                    i.mul_f64(c as f64 / plan.connections as f64)
                });
            loop {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                if Instant::now() >= deadline {
                    break;
                }
                let body = prepared.bodies[k % n].clone();
                k += 1;
                let spans = plan.spans_per_request;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters.sent.fetch_add(spans, Ordering::Relaxed);
                let sent_at = Instant::now();
                match send_one(&client, &plan, &prepared.uri, body).await {
                    Outcome::Ok { rejected } => {
                        let us = sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        counters
                            .latencies_us
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(us);
                        let rejected = rejected.min(spans);
                        counters
                            .acknowledged
                            .fetch_add(spans - rejected, Ordering::Relaxed);
                        counters.refused.fetch_add(rejected, Ordering::Relaxed);
                    }
                    Outcome::Refused => {
                        counters.refused.fetch_add(spans, Ordering::Relaxed);
                        // Back off a little, as an SDK would.
                        if interval.is_none() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    Outcome::Failed(why) => {
                        counters.error(spans, why);
                        if interval.is_none() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok((counters, start.elapsed()))
}

/// Header value check for `--header k=v`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected name=value"))?;
    http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("`{k}`: {e}"))?;
    HeaderValue::from_str(v).map_err(|e| format!("`{k}`: {e}"))?;
    Ok((k.to_string(), v.to_string()))
}
