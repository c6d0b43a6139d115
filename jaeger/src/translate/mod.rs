//! Jaeger spans to OTLP and back, rule for rule as the collector's
//! `pkg/translator/jaeger` does it (see `docs/config/jaeger.md` for the table).
//!
//! Attribute maps keep the collector's `pcommon.Map` behaviour: a second
//! value for a key replaces the first in place, and removing a key moves
//! the last entry into its slot.

pub mod value;

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::model::{self, Batch, Process, RefType, Tag, TagValue};

/// The service name of a process made from a resource without attributes.
pub const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

pub const SERVICE_NAME: &str = "service.name";
pub const TAG_SPAN_KIND: &str = "span.kind";
pub const TAG_ERROR: &str = "error";
pub const TAG_STATUS_CODE: &str = "otel.status_code";
pub const TAG_STATUS_DESCRIPTION: &str = "otel.status_description";
pub const TAG_HTTP_STATUS_CODE: &str = "http.status_code";
pub const TAG_HTTP_STATUS_MESSAGE: &str = "http.status_message";
pub const TAG_TRACE_STATE: &str = "w3c.tracestate";
pub const TAG_SCOPE_NAME: &str = "otel.scope.name";
pub const TAG_SCOPE_VERSION: &str = "otel.scope.version";
pub const TAG_LIBRARY_NAME: &str = "otel.library.name";
pub const TAG_LIBRARY_VERSION: &str = "otel.library.version";
/// The log field that carries an event's name.
pub const FIELD_EVENT: &str = "event";
/// The link attribute that keeps a reference's type.
pub const ATTR_REF_TYPE: &str = "opentracing.ref_type";
pub const REF_CHILD_OF: &str = "child_of";
pub const REF_FOLLOWS_FROM: &str = "follows_from";
const STATUS_OK: &str = "OK";
const STATUS_ERROR: &str = "ERROR";

/// Jaeger's "sampled" flag and OTLP's W3C sampled bit.
const JAEGER_SAMPLED: u32 = 1;
const OTLP_SAMPLED: u32 = 1;

// ---------------------------------------------------------------------------
// Attribute maps with pcommon.Map semantics.

fn find(attrs: &[KeyValue], key: &str) -> Option<usize> {
    attrs.iter().position(|kv| kv.key == key)
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    find(attrs, key).and_then(|i| attrs[i].value.as_ref())
}

fn put(attrs: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    match find(attrs, key) {
        Some(i) => attrs[i].value = Some(value),
        None => attrs.push(KeyValue {
            key: key.to_string(),
            value: Some(value),
            ..Default::default()
        }),
    }
}

fn remove(attrs: &mut Vec<KeyValue>, key: &str) {
    if let Some(i) = find(attrs, key) {
        attrs.swap_remove(i);
    }
}

/// `Value.Str()`: the string, or "" for any other type.
fn str_of(v: Option<&AnyValue>) -> &str {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s,
        _ => "",
    }
}

fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn tag_value(v: &TagValue) -> AnyValue {
    let value = match v {
        TagValue::String(s) => any_value::Value::StringValue(s.clone()),
        TagValue::Bool(b) => any_value::Value::BoolValue(*b),
        TagValue::Long(i) => any_value::Value::IntValue(*i),
        TagValue::Double(d) => any_value::Value::DoubleValue(*d),
        TagValue::Binary(b) => any_value::Value::BytesValue(b.clone()),
        TagValue::Unknown(t) => {
            any_value::Value::StringValue(format!("<Unknown Jaeger TagType \"{t}\">"))
        }
    };
    AnyValue { value: Some(value) }
}

/// `put` for every tag, with an index so a span with many tags costs no
/// more than one pass.
fn put_tags(attrs: &mut Vec<KeyValue>, tags: &[Tag]) {
    let mut index: HashMap<String, usize> = attrs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, kv)| (kv.key.clone(), i))
        .collect();
    for t in tags {
        let value = tag_value(&t.value);
        match index.get(&t.key) {
            Some(&i) => attrs[i].value = Some(value),
            None => {
                index.insert(t.key.clone(), attrs.len());
                attrs.push(KeyValue {
                    key: t.key.clone(),
                    value: Some(value),
                    ..Default::default()
                });
            }
        }
    }
}

fn trace_id_bytes(high: u64, low: u64) -> Vec<u8> {
    if high == 0 && low == 0 {
        return Vec::new();
    }
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&high.to_be_bytes());
    b.extend_from_slice(&low.to_be_bytes());
    b
}

