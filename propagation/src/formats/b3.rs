//! Zipkin B3: the single header `b3: {trace}-{span}[-{0|1|d}[-{parent}]]` (or a
//! bare `0|1|d`) and the multi headers `X-B3-TraceId/SpanId/ParentSpanId/
//! Sampled/Flags`. Trace ids are 16 or 32 lowercase hex, span ids 16.

use super::Found;
use crate::context::{Extracted, SpanContext};
use crate::headers::{Headers, One};
use crate::id::{SpanId, TraceId};

pub const SINGLE: &str = "b3";
pub const TRACE_ID: &str = "x-b3-traceid";
pub const SPAN_ID: &str = "x-b3-spanid";
pub const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const SAMPLED: &str = "x-b3-sampled";
pub const FLAGS: &str = "x-b3-flags";

/// The single header wins; when it is absent, malformed or only a decision,
/// the multi headers are read (a bare single decision is kept if they hold
/// nothing better).
pub fn extract_single_then_multi(h: &Headers) -> Found {
    let single = match h.one(SINGLE) {
        One::Value(v) => parse_single(v),
        One::Absent | One::Invalid => Found::Nothing,
    };
    match single {
        Found::Context(..) => single,
        Found::Decision(_) => match extract_multi(h) {
            Found::Context(c, b) => Found::Context(c, b),
            Found::Decision(d) => Found::Decision(d),
            Found::Nothing => single,
        },
        Found::Nothing => extract_multi(h),
    }
}

fn b3_trace_id(s: &str) -> Option<TraceId> {
    match s.len() {
        16 | 32 => TraceId::from_hex_padded(s),
        _ => None,
    }
}

/// `0`, `1`, `d` → (sampled, debug).
fn single_state(s: &str) -> Option<(bool, bool)> {
    match s {
        "0" => Some((false, false)),
        "1" => Some((true, false)),
        "d" => Some((true, true)),
        _ => None,
    }
}

fn parse_single(v: &str) -> Found {
    let v = super::trim_ows(v);
    if let Some((sampled, _)) = single_state(v) {
        return Found::Decision(sampled);
    }
    let mut parts = v.split('-');
    let (Some(trace), Some(span)) = (parts.next(), parts.next()) else {
        return Found::Nothing;
    };
    let state = parts.next();
    let parent = parts.next();
    if parts.next().is_some() {
        return Found::Nothing;
    }
    let (Some(trace), Some(span)) = (b3_trace_id(trace), SpanId::from_hex(span)) else {
        return Found::Nothing;
    };
    let Some(mut ctx) = SpanContext::new(trace, span) else {
        return Found::Nothing;
    };
    match state {
        None => ctx.set_decision(None, false),
        Some(s) => match single_state(s) {
            Some((sampled, debug)) => ctx.set_decision(Some(sampled), debug),
            None => return Found::Nothing,
        },
    }
    if let Some(p) = parent {
        match SpanId::from_hex(p) {
            Some(p) => ctx.b3_parent_span_id = Some(p).filter(|p| p.is_valid()),
            None => return Found::Nothing,
        }
    }
    Found::ctx(ctx)
}

/// The multi headers only. Trace and span id come both or neither; with
/// neither, `X-B3-Sampled`/`X-B3-Flags` still give a decision. `X-B3-Flags: 1`
/// (debug) overrides `X-B3-Sampled: 0`; other flag values are ignored.
pub fn extract_multi(h: &Headers) -> Found {
    let get = |name| match h.one(name) {
        One::Absent => Ok(None),
        One::Value(v) => Ok(Some(super::trim_ows(v))),
        One::Invalid => Err(()),
    };
    let (Ok(trace), Ok(span), Ok(sampled), Ok(flags), Ok(parent)) = (
        get(TRACE_ID),
        get(SPAN_ID),
        get(SAMPLED),
        get(FLAGS),
        get(PARENT_SPAN_ID),
    ) else {
        return Found::Nothing;
    };
    let sampled = match sampled {
        None => None,
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        Some(_) => return Found::Nothing,
    };
    let debug = flags == Some("1");
    let decision = if debug { Some(true) } else { sampled };
    let (trace, span) = match (trace, span) {
        (None, None) => {
            return match decision {
                Some(d) => Found::Decision(d),
                None => Found::Nothing,
            }
        }
        (Some(t), Some(s)) => (t, s),
        _ => return Found::Nothing,
    };
    let (Some(trace), Some(span)) = (b3_trace_id(trace), SpanId::from_hex(span)) else {
        return Found::Nothing;
    };
    let Some(mut ctx) = SpanContext::new(trace, span) else {
        return Found::Nothing;
    };
    ctx.set_decision(decision, debug);
    if let Some(p) = parent {
        match SpanId::from_hex(p) {
            Some(p) => ctx.b3_parent_span_id = Some(p).filter(|p| p.is_valid()),
            None => return Found::Nothing,
        }
    }
    Found::ctx(ctx)
}

/// Trace ids go out as 32 hex digits, or 16 when the upper half is zero (what
/// 64-bit Zipkin tracers expect).
fn trace_hex(t: TraceId) -> String {
    if t.is_64bit() {
        format!("{:016x}", t.low())
    } else {
        t.to_hex()
    }
}

fn state(ctx: &SpanContext) -> Option<&'static str> {
    match ctx.sampled {
        Some(true) if ctx.debug || ctx.sampling_priority.is_some_and(|p| p > 1) => Some("d"),
        Some(true) => Some("1"),
        Some(false) => Some("0"),
        None => None,
    }
}

pub fn inject_single(e: &Extracted, out: &mut Headers) {
    match e.context.as_ref().filter(|c| c.is_valid()) {
        Some(ctx) => {
            let mut v = format!("{}-{}", trace_hex(ctx.trace_id), ctx.span_id);
            if let Some(s) = state(ctx) {
                v.push('-');
                v.push_str(s);
                if let Some(p) = ctx.b3_parent_span_id {
                    v.push('-');
                    v.push_str(&p.to_hex());
                }
            }
            out.set(SINGLE, v);
        }
        None => {
            if let Some(d) = e.decision {
                out.set(SINGLE, if d { "1" } else { "0" });
            }
        }
    }
}

pub fn inject_multi(e: &Extracted, out: &mut Headers) {
    match e.context.as_ref().filter(|c| c.is_valid()) {
        Some(ctx) => {
            out.set(TRACE_ID, trace_hex(ctx.trace_id));
            out.set(SPAN_ID, ctx.span_id.to_hex());
            if let Some(p) = ctx.b3_parent_span_id {
                out.set(PARENT_SPAN_ID, p.to_hex());
            }
            // Debug implies accept: the spec says not to send both.
            match state(ctx) {
                Some("d") => out.set(FLAGS, "1"),
                Some(s) => out.set(SAMPLED, s),
                None => {}
            }
        }
        None => {
            if let Some(d) = e.decision {
                out.set(SAMPLED, if d { "1" } else { "0" });
            }
        }
    }
}
