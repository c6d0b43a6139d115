//! W3C Trace Context: `traceparent`, `tracestate`, and the Datadog `dd=`
//! tracestate member (`s:` priority, `o:` origin, `p:` last Datadog parent,
//! `t.<k>:` for `_dd.p.<k>` tags, `~` standing for `=`).

use super::{trim_ows, Found};
use crate::context::{Extracted, SpanContext};
use crate::headers::{Headers, One};
use crate::id::{is_lower_hex, parse_lower_hex_u128, parse_lower_hex_u64, SpanId, TraceId};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// W3C: at most 32 list members.
pub const MAX_MEMBERS: usize = 32;
/// The longest tracestate that can be valid: 32 members of a 256-char key,
/// `=`, a 256-char value and a comma. Anything longer is dropped unread.
const MAX_TRACESTATE_LEN: usize = MAX_MEMBERS * (256 + 1 + 256 + 1);
/// Datadog keeps its member at most 256 characters.
const MAX_DD_MEMBER_LEN: usize = 256;

pub fn extract(h: &Headers) -> Found {
    let tp = match h.one(TRACEPARENT) {
        One::Value(v) => v,
        // Sent twice: the spec says to ignore it and start a new trace.
        One::Absent | One::Invalid => return Found::Nothing,
    };
    let Some((trace_id, span_id, flags)) = parse_traceparent(trim_ows(tp)) else {
        return Found::Nothing;
    };
    let Some(mut ctx) = SpanContext::new(trace_id, span_id) else {
        return Found::Nothing;
    };
    let sampled = flags & 0x01 == 0x01;
    ctx.sampled = Some(sampled);
    ctx.trace_flags = Some(flags & 0x03);

    let mut dd_priority = None;
    if let Some(members) = tracestate_members(h) {
        if !members.is_empty() {
            ctx.tracestate = Some(join_members(&members));
        }
        if let Some((_, dd)) = members.iter().find(|(k, _)| *k == "dd") {
            dd_priority = apply_dd_member(&mut ctx, dd);
        }
    }
    ctx.sampling_priority = Some(reconcile_priority(&mut ctx, sampled, dd_priority));
    Found::ctx(ctx)
}