fn span_id_bytes(id: u64) -> Vec<u8> {
    if id == 0 {
        Vec::new()
    } else {
        id.to_be_bytes().to_vec()
    }
}

// ---------------------------------------------------------------------------
// Jaeger -> OTLP

/// Translates received batches. Spans carrying their own process are
/// regrouped under it; every distinct process becomes one resource, in the
/// order first seen.
pub fn to_otlp(batches: Vec<Batch>) -> Vec<ResourceSpans> {
    let mut groups: Vec<(Option<Process>, Vec<model::Span>)> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut group_of = |groups: &mut Vec<(Option<Process>, Vec<model::Span>)>,
                        p: Option<Process>| {
        let key = process_key(p.as_ref());
        *index.entry(key).or_insert_with(|| {
            groups.push((p, Vec::new()));
            groups.len() - 1
        })
    };
    for batch in batches {
        let home = group_of(&mut groups, batch.process);
        for span in batch.spans {
            let at = match &span.process {
                None => home,
                Some(p) => group_of(&mut groups, Some(p.clone())),
            };
            groups[at].1.push(span);
        }
    }
    groups
        .into_iter()
        .filter(|(p, spans)| p.is_some() || !spans.is_empty())
        .map(|(p, spans)| resource_spans(p.as_ref(), spans))
        .collect()
}

/// An exact identity for a process (service name and every tag, floats by
/// their bits), to group spans by.
fn process_key(p: Option<&Process>) -> Vec<u8> {
    let Some(p) = p else {
        return vec![0];
    };
    let mut k = vec![1];
    let mut bytes = |b: &[u8]| {
        k.extend_from_slice(&(b.len() as u64).to_le_bytes());
        k.extend_from_slice(b);
    };
    bytes(p.service_name.as_bytes());
    for t in &p.tags {
        bytes(t.key.as_bytes());
        match &t.value {
            TagValue::String(s) => bytes(&[&[0u8][..], s.as_bytes()].concat()),
            TagValue::Bool(b) => bytes(&[1, u8::from(*b)]),
            TagValue::Long(i) => bytes(&[&[2u8][..], &i.to_le_bytes()].concat()),
            TagValue::Double(d) => bytes(&[&[3u8][..], &d.to_bits().to_le_bytes()].concat()),
            TagValue::Binary(b) => bytes(&[&[4u8][..], b].concat()),
            TagValue::Unknown(s) => bytes(&[&[5u8][..], s.as_bytes()].concat()),
        }
    }
    k
}

fn resource_spans(process: Option<&Process>, spans: Vec<model::Span>) -> ResourceSpans {
    let mut scopes: Vec<ScopeSpans> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for mut span in spans {
        if span == model::Span::default() {
            continue;
        }
        let key = take_scope(&mut span.tags);
        let at = *index.entry(key).or_insert_with_key(|(name, version)| {
            scopes.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: name.clone(),
                    version: version.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            scopes.len() - 1
        });
        scopes[at].spans.push(span_to_otlp(span));
    }
    ResourceSpans {
        resource: Some(Resource {
            attributes: process_attributes(process),
            ..Default::default()
        }),
        scope_spans: scopes,
        ..Default::default()
    }
}

/// Removes the first tag named `key` and returns its string value.
fn take_tag(tags: &mut Vec<Tag>, key: &str) -> Option<String> {
    let i = tags.iter().position(|t| t.key == key)?;
    let tag = tags.remove(i);
    Some(tag.value.str_or_empty().to_string())
}

/// The instrumentation scope a span names in its tags: `otel.scope.name`
/// and `otel.scope.version`, or else the older `otel.library.*` pair.
fn take_scope(tags: &mut Vec<Tag>) -> (String, String) {
    for (name_key, version_key) in [
        (TAG_SCOPE_NAME, TAG_SCOPE_VERSION),
        (TAG_LIBRARY_NAME, TAG_LIBRARY_VERSION),
    ] {
        if let Some(name) = take_tag(tags, name_key) {
            let version = take_tag(tags, version_key).unwrap_or_default();
            return (name, version);
        }
    }
    (String::new(), String::new())
}

