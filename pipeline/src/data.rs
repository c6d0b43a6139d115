//! The in-pipeline data model: OTLP prost types in a small envelope.
//!
//! Payloads are behind an `Arc` so a fanout hands every consumer the same
//! allocation; a consumer that mutates calls [`Batch::payload_mut`], which copies
//! only when the payload is still shared.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::otlp_wire::EncodedTraces;

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{metric, ResourceMetrics};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::{Deserialize, Serialize};

/// The three telemetry signals a pipeline can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The item name the collector's self-metrics use (`accepted_spans`, ...).
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signal's worth of OTLP data.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Traces(Vec<ResourceSpans>),
    Metrics(Vec<ResourceMetrics>),
    Logs(Vec<ResourceLogs>),
}

impl Payload {
    pub fn signal(&self) -> Signal {
        match self {
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
        }
    }

    pub fn empty(signal: Signal) -> Payload {
        match signal {
            Signal::Traces => Payload::Traces(Vec::new()),
            Signal::Metrics => Payload::Metrics(Vec::new()),
            Signal::Logs => Payload::Logs(Vec::new()),
        }
    }

    /// Number of items: spans, metric data points or log records.
    pub fn item_count(&self) -> usize {
        match self {
            Payload::Traces(rs) => count_spans(rs),
            Payload::Metrics(rm) => count_points(rm),
            Payload::Logs(rl) => count_logs(rl),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Traces(v) => v.is_empty(),
            Payload::Metrics(v) => v.is_empty(),
            Payload::Logs(v) => v.is_empty(),
        }
    }
}

pub fn count_spans(rs: &[ResourceSpans]) -> usize {
    rs.iter()
        .flat_map(|r| r.scope_spans.iter())
        .map(|s| s.spans.len())
        .sum()
}

pub fn count_logs(rl: &[ResourceLogs]) -> usize {
    rl.iter()
        .flat_map(|r| r.scope_logs.iter())
        .map(|s| s.log_records.len())
        .sum()
}