/// `version-traceid-spanid-flags[-future]`. Version `ff` is invalid; version
/// `00` is exactly 55 characters; a later version may be longer, but only if
/// what follows the flags starts with `-`.
pub fn parse_traceparent(s: &str) -> Option<(TraceId, SpanId, u8)> {
    let b = s.as_bytes();
    if b.len() < 55 {
        return None;
    }
    let version = s.get(..2)?;
    if !version.bytes().all(is_lower_hex) || version == "ff" {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    if version == "00" && b.len() != 55 {
        return None;
    }
    if b.len() > 55 && b[55] != b'-' {
        return None;
    }
    let trace = s.get(3..35)?;
    let span = s.get(36..52)?;
    let flags = s.get(53..55)?;
    if !trace.bytes().all(is_lower_hex)
        || !span.bytes().all(is_lower_hex)
        || !flags.bytes().all(is_lower_hex)
    {
        return None;
    }
    let trace = TraceId::from_u128(parse_lower_hex_u128(trace)?);
    let span = SpanId::from_u64(parse_lower_hex_u64(span)?);
    let flags = parse_lower_hex_u64(flags)? as u8;
    Some((trace, span, flags))
}

/// Every `tracestate` header, combined and validated. `None` when there is
/// none or the list is invalid (bad key or value, duplicate key, more than 32
/// members): the whole list is then dropped, the traceparent kept.
fn tracestate_members(h: &Headers) -> Option<Vec<(&str, &str)>> {
    let mut members = Vec::new();
    let mut total = 0usize;
    let mut any = false;
    for value in h.get_all(TRACESTATE) {
        any = true;
        total += value.len() + 1;
        if total > MAX_TRACESTATE_LEN {
            return None;
        }
        for m in value.split(',') {
            let m = trim_ows(m);
            if m.is_empty() {
                continue;
            }
            let (k, v) = m.split_once('=')?;
            if !valid_key(k) || !valid_value(v) || members.iter().any(|(mk, _)| *mk == k) {
                return None;
            }
            members.push((k, v));
            if members.len() > MAX_MEMBERS {
                return None;
            }
        }
    }
    any.then_some(members)
}

/// Validates and normalizes a tracestate string on its own (for callers that
/// hold one outside headers). `None` when invalid.
pub fn normalize_tracestate(ts: &str) -> Option<String> {
    let mut h = Headers::new();
    h.append(TRACESTATE, ts);
    tracestate_members(&h).map(|m| join_members(&m))
}

fn join_members(members: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in members {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// `simple-key` (lcalpha then up to 255 key chars) or `tenant@system`
/// (tenant: lcalpha/digit then up to 240; system: lcalpha then up to 13).
fn valid_key(k: &str) -> bool {
    let part = |s: &str, max: usize, digit_first: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (digit_first && b[0].is_ascii_digit()))
            && b.iter().all(|c| is_key_char(*c))
    };
    match k.split_once('@') {
        Some((tenant, system)) => part(tenant, 241, true) && part(system, 14, false),
        None => part(k, 256, false),
    }
}

/// 1 to 256 printable ASCII characters except `,` and `=`, not ending in a
/// space.
fn valid_value(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && b[b.len() - 1] != b' '
}

/// Reads the `dd=` member into the context; returns the `s:` priority.
fn apply_dd_member(ctx: &mut SpanContext, value: &str) -> Option<i32> {
    let mut priority = None;
    for item in value.split(';') {
        let Some((k, v)) = item.split_once(':') else {
            continue;
        };
        match k {
            "s" => priority = v.parse::<i32>().ok(),
            "o" if !v.is_empty() => ctx.origin = Some(v.replace('~', "=")),
            "p" => ctx.dd_parent_id = SpanId::from_hex(v).filter(|s| s.is_valid()),
            // The traceparent holds all 128 bits: a t.tid adds nothing.
            "t.tid" => {}
            _ => {
                if let Some(tag) = k.strip_prefix("t.") {
                    if !tag.is_empty() {
                        ctx.propagated_tags
                            .insert(format!("_dd.p.{tag}"), v.replace('~', "="));
                    }
                }
            }
        }
    }
    priority
}

/// The traceparent's sampled flag is authoritative; the `s:` priority refines
/// it only when it agrees. When they disagree the Datadog tracers reset the
/// priority to the flag and fix the decision-maker tag (`-0` for a keep that
/// came from the flag, dropped for a drop).
fn reconcile_priority(ctx: &mut SpanContext, sampled: bool, dd: Option<i32>) -> i32 {
    match dd {
        None => sampled as i32,
        Some(p) if !sampled && p > 0 => {
            ctx.propagated_tags.remove("_dd.p.dm");
            0
        }
        Some(p) if sampled && p <= 0 => {
            ctx.propagated_tags.insert("_dd.p.dm", "-0");
            1
        }
        Some(p) => p,
    }
}

pub fn inject(e: &Extracted, out: &mut Headers) {
    let Some(ctx) = e.context.as_ref().filter(|c| c.is_valid()) else {
        return;
    };
    let sampled = ctx.sampled == Some(true);
    let flags = sampled as u8 | (ctx.trace_flags.unwrap_or(0) & 0x02);
    out.set(
        TRACEPARENT,
        format!("00-{}-{}-{:02x}", ctx.trace_id, ctx.span_id, flags),
    );

    let mut members: Vec<String> = Vec::new();
    if let Some(dd) = dd_member(ctx, sampled) {
        members.push(format!("dd={dd}"));
    }
    if let Some(ts) = ctx.tracestate.as_deref() {
        for m in ts.split(',').map(trim_ows).filter(|m| !m.is_empty()) {
            if m.starts_with("dd=") || members.len() >= MAX_MEMBERS {
                continue;
            }
            members.push(m.to_string());
        }
    }
    if members.is_empty() {
        out.remove(TRACESTATE);
    } else {
        out.set(TRACESTATE, members.join(","));
    }
}

/// The `dd=` member to send, or `None` when it would say nothing the
/// traceparent does not (so pure W3C traffic keeps its tracestate untouched).
fn dd_member(ctx: &SpanContext, sampled: bool) -> Option<String> {
    let priority_says_more = ctx.sampling_priority.is_some_and(|p| p != sampled as i32);
    if !priority_says_more
        && ctx.origin.is_none()
        && ctx.propagated_tags.is_empty()
        && ctx.dd_parent_id.is_none()
    {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    if let Some(p) = ctx.sampling_priority {
        parts.push(format!("s:{p}"));
    }
    if let Some(o) = &ctx.origin {
        parts.push(format!("o:{}", encode_dd_value(o)));
    }
    if let Some(p) = ctx.dd_parent_id {
        parts.push(format!("p:{p}"));
    }
    let mut len: usize = parts.iter().map(|p| p.len() + 1).sum();
    for (k, v) in ctx.propagated_tags.iter() {
        let Some(tag) = k.strip_prefix("_dd.p.") else {
            continue;
        };
        if tag == "tid" {
            continue;
        }
        let item = format!("t.{}:{}", encode_dd_key(tag), encode_dd_value(v));
        if len + item.len() + 1 > MAX_DD_MEMBER_LEN {
            continue;
        }
        len += item.len() + 1;
        parts.push(item);
    }
    let member = parts.join(";");
    // A value must not be empty nor end with a space.
    let member = member.trim_end_matches(' ').to_string();
    (!member.is_empty()).then_some(member)
}

/// Keys: anything outside printable ASCII, and `,` `;` `:` `=` `~` and space,
/// become `_`.
fn encode_dd_key(k: &str) -> String {
    k.chars()
        .map(|c| match c {
            '!'..='~' if !matches!(c, ',' | ';' | ':' | '=' | '~') => c,
            _ => '_',
        })
        .collect()
}

/// Values: anything outside printable ASCII, and `,` `;` `~`, become `_`;
/// then `=` becomes `~`.
fn encode_dd_value(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            '=' => '~',
            ' '..='~' if !matches!(c, ',' | ';' | '~') => c,
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key("foo"));
        assert!(valid_key(&"z".repeat(256)));
        assert!(!valid_key(&"z".repeat(257)));
        assert!(valid_key(&format!(
            "{}@{}",
            "t".repeat(241),
            "v".repeat(14)
        )));
        assert!(!valid_key(&format!("{}@v", "t".repeat(242))));
        assert!(!valid_key(&format!("t@{}", "v".repeat(15))));
        assert!(valid_key("1tenant@vendor"));
        assert!(!valid_key("1simple"));
        for bad in [
            "foo ",
            "FOO",
            "foo.bar",
            "foo@",
            "@foo",
            "foo@@bar",
            "foo@bar@baz",
        ] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn dd_value_encoding() {
        assert_eq!(encode_dd_value("a=b,c;d~e\u{e9}"), "a~b_c_d_e_");
        assert_eq!(encode_dd_key("us r=x"), "us_r_x");
    }
}
