//! OTLP/JSON request bodies.
//!
//! The fast path is the serde support generated into `opentelemetry-proto`
//! (`with-serde`): lowerCamelCase keys, hex trace and span ids, 64-bit integers
//! as strings or numbers, enums as integers, unknown keys ignored. A trace or
//! log body it refuses (or reads as empty) gets one more try after
//! [`normalize`], which covers what the protobuf JSON mapping allows and the
//! generated code does not: `null` members, snake_case keys, enum names
//! (`"SPAN_KIND_SERVER"`), 32-bit integers as strings, and
//! `arrayValue`/`kvlistValue`/`KeyValue` objects with omitted default fields.
//! Well-formed trace and log bodies never pay for the second pass; metric
//! bodies always take it (see `parse_metrics`).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, AggregationTemporality, Exemplar, ExponentialHistogram, Gauge, Histogram, Metric,
    NumberDataPoint, Sum, Summary,
};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use weft_pipeline::{Payload, Signal};

/// Decodes an OTLP/JSON export request of one signal; the error is for the client.
pub fn decode(signal: Signal, body: &[u8]) -> Result<Payload, String> {
    // serde would also build a request out of a JSON array; OTLP wants an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("the body must be a JSON object".to_string());
    }
    Ok(match signal {
        Signal::Traces => Payload::Traces(
            parse::<ExportTraceServiceRequest>(body, |r| r.resource_spans.is_empty())?
                .resource_spans,
        ),
        Signal::Metrics => Payload::Metrics(parse_metrics(body)?.resource_metrics),
        Signal::Logs => Payload::Logs(
            parse::<ExportLogsServiceRequest>(body, |r| r.resource_logs.is_empty())?.resource_logs,
        ),
    })
}

/// Typed first; on failure, or when the typed result is empty (a body with
/// snake_case keys reads as empty, every key being unknown), normalized.
fn parse<T: DeserializeOwned>(body: &[u8], is_empty: fn(&T) -> bool) -> Result<T, String> {
    let first = match serde_json::from_slice::<T>(body) {
        Ok(v) if !is_empty(&v) => return Ok(v),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    };
    // Not JSON at all: the first error already says where.
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return first;
    };
    normalize(&mut value, "");
    match T::deserialize(&value) {
        Ok(v) => Ok(v),
        Err(_) => first,
    }
}

/// Metrics always take the normalized route: the generated code reads the
/// `Metric.data` and data point `value` oneofs through `#[serde(flatten)]`
/// on an `Option`, which turns a malformed `sum` or `asInt` into a silent
/// `None`. [`check_metric_oneofs`] turns those back into errors.
fn parse_metrics(body: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    normalize(&mut value, "");
    let req = ExportMetricsServiceRequest::deserialize(&value).map_err(|e| e.to_string())?;
    check_metric_oneofs(&value, &req)?;
    Ok(req)
}

/// Walks the JSON and the decoded request side by side: every oneof member
/// present in the JSON must have produced a value.
fn check_metric_oneofs(value: &Value, req: &ExportMetricsServiceRequest) -> Result<(), String> {
    for (rv, rm) in members(value, "resourceMetrics")
        .iter()
        .zip(&req.resource_metrics)
    {
        for (sv, sm) in members(rv, "scopeMetrics").iter().zip(&rm.scope_metrics) {
            for (mv, m) in members(sv, "metrics").iter().zip(&sm.metrics) {
                check_metric(mv, m)?;
            }
        }
    }
    Ok(())
}

