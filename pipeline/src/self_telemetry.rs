//! weft's own metrics pushed out: `service.telemetry.metrics.readers` entries of
//! the collector's `periodic` form with an OTLP exporter, carrying
//! `service.telemetry.resource`.
//!
//! Every interval the self-metrics registry (the same series the Prometheus
//! endpoint serves) is turned into one OTLP metrics request and handed to a
//! private instance of weft's own `otlp_grpc` or `otlp_http` exporter, so
//! endpoints, TLS, headers, compression, retries and the bounded sending queue
//! behave as they do for data. That exporter runs on its own tasks: a slow or
//! dead endpoint never touches the data path; what it cannot take is dropped
//! and counted (`otelcol_exporter_enqueue_failed_metric_points` and
//! `otelcol_exporter_send_failed_metric_points` with
//! `exporter="otlp_grpc/self_telemetry_0"`, and `weft_self_telemetry_pushes`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge as OtlpGauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_yaml_ng::{Mapping, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::component::{ComponentId, Exporter, Kind, Registry, Settings};
use crate::config::TelemetryConfig;
use crate::data::{Batch, Payload, Signal};
use crate::host::Host;
use crate::telemetry::{Series, Telemetry};

/// The collector's default export interval of a periodic reader (60 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const SCOPE: &str = "weft";
/// The header weft's own telemetry requests carry. A receiver does not trace a
/// request that has it, and the data it carries never makes an exporter span.
pub const SELF_TELEMETRY_HEADER: &str = "weft-self-telemetry";

#[derive(Debug, thiserror::Error)]
pub enum SelfTelemetryError {
    #[error("service::telemetry::{path}: {message}")]
    Config { path: String, message: String },
    #[error("self-metrics exporter {id}: {message}")]
    Exporter { id: String, message: String },
}

pub(crate) fn config_err(
    path: impl Into<String>,
    message: impl Into<String>,
) -> SelfTelemetryError {
    SelfTelemetryError::Config {
        path: path.into(),
        message: message.into(),
    }
}

/// One `periodic` reader: how often, and which weft exporter with which config.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodicReader {
    pub interval: Duration,
    pub timeout: Duration,
    /// `otlp_grpc` or `otlp_http`.
    pub exporter_type: &'static str,
    /// That exporter's config, in weft's (the collector's exporter) keys.
    pub exporter_config: Value,
}

/// The periodic readers of `service.telemetry.metrics.readers` (pull readers
/// are the Prometheus endpoint, handled elsewhere).
pub fn periodic_readers(cfg: &TelemetryConfig) -> Result<Vec<PeriodicReader>, SelfTelemetryError> {
    let Some(readers) = &cfg.metrics.readers else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, r) in readers.iter().enumerate() {
        let path = format!("metrics::readers::{i}");
        let Some(map) = r.as_mapping() else {
            return Err(config_err(
                path,
                "a reader is a map: {pull: ...} or {periodic: ...}",
            ));
        };
        for (k, v) in map {
            match k.as_str() {
                Some("pull") => {}
                Some("periodic") => out.push(periodic(&format!("{path}::periodic"), v)?),
                other => {
                    return Err(config_err(
                        path,
                        format!("unknown reader {other:?} (valid: pull, periodic)"),
                    ))
                }
            }
        }
    }
    Ok(out)
}

pub(crate) fn millis(
    path: &str,
    v: Option<&Value>,
    default: Duration,
) -> Result<Duration, SelfTelemetryError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(config_err(
                path,
                "must be a positive number of milliseconds",
            )),
        },
        Some(Value::String(s)) => crate::config::duration::parse(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| config_err(path, format!("{s:?} is not a positive duration"))),
        Some(_) => Err(config_err(
            path,
            "must be milliseconds (a number) or a duration",
        )),
    }
}

