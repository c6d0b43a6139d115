//! A direct OTLP/JSON writer for traces: the same bytes as the generic path in
//! [`crate::otlp_json`] (serialize, re-parse, drop defaults), written in one pass
//! without intermediate trees or allocations per field. Traces are the hot path of
//! the `file` and `otlphttp` exporters; metrics and logs keep the generic path.

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, EntityRef, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// `{"resourceSpans":[...]}` for these resource spans, appended to `out`.
pub fn encode_traces(rs: &[ResourceSpans], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{");
    let mut o = Obj::new();
    if !rs.is_empty() {
        o.key(out, "resourceSpans");
        list(out, rs, resource_spans);
    }
    out.push(b'}');
}

/// Writes the commas between the fields of one JSON object.
struct Obj {
    first: bool,
}

impl Obj {
    fn new() -> Obj {
        Obj { first: true }
    }

    fn key(&mut self, out: &mut Vec<u8>, k: &str) {
        if !std::mem::take(&mut self.first) {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
    }

    /// A string field, left out when empty.
    fn str(&mut self, out: &mut Vec<u8>, k: &str, v: &str) {
        if !v.is_empty() {
            self.key(out, k);
            string(out, v);
        }
    }

    /// A number field, left out when zero.
    fn num(&mut self, out: &mut Vec<u8>, k: &str, v: i64) {
        if v != 0 {
            self.key(out, k);
            int(out, v);
        }
    }

    /// A 64-bit field written as a string, left out when zero.
    fn u64_str(&mut self, out: &mut Vec<u8>, k: &str, v: u64) {
        if v != 0 {
            self.key(out, k);
            out.push(b'"');
            uint(out, v);
            out.push(b'"');
        }
    }

    /// Bytes as lowercase hex, left out when empty.
    fn hex(&mut self, out: &mut Vec<u8>, k: &str, v: &[u8]) {
        if !v.is_empty() {
            self.key(out, k);
            out.push(b'"');
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for b in v {
                out.push(DIGITS[usize::from(b >> 4)]);
                out.push(DIGITS[usize::from(b & 15)]);
            }
            out.push(b'"');
        }
    }

    fn attributes(&mut self, out: &mut Vec<u8>, k: &str, attrs: &[KeyValue]) {
        if !attrs.is_empty() {
            self.key(out, k);
            key_values(out, attrs);
        }
    }
}

fn int(out: &mut Vec<u8>, v: i64) {
    let mut b = itoa_buf();
    out.extend_from_slice(fmt_i64(&mut b, v));
}

fn uint(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa_buf();
    out.extend_from_slice(fmt_u64(&mut b, v));
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

fn fmt_i64(buf: &mut [u8; 20], v: i64) -> &[u8] {
    if v >= 0 {
        return fmt_u64(buf, v as u64);
    }
    // |i64::MIN| needs 19 digits and the sign 1: 20 bytes.
    let mut i = buf.len();
    let mut m = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    i -= 1;
    buf[i] = b'-';
    &buf[i..]
}

/// Which bytes a JSON string escapes: 0 none, else the letter of a short escape, or
/// b'u' for `\u00XX`.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether any of the 8 bytes of w is escaped in a JSON string (a control character,
/// `"` or `\\`): the classic has-zero-byte test, exact as a yes/no answer.
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (below_space | quote | backslash) & HIGH != 0
}

/// A JSON string with serde_json's escaping: `"` and `\`, the short escapes of
/// \b \f \n \r \t, other control characters as `\u00XX`; everything else as is.
/// Eight bytes are checked at a time; most strings have nothing to escape.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            if !word_needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            let esc = ESCAPE[usize::from(b)];
            if esc != 0 {
                out.extend_from_slice(&bytes[start..i]);
                if esc == b'u' {
                    const DIGITS: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(DIGITS[usize::from(b >> 4)]);
                    out.push(DIGITS[usize::from(b & 15)]);
                } else {
                    out.push(b'\\');
                    out.push(esc);
                }
                start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `[a,b,...]`, each item written by `item`.
fn list<T>(out: &mut Vec<u8>, items: &[T], item: impl Fn(&T, &mut Vec<u8>)) {
    out.push(b'[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(x, out);
    }
    out.push(b']');
}

fn key_values(out: &mut Vec<u8>, kvs: &[KeyValue]) {
    list(out, kvs, |kv, out| {
        out.push(b'{');
        let mut o = Obj::new();
        o.str(out, "key", &kv.key);
        if let Some(v) = &kv.value {
            o.key(out, "value");
            any_value(out, v);
        }
        o.num(out, "keyStrindex", i64::from(kv.key_strindex));
        out.push(b'}');
    });
}

fn any_value(out: &mut Vec<u8>, v: &AnyValue) {
    out.push(b'{');
    let mut o = Obj::new();
    match &v.value {
        None => {}
        Some(Value::StringValue(s)) => {
            o.key(out, "stringValue");
            string(out, s);
        }
        Some(Value::BoolValue(b)) => {
            o.key(out, "boolValue");
            out.extend_from_slice(if *b { b"true" } else { b"false" });
        }
        Some(Value::IntValue(i)) => {
            o.key(out, "intValue");
            out.push(b'"');
            int(out, *i);
            out.push(b'"');
        }
        Some(Value::DoubleValue(d)) => {
            // serde_json writes a non-finite double as null, and a null field is left out.
            if let Some(n) = serde_json::Number::from_f64(*d) {
                o.key(out, "doubleValue");
                // Infallible: a number into a vector.
                let _ = serde_json::to_writer(&mut *out, &n);
            }
        }
        Some(Value::ArrayValue(a)) => {
            o.key(out, "arrayValue");
            out.push(b'{');
            if !a.values.is_empty() {
                out.extend_from_slice(b"\"values\":");
                list(out, &a.values, |item, out| any_value(out, item));
            }
            out.push(b'}');
        }
        Some(Value::KvlistValue(l)) => {
            o.key(out, "kvlistValue");
            out.push(b'{');
            if !l.values.is_empty() {
                out.extend_from_slice(b"\"values\":");
                key_values(out, &l.values);
            }
            out.push(b'}');
        }
        Some(Value::BytesValue(b)) => {
            o.key(out, "bytesValue");
            out.push(b'"');
            out.extend_from_slice(weft_jaeger::translate::value::base64(b).as_bytes());
            out.push(b'"');
        }
        Some(Value::StringValueStrindex(i)) => o.num(out, "stringValueStrindex", i64::from(*i)),
    }
    out.push(b'}');
}

fn strings(o: &mut Obj, out: &mut Vec<u8>, k: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    o.key(out, k);
    list(out, items, |s, out| string(out, s));
}

fn entity_ref(out: &mut Vec<u8>, e: &EntityRef) {
    out.push(b'{');
    let mut o = Obj::new();
    o.str(out, "schemaUrl", &e.schema_url);
    o.str(out, "type", &e.r#type);
    strings(&mut o, out, "idKeys", &e.id_keys);
    strings(&mut o, out, "descriptionKeys", &e.description_keys);
    out.push(b'}');
}

fn resource(out: &mut Vec<u8>, r: Option<&Resource>) {
    out.push(b'{');
    if let Some(r) = r {
        let mut o = Obj::new();
        o.attributes(out, "attributes", &r.attributes);
        o.num(
            out,
            "droppedAttributesCount",
            i64::from(r.dropped_attributes_count),
        );
        if !r.entity_refs.is_empty() {
            o.key(out, "entityRefs");
            list(out, &r.entity_refs, |e, out| entity_ref(out, e));
        }
    }
    out.push(b'}');
}

fn scope(out: &mut Vec<u8>, s: Option<&InstrumentationScope>) {
    out.push(b'{');
    if let Some(s) = s {
        let mut o = Obj::new();
        o.str(out, "name", &s.name);
        o.str(out, "version", &s.version);
        o.attributes(out, "attributes", &s.attributes);
        o.num(
            out,
            "droppedAttributesCount",
            i64::from(s.dropped_attributes_count),
        );
    }
    out.push(b'}');
}

fn resource_spans(r: &ResourceSpans, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut o = Obj::new();
    o.key(out, "resource");
    resource(out, r.resource.as_ref());
    if !r.scope_spans.is_empty() {
        o.key(out, "scopeSpans");
        list(out, &r.scope_spans, scope_spans);
    }
    o.str(out, "schemaUrl", &r.schema_url);
    out.push(b'}');
}

fn scope_spans(s: &ScopeSpans, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut o = Obj::new();
    o.key(out, "scope");
    scope(out, s.scope.as_ref());
    if !s.spans.is_empty() {
        o.key(out, "spans");
        list(out, &s.spans, span);
    }
    o.str(out, "schemaUrl", &s.schema_url);
    out.push(b'}');
}

fn span(s: &Span, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut o = Obj::new();
    o.hex(out, "traceId", &s.trace_id);
    o.hex(out, "spanId", &s.span_id);
    o.str(out, "traceState", &s.trace_state);
    o.hex(out, "parentSpanId", &s.parent_span_id);
    o.num(out, "flags", i64::from(s.flags));
    o.str(out, "name", &s.name);
    o.num(out, "kind", i64::from(s.kind));
    o.u64_str(out, "startTimeUnixNano", s.start_time_unix_nano);
    o.u64_str(out, "endTimeUnixNano", s.end_time_unix_nano);
    o.attributes(out, "attributes", &s.attributes);
    o.num(
        out,
        "droppedAttributesCount",
        i64::from(s.dropped_attributes_count),
    );
    if !s.events.is_empty() {
        o.key(out, "events");
        list(out, &s.events, event);
    }
    o.num(out, "droppedEventsCount", i64::from(s.dropped_events_count));
    if !s.links.is_empty() {
        o.key(out, "links");
        list(out, &s.links, link);
    }
    o.num(out, "droppedLinksCount", i64::from(s.dropped_links_count));
    o.key(out, "status");
    status(out, s.status.as_ref());
    out.push(b'}');
}

fn event(e: &Event, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut o = Obj::new();
    o.u64_str(out, "timeUnixNano", e.time_unix_nano);
    o.str(out, "name", &e.name);
    o.attributes(out, "attributes", &e.attributes);
    o.num(
        out,
        "droppedAttributesCount",
        i64::from(e.dropped_attributes_count),
    );
    out.push(b'}');
}

fn link(l: &Link, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut o = Obj::new();
    o.hex(out, "traceId", &l.trace_id);
    o.hex(out, "spanId", &l.span_id);
    o.str(out, "traceState", &l.trace_state);
    o.attributes(out, "attributes", &l.attributes);
    o.num(
        out,
        "droppedAttributesCount",
        i64::from(l.dropped_attributes_count),
    );
    o.num(out, "flags", i64::from(l.flags));
    out.push(b'}');
}

fn status(out: &mut Vec<u8>, s: Option<&Status>) {
    out.push(b'{');
    if let Some(s) = s {
        let mut o = Obj::new();
        o.str(out, "message", &s.message);
        o.num(out, "code", i64::from(s.code));
    }
    out.push(b'}');
}
