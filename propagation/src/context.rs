//! The canonical context every format is read into and written from.

use std::fmt;
use std::str::FromStr;

use crate::id::{SpanId, TraceId};

/// A propagation format ("style", in the Datadog tracers' words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Style {
    /// W3C `traceparent` + `tracestate` (with Datadog's `dd=` member).
    TraceContext,
    /// W3C `baggage`; never competes for the primary context.
    Baggage,
    /// B3 single header `b3`, falling back to the multi headers when the single
    /// header is absent or malformed (as the OpenTelemetry B3 propagator does).
    B3,
    /// B3 multi headers `X-B3-*` only.
    B3Multi,
    /// Jaeger `uber-trace-id` + `uberctx-*`.
    Jaeger,
    /// OpenTracing `ot-tracer-*` + `ot-baggage-*`.
    OtTrace,
    /// Datadog `x-datadog-*`.
    Datadog,
    /// SkyWalking v3 `sw8` + `sw8-correlation`.
    Sw8,
    /// AWS `X-Amzn-Trace-Id`.
    Xray,
}

impl Style {
    /// Every style, in the default extraction order: context formats first
    /// (tracecontext,datadog,b3,b3multi,jaeger,ottrace,xray,sw8), then baggage.
    pub const DEFAULT_ORDER: [Style; 9] = [
        Style::TraceContext,
        Style::Datadog,
        Style::B3,
        Style::B3Multi,
        Style::Jaeger,
        Style::OtTrace,
        Style::Xray,
        Style::Sw8,
        Style::Baggage,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Style::TraceContext => "tracecontext",
            Style::Baggage => "baggage",
            Style::B3 => "b3",
            Style::B3Multi => "b3multi",
            Style::Jaeger => "jaeger",
            Style::OtTrace => "ottrace",
            Style::Datadog => "datadog",
            Style::Sw8 => "sw8",
            Style::Xray => "xray",
        }
    }

    /// True for every style that carries trace and span ids.
    pub const fn carries_context(self) -> bool {
        !matches!(self, Style::Baggage)
    }

    /// Parses a comma-separated list (`"tracecontext, b3"`), ignoring empty
    /// items and duplicates.
    pub fn parse_list(s: &str) -> Result<Vec<Style>, UnknownStyle> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let style: Style = item.parse()?;
            if !out.contains(&style) {
                out.push(style);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A style name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown propagation style {0:?} (known: tracecontext, baggage, b3, b3multi, jaeger, ottrace, datadog, sw8, xray)")]
pub struct UnknownStyle(pub String);

impl FromStr for Style {
    type Err = UnknownStyle;

    /// Names are case-insensitive; the aliases the Datadog tracers and the
    /// OpenTelemetry SDKs accept (`w3c`, `b3 single header`, `b3single`,
    /// `xray`/`aws-xray`, `ot`, `skywalking`) are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "tracecontext" | "w3c" => Style::TraceContext,
            "baggage" => Style::Baggage,
            "b3" | "b3single" | "b3 single header" => Style::B3,
            "b3multi" => Style::B3Multi,
            "jaeger" => Style::Jaeger,
            "ottrace" | "ot" => Style::OtTrace,
            "datadog" => Style::Datadog,
            "sw8" | "skywalking" => Style::Sw8,
            "xray" | "aws-xray" | "awsxray" => Style::Xray,
            _ => return Err(UnknownStyle(s.to_string())),
        })
    }
}

/// Ordered string map (insertion order kept, keys unique). Baggage and tag sets
/// are small, so a vector beats a hash map here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderedMap(Vec<(String, String)>);

