//! OpenTracing (Lightstep) headers: `ot-tracer-traceid` (16 or 32 lowercase
//! hex), `ot-tracer-spanid` (16), `ot-tracer-sampled` (a boolean) and
//! `ot-baggage-{key}`. Injection sends only the low 64 bits of the trace id,
//! as the OpenTelemetry injectors do.

use super::{is_token, Found};
use crate::context::{Baggage, Extracted, SpanContext};
use crate::headers::{Headers, One};
use crate::id::{SpanId, TraceId};

pub const TRACE_ID: &str = "ot-tracer-traceid";
pub const SPAN_ID: &str = "ot-tracer-spanid";
pub const SAMPLED: &str = "ot-tracer-sampled";
pub const BAGGAGE_PREFIX: &str = "ot-baggage-";
/// Baggage beyond this many bytes (as a W3C baggage string) is dropped whole.
const MAX_BAGGAGE_BYTES: usize = 8192;

/// Go's `strconv.ParseBool` set, which the OpenTelemetry Go propagator uses.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

pub fn extract(h: &Headers) -> Found {
    let (One::Value(trace), One::Value(span)) = (h.one(TRACE_ID), h.one(SPAN_ID)) else {
        return Found::Nothing;
    };
    let sampled = match h.one(SAMPLED) {
        One::Absent => None,
        One::Value(v) => match parse_bool(super::trim_ows(v)) {
            Some(b) => Some(b),
            None => return Found::Nothing,
        },
        One::Invalid => return Found::Nothing,
    };
    let trace = super::trim_ows(trace);
    let trace = match trace.len() {
        16 | 32 => TraceId::from_hex_padded(trace),
        _ => None,
    };
    let (Some(trace), Some(span)) = (trace, SpanId::from_hex(super::trim_ows(span))) else {
        return Found::Nothing;
    };
    let Some(mut ctx) = SpanContext::new(trace, span) else {
        return Found::Nothing;
    };
    ctx.set_decision(sampled, false);
    Found::Context(Box::new(ctx), extract_baggage(h))
}

fn extract_baggage(h: &Headers) -> Baggage {
    let mut out = Baggage::new();
    let mut total = 0;
    for (name, _) in h.iter() {
        let Some(key) = name.strip_prefix(BAGGAGE_PREFIX) else {
            continue;
        };
        if !is_token(key) || out.get(key).is_some() {
            continue;
        }
        let One::Value(v) = h.one(name) else { continue };
        if !v.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            continue;
        }
        // Counted as the W3C baggage string would be: `key=value`, comma-joined.
        total += key.len() + 1 + v.len() + usize::from(!out.is_empty());
        if total > MAX_BAGGAGE_BYTES {
            return Baggage::new();
        }
        out.insert(key, v);
    }
    out
}

pub fn inject(e: &Extracted, out: &mut Headers) {
    let Some(ctx) = e.context.as_ref().filter(|c| c.is_valid()) else {
        return;
    };
    out.set(TRACE_ID, format!("{:016x}", ctx.trace_id.low()));
    out.set(SPAN_ID, ctx.span_id.to_hex());
    if let Some(s) = ctx.sampled {
        out.set(SAMPLED, if s { "true" } else { "false" });
    }
    for (k, v) in e.baggage.iter() {
        let k = k.to_ascii_lowercase();
        if is_token(&k) && v.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            out.set(format!("{BAGGAGE_PREFIX}{k}"), v);
        }
    }
}