fn periodic(path: &str, v: &Value) -> Result<PeriodicReader, SelfTelemetryError> {
    let Some(m) = v.as_mapping() else {
        return Err(config_err(path, "expected a map with `exporter`"));
    };
    for k in m.keys() {
        let k = k.as_str().unwrap_or_default();
        if ![
            "interval",
            "timeout",
            "exporter",
            "producers",
            "cardinality_limits",
        ]
        .contains(&k)
        {
            return Err(config_err(
                path,
                format!("unknown key {k:?} (valid: interval, timeout, exporter)"),
            ));
        }
    }
    let interval = millis(
        &format!("{path}::interval"),
        m.get("interval"),
        DEFAULT_INTERVAL,
    )?;
    let timeout = millis(
        &format!("{path}::timeout"),
        m.get("timeout"),
        DEFAULT_TIMEOUT,
    )?;
    let (exporter_type, exporter_config) = declarative_exporter(
        &format!("{path}::exporter"),
        m.get("exporter"),
        Signal::Metrics,
        timeout,
        interval,
    )?;
    Ok(PeriodicReader {
        interval,
        timeout,
        exporter_type,
        exporter_config,
    })
}

/// The declarative `exporter: {otlp: {...}}` block (also `otlp_grpc`,
/// `otlp_http`) as a weft exporter type and config for `signal`.
pub(crate) fn declarative_exporter(
    path: &str,
    exporter: Option<&Value>,
    signal: Signal,
    timeout: Duration,
    give_up: Duration,
) -> Result<(&'static str, Value), SelfTelemetryError> {
    let exporter = exporter.and_then(|e| e.as_mapping()).ok_or_else(|| {
        config_err(
            path,
            format!("a {signal} exporter is needed: {{otlp: {{...}}}}"),
        )
    })?;
    if exporter.len() != 1 {
        return Err(config_err(path, "exactly one exporter: {otlp: {...}}"));
    }
    let (name, otlp) = exporter
        .iter()
        .next()
        .ok_or_else(|| config_err(path, "empty exporter"))?;
    let name = name.as_str().unwrap_or_default();
    let protocol_default = match name {
        "otlp" => None,
        "otlp_grpc" => Some("grpc"),
        "otlp_http" => Some("http/protobuf"),
        other => {
            return Err(config_err(
                path,
                format!("exporter {other:?} is not supported (valid: otlp, otlp_grpc, otlp_http; console and prometheus are not)"),
            ))
        }
    };
    translate_otlp(
        &format!("{path}::{name}"),
        otlp,
        protocol_default,
        signal,
        timeout,
        give_up,
    )
}

