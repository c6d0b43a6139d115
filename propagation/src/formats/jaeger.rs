//! Jaeger: `uber-trace-id: {trace}:{span}:{parent}:{flags}` (1–32 and 1–16
//! lowercase hex, left-padded; the parent field is ignored; flags are hex,
//! 0x01 sampled, 0x02 debug) and baggage in `uberctx-{key}`. The value may
//! arrive URL-encoded (`%3A` for `:`).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{is_token, Found};
use crate::context::{Baggage, Extracted, SpanContext};
use crate::headers::{Headers, One, MAX_VALUE_LEN};
use crate::id::{SpanId, TraceId};

pub const HEADER: &str = "uber-trace-id";
pub const BAGGAGE_PREFIX: &str = "uberctx-";

/// Baggage values are URL-encoded on the way out; unreserved characters stay.
const VALUE_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn extract(h: &Headers) -> Found {
    let raw = match h.one(HEADER) {
        One::Value(v) => v,
        _ => return Found::Nothing,
    };
    let decoded;
    let value = if raw.contains('%') {
        match percent_decode_str(raw).decode_utf8() {
            Ok(v) => {
                decoded = v;
                decoded.as_ref()
            }
            Err(_) => return Found::Nothing,
        }
    } else {
        raw
    };
    let mut parts = super::trim_ows(value).split(':');
    let (Some(trace), Some(span), Some(_parent), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Found::Nothing;
    };
    let (Some(trace), Some(span)) = (
        TraceId::from_hex_padded(trace),
        SpanId::from_hex_padded(span),
    ) else {
        return Found::Nothing;
    };
    if flags.is_empty() || flags.len() > 16 || !flags.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Found::Nothing;
    }
    let Ok(flags) = u64::from_str_radix(flags, 16) else {
        return Found::Nothing;
    };
    let Some(mut ctx) = SpanContext::new(trace, span) else {
        return Found::Nothing;
    };
    let sampled = flags & 0x01 == 0x01;
    // Debug without the sampled bit is not a keep decision (OpenTelemetry Go).
    ctx.set_decision(Some(sampled), sampled && flags & 0x02 == 0x02);
    Found::Context(Box::new(ctx), extract_baggage(h))
}

fn extract_baggage(h: &Headers) -> Baggage {
    let mut out = Baggage::new();
    for (name, _) in h.iter() {
        let Some(key) = name.strip_prefix(BAGGAGE_PREFIX) else {
            continue;
        };
        if key.is_empty() || out.get(key).is_some() {
            continue;
        }
        let One::Value(v) = h.one(name) else { continue };
        if let Ok(v) = percent_decode_str(v).decode_utf8() {
            out.insert(key, v.into_owned());
        }
    }
    out
}

pub fn inject(e: &Extracted, out: &mut Headers) {
    let Some(ctx) = e.context.as_ref().filter(|c| c.is_valid()) else {
        return;
    };
    let sampled = ctx.sampled == Some(true);
    let flags = match (sampled, ctx.debug) {
        (true, true) => 3,
        (true, false) => 1,
        (false, _) => 0,
    };
    out.set(
        HEADER,
        format!("{}:{}:0:{flags:x}", ctx.trace_id, ctx.span_id),
    );
    for (k, v) in e.baggage.iter() {
        let k = k.to_ascii_lowercase();
        let v = utf8_percent_encode(v, VALUE_ENCODE).to_string();
        if is_token(&k) && v.len() <= MAX_VALUE_LEN {
            out.set(format!("{BAGGAGE_PREFIX}{k}"), v);
        }
    }
}
