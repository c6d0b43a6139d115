//! The JSON shapes behind `weft context extract|inject|convert`: headers in,
//! canonical context out, and back; and one id pair between Datadog decimal
//! and OpenTelemetry hex.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::context::{Extracted, OrderedMap, SpanContext, Style};
use crate::formats::tracecontext;
use crate::headers::Headers;
use crate::id::{format_dd_tid, parse_dd_decimal, parse_dd_tid, SpanId, TraceId};
use crate::{extract, inject, ExtractOptions};

/// Input the CLI cannot read (the binary exits 2). An input that reads fine
/// but holds no valid context is not an error: it prints `"valid": false`.
#[derive(Debug, thiserror::Error)]
pub enum CliInputError {
    #[error("input is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> CliInputError {
    CliInputError::Invalid(msg.into())
}

/// Headers as a JSON object: `{"name": "value"}` or `{"name": ["v1", "v2"]}`
/// for a repeated header; names case-insensitive, order kept. Numbers are
/// accepted as their decimal text (handy for Datadog ids).
struct HeadersJson(Headers);

impl<'de> Deserialize<'de> for HeadersJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeadersJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header names to a string or an array of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<HeadersJson, A::Error> {
                let mut h = Headers::new();
                while let Some(name) = a.next_key::<String>()? {
                    for v in a.next_value::<HeaderValues>()?.0 {
                        h.append(&name, v);
                    }
                }
                Ok(HeadersJson(h))
            }
        }
        d.deserialize_map(V)
    }
}