/// The array under `key`, or nothing.
fn members<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn check_metric(mv: &Value, m: &Metric) -> Result<(), String> {
    let Some(data) = &m.data else {
        // Re-read the member alone to report why it was dropped.
        let why = |r: Result<(), serde_json::Error>| {
            r.err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "invalid value".into())
        };
        for key in [
            "gauge",
            "sum",
            "histogram",
            "exponentialHistogram",
            "summary",
        ] {
            if let Some(v) = mv.get(key) {
                let r = match key {
                    "gauge" => Gauge::deserialize(v).map(drop),
                    "sum" => Sum::deserialize(v).map(drop),
                    "histogram" => Histogram::deserialize(v).map(drop),
                    "exponentialHistogram" => ExponentialHistogram::deserialize(v).map(drop),
                    _ => Summary::deserialize(v).map(drop),
                };
                return Err(format!("metric {:?}: {key}: {}", m.name, why(r)));
            }
        }
        return Ok(());
    };
    let points = |key: &str| mv.get(key).map_or(&[][..], |d| members(d, "dataPoints"));
    let bad_number = |pv: &Value| pv.get("asInt").or_else(|| pv.get("asDouble")).is_some();
    let exemplars = |pv: &Value, ex: &[Exemplar]| -> Result<(), String> {
        for (ev, e) in members(pv, "exemplars").iter().zip(ex) {
            if e.value.is_none() && bad_number(ev) {
                return Err(format!("metric {:?}: invalid exemplar value", m.name));
            }
        }
        Ok(())
    };
    let number_points = |key: &str, dps: &[NumberDataPoint]| -> Result<(), String> {
        for (pv, p) in points(key).iter().zip(dps) {
            if p.value.is_none() && bad_number(pv) {
                return Err(format!(
                    "metric {:?}: invalid data point value: asInt must be an integer (number or string), asDouble a number",
                    m.name
                ));
            }
            exemplars(pv, &p.exemplars)?;
        }
        Ok(())
    };
    match data {
        metric::Data::Gauge(g) => number_points("gauge", &g.data_points),
        metric::Data::Sum(s) => number_points("sum", &s.data_points),
        metric::Data::Histogram(h) => {
            for (pv, p) in points("histogram").iter().zip(&h.data_points) {
                exemplars(pv, &p.exemplars)?;
            }
            Ok(())
        }
        metric::Data::ExponentialHistogram(h) => {
            for (pv, p) in points("exponentialHistogram").iter().zip(&h.data_points) {
                exemplars(pv, &p.exemplars)?;
            }
            Ok(())
        }
        metric::Data::Summary(_) => Ok(()),
    }
}

/// Rewrites a parsed body into the shape the generated serde code accepts.
/// `key` is the member name under which `v` was found (lowerCamelCase).
pub fn normalize(v: &mut Value, key: &str) {
    match v {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut child) in old {
                if child.is_null() {
                    continue;
                }
                let k = camel_case(&k);
                normalize(&mut child, &k);
                map.insert(k, child);
            }
            fill_defaults(map, key);
            rewrite_scalars(map);
        }
        Value::Array(items) => {
            // Elements of these arrays are KeyValue objects, whose `key` has no default.
            let key_values = key == "attributes" || (key == "values" && items.iter().any(has_key));
            for item in items.iter_mut() {
                normalize(item, key);
                if key_values {
                    if let Value::Object(m) = item {
                        m.entry("key")
                            .or_insert_with(|| Value::String(String::new()));
                    }
                }
            }
        }
        _ => {}
    }
}

fn has_key(v: &Value) -> bool {
    v.get("key").is_some()
}

/// `arrayValue: {}` and `kvlistValue: {}` are the empty list in protobuf JSON.
fn fill_defaults(map: &mut Map<String, Value>, key: &str) {
    if key == "arrayValue" || key == "kvlistValue" {
        map.entry("values")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
}

/// Enum names to numbers, and 32-bit integers written as strings to numbers.
fn rewrite_scalars(map: &mut Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        let Value::String(s) = v else { continue };
        let enum_value = match k.as_str() {
            "kind" => SpanKind::from_str_name(s).map(|e| e as i32),
            "code" => StatusCode::from_str_name(s).map(|e| e as i32),
            "severityNumber" => SeverityNumber::from_str_name(s).map(|e| e as i32),
            "aggregationTemporality" => AggregationTemporality::from_str_name(s).map(|e| e as i32),
            _ => None,
        };
        if let Some(n) = enum_value {
            *v = Value::from(n);
            continue;
        }
        if INT32_FIELDS.contains(&k.as_str()) {
            if let Ok(n) = s.trim().parse::<i64>() {
                *v = Value::from(n);
            }
        }
    }
}

