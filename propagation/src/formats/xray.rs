//! AWS X-Ray: `X-Amzn-Trace-Id: Root=1-{8hex}-{24hex};Parent={16hex};Sampled=0|1|?`,
//! keys in any order, unknown keys (`Self=`, `Lineage=`, ...) ignored. The
//! 128-bit trace id is the 8 hex digits followed by the 24.

use super::Found;
use crate::context::{Extracted, SpanContext};
use crate::headers::{Headers, One};
use crate::id::{SpanId, TraceId};

pub const HEADER: &str = "x-amzn-trace-id";

pub fn extract(h: &Headers) -> Found {
    let One::Value(v) = h.one(HEADER) else {
        return Found::Nothing;
    };
    let mut root = None;
    let mut parent = None;
    let mut sampled = None;
    for part in v.split(';') {
        let part = super::trim_ows(part);
        if part.is_empty() {
            continue;
        }
        let Some((k, val)) = part.split_once('=') else {
            return Found::Nothing;
        };
        let slot_taken = match super::trim_ows(k) {
            "Root" => root.replace(parse_root(super::trim_ows(val))).is_some(),
            "Parent" => parent
                .replace(SpanId::from_hex(super::trim_ows(val)))
                .is_some(),
            // Only `1` means sampled: `0`, `?` (decision deferred) and any other
            // value read as not sampled, as OpenTelemetry Go reads them.
            "Sampled" => sampled.replace(Some(super::trim_ows(val) == "1")).is_some(),
            _ => false,
        };
        if slot_taken {
            return Found::Nothing;
        }
    }
    let (Some(Some(trace)), Some(Some(span))) = (root, parent) else {
        return Found::Nothing;
    };
    let Some(mut ctx) = SpanContext::new(trace, span) else {
        return Found::Nothing;
    };
    ctx.set_decision(sampled.flatten(), false);
    Found::ctx(ctx)
}

/// `1-{8 lowercase hex}-{24 lowercase hex}`.
fn parse_root(s: &str) -> Option<TraceId> {
    let b = s.as_bytes();
    if b.len() != 35 || s.get(..2) != Some("1-") || b[10] != b'-' {
        return None;
    }
    let mut hex = String::with_capacity(32);
    hex.push_str(s.get(2..10)?);
    hex.push_str(s.get(11..35)?);
    TraceId::from_hex(&hex)
}

pub fn inject(e: &Extracted, out: &mut Headers) {
    let Some(ctx) = e.context.as_ref().filter(|c| c.is_valid()) else {
        return;
    };
    let hex = ctx.trace_id.to_hex();
    let mut v = format!("Root=1-{}-{};Parent={}", &hex[..8], &hex[8..], ctx.span_id);
    if let Some(s) = ctx.sampled {
        v.push_str(if s { ";Sampled=1" } else { ";Sampled=0" });
    }
    out.set(HEADER, v);
}
