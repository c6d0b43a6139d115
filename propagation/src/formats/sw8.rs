//! Apache SkyWalking v3 cross-process headers:
//! `sw8: {sample}-b64(traceId)-b64(parentSegmentId)-{parentSpanId}-b64(service)-b64(instance)-b64(endpoint)-b64(peer)`
//! and `sw8-correlation: b64(key):b64(value),...`.
//!
//! SkyWalking ids are opaque strings. They are mapped to 128/64-bit ids the way
//! the OpenTelemetry Collector's `skywalking` receiver maps segments, so a
//! parent read here matches the span that receiver produces:
//! - trace id: a UUID (36 chars with dashes, or 32 hex) is its 16 bytes; a
//!   longer id `{32 hex}.{mid}.{last}` (the Java agent's shape) is the 32 hex
//!   XOR `mid` (4 bytes little-endian, at bytes 4..8) XOR `last` (8 bytes
//!   little-endian, at bytes 8..16);
//! - span id: the parent segment id mapped the same way, with the parent span
//!   index XORed little-endian into bytes 0..4, then the two 8-byte halves
//!   XORed together. A segment id of exactly 16 lowercase hex (what
//!   OpenTelemetry-side injectors, weft included, send) is the span id as is.
//! - any id those rules do not cover (too short, not hex, not numeric
//!   suffixes) is hashed instead: FNV-1a 128 of the trace id string, FNV-1a 64
//!   of `{segmentId}.{spanIndex}`; a zero result becomes 1.

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use super::Found;
use crate::context::{Baggage, Extracted, SpanContext, Sw8Parent};
use crate::headers::{Headers, One};
use crate::id::{SpanId, TraceId};

pub const HEADER: &str = "sw8";
pub const CORRELATION: &str = "sw8-correlation";
/// What weft writes for fields it does not know (the caller's service, ...).
pub const UNKNOWN: &str = "unknown";
/// SkyWalking's default correlation limits: 3 keys, values up to 128 bytes.
const MAX_CORRELATION_KEYS: usize = 3;
const MAX_CORRELATION_VALUE: usize = 128;

const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn b64_string(s: &str) -> Option<String> {
    let bytes = B64.decode(s).ok()?;
    String::from_utf8(bytes).ok()
}

pub fn extract(h: &Headers) -> Found {
    let One::Value(v) = h.one(HEADER) else {
        return Found::Nothing;
    };
    let fields: Vec<&str> = super::trim_ows(v).split('-').collect();
    if fields.len() != 8 {
        return Found::Nothing;
    }
    let sampled = match fields[0] {
        "1" => true,
        "0" => false,
        _ => return Found::Nothing,
    };
    let decoded: Option<Vec<String>> = [1, 2, 4, 5, 6, 7]
        .iter()
        .map(|i| b64_string(fields[*i]))
        .collect();
    let Some(d) = decoded else {
        return Found::Nothing;
    };
    let Ok(span_index) = fields[3].parse::<i32>() else {
        return Found::Nothing;
    };
    if d[0].is_empty() || d[1].is_empty() || span_index < 0 {
        return Found::Nothing;
    }
    let parent = Sw8Parent {
        trace_id: d[0].clone(),
        parent_segment_id: d[1].clone(),
        parent_span_id: span_index,
        parent_service: d[2].clone(),
        parent_instance: d[3].clone(),
        parent_endpoint: d[4].clone(),
        target_address: d[5].clone(),
    };
    let trace = map_trace_id(&parent.trace_id);
    let span = map_span_id(&parent.parent_segment_id, span_index);
    let Some(mut ctx) = SpanContext::new(trace, span) else {
        return Found::Nothing;
    };
    ctx.set_decision(Some(sampled), false);
    ctx.sw8 = Some(parent);
    Found::Context(Box::new(ctx), extract_correlation(h))
}

fn extract_correlation(h: &Headers) -> Baggage {
    let mut out = Baggage::new();
    let One::Value(v) = h.one(CORRELATION) else {
        return out;
    };
    for pair in v.split(',') {
        let Some((k, val)) = super::trim_ows(pair).split_once(':') else {
            continue;
        };
        if let (Some(k), Some(val)) = (b64_string(k), b64_string(val)) {
            if !k.is_empty() {
                out.insert(k, val);
            }
        }
    }
    out
}

/// A SkyWalking trace id as a 128-bit id (see the module docs).
pub fn map_trace_id(s: &str) -> TraceId {
    let mapped = if s.len() <= 36 {
        parse_uuid(s)
    } else {
        sw_string_to_uuid(s, 0)
    };
    match mapped {
        Some(u) if u != [0; 16] => TraceId::from_bytes(u),
        _ => TraceId::from_u128(fnv1a_128(s.as_bytes()).max(1)),
    }
}

/// A SkyWalking (segment id, span index) pair as a 64-bit id (see the module
/// docs).
pub fn map_span_id(segment: &str, span_index: i32) -> SpanId {
    if segment.len() == 16 {
        if let Some(s) = SpanId::from_hex(segment).filter(|s| s.is_valid()) {
            return s;
        }
    }
    let folded = sw_string_to_uuid(segment, span_index as u32).map(|u| {
        let mut out = [0u8; 8];
        for i in 0..8 {
            out[i] = u[i] ^ u[i + 8];
        }
        u64::from_be_bytes(out)
    });
    match folded {
        Some(v) if v != 0 => SpanId::from_u64(v),
        _ => SpanId::from_u64(fnv1a_64(format!("{segment}.{span_index}").as_bytes()).max(1)),
    }
}