fn process_attributes(process: Option<&Process>) -> Vec<KeyValue> {
    let mut attrs = Vec::new();
    let Some(p) = process else {
        return attrs;
    };
    if p.service_name == NO_SERVICE_NAME || (p.service_name.is_empty() && p.tags.is_empty()) {
        return attrs;
    }
    if !p.service_name.is_empty() {
        put(&mut attrs, SERVICE_NAME, string_value(&p.service_name));
    }
    put_tags(&mut attrs, &p.tags);
    if let Some(host) = get(&attrs, "hostname").cloned() {
        if get(&attrs, "host.name").is_none() {
            put(&mut attrs, "host.name", host);
            remove(&mut attrs, "hostname");
        }
    }
    if let Some(v) = get(&attrs, "jaeger.version").cloned() {
        if get(&attrs, "opencensus.exporterversion").is_none() {
            let version = format!("Jaeger-{}", str_of(Some(&v)));
            put(
                &mut attrs,
                "opencensus.exporterversion",
                string_value(version),
            );
            remove(&mut attrs, "jaeger.version");
        }
    }
    attrs
}

fn kind_from_tag(v: &str) -> SpanKind {
    match v {
        "client" => SpanKind::Client,
        "server" => SpanKind::Server,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => SpanKind::Unspecified,
    }
}

fn span_to_otlp(s: model::Span) -> Span {
    let parent = s.parent_id();
    let mut attrs = Vec::with_capacity(s.tags.len());
    put_tags(&mut attrs, &s.tags);
    let mut kind = SpanKind::Unspecified;
    if let Some(v) = get(&attrs, TAG_SPAN_KIND) {
        kind = kind_from_tag(str_of(Some(v)));
        remove(&mut attrs, TAG_SPAN_KIND);
    }
    let status = take_status(&mut attrs, kind);
    let trace_state = match get(&attrs, TAG_TRACE_STATE) {
        Some(v) => {
            let ts = str_of(Some(v)).to_string();
            remove(&mut attrs, TAG_TRACE_STATE);
            ts
        }
        None => String::new(),
    };
    let events = s
        .logs
        .iter()
        .map(|log| {
            let mut attributes = Vec::with_capacity(log.fields.len());
            put_tags(&mut attributes, &log.fields);
            let mut name = String::new();
            if let Some(v) = get(&attributes, FIELD_EVENT) {
                name = str_of(Some(v)).to_string();
                remove(&mut attributes, FIELD_EVENT);
            }
            Event {
                time_unix_nano: log.timestamp_ns,
                name,
                attributes,
                dropped_attributes_count: 0,
            }
        })
        .collect();
    Span {
        trace_id: trace_id_bytes(s.trace_id_high, s.trace_id_low),
        span_id: span_id_bytes(s.span_id),
        trace_state,
        parent_span_id: span_id_bytes(parent),
        flags: if s.flags & JAEGER_SAMPLED != 0 {
            OTLP_SAMPLED
        } else {
            0
        },
        name: s.operation_name,
        kind: kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes: attrs,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links: links(&s.references, parent),
        dropped_links_count: 0,
        status,
    }
}