pub fn count_points(rm: &[ResourceMetrics]) -> usize {
    rm.iter()
        .flat_map(|r| r.scope_metrics.iter())
        .flat_map(|s| s.metrics.iter())
        .map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(metric::Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

/// Client facts a receiver may attach (`include_metadata`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientMetadata {
    pub peer: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// A batch's data: decoded, or traces still in their wire form and decoded
/// (once, shared by every clone) the first time a consumer asks for them.
#[derive(Debug, Clone)]
enum Content {
    Decoded(Arc<Payload>),
    Encoded {
        wire: Arc<EncodedTraces>,
        decoded: Arc<OnceLock<Arc<Payload>>>,
    },
}

/// The envelope every consumer receives.
#[derive(Debug, Clone)]
pub struct Batch {
    content: Content,
    /// When the first byte of this data entered weft.
    pub received_at: Instant,
    /// The receiver id that accepted the data (`otlp`, `otlp/2`).
    pub origin: Arc<str>,
    pub metadata: Option<Arc<ClientMetadata>>,
    /// weft's own spans this data passed through (see `self_trace`).
    pub self_spans: crate::self_trace::SelfSpans,
}

impl Batch {
    pub fn new(payload: Payload, origin: Arc<str>) -> Batch {
        Batch {
            content: Content::Decoded(Arc::new(payload)),
            received_at: Instant::now(),
            origin,
            metadata: None,
            self_spans: None,
        }
    }

    /// Traces kept encoded until a consumer needs the spans.
    pub fn encoded(wire: EncodedTraces, origin: Arc<str>) -> Batch {
        Batch {
            content: Content::Encoded {
                wire: Arc::new(wire),
                decoded: Arc::new(OnceLock::new()),
            },
            received_at: Instant::now(),
            origin,
            metadata: None,
            self_spans: None,
        }
    }

    /// The same batch with decoded traces encoded (other data unchanged):
    /// for a queue that holds batches, the encoding is a quarter of the
    /// memory, and an exporter that sends OTLP encodes once for every retry.
    pub fn into_encoded(self) -> Batch {
        let wire = match &self.content {
            Content::Decoded(p) => match &**p {
                Payload::Traces(rs) => EncodedTraces::from_resource_spans(rs),
                _ => return self,
            },
            Content::Encoded { .. } => return self,
        };
        Batch {
            content: Content::Encoded {
                wire: Arc::new(wire),
                decoded: Arc::new(OnceLock::new()),
            },
            ..self
        }
    }

    /// The data as prost types; an encoded batch is decoded on first use.
    pub fn payload(&self) -> &Payload {
        match &self.content {
            Content::Decoded(p) => p,
            Content::Encoded { wire, decoded } => decoded.get_or_init(|| decode(wire)),
        }
    }

    /// The encoded form, while nothing has changed the data.
    pub fn encoded_traces(&self) -> Option<&EncodedTraces> {
        match &self.content {
            Content::Encoded { wire, .. } => Some(wire),
            Content::Decoded(_) => None,
        }
    }

    /// Mutable access; copies the payload only if another consumer still
    /// shares it. An encoded batch is decoded and stops being encoded.
    pub fn payload_mut(&mut self) -> &mut Payload {
        if let Content::Encoded { wire, decoded } = &self.content {
            let p = decoded.get_or_init(|| decode(wire)).clone();
            self.content = Content::Decoded(p);
        }
        match &mut self.content {
            Content::Decoded(p) => Arc::make_mut(p),
            Content::Encoded { .. } => unreachable!("replaced above"),
        }
    }

    /// Takes the payload out, copying only if it is shared.
    pub fn into_payload(self) -> Payload {
        let p = match self.content {
            Content::Decoded(p) => p,
            Content::Encoded { wire, decoded } => match Arc::try_unwrap(decoded) {
                Ok(cell) => cell.into_inner().unwrap_or_else(|| decode(&wire)),
                Err(shared) => shared.get_or_init(|| decode(&wire)).clone(),
            },
        };
        Arc::try_unwrap(p).unwrap_or_else(|shared| (*shared).clone())
    }

    pub fn signal(&self) -> Signal {
        match &self.content {
            Content::Decoded(p) => p.signal(),
            Content::Encoded { .. } => Signal::Traces,
        }
    }

    pub fn item_count(&self) -> usize {
        match &self.content {
            Content::Decoded(p) => p.item_count(),
            Content::Encoded { wire, .. } => wire.span_count(),
        }
    }

    /// The size of the data as an OTLP export request, in bytes: the bytes
    /// themselves for an encoded batch, computed for a decoded one.
    pub fn encoded_size(&self) -> usize {
        use prost::encoding::message::encoded_len;
        match &self.content {
            Content::Encoded { wire, .. } => wire.bytes().len(),
            Content::Decoded(p) => match &**p {
                Payload::Traces(v) => v.iter().map(|x| encoded_len(1, x)).sum(),
                Payload::Metrics(v) => v.iter().map(|x| encoded_len(1, x)).sum(),
                Payload::Logs(v) => v.iter().map(|x| encoded_len(1, x)).sum(),
            },
        }
    }

    /// No resource entries at all (counted without decoding).
    pub fn is_empty(&self) -> bool {
        match &self.content {
            Content::Decoded(p) => p.is_empty(),
            Content::Encoded { wire, .. } => wire.resource_count() == 0,
        }
    }
}

/// Decodes a checked request. The check accepts only what decodes, so the
/// error arm is for a broken invariant: logged loudly, and the batch is empty
/// rather than a panic in the data path.
fn decode(wire: &EncodedTraces) -> Arc<Payload> {
    match wire.decode() {
        Ok(rs) => Arc::new(Payload::Traces(rs)),
        Err(e) => {
            tracing::error!(
                error = %e,
                spans = wire.span_count(),
                "a checked OTLP request failed to decode; its spans are lost"
            );
            Arc::new(Payload::Traces(Vec::new()))
        }
    }
}