/// The declarative OTLP exporter (`protocol`, `endpoint`, `headers`,
/// `compression`, `timeout`, `insecure`, `certificate`, `client_key`,
/// `client_certificate`) as a weft `otlp_grpc` / `otlp_http` exporter config.
pub(crate) fn translate_otlp(
    path: &str,
    v: &Value,
    protocol_default: Option<&str>,
    signal: Signal,
    reader_timeout: Duration,
    interval: Duration,
) -> Result<(&'static str, Value), SelfTelemetryError> {
    let empty = Mapping::new();
    let m = match v {
        Value::Null => &empty,
        Value::Mapping(m) => m,
        _ => return Err(config_err(path, "expected a map")),
    };
    let known = [
        "protocol",
        "endpoint",
        "headers",
        "headers_list",
        "compression",
        "timeout",
        "insecure",
        "certificate",
        "client_key",
        "client_certificate",
        "certificate_file",
        "client_key_file",
        "client_certificate_file",
        "temporality_preference",
        "default_histogram_aggregation",
        "encoding",
    ];
    for k in m.keys() {
        let k = k.as_str().unwrap_or_default();
        if !known.contains(&k) {
            return Err(config_err(path, format!("unknown key {k:?}")));
        }
    }
    let s = |k: &str| m.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let protocol = s("protocol")
        .or(protocol_default.map(str::to_string))
        .unwrap_or_else(|| "http/protobuf".into());
    if let Some(t) = s("temporality_preference") {
        if t != "cumulative" {
            return Err(config_err(
                format!("{path}::temporality_preference"),
                format!("{t:?}: weft pushes cumulative sums only"),
            ));
        }
    }
    let mut out = Mapping::new();
    let insecure = m.get("insecure").and_then(|x| x.as_bool());
    let endpoint = s("endpoint");
    let exporter_type = match protocol.as_str() {
        "grpc" => {
            let ep = endpoint.unwrap_or_else(|| "http://localhost:4317".into());
            let plain = ep.starts_with("http://");
            out.insert("endpoint".into(), ep.into());
            let mut tls = Mapping::new();
            tls.insert("insecure".into(), Value::Bool(insecure.unwrap_or(plain)));
            add_tls_files(m, &mut tls);
            out.insert("tls".into(), Value::Mapping(tls));
            "otlp_grpc"
        }
        "http/protobuf" | "http/json" => {
            let ep = endpoint.unwrap_or_else(|| "http://localhost:4318".into());
            // A URL without a path gets the signal's path, as the SDKs do.
            let with_path = match ep.split_once("://") {
                Some((_, rest)) if rest.trim_end_matches('/').contains('/') => ep.clone(),
                _ => format!("{}/v1/{signal}", ep.trim_end_matches('/')),
            };
            out.insert(format!("{signal}_endpoint").into(), with_path.into());
            if protocol == "http/json" {
                out.insert("encoding".into(), "json".into());
            }
            let mut tls = Mapping::new();
            if let Some(i) = insecure {
                tls.insert(
                    "insecure_skip_verify".into(),
                    Value::Bool(i && ep.starts_with("https://")),
                );
            }
            add_tls_files(m, &mut tls);
            if !tls.is_empty() {
                out.insert("tls".into(), Value::Mapping(tls));
            }
            "otlp_http"
        }
        other => {
            return Err(config_err(
                format!("{path}::protocol"),
                format!("{other:?} (valid: grpc, http/protobuf, http/json)"),
            ))
        }
    };
    let mut headers = Mapping::new();
    match m.get("headers") {
        None | Some(Value::Null) => {}
        // The declarative form: [{name, value}].
        Some(Value::Sequence(list)) => {
            for h in list {
                let (Some(n), Some(v)) = (h["name"].as_str(), h["value"].as_str()) else {
                    return Err(config_err(
                        format!("{path}::headers"),
                        "each header is {name: ..., value: ...}",
                    ));
                };
                headers.insert(n.into(), v.into());
            }
        }
        Some(Value::Mapping(map)) => headers = map.clone(),
        Some(_) => {
            return Err(config_err(
                format!("{path}::headers"),
                "a list of {name, value} or a map",
            ))
        }
    }
    if let Some(list) = s("headers_list") {
        for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((n, v)) = pair.split_once('=') else {
                return Err(config_err(
                    format!("{path}::headers_list"),
                    "name=value pairs separated by commas",
                ));
            };
            headers.insert(n.trim().into(), v.trim().into());
        }
    }
    // Marks the request as weft's own telemetry: a weft receiving it does not
    // trace it (no loop between two weft tracing each other).
    headers.insert(SELF_TELEMETRY_HEADER.into(), signal.as_str().into());
    out.insert("headers".into(), Value::Mapping(headers));
    if let Some(c) = s("compression") {
        out.insert("compression".into(), c.into());
    }
    let timeout = millis(
        &format!("{path}::timeout"),
        m.get("timeout"),
        reader_timeout,
    )?;
    out.insert(
        "timeout".into(),
        format!("{}ms", timeout.as_millis()).into(),
    );
    // A bounded queue of a few pushes: a dead endpoint drops old pushes (counted)
    // rather than holding memory.
    let mut queue = Mapping::new();
    queue.insert("queue_size".into(), 10.into());
    out.insert("sending_queue".into(), Value::Mapping(queue));
    // A push is cumulative: the next one supersedes it, so retrying longer than
    // an interval (at most 10 s, which also bounds the drain at shutdown) is
    // pointless.
    let give_up = interval.min(Duration::from_secs(10));
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut retry = Mapping::new();
    retry.insert(
        "initial_interval".into(),
        ms(give_up.min(Duration::from_secs(1))).into(),
    );
    retry.insert("max_interval".into(), ms(give_up).into());
    retry.insert("max_elapsed_time".into(), ms(give_up).into());
    out.insert("retry_on_failure".into(), Value::Mapping(retry));
    Ok((exporter_type, Value::Mapping(out)))
}

