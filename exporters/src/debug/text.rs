//! Human-readable renderings of OTLP data for the debug exporter: a one-line
//! summary (basic), one line per item (normal) and every field (detailed).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric, ResourceMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans};
use weft_pipeline::data::{count_logs, count_points, count_spans};
use weft_pipeline::Payload;

/// `Traces: resource spans 1, spans 2`.
pub fn summary(payload: &Payload) -> String {
    match payload {
        Payload::Traces(rs) => format!(
            "Traces: resource spans {}, spans {}",
            rs.len(),
            count_spans(rs)
        ),
        Payload::Metrics(rm) => format!(
            "Metrics: resource metrics {}, metrics {}, data points {}",
            rm.len(),
            rm.iter()
                .flat_map(|r| &r.scope_metrics)
                .map(|s| s.metrics.len())
                .sum::<usize>(),
            count_points(rm)
        ),
        Payload::Logs(rl) => format!(
            "Logs: resource logs {}, log records {}",
            rl.len(),
            count_logs(rl)
        ),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Renders an attribute value the way the collector's debug output does:
/// `Str(x)`, `Int(1)`, `Double(1.5)`, `Bool(true)`, `Bytes(..)`, `Slice(..)`, `Map(..)`.
pub fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => "Empty()".into(),
        Some(any_value::Value::StringValue(s)) => format!("Str({s})"),
        Some(any_value::Value::IntValue(i)) => format!("Int({i})"),
        Some(any_value::Value::DoubleValue(d)) => format!("Double({d})"),
        Some(any_value::Value::BoolValue(b)) => format!("Bool({b})"),
        Some(any_value::Value::BytesValue(b)) => format!("Bytes({})", hex(b)),
        Some(any_value::Value::ArrayValue(a)) => format!(
            "Slice([{}])",
            a.values
                .iter()
                .map(|v| plain(&Some(v.clone())))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(any_value::Value::KvlistValue(kv)) => format!(
            "Map({{{}}})",
            kv.values
                .iter()
                .map(|kv| format!("{}:{}", kv.key, plain(&kv.value)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(any_value::Value::StringValueStrindex(i)) => format!("StrIndex({i})"),
    }
}

/// A value without its type wrapper, for one-line output.
fn plain(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(_) => value(v),
    }
}

fn attrs_inline(attrs: &[KeyValue]) -> String {
    attrs
        .iter()
        .map(|kv| format!("{}={}", kv.key, plain(&kv.value)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn attrs_block(out: &mut String, title: &str, attrs: &[KeyValue]) {
    if attrs.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for kv in attrs {
        let _ = writeln!(out, "     -> {}: {}", kv.key, value(&kv.value));
    }
}

/// Nanoseconds since the epoch as `2023-11-14 22:13:20.5 +0000 UTC`.
pub fn timestamp(nanos: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(nanos);
    let s = humantime::format_rfc3339_nanos(t).to_string();
    // `2023-11-14T22:13:20.500000000Z`
    let (date, rest) = s.split_at(10.min(s.len()));
    let rest = rest.trim_start_matches('T').trim_end_matches('Z');
    let (clock, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{date} {clock} +0000 UTC")
    } else {
        format!("{date} {clock}.{frac} +0000 UTC")
    }
}

fn resource_line(r: &Option<Resource>) -> String {
    r.as_ref()
        .map(|r| attrs_inline(&r.attributes))
        .unwrap_or_default()
}

fn scope_line(s: &Option<InstrumentationScope>) -> String {
    match s {
        Some(s) if !s.version.is_empty() => format!("{}@{}", s.name, s.version),
        Some(s) => s.name.clone(),
        None => String::new(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Internal) => "Internal",
        Ok(span::SpanKind::Server) => "Server",
        Ok(span::SpanKind::Client) => "Client",
        Ok(span::SpanKind::Producer) => "Producer",
        Ok(span::SpanKind::Consumer) => "Consumer",
        _ => "Unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match status::StatusCode::try_from(code) {
        Ok(status::StatusCode::Ok) => "Ok",
        Ok(status::StatusCode::Error) => "Error",
        _ => "Unset",
    }
}

/// One line per resource, scope and item.
pub fn normal(payload: &Payload) -> String {
    let mut out = String::new();
    match payload {
        Payload::Traces(rs) => {
            for (i, r) in rs.iter().enumerate() {
                let _ = writeln!(out, "ResourceTraces #{i} {}", resource_line(&r.resource));
                for (j, s) in r.scope_spans.iter().enumerate() {
                    let _ = writeln!(out, "ScopeTraces #{j} {}", scope_line(&s.scope));
                    for sp in &s.spans {
                        let _ = writeln!(
                            out,
                            "{} {} {} {}",
                            sp.name,
                            hex(&sp.trace_id),
                            hex(&sp.span_id),
                            attrs_inline(&sp.attributes)
                        );
                    }
                }
            }
        }
        Payload::Metrics(rm) => {
            for (i, r) in rm.iter().enumerate() {
                let _ = writeln!(out, "ResourceMetrics #{i} {}", resource_line(&r.resource));
                for (j, s) in r.scope_metrics.iter().enumerate() {
                    let _ = writeln!(out, "ScopeMetrics #{j} {}", scope_line(&s.scope));
                    for m in &s.metrics {
                        metric_lines(&mut out, m);
                    }
                }
            }
        }
        Payload::Logs(rl) => {
            for (i, r) in rl.iter().enumerate() {
                let _ = writeln!(out, "ResourceLog #{i} {}", resource_line(&r.resource));
                for (j, s) in r.scope_logs.iter().enumerate() {
                    let _ = writeln!(out, "ScopeLog #{j} {}", scope_line(&s.scope));
                    for l in &s.log_records {
                        let _ = writeln!(out, "{} {}", plain(&l.body), attrs_inline(&l.attributes));
                    }
                }
            }
        }
    }
    out
}

fn metric_lines(out: &mut String, m: &Metric) {
    let point = |attrs: &[KeyValue], v: String| {
        let labels = attrs
            .iter()
            .map(|kv| format!("{}={}", kv.key, plain(&kv.value)))
            .collect::<Vec<_>>()
            .join(",");
        format!("{}{{{labels}}} {v}", m.name)
    };
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => d.to_string(),
        Some(number_data_point::Value::AsInt(i)) => i.to_string(),
        None => String::new(),
    };
    match &m.data {
        Some(metric::Data::Gauge(g)) => {
            for p in &g.data_points {
                let _ = writeln!(out, "{}", point(&p.attributes, number(&p.value)));
            }
        }
        Some(metric::Data::Sum(s)) => {
            for p in &s.data_points {
                let _ = writeln!(out, "{}", point(&p.attributes, number(&p.value)));
            }
        }
        Some(metric::Data::Histogram(h)) => {
            for p in &h.data_points {
                let v = format!("count={} sum={}", p.count, p.sum.unwrap_or_default());
                let _ = writeln!(out, "{}", point(&p.attributes, v));
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            for p in &h.data_points {
                let v = format!("count={} sum={}", p.count, p.sum.unwrap_or_default());
                let _ = writeln!(out, "{}", point(&p.attributes, v));
            }
        }
        Some(metric::Data::Summary(s)) => {
            for p in &s.data_points {
                let v = format!("count={} sum={}", p.count, p.sum);
                let _ = writeln!(out, "{}", point(&p.attributes, v));
            }
        }
        None => {
            let _ = writeln!(out, "{} (no data)", m.name);
        }
    }
}

fn resource_block(out: &mut String, title: &str, i: usize, r: &Option<Resource>, schema: &str) {
    let _ = writeln!(out, "{title} #{i}");
    let _ = writeln!(out, "Resource SchemaURL: {schema}");
    if let Some(r) = r {
        attrs_block(out, "Resource attributes", &r.attributes);
    }
}

fn scope_block(
    out: &mut String,
    title: &str,
    j: usize,
    s: &Option<InstrumentationScope>,
    schema: &str,
) {
    let _ = writeln!(out, "{title} #{j}");
    let _ = writeln!(out, "{title} SchemaURL: {schema}");
    let (name, version) = s
        .as_ref()
        .map(|s| (s.name.as_str(), s.version.as_str()))
        .unwrap_or_default();
    let _ = writeln!(out, "InstrumentationScope {name} {version}");
    if let Some(s) = s {
        attrs_block(out, "InstrumentationScope attributes", &s.attributes);
    }
}

/// Every field of every item.
pub fn detailed(payload: &Payload) -> String {
    let mut out = String::new();
    match payload {
        Payload::Traces(rs) => traces_detailed(&mut out, rs),
        Payload::Metrics(rm) => metrics_detailed(&mut out, rm),
        Payload::Logs(rl) => logs_detailed(&mut out, rl),
    }
    out
}

fn traces_detailed(out: &mut String, rs: &[ResourceSpans]) {
    for (i, r) in rs.iter().enumerate() {
        resource_block(out, "ResourceSpans", i, &r.resource, &r.schema_url);
        for (j, s) in r.scope_spans.iter().enumerate() {
            scope_block(out, "ScopeSpans", j, &s.scope, &s.schema_url);
            for (k, sp) in s.spans.iter().enumerate() {
                let _ = writeln!(out, "Span #{k}");
                let _ = writeln!(out, "    Trace ID       : {}", hex(&sp.trace_id));
                let _ = writeln!(out, "    Parent ID      : {}", hex(&sp.parent_span_id));
                let _ = writeln!(out, "    ID             : {}", hex(&sp.span_id));
                let _ = writeln!(out, "    Name           : {}", sp.name);
                let _ = writeln!(out, "    Kind           : {}", kind_name(sp.kind));
                let _ = writeln!(out, "    Trace state    : {}", sp.trace_state);
                let _ = writeln!(out, "    Flags          : {}", sp.flags);
                let _ = writeln!(
                    out,
                    "    Start time     : {}",
                    timestamp(sp.start_time_unix_nano)
                );
                let _ = writeln!(
                    out,
                    "    End time       : {}",
                    timestamp(sp.end_time_unix_nano)
                );
                let (code, message) = sp
                    .status
                    .as_ref()
                    .map(|s| (s.code, s.message.as_str()))
                    .unwrap_or_default();
                let _ = writeln!(out, "    Status code    : {}", status_name(code));
                let _ = writeln!(out, "    Status message : {message}");
                attrs_block(out, "Attributes", &sp.attributes);
                if !sp.events.is_empty() {
                    let _ = writeln!(out, "Events:");
                    for (e, ev) in sp.events.iter().enumerate() {
                        let _ = writeln!(out, "SpanEvent #{e}");
                        let _ = writeln!(out, "     -> Name: {}", ev.name);
                        let _ =
                            writeln!(out, "     -> Timestamp: {}", timestamp(ev.time_unix_nano));
                        let _ = writeln!(
                            out,
                            "     -> DroppedAttributesCount: {}",
                            ev.dropped_attributes_count
                        );
                        attrs_block(out, "     -> Attributes", &ev.attributes);
                    }
                }
                if !sp.links.is_empty() {
                    let _ = writeln!(out, "Links:");
                    for (l, link) in sp.links.iter().enumerate() {
                        let _ = writeln!(out, "SpanLink #{l}");
                        let _ = writeln!(out, "     -> Trace ID: {}", hex(&link.trace_id));
                        let _ = writeln!(out, "     -> ID: {}", hex(&link.span_id));
                        let _ = writeln!(out, "     -> TraceState: {}", link.trace_state);
                        let _ = writeln!(
                            out,
                            "     -> DroppedAttributesCount: {}",
                            link.dropped_attributes_count
                        );
                        attrs_block(out, "     -> Attributes", &link.attributes);
                    }
                }
            }
        }
    }
}

fn metrics_detailed(out: &mut String, rm: &[ResourceMetrics]) {
    for (i, r) in rm.iter().enumerate() {
        resource_block(out, "ResourceMetrics", i, &r.resource, &r.schema_url);
        for (j, s) in r.scope_metrics.iter().enumerate() {
            scope_block(out, "ScopeMetrics", j, &s.scope, &s.schema_url);
            for (k, m) in s.metrics.iter().enumerate() {
                let _ = writeln!(out, "Metric #{k}");
                let _ = writeln!(out, "Descriptor:");
                let _ = writeln!(out, "     -> Name: {}", m.name);
                let _ = writeln!(out, "     -> Description: {}", m.description);
                let _ = writeln!(out, "     -> Unit: {}", m.unit);
                let kind = match &m.data {
                    Some(metric::Data::Gauge(_)) => "Gauge",
                    Some(metric::Data::Sum(_)) => "Sum",
                    Some(metric::Data::Histogram(_)) => "Histogram",
                    Some(metric::Data::ExponentialHistogram(_)) => "ExponentialHistogram",
                    Some(metric::Data::Summary(_)) => "Summary",
                    None => "Empty",
                };
                let _ = writeln!(out, "     -> DataType: {kind}");
                metric_lines(out, m);
            }
        }
    }
}

fn logs_detailed(out: &mut String, rl: &[ResourceLogs]) {
    for (i, r) in rl.iter().enumerate() {
        resource_block(out, "ResourceLog", i, &r.resource, &r.schema_url);
        for (j, s) in r.scope_logs.iter().enumerate() {
            scope_block(out, "ScopeLogs", j, &s.scope, &s.schema_url);
            for (k, l) in s.log_records.iter().enumerate() {
                let _ = writeln!(out, "LogRecord #{k}");
                let _ = writeln!(
                    out,
                    "ObservedTimestamp: {}",
                    timestamp(l.observed_time_unix_nano)
                );
                let _ = writeln!(out, "Timestamp: {}", timestamp(l.time_unix_nano));
                let _ = writeln!(out, "SeverityText: {}", l.severity_text);
                let _ = writeln!(out, "SeverityNumber: {}", l.severity_number);
                let _ = writeln!(out, "Body: {}", value(&l.body));
                attrs_block(out, "Attributes", &l.attributes);
                let _ = writeln!(out, "Trace ID: {}", hex(&l.trace_id));
                let _ = writeln!(out, "Span ID: {}", hex(&l.span_id));
                let _ = writeln!(out, "Flags: {}", l.flags);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::resource_spans;

    #[test]
    fn summary_counts() {
        let p = Payload::Traces(resource_spans(&["a", "b"]));
        assert_eq!(summary(&p), "Traces: resource spans 1, spans 2");
    }

    #[test]
    fn normal_is_one_line_per_span() {
        let p = Payload::Traces(resource_spans(&["GET /cart", "SELECT cart"]));
        assert_eq!(
            normal(&p),
            "ResourceTraces #0 service.name=checkout\n\
             ScopeTraces #0 test@1.0\n\
             GET /cart 01010101010101010101010101010101 0101010101010101 http.route=/cart\n\
             SELECT cart 02020202020202020202020202020202 0202020202020202 http.route=/cart\n"
        );
    }

    #[test]
    fn detailed_has_every_field() {
        let p = Payload::Traces(resource_spans(&["GET /cart"]));
        let text = detailed(&p);
        for line in [
            "ResourceSpans #0",
            "     -> service.name: Str(checkout)",
            "InstrumentationScope test 1.0",
            "    Trace ID       : 01010101010101010101010101010101",
            "    ID             : 0101010101010101",
            "    Name           : GET /cart",
            "    Kind           : Server",
            "    Start time     : 2023-11-14 22:13:20 +0000 UTC",
            "    End time       : 2023-11-14 22:13:20.25 +0000 UTC",
            "    Status code    : Ok",
            "     -> http.route: Str(/cart)",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
