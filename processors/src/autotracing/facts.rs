//! What the stitcher needs to know of a span, read once from its attributes: the
//! correlation facts the `ebpf` receiver records (`weft.*`) and the ids an SDK set.

use std::net::IpAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use weft_propagation::{extract, ExtractOptions, Headers};

/// Instrumentation scope of the `ebpf` receiver's spans.
pub const EBPF_SCOPE: &str = "weft.ebpf";
/// Prefix of the correlation attributes removed on the way out.
pub const CORRELATION_PREFIX: &str = "weft.";
const HEADER_PREFIX: &str = "weft.header.";

pub const ATTR_REQ_SEQ: &str = "weft.tcp.req_seq";
pub const ATTR_RESP_SEQ: &str = "weft.tcp.resp_seq";
pub const ATTR_SYS_REQ: &str = "weft.syscall_trace_id.req";
pub const ATTR_SYS_RESP: &str = "weft.syscall_trace_id.resp";
pub const ATTR_RID_REQ: &str = "weft.x_request_id.req";
pub const ATTR_RID_RESP: &str = "weft.x_request_id.resp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
    Other,
}

/// A process: host (resource `host.name`, empty when unknown) and pid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub host: Arc<str>,
    pub pid: u32,
}

/// A 128-bit trace id as (high, low); a 64-bit id has a zero high half.
pub type TraceKey = u128;

/// Whether two trace ids name the same trace (a zero upper half matches any).
pub fn same_trace(a: TraceKey, b: TraceKey) -> bool {
    a == b || ((a >> 64 == 0 || b >> 64 == 0) && a as u64 == b as u64)
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub role: Role,
    /// Made by the `ebpf` receiver (else an SDK's span).
    pub ebpf: bool,
    pub process: Option<ProcKey>,
    pub tid: Option<u32>,
    pub start: u64,
    pub end: u64,
    pub req_seq: Option<u32>,
    pub resp_seq: Option<u32>,
    pub local: Option<(IpAddr, u16)>,
    pub peer: Option<(IpAddr, u16)>,
    pub sys_req: Option<u64>,
    pub sys_resp: Option<u64>,
    pub rid_req: Option<Box<str>>,
    pub rid_resp: Option<Box<str>>,
    /// The trace context an eBPF span carried in its request headers (trace, parent span).
    pub header_ctx: Option<(TraceKey, u64)>,
    /// The span's own ids as it arrived.
    pub trace_id: TraceKey,
    pub span_id: u64,
    /// The SDK's parent span id (0: none). eBPF spans arrive without one.
    pub parent_span_id: u64,
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::IntValue(i) => Some(*i),
            // Datadog numeric tags (metrics) arrive as doubles.
            Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
            Value::StringValue(s) => s.trim().parse().ok(),
            _ => None,
        }
    })
}

fn str_value(v: &Value) -> Option<&str> {
    match v {
        Value::StringValue(s) => Some(s.as_str()),
        // SDKs record captured headers as arrays of strings.
        Value::ArrayValue(a) => a
            .values
            .first()
            .and_then(|x| x.value.as_ref())
            .and_then(str_value),
        _ => None,
    }
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| str_value(kv.value.as_ref()?.value.as_ref()?))
}

fn u32_attr(attrs: &[KeyValue], key: &str) -> Option<u32> {
    int_attr(attrs, key).and_then(|v| u32::try_from(v).ok())
}

/// Resource facts shared by the spans of one `ResourceSpans`.
pub struct ResourceFacts {
    pub host: Arc<str>,
    pub pid: Option<u32>,
}

impl ResourceFacts {
    pub fn read(resource: Option<&Resource>) -> ResourceFacts {
        let attrs = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        ResourceFacts {
            host: Arc::from(str_attr(attrs, "host.name").unwrap_or("")),
            pid: u32_attr(attrs, "process.pid"),
        }
    }
}

fn id_u64(b: &[u8]) -> u64 {
    <[u8; 8]>::try_from(b).map(u64::from_be_bytes).unwrap_or(0)
}

fn id_u128(b: &[u8]) -> u128 {
    <[u8; 16]>::try_from(b)
        .map(u128::from_be_bytes)
        .unwrap_or(0)
}

/// The SDK attribute names request ids are read from, made once.
pub struct RidKeys {
    req: Vec<String>,
    resp: Vec<String>,
}

