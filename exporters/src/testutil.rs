//! Helpers the exporter tests share: settings, sample spans, config parsing.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use weft_pipeline::host::Host;
use weft_pipeline::{Batch, ComponentId, Kind, Payload, Settings, Telemetry};

pub fn settings(id: &str, telemetry: &Telemetry) -> Settings {
    Settings {
        id: ComponentId::parse(id).expect("valid test id"),
        kind: Kind::Exporter,
        telemetry: telemetry.clone(),
        host: Arc::new(Host::new()),
    }
}

pub fn yaml(text: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(text).expect("valid test YAML")
}

pub fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One resource (`service.name` = `checkout`) with spans named as given;
/// span i has trace id [i+1; 16] and span id [i+1; 8].
pub fn resource_spans(names: &[&str]) -> Vec<ResourceSpans> {
    let spans = names
        .iter()
        .enumerate()
        .map(|(i, name)| Span {
            trace_id: vec![i as u8 + 1; 16],
            span_id: vec![i as u8 + 1; 8],
            name: name.to_string(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_250_000_000 + i as u64,
            attributes: vec![string_kv("http.route", "/cart")],
            status: Some(Status {
                code: 1,
                message: String::new(),
            }),
            ..Default::default()
        })
        .collect();
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_kv("service.name", "checkout")],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "test".into(),
                version: "1.0".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

pub fn trace_batch(names: &[&str]) -> Batch {
    Batch::new(Payload::Traces(resource_spans(names)), Arc::from("otlp"))
}

pub fn exporter_value(t: &Telemetry, name: &str, id: &str) -> i64 {
    t.value(name, &[("exporter", id)])
        .unwrap_or_else(|| panic!("{name} is not registered for {id}"))
}