struct HeaderValues(Vec<String>);

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or an array of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValues, E> {
                Ok(HeaderValues(vec![v.to_string()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HeaderValues, E> {
                Ok(HeaderValues(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderValues, E> {
                Ok(HeaderValues(vec![v.to_string()]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HeaderValues, E> {
                Ok(HeaderValues(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<HeaderValues, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element::<Scalar>()? {
                    out.push(v.0);
                }
                Ok(HeaderValues(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One header value inside an array: a string or a number.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the `extract` input.
pub fn headers_from_json(input: &str) -> Result<Headers, CliInputError> {
    if input.trim().is_empty() {
        return Err(invalid(
            "no input: expected a JSON object of headers on standard input",
        ));
    }
    Ok(serde_json::from_str::<HeadersJson>(input)?.0)
}

#[derive(Serialize)]
struct LinkOut<'a> {
    trace_id: String,
    span_id: String,
    attributes: &'a OrderedMap,
}

/// The canonical JSON shape (also `inject`'s input).
#[derive(Serialize)]
struct ContextOut<'a> {
    valid: bool,
    format: Option<&'static str>,
    trace_id: Option<String>,
    span_id: Option<String>,
    sampled: Option<bool>,
    sampling_priority: Option<i32>,
    origin: Option<&'a str>,
    tracestate: Option<&'a str>,
    baggage: &'a OrderedMap,
    links: Vec<LinkOut<'a>>,
}

/// `e` in the canonical JSON shape.
pub fn extracted_to_json(e: &Extracted) -> String {
    let ctx = e.context.as_ref().filter(|c| c.is_valid());
    let out = ContextOut {
        valid: ctx.is_some(),
        format: ctx.and(e.format).map(Style::name),
        trace_id: ctx.map(|c| c.trace_id.to_hex()),
        span_id: ctx.map(|c| c.span_id.to_hex()),
        sampled: e.sampled(),
        sampling_priority: ctx.and_then(|c| c.sampling_priority),
        origin: ctx.and_then(|c| c.origin.as_deref()),
        tracestate: ctx.and_then(|c| c.tracestate.as_deref()),
        baggage: &e.baggage,
        links: e
            .links
            .iter()
            .map(|l| LinkOut {
                trace_id: l.trace_id.to_hex(),
                span_id: l.span_id.to_hex(),
                attributes: &l.attributes,
            })
            .collect(),
    };
    // Serializing plain strings, numbers and maps of strings cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// `weft context extract`: headers JSON in, canonical JSON out. `styles`
/// `None` means every style in the default order.
pub fn extract_json(input: &str, styles: Option<&[Style]>) -> Result<String, CliInputError> {
    let opts = match styles {
        Some(s) if !s.is_empty() => ExtractOptions::with_styles(s),
        _ => ExtractOptions::default(),
    };
    extract_json_with(input, &opts)
}

pub fn extract_json_with(input: &str, opts: &ExtractOptions) -> Result<String, CliInputError> {
    let h = headers_from_json(input)?;
    Ok(extracted_to_json(&extract(&h, opts)))
}

/// `inject`'s input: the canonical shape, plus two optional keys that the
/// canonical shape leaves out. `valid`, `format` and `links` are accepted and
/// ignored, so `extract` output pipes straight in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextIn {
    #[serde(default)]
    #[allow(dead_code)]
    valid: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    format: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    span_id: Option<String>,
    #[serde(default)]
    sampled: Option<bool>,
    #[serde(default)]
    sampling_priority: Option<i32>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    tracestate: Option<String>,
    #[serde(default)]
    baggage: Option<OrderedMap>,
    #[serde(default)]
    #[allow(dead_code)]
    links: Option<serde_json::Value>,
    /// `_dd.p.*` tags; when absent, taken from the tracestate's `dd=` member.
    #[serde(default)]
    propagated_tags: Option<OrderedMap>,
    /// 16 hex digits; when absent, taken from the `dd=` member's `p:`.
    #[serde(default)]
    dd_parent_id: Option<String>,
}

/// Parses the canonical JSON back into an [`Extracted`].
pub fn extracted_from_json(input: &str) -> Result<Extracted, CliInputError> {
    if input.trim().is_empty() {
        return Err(invalid(
            "no input: expected a JSON context object on standard input",
        ));
    }
    let i: ContextIn = serde_json::from_str(input)?;
    let mut e = Extracted {
        baggage: i.baggage.unwrap_or_default(),
        ..Default::default()
    };
    let (trace, span) = match (i.trace_id.as_deref(), i.span_id.as_deref()) {
        (None, None) => {
            e.decision = i.sampled.or(i.sampling_priority.map(|p| p > 0));
            return Ok(e);
        }
        (Some(t), Some(s)) => (t, s),
        _ => {
            return Err(invalid(
                "trace_id and span_id must both be given, or both be null",
            ))
        }
    };
    let trace_id = TraceId::from_hex_padded(&trace.to_ascii_lowercase())
        .filter(|t| t.is_valid())
        .ok_or_else(|| {
            invalid(format!(
                "trace_id {trace:?} is not 1 to 32 hex digits, nonzero"
            ))
        })?;
    let span_id = parse_span_hex(span).ok_or_else(|| {
        invalid(format!(
            "span_id {span:?} is not 1 to 16 hex digits, nonzero"
        ))
    })?;
    let Some(mut ctx) = SpanContext::new(trace_id, span_id) else {
        return Err(invalid("trace_id and span_id must be nonzero"));
    };
    ctx.sampling_priority = i.sampling_priority;
    ctx.sampled = i.sampled.or(i.sampling_priority.map(|p| p > 0));
    ctx.debug = ctx.sampled == Some(true) && i.sampling_priority.is_some_and(|p| p > 1);
    ctx.origin = i.origin.filter(|o| !o.is_empty());
    if let Some(ts) = i.tracestate.as_deref().filter(|t| !t.trim().is_empty()) {
        let normalized = tracecontext::normalize_tracestate(ts)
            .ok_or_else(|| invalid(format!("tracestate {ts:?} is not a valid W3C tracestate")))?;
        ctx.tracestate = Some(normalized);
    }
    let from_dd_member = ctx.tracestate.as_deref().map(dd_member_fields);
    ctx.propagated_tags = match i.propagated_tags {
        Some(t) => t,
        None => from_dd_member
            .as_ref()
            .map(|(t, _)| t.clone())
            .unwrap_or_default(),
    };
    ctx.dd_parent_id = match i.dd_parent_id.as_deref() {
        Some(p) => Some(
            parse_span_hex(p)
                .ok_or_else(|| invalid(format!("dd_parent_id {p:?} is not 16 hex digits")))?,
        ),
        None => from_dd_member.and_then(|(_, p)| p),
    };
    e.format = None;
    e.context = Some(ctx);
    Ok(e)
}

fn parse_span_hex(s: &str) -> Option<SpanId> {
    SpanId::from_hex_padded(&s.to_ascii_lowercase()).filter(|s| s.is_valid())
}

/// `t.*` tags and `p:` of the `dd=` member of a (valid) tracestate.
fn dd_member_fields(ts: &str) -> (OrderedMap, Option<SpanId>) {
    let mut tags = OrderedMap::new();
    let mut parent = None;
    let member = ts
        .split(',')
        .find_map(|m| m.strip_prefix("dd="))
        .unwrap_or_default();
    for item in member.split(';') {
        let Some((k, v)) = item.split_once(':') else {
            continue;
        };
        if k == "p" {
            parent = SpanId::from_hex(v).filter(|p| p.is_valid());
        } else if let Some(t) = k
            .strip_prefix("t.")
            .filter(|t| !t.is_empty() && *t != "tid")
        {
            tags.insert(format!("_dd.p.{t}"), v.replace('~', "="));
        }
    }
    (tags, parent)
}

/// `weft context inject`: canonical JSON in, a JSON object of headers out.
/// `styles` `None` means every style.
pub fn inject_json(input: &str, styles: Option<&[Style]>) -> Result<String, CliInputError> {
    let e = extracted_from_json(input)?;
    let styles = match styles {
        Some(s) if !s.is_empty() => s.to_vec(),
        _ => Style::DEFAULT_ORDER.to_vec(),
    };
    let h = inject(&e, &styles);
    let map: OrderedMap = h.iter().collect();
    Ok(serde_json::to_string(&map)?)
}

/// `convert`'s input: one id pair, either side.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvertIn {
    #[serde(default)]
    trace_id: Option<IdText>,
    #[serde(default)]
    span_id: Option<IdText>,
    #[serde(default, rename = "_dd.p.tid")]
    tid: Option<String>,
    /// `datadog` or `otel`; inferred when absent.
    #[serde(default)]
    from: Option<String>,
}

/// An id given as a JSON string or number.
struct IdText {
    text: String,
    was_number: bool,
}

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id as a string or a non-negative integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdText, E> {
                Ok(IdText {
                    text: v.trim().to_string(),
                    was_number: false,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdText, E> {
                Ok(IdText {
                    text: v.to_string(),
                    was_number: true,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Serialize)]
struct OtelOut {
    trace_id: Option<String>,
    span_id: Option<String>,
}

#[derive(Serialize)]
struct DatadogOut {
    trace_id: Option<String>,
    span_id: Option<String>,
    #[serde(rename = "_dd.p.tid")]
    tid: Option<String>,
}

#[derive(Serialize)]
struct ConvertOut {
    otel: OtelOut,
    datadog: DatadogOut,
}

/// `weft context convert`: one (trace id, span id) pair between Datadog
/// decimal (low 64 bits, plus `_dd.p.tid` for the upper half) and OTel hex.
/// Prints both forms.
pub fn convert_json(input: &str) -> Result<String, CliInputError> {
    if input.trim().is_empty() {
        return Err(invalid(
            "no input: expected a JSON object with trace_id and/or span_id",
        ));
    }
    let i: ConvertIn = serde_json::from_str(input)?;
    if i.trace_id.is_none() && i.span_id.is_none() {
        return Err(invalid("give trace_id, span_id or both"));
    }
    let from_datadog = match i.from.as_deref() {
        Some("datadog") => true,
        Some("otel") => false,
        Some(other) => {
            return Err(invalid(format!(
                "from must be \"datadog\" or \"otel\", not {other:?}"
            )))
        }
        None => infer_datadog(&i),
    };
    let (trace, span) = if from_datadog {
        if i.tid.is_some() && i.trace_id.is_none() {
            return Err(invalid("_dd.p.tid needs a trace_id"));
        }
        let trace = match &i.trace_id {
            None => None,
            Some(t) => {
                let low = parse_dd_decimal(&t.text)
                    .filter(|v| *v != 0)
                    .ok_or_else(|| {
                        invalid(format!(
                            "trace_id {:?} is not a nonzero 64-bit decimal",
                            t.text
                        ))
                    })?;
                let high = match i.tid.as_deref() {
                    None => 0,
                    Some(tid) => parse_dd_tid(tid).ok_or_else(|| {
                        invalid(format!(
                            "_dd.p.tid {tid:?} is not 16 lowercase hex digits, nonzero"
                        ))
                    })?,
                };
                Some(TraceId::from_parts(high, low))
            }
        };
        let span = match &i.span_id {
            None => None,
            Some(s) => Some(
                SpanId::from_decimal(&s.text)
                    .filter(|s| s.is_valid())
                    .ok_or_else(|| {
                        invalid(format!(
                            "span_id {:?} is not a nonzero 64-bit decimal",
                            s.text
                        ))
                    })?,
            ),
        };
        (trace, span)
    } else {
        if i.tid.is_some() {
            return Err(invalid(
                "_dd.p.tid only goes with a Datadog decimal trace_id",
            ));
        }
        let trace = match &i.trace_id {
            None => None,
            Some(t) => Some(
                TraceId::from_hex_padded(&t.text.to_ascii_lowercase())
                    .filter(|t| t.is_valid())
                    .ok_or_else(|| {
                        invalid(format!(
                            "trace_id {:?} is not 1 to 32 hex digits, nonzero",
                            t.text
                        ))
                    })?,
            ),
        };
        let span = match &i.span_id {
            None => None,
            Some(s) => Some(parse_span_hex(&s.text).ok_or_else(|| {
                invalid(format!(
                    "span_id {:?} is not 1 to 16 hex digits, nonzero",
                    s.text
                ))
            })?),
        };
        (trace, span)
    };
    let out = ConvertOut {
        otel: OtelOut {
            trace_id: trace.map(TraceId::to_hex),
            span_id: span.map(SpanId::to_hex),
        },
        datadog: DatadogOut {
            trace_id: trace.map(|t| t.low().to_string()),
            span_id: span.map(SpanId::to_decimal),
            tid: trace
                .filter(|t| !t.is_64bit())
                .map(|t| format_dd_tid(t.high())),
        },
    };
    Ok(serde_json::to_string(&out)?)
}

/// Datadog when a tid is given or an id is a JSON number; otherwise by the
/// trace id's shape (32 characters or any hex letter: OTel), and for a span id
/// alone, digits only means Datadog.
fn infer_datadog(i: &ConvertIn) -> bool {
    if i.tid.is_some()
        || i.trace_id.as_ref().is_some_and(|t| t.was_number)
        || i.span_id.as_ref().is_some_and(|s| s.was_number)
    {
        return true;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (&i.trace_id, &i.span_id) {
        (Some(t), _) => t.text.len() != 32 && digits(&t.text),
        (None, Some(s)) => digits(&s.text),
        (None, None) => false,
    }
}