impl OrderedMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`, replacing an existing value in place.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Sets `key` only when it is not there yet.
    pub fn insert_missing(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.0.push((key.to_string(), value.to_string()));
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(pos).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for OrderedMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = OrderedMap::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl serde::Serialize for OrderedMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for OrderedMap {
    /// A JSON object of strings, order kept (a repeated key keeps its first
    /// position and its last value).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<OrderedMap, A::Error> {
                let mut m = OrderedMap::new();
                while let Some((k, v)) = a.next_entry::<String, String>()? {
                    m.insert(k, v);
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// Baggage entries, in the order received. Properties (`;prop`) are not kept.
pub type Baggage = OrderedMap;

/// The remote parent a request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    /// The remote parent span id.
    pub span_id: SpanId,
    /// `None` when the sender left the decision to us.
    pub sampled: Option<bool>,
    /// Datadog sampling priority. Read from Datadog headers and the `dd=`
    /// tracestate member; for the other formats derived from the decision
    /// (0 drop, 1 keep, 2 debug / user keep), as the Datadog tracers do.
    pub sampling_priority: Option<i32>,
    /// B3 `d` / `X-B3-Flags: 1`, Jaeger flags 0x03.
    pub debug: bool,
    /// W3C trace-flags bits weft knows (0x01 sampled, 0x02 random); other bits
    /// are dropped. `None` for the other formats.
    pub trace_flags: Option<u8>,
    /// Datadog origin (`x-datadog-origin`, `o:` in the `dd=` member).
    pub origin: Option<String>,
    /// W3C tracestate, validated and normalized (members joined by `,`).
    pub tracestate: Option<String>,
    /// Datadog `_dd.p.*` tags, except `_dd.p.tid` (the trace id holds it).
    pub propagated_tags: OrderedMap,
    /// `_dd.parent_id`: the last Datadog span id, when the W3C parent differs.
    pub dd_parent_id: Option<SpanId>,
    /// B3's optional parent span id of the remote parent.
    pub b3_parent_span_id: Option<SpanId>,
    /// The decoded `sw8` fields, when the context came from SkyWalking.
    pub sw8: Option<Sw8Parent>,
    /// Datadog `_dd.propagation_error` (`decoding_error`, `extract_max_size`,
    /// `malformed_tid <value>`).
    pub propagation_error: Option<String>,
}

impl SpanContext {
    /// A context with both ids; `None` when either is zero.
    pub fn new(trace_id: TraceId, span_id: SpanId) -> Option<Self> {
        (trace_id.is_valid() && span_id.is_valid()).then(|| SpanContext {
            trace_id,
            span_id,
            sampled: None,
            sampling_priority: None,
            debug: false,
            trace_flags: None,
            origin: None,
            tracestate: None,
            propagated_tags: OrderedMap::new(),
            dd_parent_id: None,
            b3_parent_span_id: None,
            sw8: None,
            propagation_error: None,
        })
    }

    pub fn is_valid(&self) -> bool {
        self.trace_id.is_valid() && self.span_id.is_valid()
    }

    /// Sets the decision and derives the Datadog priority from it.
    pub(crate) fn set_decision(&mut self, sampled: Option<bool>, debug: bool) {
        self.sampled = sampled;
        self.debug = debug && sampled == Some(true);
        self.sampling_priority = sampled.map(|s| match (s, self.debug) {
            (true, true) => 2,
            (true, false) => 1,
            (false, _) => 0,
        });
    }
}

/// The SkyWalking parent as `sw8` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sw8Parent {
    pub trace_id: String,
    pub parent_segment_id: String,
    pub parent_span_id: i32,
    pub parent_service: String,
    pub parent_instance: String,
    pub parent_endpoint: String,
    pub target_address: String,
}

/// A context that arrived on the same request but belongs to another trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanLink {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// W3C flags: 1 when the linked context was sampled.
    pub flags: u8,
    /// The linked context's tracestate (tracecontext links only).
    pub tracestate: Option<String>,
    /// `reason=terminated_context`, `context_headers=<style>`.
    pub attributes: OrderedMap,
}

/// Everything extracted from one request: the primary context (if any format
/// yielded one), a bare sampling decision when ids were absent (B3 `b3: 0`, a
/// lone `X-B3-Sampled`), baggage, and links to other traces.
///
/// Injection takes the same type, so a context can be read in one format and
/// written in another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The style that produced the primary context.
    pub format: Option<Style>,
    pub context: Option<SpanContext>,
    /// A sampling decision that came without ids. Ignored when `context` is set.
    pub decision: Option<bool>,
    pub baggage: Baggage,
    pub links: Vec<SpanLink>,
}

impl Extracted {
    pub fn is_valid(&self) -> bool {
        self.context.as_ref().is_some_and(SpanContext::is_valid)
    }

    /// The decision of the context, or the bare decision without one.
    pub fn sampled(&self) -> Option<bool> {
        match &self.context {
            Some(c) => c.sampled,
            None => self.decision,
        }
    }

    /// An extraction holding one context.
    pub fn from_context(format: Option<Style>, context: SpanContext) -> Self {
        Extracted {
            format,
            context: Some(context),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_names_round_trip() {
        for s in Style::DEFAULT_ORDER {
            assert_eq!(s.name().parse::<Style>(), Ok(s));
        }
        assert_eq!(
            Style::parse_list(" W3C, b3 single header,,datadog,datadog").unwrap(),
            vec![Style::TraceContext, Style::B3, Style::Datadog]
        );
        assert!(Style::parse_list("tracecontext,zipkin").is_err());
    }

    #[test]
    fn ordered_map_keeps_order_and_replaces_in_place() {
        let mut m: OrderedMap = [("b", "1"), ("a", "2")].into_iter().collect();
        m.insert("b", "3");
        m.insert_missing("a", "x");
        m.insert_missing("c", "4");
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            [("b", "3"), ("a", "2"), ("c", "4")]
        );
        assert_eq!(m.remove("a").as_deref(), Some("2"));
        assert_eq!(m.len(), 2);
    }
}