/// Members that are 32-bit integers in the OTLP protos; the generated code
/// reads them only as JSON numbers.
const INT32_FIELDS: &[&str] = &[
    "kind",
    "code",
    "severityNumber",
    "aggregationTemporality",
    "flags",
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "scale",
    "offset",
];

/// `resource_spans` -> `resourceSpans`; lowerCamelCase input is unchanged.
fn camel_case(k: &str) -> String {
    if !k.contains('_') {
        return k.to_string();
    }
    let mut out = String::with_capacity(k.len());
    let mut upper = false;
    for c in k.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point::Value as Nv, ResourceMetrics,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn traces(body: &str) -> Vec<ResourceSpans> {
        match decode(Signal::Traces, body.as_bytes()) {
            Ok(Payload::Traces(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    fn metrics(body: &str) -> Vec<ResourceMetrics> {
        match decode(Signal::Metrics, body.as_bytes()) {
            Ok(Payload::Metrics(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn logs(body: &str) -> Vec<ResourceLogs> {
        match decode(Signal::Logs, body.as_bytes()) {
            Ok(Payload::Logs(l)) => l,
            other => panic!("{other:?}"),
        }
    }

    fn spans(rs: &[ResourceSpans]) -> Vec<&Span> {
        rs.iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect()
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Av> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    /// One span with `extra` spliced into the span object.
    fn span_json(extra: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"name":"s"{extra}}}]}}]}}]}}"#)
    }

    fn one_span(extra: &str) -> Span {
        let rs = traces(&span_json(extra));
        spans(&rs)[0].clone()
    }

    #[test]
    fn spec_example_trace() {
        let rs = traces(include_str!("testdata/spec_trace.json"));
        let s = spans(&rs);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].trace_id, hex("5b8efff798038103d269b633813fc60c"));
        assert_eq!(s[0].span_id, hex("eee19b7ec3c1b174"));
        assert_eq!(s[0].parent_span_id, hex("eee19b7ec3c1b173"));
        assert_eq!(s[0].name, "I'm a server span");
        assert_eq!(s[0].kind, 2);
        assert_eq!(s[0].start_time_unix_nano, 1544712660000000000);
        assert_eq!(s[0].end_time_unix_nano, 1544712661000000000);
        assert_eq!(
            attr(&s[0].attributes, "my.span.attr"),
            Some(&Av::StringValue("some value".into()))
        );
        let scope = rs[0].scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("my.library", "1.0.0")
        );
    }

    #[test]
    fn spec_example_metrics() {
        let rm = metrics(include_str!("testdata/spec_metrics.json"));
        let ms = &rm[0].scope_metrics[0].metrics;
        assert_eq!(ms.len(), 4);
        match &ms[0].data {
            Some(Data::Sum(s)) => {
                assert_eq!(s.aggregation_temporality, 1);
                assert!(s.is_monotonic);
                assert_eq!(s.data_points[0].value, Some(Nv::AsDouble(5.0)));
                assert_eq!(s.data_points[0].start_time_unix_nano, 1544712660300000000);
            }
            other => panic!("{other:?}"),
        }
        match &ms[2].data {
            Some(Data::Histogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!(p.count, 2);
                assert_eq!(p.bucket_counts, vec![1, 1]);
                assert_eq!(p.explicit_bounds, vec![1.0]);
                assert_eq!((p.sum, p.min, p.max), (Some(2.0), Some(0.0), Some(2.0)));
            }
            other => panic!("{other:?}"),
        }
        match &ms[3].data {
            Some(Data::ExponentialHistogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!((p.count, p.zero_count, p.scale), (3, 1, 0));
                let pos = p.positive.as_ref().unwrap();
                assert_eq!((pos.offset, pos.bucket_counts.clone()), (1, vec![0, 2]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Payload::Metrics(rm).item_count(), 4);
    }

    #[test]
    fn spec_example_logs() {
        let rl = logs(include_str!("testdata/spec_logs.json"));
        let r = &rl[0].scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1544712660300000000);
        assert_eq!(r.severity_number, 10);
        assert_eq!(r.severity_text, "Information");
        assert_eq!(r.trace_id, hex("5b8efff798038103d269b633813fc60c"));
        assert_eq!(
            r.body.as_ref().and_then(|b| b.value.clone()),
            Some(Av::StringValue("Example log record".into()))
        );
        assert_eq!(
            attr(&r.attributes, "int.attribute"),
            Some(&Av::IntValue(10))
        );
        assert_eq!(
            attr(&r.attributes, "boolean.attribute"),
            Some(&Av::BoolValue(true))
        );
        assert_eq!(
            attr(&r.attributes, "double.attribute"),
            Some(&Av::DoubleValue(637.704))
        );
        match attr(&r.attributes, "array.attribute") {
            Some(Av::ArrayValue(a)) => assert_eq!(a.values.len(), 2),
            other => panic!("{other:?}"),
        }
        match attr(&r.attributes, "map.attribute") {
            Some(Av::KvlistValue(kv)) => assert_eq!(kv.values[0].key, "some.map.key"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn python_exporter_traces() {
        let rs = traces(include_str!("testdata/python_traces.json"));
        let s = spans(&rs);
        assert_eq!(s.len(), 2);
        let (child, parent) = (s[0], s[1]);
        assert_eq!(child.name, "child");
        assert_eq!(child.trace_id, hex("b362680d0af67f891dd3df26c2c01bf1"));
        assert_eq!(child.span_id, hex("2711d45732030949"));
        assert_eq!(child.parent_span_id, hex("fc93a44a22d747da"));
        assert_eq!(child.kind, 3);
        assert_eq!(child.flags, 256);
        let status = child.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
        assert_eq!(parent.name, "parent");
        assert_eq!(parent.span_id, hex("fc93a44a22d747da"));
        assert!(parent.parent_span_id.is_empty());
        assert_eq!(parent.start_time_unix_nano, 1795319973405697582);
        assert_eq!(
            attr(&parent.attributes, "big"),
            Some(&Av::IntValue(4611686018427387904))
        );
        assert_eq!(attr(&parent.attributes, "f"), Some(&Av::DoubleValue(1.5)));
        assert_eq!(parent.events[0].name, "ev");
        assert_eq!(parent.events[0].time_unix_nano, 1795319973405744131);
        // `"status": {}` is a status with the default code.
        assert_eq!(parent.status.as_ref().map(|s| s.code), Some(0));
    }

    #[test]
    fn python_exporter_metrics_and_logs() {
        let rm = metrics(include_str!("testdata/python_metrics.json"));
        let ms = &rm[0].scope_metrics[0].metrics;
        assert_eq!(
            ms.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["reqs", "lat", "ud"]
        );
        match &ms[2].data {
            Some(Data::Sum(s)) => assert_eq!(s.data_points[0].value, Some(Nv::AsInt(-2))),
            other => panic!("{other:?}"),
        }
        match &ms[1].data {
            Some(Data::Histogram(h)) => {
                assert_eq!(h.data_points[0].bucket_counts.len(), 16);
                assert_eq!(h.data_points[0].bucket_counts[3], 1);
            }
            other => panic!("{other:?}"),
        }
        let rl = logs(include_str!("testdata/python_logs.json"));
        let r = &rl[0].scope_logs[0].log_records[0];
        assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "WARN"));
        assert_eq!(
            r.body.as_ref().and_then(|b| b.value.clone()),
            Some(Av::StringValue("hello world".into()))
        );
        assert_eq!(
            attr(&r.attributes, "code.line.number"),
            Some(&Av::IntValue(50))
        );
    }

    #[test]
    fn node_exporter_traces() {
        let rs = traces(include_str!("testdata/node_traces.json"));
        let s = spans(&rs);
        assert_eq!(s[0].name, "node-op");
        assert_eq!(s[0].trace_id, hex("6422ab2197b1deec6f73f139ab1df2a7"));
        assert_eq!(s[0].span_id, hex("7177dac2859e8cf6"));
        // intValue as a JSON number, as this exporter writes it.
        assert_eq!(attr(&s[0].attributes, "n"), Some(&Av::IntValue(5)));
        assert_eq!(s[0].flags, 257);
        assert_eq!(s[0].status.as_ref().map(|s| s.code), Some(2));
    }

    #[test]
    fn integers_as_strings_or_numbers() {
        let a = one_span(r#","startTimeUnixNano":"18446744073709551615","endTimeUnixNano":5"#);
        assert_eq!(
            (a.start_time_unix_nano, a.end_time_unix_nano),
            (u64::MAX, 5)
        );
        let a = one_span(
            r#","attributes":[{"key":"a","value":{"intValue":"-9223372036854775808"}},{"key":"b","value":{"intValue":-3}}]"#,
        );
        assert_eq!(attr(&a.attributes, "a"), Some(&Av::IntValue(i64::MIN)));
        assert_eq!(attr(&a.attributes, "b"), Some(&Av::IntValue(-3)));
        // 32-bit integers may be strings too in the protobuf JSON mapping.
        let a = one_span(r#","kind":"3","droppedAttributesCount":"7","flags":"1""#);
        assert_eq!((a.kind, a.dropped_attributes_count, a.flags), (3, 7, 1));
    }

    #[test]
    fn enums_as_numbers_or_names() {
        let a = one_span(r#","kind":4,"status":{"code":1}"#);
        assert_eq!((a.kind, a.status.unwrap().code), (4, 1));
        let a = one_span(r#","kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_ERROR"}"#);
        assert_eq!((a.kind, a.status.unwrap().code), (3, 2));
        let rl = logs(
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SEVERITY_NUMBER_ERROR"}]}]}]}"#,
        );
        assert_eq!(rl[0].scope_logs[0].log_records[0].severity_number, 17);
        let rm = metrics(
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[{"asInt":"4"}]}}]}]}]}"#,
        );
        match &rm[0].scope_metrics[0].metrics[0].data {
            Some(Data::Sum(s)) => {
                assert_eq!(s.aggregation_temporality, 1);
                assert_eq!(s.data_points[0].value, Some(Nv::AsInt(4)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_ignored_everywhere() {
        let body = r#"{"futureTopLevel":1,"resourceSpans":[{"x":{"y":[1,2]},"resource":{"attributes":[],"newThing":"z"},
            "scopeSpans":[{"scope":{"name":"n","extra":true},"spans":[{"name":"s","traceId":"0102030405060708090a0b0c0d0e0f10",
            "spanId":"0102030405060708","unknownNumber":12,"unknownObject":{"a":null},"attributes":[{"key":"k","value":{"stringValue":"v","futureValue":1}}]}]}]}]}"#;
        let rs = traces(body);
        let s = spans(&rs);
        assert_eq!(s[0].name, "s");
        assert_eq!(s[0].span_id, hex("0102030405060708"));
        assert_eq!(
            attr(&s[0].attributes, "k"),
            Some(&Av::StringValue("v".into()))
        );
    }

    #[test]
    fn ids_are_hex_and_may_be_empty() {
        let a = one_span(r#","traceId":"","spanId":"","parentSpanId":"""#);
        assert!(a.trace_id.is_empty() && a.span_id.is_empty() && a.parent_span_id.is_empty());
        let a = one_span(r#","traceId":"5B8EFFF798038103D269B633813FC60C""#);
        assert_eq!(a.trace_id, hex("5b8efff798038103d269b633813fc60c"));
        // Base64, as the generic protobuf JSON mapping would write bytes, is not OTLP/JSON.
        assert!(decode(
            Signal::Traces,
            span_json(r#","traceId":"W47/95gDgQPSabYzgT/GDA==""#).as_bytes()
        )
        .is_err());
        assert!(decode(Signal::Traces, span_json(r#","spanId":"xyz""#).as_bytes()).is_err());
    }

    #[test]
    fn protobuf_json_leniencies() {
        // null members are the default value.
        let a = one_span(r#","traceId":null,"attributes":null,"status":null,"kind":null"#);
        assert!(a.trace_id.is_empty() && a.attributes.is_empty() && a.status.is_none());
        // Original proto field names are accepted as keys.
        let rs = traces(
            r#"{"resource_spans":[{"scope_spans":[{"spans":[{"name":"s","span_id":"0102030405060708","start_time_unix_nano":"9"}]}]}]}"#,
        );
        let s = spans(&rs);
        assert_eq!(
            (s[0].span_id.clone(), s[0].start_time_unix_nano),
            (hex("0102030405060708"), 9)
        );
        // Empty lists may be omitted inside arrayValue / kvlistValue, and a KeyValue's key.
        let a = one_span(
            r#","attributes":[{"key":"e","value":{"arrayValue":{}}},{"key":"m","value":{"kvlistValue":{}}},{"value":{"boolValue":true}}]"#,
        );
        assert!(matches!(attr(&a.attributes, "e"), Some(Av::ArrayValue(v)) if v.values.is_empty()));
        assert!(
            matches!(attr(&a.attributes, "m"), Some(Av::KvlistValue(v)) if v.values.is_empty())
        );
        assert_eq!(attr(&a.attributes, ""), Some(&Av::BoolValue(true)));
        // bytesValue is base64.
        let a = one_span(r#","attributes":[{"key":"b","value":{"bytesValue":"AQID"}}]"#);
        assert_eq!(
            attr(&a.attributes, "b"),
            Some(&Av::BytesValue(vec![1, 2, 3]))
        );
        // An empty AnyValue is a KeyValue without a value.
        let a = one_span(r#","attributes":[{"key":"none","value":{}}]"#);
        assert_eq!(attr(&a.attributes, "none"), None);
    }

    #[test]
    fn malformed_metric_oneofs_are_errors_not_silent_drops() {
        let sum = |dp: &str| {
            format!(
                r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","sum":{{"aggregationTemporality":2,"dataPoints":[{dp}]}}}}]}}]}}]}}"#
            )
        };
        let err = decode(Signal::Metrics, sum(r#"{"asInt":"abc"}"#).as_bytes()).unwrap_err();
        assert!(err.contains("invalid data point value"), "{err}");
        let err = decode(
            Signal::Metrics,
            sum(r#"{"timeUnixNano":"later","asInt":1}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(err.starts_with("metric \"m\": sum: "), "{err}");
        let err = decode(
            Signal::Metrics,
            sum(r#"{"asInt":1,"exemplars":[{"asDouble":"x"}]}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(err.contains("invalid exemplar value"), "{err}");
        // A metric with no data member, or a point with no value, is legal.
        let rm = metrics(&sum(r#"{"timeUnixNano":"1"}"#));
        match &rm[0].scope_metrics[0].metrics[0].data {
            Some(Data::Sum(s)) => assert_eq!(s.data_points[0].value, None),
            other => panic!("{other:?}"),
        }
        let rm =
            metrics(r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"bare"}]}]}]}"#);
        assert_eq!(rm[0].scope_metrics[0].metrics[0].data, None);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [
            "",
            "{",
            "[]",
            "null",
            r#"{"resourceSpans":{}}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":-1}]}]}]}"#,
        ] {
            assert!(decode(Signal::Traces, body.as_bytes()).is_err(), "{body}");
        }
        assert!(decode(Signal::Traces, b"{}").is_ok());
    }
}