fn add_tls_files(m: &Mapping, tls: &mut Mapping) {
    for (from, to) in [
        ("certificate", "ca_file"),
        ("certificate_file", "ca_file"),
        ("client_certificate", "cert_file"),
        ("client_certificate_file", "cert_file"),
        ("client_key", "key_file"),
        ("client_key_file", "key_file"),
    ] {
        if let Some(v) = m.get(from).filter(|v| !v.is_null()) {
            tls.insert(to.into(), v.clone());
        }
    }
}

/// The resource of weft's own telemetry: `service.name` weft, `service.version`,
/// `service.instance.id` (one per process), then `service.telemetry.resource`
/// (a key set to null removes a default).
pub fn resource(cfg: &TelemetryConfig, instance_id: &str) -> Result<Resource, SelfTelemetryError> {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    attrs.insert("service.name".into(), "weft".into());
    attrs.insert("service.version".into(), env!("CARGO_PKG_VERSION").into());
    attrs.insert("service.instance.id".into(), instance_id.into());
    match &cfg.resource {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let Some(k) = k.as_str() else {
                    return Err(config_err("resource", "attribute names are strings"));
                };
                match v {
                    Value::Null => {
                        attrs.remove(k);
                    }
                    Value::String(s) => {
                        attrs.insert(k.into(), s.clone());
                    }
                    Value::Number(n) => {
                        attrs.insert(k.into(), n.to_string());
                    }
                    Value::Bool(b) => {
                        attrs.insert(k.into(), b.to_string());
                    }
                    _ => {
                        return Err(config_err(
                            format!("resource::{k}"),
                            "a resource attribute is a string, number, boolean or null",
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(config_err("resource", "a map of attribute names to values")),
    }
    Ok(Resource {
        attributes: attrs
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k,
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v)),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// A process-unique id: the pid and the start time, hex.
pub fn instance_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:08x}-{:016x}", std::process::id(), nanos as u64)
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// The self-metrics as one OTLP `ResourceMetrics`: counters as cumulative
/// monotonic sums, gauges as gauges, labels as attributes.
pub fn to_otlp(
    series: &[Series],
    resource: &Resource,
    start: SystemTime,
    now: SystemTime,
) -> ResourceMetrics {
    let (start, now) = (unix_nanos(start), unix_nanos(now));
    let mut by_name: BTreeMap<&str, (bool, Vec<NumberDataPoint>)> = BTreeMap::new();
    for s in series {
        let point = NumberDataPoint {
            attributes: s
                .labels
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v.clone())),
                    }),
                    ..Default::default()
                })
                .collect(),
            start_time_unix_nano: if s.counter { start } else { 0 },
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(s.value)),
            ..Default::default()
        };
        by_name
            .entry(s.name.as_str())
            .or_insert_with(|| (s.counter, Vec::new()))
            .1
            .push(point);
    }
    let metrics = by_name
        .into_iter()
        .map(|(name, (counter, data_points))| Metric {
            name: name.to_string(),
            data: Some(if counter {
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            } else {
                metric::Data::Gauge(OtlpGauge { data_points })
            }),
            ..Default::default()
        })
        .collect();
    ResourceMetrics {
        resource: Some(resource.clone()),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: SCOPE.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Creates and starts a private instance of weft's own exporter
/// (`exporter_type` with `config`) for weft's own telemetry.
pub(crate) async fn start_private_exporter(
    registry: &Registry,
    telemetry: &Telemetry,
    host: &Arc<Host>,
    id: &ComponentId,
    exporter_type: &str,
    config: &Value,
) -> Result<Arc<dyn Exporter>, SelfTelemetryError> {
    let exp_err = |message: String| SelfTelemetryError::Exporter {
        id: id.to_string(),
        message,
    };
    let factory = registry
        .exporters
        .get(exporter_type)
        .ok_or_else(|| exp_err("exporter type not built into this weft".into()))?;
    factory
        .check_config(config)
        .map_err(|e| exp_err(e.to_string()))?;
    let exporter = factory
        .create(
            Settings {
                id: id.clone(),
                kind: Kind::Exporter,
                telemetry: telemetry.clone(),
                host: host.clone(),
            },
            config,
        )
        .map_err(|e| exp_err(e.to_string()))?;
    exporter.start().await.map_err(|e| exp_err(e.to_string()))?;
    Ok(exporter)
}

/// The running periodic readers.
pub struct SelfMetrics {
    stop: watch::Sender<bool>,
    readers: Vec<(Arc<dyn Exporter>, JoinHandle<()>)>,
}

impl SelfMetrics {
    /// Starts one exporter and one timer per periodic reader.
    pub async fn start(
        registry: &Registry,
        telemetry: &Telemetry,
        host: Arc<Host>,
        cfg: &TelemetryConfig,
        instance_id: &str,
    ) -> Result<SelfMetrics, SelfTelemetryError> {
        // `metrics.level: none` turns every self-metrics reader off.
        let readers = if cfg.metrics.level == "none" {
            Vec::new()
        } else {
            periodic_readers(cfg)?
        };
        let resource = resource(cfg, instance_id)?;
        let (stop, stopped) = watch::channel(false);
        let mut running = Vec::new();
        let started = SystemTime::now();
        for (i, r) in readers.into_iter().enumerate() {
            let id = ComponentId {
                type_name: r.exporter_type.to_string(),
                name: Some(format!("self_telemetry_{i}")),
            };
            let created = start_private_exporter(
                registry,
                telemetry,
                &host,
                &id,
                r.exporter_type,
                &r.exporter_config,
            )
            .await;
            let exporter = match created {
                Ok(e) => e,
                Err(e) => {
                    // The readers already started stop again.
                    SelfMetrics {
                        stop,
                        readers: running,
                    }
                    .shutdown()
                    .await;
                    return Err(e);
                }
            };
            let pushes_ok = telemetry.counter(
                "weft_self_telemetry_pushes",
                "Self-metrics pushes handed to a periodic reader's exporter, by result",
                &[("exporter", &id.to_string()), ("result", "queued")],
            );
            let pushes_refused = telemetry.counter(
                "weft_self_telemetry_pushes",
                "Self-metrics pushes handed to a periodic reader's exporter, by result",
                &[("exporter", &id.to_string()), ("result", "dropped")],
            );
            let task = {
                let exporter = exporter.clone();
                let telemetry = telemetry.clone();
                let resource = resource.clone();
                let mut stopped = stopped.clone();
                let origin: Arc<str> = Arc::from(id.to_string());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(r.interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        let last = tokio::select! {
                            _ = tick.tick() => false,
                            _ = stopped.changed() => true,
                        };
                        let rm =
                            to_otlp(&telemetry.snapshot(), &resource, started, SystemTime::now());
                        let batch = Batch::new(Payload::Metrics(vec![rm]), origin.clone());
                        // The exporter's queue takes it (or refuses when full,
                        // counted by the exporter); never wait on the endpoint.
                        match tokio::time::timeout(r.timeout, exporter.consume(batch)).await {
                            Ok(Ok(())) => pushes_ok.inc(),
                            _ => pushes_refused.inc(),
                        }
                        if last {
                            break;
                        }
                    }
                })
            };
            running.push((exporter, task));
        }
        Ok(SelfMetrics {
            stop,
            readers: running,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }

    /// One last push per reader, then each exporter drains (bounded by its own
    /// timeouts) and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for (exporter, task) in self.readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            if let Err(e) = exporter.shutdown().await {
                tracing::warn!("self-metrics exporter did not shut down cleanly: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcfg(yaml: &str) -> TelemetryConfig {
        serde_yaml_ng::from_str(yaml).expect("telemetry yaml")
    }

    #[test]
    fn periodic_otlp_readers_translate_to_weft_exporters() {
        let c = tcfg(
            "metrics:\n  readers:\n    - pull: {exporter: {prometheus: {host: localhost, port: 8888}}}\n    - periodic:\n        interval: 2500\n        exporter:\n          otlp:\n            protocol: grpc\n            endpoint: http://127.0.0.1:4317\n            headers: [{name: x-tenant, value: a}]\n            compression: gzip\n    - periodic:\n        exporter:\n          otlp:\n            protocol: http/protobuf\n            endpoint: https://m.example:4318\n            timeout: 1000\n",
        );
        let r = periodic_readers(&c).expect("readers");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].interval, Duration::from_millis(2500));
        assert_eq!(r[0].exporter_type, "otlp_grpc");
        let g: Value = serde_yaml_ng::from_str(
            "{endpoint: 'http://127.0.0.1:4317', tls: {insecure: true}, headers: {x-tenant: a, weft-self-telemetry: metrics}, compression: gzip, timeout: 30000ms, sending_queue: {queue_size: 10}, retry_on_failure: {initial_interval: 1000ms, max_interval: 2500ms, max_elapsed_time: 2500ms}}",
        )
        .expect("yaml");
        assert_eq!(r[0].exporter_config, g);
        assert_eq!(r[1].interval, DEFAULT_INTERVAL);
        assert_eq!(r[1].exporter_type, "otlp_http");
        assert_eq!(
            r[1].exporter_config["metrics_endpoint"].as_str(),
            Some("https://m.example:4318/v1/metrics")
        );
        assert_eq!(r[1].exporter_config["timeout"].as_str(), Some("1000ms"));
    }

    #[test]
    fn bad_readers_say_what_is_wrong() {
        for (yaml, want) in [
            ("metrics: {readers: [{push: {}}]}", "unknown reader"),
            ("metrics: {readers: [{periodic: {}}]}", "metrics exporter is needed"),
            ("metrics: {readers: [{periodic: {exporter: {console: {}}}}]}", "not supported"),
            ("metrics: {readers: [{periodic: {interval: 0, exporter: {otlp: {}}}}]}", "positive"),
            ("metrics: {readers: [{periodic: {exporter: {otlp: {protocol: udp}}}}]}", "valid: grpc"),
            ("metrics: {readers: [{periodic: {exporter: {otlp: {temporality_preference: delta}}}}]}", "cumulative"),
            ("metrics: {readers: [{periodic: {exporter: {otlp: {endpoit: x}}}}]}", "unknown key"),
        ] {
            let e = periodic_readers(&tcfg(yaml)).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn resource_defaults_and_overrides() {
        let c = tcfg("resource: {service.name: weft-a, deployment.environment: prod, service.version: null, shard: 3}");
        let r = resource(&c, "i-1").expect("resource");
        let got: Vec<(String, String)> = r
            .attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                (kv.key.clone(), v)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("service.instance.id".into(), "i-1".into()),
                ("service.name".into(), "weft-a".into()),
                ("shard".into(), "3".into()),
            ]
        );
        assert!(resource(&tcfg("resource: [a]"), "i").is_err());
    }

    #[test]
    fn series_become_sums_and_gauges() {
        let series = vec![
            Series {
                name: "otelcol_receiver_accepted_spans".into(),
                counter: true,
                labels: vec![("receiver".into(), "otlp".into())],
                value: 7,
            },
            Series {
                name: "otelcol_exporter_queue_size".into(),
                counter: false,
                labels: vec![],
                value: 3,
            },
        ];
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let t1 = SystemTime::UNIX_EPOCH + Duration::from_secs(20);
        let rm = to_otlp(&series, &Resource::default(), t0, t1);
        let m = &rm.scope_metrics[0].metrics;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "otelcol_exporter_queue_size");
        let Some(metric::Data::Gauge(g)) = &m[0].data else {
            panic!("gauge")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsInt(3))
        );
        let Some(metric::Data::Sum(s)) = &m[1].data else {
            panic!("sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(s.data_points[0].start_time_unix_nano, 10_000_000_000);
        assert_eq!(s.data_points[0].time_unix_nano, 20_000_000_000);
        assert_eq!(s.data_points[0].attributes[0].key, "receiver");
    }
}
