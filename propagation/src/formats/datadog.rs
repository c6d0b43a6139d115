//! Datadog headers: `x-datadog-trace-id` (decimal, low 64 bits),
//! `x-datadog-parent-id` (decimal), `x-datadog-sampling-priority`,
//! `x-datadog-origin` and `x-datadog-tags` (`_dd.p.*` tags; `_dd.p.tid` holds
//! the upper 64 bits of the trace id as 16 lowercase hex).

use super::Found;
use crate::context::{Extracted, OrderedMap, SpanContext};
use crate::headers::{Headers, One};
use crate::id::{format_dd_tid, parse_dd_decimal, parse_dd_tid, SpanId, TraceId};

pub const TRACE_ID: &str = "x-datadog-trace-id";
pub const PARENT_ID: &str = "x-datadog-parent-id";
pub const SAMPLING_PRIORITY: &str = "x-datadog-sampling-priority";
pub const ORIGIN: &str = "x-datadog-origin";
pub const TAGS: &str = "x-datadog-tags";
pub const TID: &str = "_dd.p.tid";
/// The Datadog tracers' default `x-datadog-tags` limit, both ways.
pub const MAX_TAGS_LEN: usize = 512;

pub fn extract(h: &Headers) -> Found {
    let (One::Value(trace), One::Value(parent)) = (h.one(TRACE_ID), h.one(PARENT_ID)) else {
        return Found::Nothing;
    };
    let (Some(low), Some(parent)) = (
        parse_dd_decimal(super::trim_ows(trace)),
        parse_dd_decimal(super::trim_ows(parent)),
    ) else {
        return Found::Nothing;
    };
    let Some(mut ctx) = SpanContext::new(TraceId::from_u64(low), SpanId::from_u64(parent)) else {
        return Found::Nothing;
    };
    // A priority that does not parse is ignored rather than voiding the
    // context: the ids are still good.
    if let One::Value(p) = h.one(SAMPLING_PRIORITY) {
        if let Ok(p) = super::trim_ows(p).parse::<i32>() {
            ctx.sampling_priority = Some(p);
            ctx.sampled = Some(p > 0);
        }
    }
    if let One::Value(o) = h.one(ORIGIN) {
        if !o.is_empty() {
            ctx.origin = Some(o.to_string());
        }
    }
    match h.one(TAGS) {
        One::Absent => {}
        One::Invalid => ctx.propagation_error = Some("extract_max_size".into()),
        One::Value("") => {}
        One::Value(v) if v.len() > MAX_TAGS_LEN => {
            ctx.propagation_error = Some("extract_max_size".into())
        }
        One::Value(v) => match decode_tags(v) {
            Some(mut tags) => {
                if let Some(tid) = tags.remove(TID) {
                    match parse_dd_tid(&tid) {
                        Some(high) => ctx.trace_id = TraceId::from_parts(high, low),
                        None => ctx.propagation_error = Some(format!("malformed_tid {tid}")),
                    }
                }
                ctx.propagated_tags = tags;
            }
            None => ctx.propagation_error = Some("decoding_error".into()),
        },
    }
    Found::ctx(ctx)
}

/// `k=v,k=v`: keys printable ASCII without space, `,` or `=`; values printable
/// ASCII without `,`; neither empty. Only `_dd.p.*` keys are kept (and not
/// the retired `_dd.p.upstream_services`). Any malformed pair, or a
/// decision-maker tag that is not `-<digit>`, voids the whole set.
fn decode_tags(s: &str) -> Option<OrderedMap> {
    let mut out = OrderedMap::new();
    for pair in s.split(',') {
        let (k, v) = pair.split_once('=')?;
        let k = k.trim_matches(' ');
        let v = v.trim_matches(' ');
        if k.is_empty() || v.is_empty() {
            return None;
        }
        if !k
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',' && b != b'=')
        {
            return None;
        }
        if !v.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',') {
            return None;
        }
        if k == "_dd.p.dm" && !valid_decision_maker(v) {
            return None;
        }
        if k.starts_with("_dd.p.") && k != "_dd.p.upstream_services" {
            out.insert(k, v);
        }
    }
    Some(out)
}

fn valid_decision_maker(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 2 && b[0] == b'-' && b[1].is_ascii_digit()
}

pub fn inject(e: &Extracted, out: &mut Headers) {
    let Some(ctx) = e.context.as_ref().filter(|c| c.is_valid()) else {
        return;
    };
    out.set(TRACE_ID, ctx.trace_id.low().to_string());
    out.set(PARENT_ID, ctx.span_id.to_decimal());
    let priority = ctx.sampling_priority.or(ctx.sampled.map(i32::from));
    if let Some(p) = priority {
        out.set(SAMPLING_PRIORITY, p.to_string());
    }
    if let Some(o) = &ctx.origin {
        out.set(ORIGIN, o.clone());
    }
    if let Some(tags) = encode_tags(ctx) {
        out.set(TAGS, tags);
    }
}

/// The `x-datadog-tags` value, or `None` when there is nothing to send or it
/// would exceed [`MAX_TAGS_LEN`] (the Datadog tracers then send none).
fn encode_tags(ctx: &SpanContext) -> Option<String> {
    let mut items: Vec<String> = Vec::new();
    if !ctx.trace_id.is_64bit() {
        items.push(format!("{TID}={}", format_dd_tid(ctx.trace_id.high())));
    }
    for (k, v) in ctx.propagated_tags.iter() {
        let key_ok = k.starts_with("_dd.p.")
            && k != TID
            && k.bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',' && b != b'=');
        let value_ok = !v.is_empty() && v.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',');
        if key_ok && value_ok {
            items.push(format!("{k}={v}"));
        }
    }
    let s = items.join(",");
    (!s.is_empty() && s.len() <= MAX_TAGS_LEN).then_some(s)
}