impl RidKeys {
    /// From header names (any case).
    pub fn new(headers: &[String]) -> RidKeys {
        let lower: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        RidKeys {
            req: lower
                .iter()
                .map(|h| format!("http.request.header.{h}"))
                .collect(),
            resp: lower
                .iter()
                .map(|h| format!("http.response.header.{h}"))
                .collect(),
        }
    }
}

fn int_value(v: &Value) -> Option<i64> {
    match v {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn u32_value(v: &Value) -> Option<u32> {
    int_value(v).and_then(|i| u32::try_from(i).ok())
}

/// Reads the facts of one span (one pass over an eBPF span's attributes: every span
/// goes through here).
pub fn read(span: &Span, ebpf: bool, res: &ResourceFacts, rid: &RidKeys) -> Facts {
    let role = match SpanKind::try_from(span.kind) {
        Ok(SpanKind::Server) => Role::Server,
        Ok(SpanKind::Client) => Role::Client,
        _ => Role::Other,
    };
    let mut f = Facts {
        role,
        ebpf,
        process: None,
        tid: None,
        start: span.start_time_unix_nano,
        end: span.end_time_unix_nano.max(span.start_time_unix_nano),
        req_seq: None,
        resp_seq: None,
        local: None,
        peer: None,
        sys_req: None,
        sys_resp: None,
        rid_req: None,
        rid_resp: None,
        header_ctx: None,
        trace_id: id_u128(&span.trace_id),
        span_id: id_u64(&span.span_id),
        parent_span_id: if ebpf {
            0
        } else {
            id_u64(&span.parent_span_id)
        },
    };
    let mut pid = None;
    let (mut local_ip, mut local_port, mut peer_ip, mut peer_port) = (None, None, None, None);
    let mut headers = false;
    for kv in &span.attributes {
        let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        match kv.key.as_str() {
            "process.pid" => pid = u32_value(v),
            "thread.id" => f.tid = u32_value(v),
            _ if !ebpf => {}
            ATTR_REQ_SEQ => f.req_seq = u32_value(v),
            ATTR_RESP_SEQ => f.resp_seq = u32_value(v),
            ATTR_SYS_REQ => f.sys_req = int_value(v).map(|i| i as u64).filter(|i| *i != 0),
            ATTR_SYS_RESP => f.sys_resp = int_value(v).map(|i| i as u64).filter(|i| *i != 0),
            ATTR_RID_REQ => f.rid_req = str_value(v).map(Box::from),
            ATTR_RID_RESP => f.rid_resp = str_value(v).map(Box::from),
            "network.local.address" => local_ip = str_value(v).and_then(|s| s.parse().ok()),
            "network.local.port" => local_port = u32_value(v).and_then(|p| u16::try_from(p).ok()),
            "network.peer.address" => peer_ip = str_value(v).and_then(|s| s.parse().ok()),
            "network.peer.port" => peer_port = u32_value(v).and_then(|p| u16::try_from(p).ok()),
            k => headers |= k.starts_with(HEADER_PREFIX),
        }
    }
    f.process = pid.or(res.pid).map(|pid| ProcKey {
        host: res.host.clone(),
        pid,
    });
    if ebpf {
        f.local = local_ip.zip(local_port);
        f.peer = peer_ip.zip(peer_port);
        if headers {
            let h: Headers = span
                .attributes
                .iter()
                .filter_map(|kv| {
                    let name = kv.key.strip_prefix(HEADER_PREFIX)?;
                    Some((name, str_value(kv.value.as_ref()?.value.as_ref()?)?))
                })
                .collect();
            if let Some(c) = extract(&h, &ExtractOptions::default()).context {
                if c.trace_id.is_valid() && c.span_id.is_valid() {
                    f.header_ctx = Some((c.trace_id.as_u128(), c.span_id.as_u64()));
                }
            }
        }
    } else {
        let a = span.attributes.as_slice();
        f.rid_req = rid.req.iter().find_map(|k| str_attr(a, k)).map(Box::from);
        f.rid_resp = rid.resp.iter().find_map(|k| str_attr(a, k)).map(Box::from);
    }
    f.rid_req = f.rid_req.filter(|r| !r.is_empty());
    f.rid_resp = f.rid_resp.filter(|r| !r.is_empty());
    f
}

/// Removes the correlation attributes.
pub fn strip_correlation(span: &mut Span) {
    span.attributes
        .retain(|kv| !kv.key.starts_with(CORRELATION_PREFIX));
}