/// Every reference but the CHILD_OF one naming the parent becomes a link.
fn links(refs: &[model::SpanRef], parent: u64) -> Vec<Link> {
    refs.iter()
        .filter(|r| !(r.span_id == parent && r.ref_type == RefType::ChildOf))
        .map(|r| Link {
            trace_id: trace_id_bytes(r.trace_id_high, r.trace_id_low),
            span_id: span_id_bytes(r.span_id),
            attributes: vec![KeyValue {
                key: ATTR_REF_TYPE.to_string(),
                value: Some(string_value(if r.ref_type == RefType::ChildOf {
                    REF_CHILD_OF
                } else {
                    REF_FOLLOWS_FROM
                })),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// The status a span's tags describe, removing the tags that carried it:
/// `error=true` wins, then `otel.status_code`, then `http.status_code`.
fn take_status(attrs: &mut Vec<KeyValue>, kind: SpanKind) -> Option<Status> {
    let mut code = StatusCode::Unset;
    let mut message = String::new();
    let mut exists = false;

    let take_description = |attrs: &mut Vec<KeyValue>| -> Option<String> {
        let v = get(attrs, TAG_STATUS_DESCRIPTION)?;
        let d = str_of(Some(v)).to_string();
        remove(attrs, TAG_STATUS_DESCRIPTION);
        Some(d)
    };

    if let Some(AnyValue {
        value: Some(any_value::Value::BoolValue(true)),
    }) = get(attrs, TAG_ERROR)
    {
        code = StatusCode::Error;
        remove(attrs, TAG_ERROR);
        exists = true;
        if let Some(d) = take_description(attrs) {
            message = d;
        } else if let Some(v) = get(attrs, TAG_HTTP_STATUS_MESSAGE) {
            message = str_of(Some(v)).to_string();
        }
    }

    if let Some(v) = get(attrs, TAG_STATUS_CODE) {
        if !exists {
            exists = true;
            code = match str_of(Some(v)).to_ascii_uppercase().as_str() {
                STATUS_OK => StatusCode::Ok,
                STATUS_ERROR => StatusCode::Error,
                _ => StatusCode::Unset,
            };
            if let Some(d) = take_description(attrs) {
                message = d;
            }
        }
        remove(attrs, TAG_STATUS_CODE);
    } else if let (false, Some(v)) = (exists, get(attrs, TAG_HTTP_STATUS_CODE)) {
        if let Some(http) = http_code(v) {
            let c = status_from_http(http, kind);
            if c != StatusCode::Unset {
                exists = true;
                code = c;
            }
            if let Some(m) = get(attrs, TAG_HTTP_STATUS_MESSAGE) {
                message = str_of(Some(m)).to_string();
            }
        }
    }

    exists.then_some(Status {
        code: code as i32,
        message,
    })
}

fn http_code(v: &AnyValue) -> Option<i64> {
    match &v.value {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        Some(any_value::Value::StringValue(s)) => s.parse().ok(),
        _ => None,
    }
}

/// 4xx is an error for clients only; outside [100, 399) everything is one.
fn status_from_http(code: i64, kind: SpanKind) -> StatusCode {
    if (400..500).contains(&code) {
        match kind {
            SpanKind::Client => return StatusCode::Error,
            SpanKind::Server => return StatusCode::Unset,
            _ => {}
        }
    }
    if (100..399).contains(&code) {
        StatusCode::Unset
    } else {
        StatusCode::Error
    }
}

// ---------------------------------------------------------------------------
// OTLP -> Jaeger

/// Translates OTLP for sending: one batch per resource (a resource with no
/// attributes and no scopes is dropped).
pub fn from_otlp(resource_spans: &[ResourceSpans]) -> Vec<Batch> {
    resource_spans
        .iter()
        .filter_map(|rs| {
            let attrs: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
            if attrs.is_empty() && rs.scope_spans.is_empty() {
                return None;
            }
            let spans = rs
                .scope_spans
                .iter()
                .flat_map(|ss| {
                    let scope = ss.scope.as_ref();
                    ss.spans.iter().map(move |s| span_from_otlp(s, scope))
                })
                .collect();
            Some(Batch {
                process: Some(resource_to_process(attrs)),
                spans,
            })
        })
        .collect()
}

fn resource_to_process(attrs: &[KeyValue]) -> Process {
    if attrs.is_empty() {
        return Process {
            service_name: NO_SERVICE_NAME.to_string(),
            tags: Vec::new(),
        };
    }
    Process {
        service_name: str_of(get(attrs, SERVICE_NAME)).to_string(),
        tags: attrs
            .iter()
            .filter(|kv| kv.key != SERVICE_NAME)
            .map(attribute_to_tag)
            .collect(),
    }
}

fn attribute_to_tag(kv: &KeyValue) -> Tag {
    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => TagValue::String(s.clone()),
        Some(any_value::Value::IntValue(i)) => TagValue::Long(*i),
        Some(any_value::Value::BoolValue(b)) => TagValue::Bool(*b),
        Some(any_value::Value::DoubleValue(d)) => TagValue::Double(*d),
        Some(any_value::Value::BytesValue(b)) => TagValue::Binary(b.clone()),
        Some(any_value::Value::ArrayValue(_)) | Some(any_value::Value::KvlistValue(_)) => {
            TagValue::String(kv.value.as_ref().map(value::as_string).unwrap_or_default())
        }
        // Empty values (and string-table indexes, meaningless outside a
        // profile) become empty strings, as a tag without a value type.
        None | Some(any_value::Value::StringValueStrindex(_)) => TagValue::String(String::new()),
    };
    Tag {
        key: kv.key.clone(),
        value,
    }
}

/// (high, low) of an OTLP id; ids shorter than 16 bytes fill the low end.
fn id_halves(b: &[u8]) -> (u64, u64) {
    let mut a = [0u8; 16];
    let n = b.len().min(16);
    a[16 - n..].copy_from_slice(&b[b.len() - n..]);
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

fn span_id_u64(b: &[u8]) -> u64 {
    id_halves(b).1
}

fn kind_tag(kind: i32) -> Option<&'static str> {
    match SpanKind::try_from(kind).ok()? {
        SpanKind::Client => Some("client"),
        SpanKind::Server => Some("server"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
        SpanKind::Internal => Some("internal"),
        SpanKind::Unspecified => None,
    }
}

fn span_from_otlp(s: &Span, scope: Option<&InstrumentationScope>) -> model::Span {
    let (trace_high, trace_low) = id_halves(&s.trace_id);
    let parent = span_id_u64(&s.parent_span_id);
    model::Span {
        trace_id_high: trace_high,
        trace_id_low: trace_low,
        span_id: span_id_u64(&s.span_id),
        parent_span_id: 0,
        operation_name: s.name.clone(),
        references: references(&s.links, parent, trace_high, trace_low),
        flags: if s.flags & OTLP_SAMPLED != 0 {
            JAEGER_SAMPLED
        } else {
            0
        },
        start_ns: s.start_time_unix_nano,
        end_ns: s.end_time_unix_nano,
        tags: span_tags(s, scope),
        logs: s
            .events
            .iter()
            .map(|e| {
                let mut fields = Vec::with_capacity(e.attributes.len() + 1);
                if !e.name.is_empty() && find(&e.attributes, FIELD_EVENT).is_none() {
                    fields.push(Tag::string(FIELD_EVENT, &e.name));
                }
                fields.extend(e.attributes.iter().map(attribute_to_tag));
                model::Log {
                    timestamp_ns: e.time_unix_nano,
                    fields,
                }
            })
            .collect(),
        process: None,
    }
}

fn span_tags(s: &Span, scope: Option<&InstrumentationScope>) -> Vec<Tag> {
    let mut tags = Vec::with_capacity(s.attributes.len() + 6);
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            tags.push(Tag::string(TAG_SCOPE_NAME, &scope.name));
        }
        if !scope.version.is_empty() {
            tags.push(Tag::string(TAG_SCOPE_VERSION, &scope.version));
        }
    }
    tags.extend(s.attributes.iter().map(attribute_to_tag));
    if let Some(k) = kind_tag(s.kind) {
        tags.push(Tag::string(TAG_SPAN_KIND, k));
    }
    let status = s.status.as_ref();
    let code = status.map_or(0, |st| st.code);
    if code == StatusCode::Error as i32 {
        tags.push(Tag::string(TAG_STATUS_CODE, STATUS_ERROR));
        tags.push(Tag {
            key: TAG_ERROR.to_string(),
            value: TagValue::Bool(true),
        });
    } else if code == StatusCode::Ok as i32 {
        tags.push(Tag::string(TAG_STATUS_CODE, STATUS_OK));
    }
    if let Some(msg) = status
        .map(|st| st.message.as_str())
        .filter(|m| !m.is_empty())
    {
        tags.push(Tag::string(TAG_STATUS_DESCRIPTION, msg));
    }
    if !s.trace_state.is_empty() {
        tags.push(Tag::string(TAG_TRACE_STATE, &s.trace_state));
    }
    tags
}

/// The parent as a CHILD_OF reference first, then one reference per link;
/// a link to the parent itself only sets that reference's type.
fn references(links: &[Link], parent: u64, high: u64, low: u64) -> Vec<model::SpanRef> {
    let mut refs = Vec::with_capacity(links.len() + 1);
    if parent != 0 {
        refs.push(model::SpanRef {
            ref_type: RefType::ChildOf,
            trace_id_high: high,
            trace_id_low: low,
            span_id: parent,
        });
    }
    for link in links {
        let (lh, ll) = id_halves(&link.trace_id);
        let ls = span_id_u64(&link.span_id);
        let ref_type = match get(&link.attributes, ATTR_REF_TYPE) {
            Some(v) if str_of(Some(v)) == REF_CHILD_OF => RefType::ChildOf,
            _ => RefType::FollowsFrom,
        };
        if parent != 0 && lh == high && ll == low && ls == parent {
            refs[0].ref_type = ref_type;
            continue;
        }
        refs.push(model::SpanRef {
            ref_type,
            trace_id_high: lh,
            trace_id_low: ll,
            span_id: ls,
        });
    }
    refs
}

#[cfg(test)]
mod tests;