/// 32 hex digits, or the 8-4-4-4-12 form; either case.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = match s.len() {
        32 => s.to_string(),
        36 => {
            let b = s.as_bytes();
            if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
                return None;
            }
            s.chars().filter(|c| *c != '-').collect()
        }
        _ => return None,
    };
    decode_hex16(&hex)
}

fn decode_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u128::from_str_radix(s, 16).ok()?;
    Some(v.to_be_bytes())
}

/// The collector's `swStringToUUID`: `{32 hex}[.{mid}.{last}]` with `extra`
/// XORed into the first four bytes.
fn sw_string_to_uuid(s: &str, extra: u32) -> Option<[u8; 16]> {
    let mut uid = decode_hex16(s.get(..32)?)?;
    for (i, b) in extra.to_le_bytes().iter().enumerate() {
        uid[i] ^= b;
    }
    if s.len() == 32 {
        return Some(uid);
    }
    let first = s.find('.')?;
    let last = s.rfind('.')?;
    if first != 32 || last <= first {
        return None;
    }
    let mid = go_atoi(&s[first + 1..last])?;
    let tail = go_atoi(&s[last + 1..])?;
    for (i, b) in (mid as u64).to_le_bytes()[..4].iter().enumerate() {
        uid[4 + i] ^= b;
    }
    for (i, b) in (tail as u64).to_le_bytes().iter().enumerate() {
        uid[8 + i] ^= b;
    }
    Some(uid)
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits, 64-bit.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    data.iter()
        .fold(OFFSET, |h, b| (h ^ *b as u128).wrapping_mul(PRIME))
}

fn fnv1a_64(data: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf29ce484222325;
    const PRIME: u64 = 0x100000001b3;
    data.iter()
        .fold(OFFSET, |h, b| (h ^ *b as u64).wrapping_mul(PRIME))
}

pub fn inject(e: &Extracted, out: &mut Headers) {
    let Some(ctx) = e.context.as_ref().filter(|c| c.is_valid()) else {
        return;
    };
    let sample = if ctx.sampled == Some(true) { "1" } else { "0" };
    // Re-send SkyWalking's own ids when they still name this context, so a
    // SkyWalking callee sees the strings its caller used.
    let native = ctx.sw8.as_ref().filter(|p| {
        map_trace_id(&p.trace_id) == ctx.trace_id
            && map_span_id(&p.parent_segment_id, p.parent_span_id) == ctx.span_id
    });
    let (trace, segment, index) = match native {
        Some(p) => (
            p.trace_id.clone(),
            p.parent_segment_id.clone(),
            p.parent_span_id,
        ),
        None => (ctx.trace_id.to_hex(), ctx.span_id.to_hex(), 0),
    };
    let meta = |f: fn(&Sw8Parent) -> &str| {
        ctx.sw8
            .as_ref()
            .map(f)
            .filter(|s| !s.is_empty())
            .unwrap_or(UNKNOWN)
            .to_string()
    };
    let fields = [
        sample.to_string(),
        B64.encode(trace),
        B64.encode(segment),
        index.to_string(),
        B64.encode(meta(|p| &p.parent_service)),
        B64.encode(meta(|p| &p.parent_instance)),
        B64.encode(meta(|p| &p.parent_endpoint)),
        B64.encode(meta(|p| &p.target_address)),
    ];
    out.set(HEADER, fields.join("-"));

    let pairs: Vec<String> = e
        .baggage
        .iter()
        .filter(|(k, v)| !k.is_empty() && v.len() <= MAX_CORRELATION_VALUE)
        .take(MAX_CORRELATION_KEYS)
        .map(|(k, v)| format!("{}:{}", B64.encode(k), B64.encode(v)))
        .collect();
    if !pairs.is_empty() {
        out.set(CORRELATION, pairs.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_and_java_agent_ids() {
        assert_eq!(
            map_trace_id("de5980b8-fce3-4a37-aab9-b4ac3af7eedd").to_hex(),
            "de5980b8fce34a37aab9b4ac3af7eedd"
        );
        assert_eq!(
            map_trace_id("4bf92f3577b34da6a3ce929d0e0e4736").to_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // 32 hex XOR mid=12 (LE at bytes 4..8) XOR last=16563474296430001 (LE at 8..16).
        let last = 16563474296430001u64.swap_bytes();
        let want = 0x56a5e1c519ae4c76a2b8b11d92cead7fu128
            ^ ((12u32.swap_bytes() as u128) << 64)
            ^ last as u128;
        assert_eq!(
            map_trace_id("56a5e1c519ae4c76a2b8b11d92cead7f.12.16563474296430001").as_u128(),
            want
        );
    }

    #[test]
    fn span_ids() {
        assert_eq!(
            map_span_id("00f067aa0ba902b7", 123).to_hex(),
            "00f067aa0ba902b7"
        );
        // Segment 32 hex, index 1: first byte XOR 1, then fold halves.
        let s = map_span_id("000000000000000000000000000000ff", 1);
        assert_eq!(s.as_u64(), 0x01000000000000ff);
        // Not mappable: hashed, deterministic, nonzero.
        let a = map_span_id("segment", 3);
        assert_eq!(a, map_span_id("segment", 3));
        assert_ne!(a, map_span_id("segment", 4));
        assert!(a.is_valid());
    }

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a test vectors for the empty string and "a".
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
    }
}
