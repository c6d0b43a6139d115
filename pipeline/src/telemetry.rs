//! weft's own metrics, rendered in the Prometheus text format with the
//! collector's names (`otelcol_receiver_accepted_spans{receiver="otlp",transport="grpc"}`).
//!
//! Series live as long as the process: a component rebuilt by a reload gets the
//! same counters back, so totals never reset under a dashboard.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::component::ComponentId;
use crate::data::Signal;

type Labels = Vec<(String, String)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum MetricType {
    Counter,
    Gauge,
}

struct Family {
    help: String,
    kind: MetricType,
    counters: BTreeMap<Labels, Arc<AtomicU64>>,
    gauges: BTreeMap<Labels, Arc<AtomicI64>>,
}

/// One series of [`Telemetry::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// A counter (else a gauge).
    pub counter: bool,
    pub labels: Vec<(String, String)>,
    pub value: i64,
}

#[derive(Clone, Default)]
pub struct Telemetry {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed)
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn sub(&self, v: i64) {
        self.0.fetch_sub(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Telemetry {
    pub fn new() -> Telemetry {
        Telemetry::default()
    }

    fn family<'a>(
        map: &'a mut BTreeMap<String, Family>,
        name: &str,
        help: &str,
        kind: MetricType,
    ) -> &'a mut Family {
        map.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
        })
    }

    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        let mut map = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = Self::family(&mut map, name, help, MetricType::Counter);
        Counter(fam.counters.entry(owned(labels)).or_default().clone())
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        let mut map = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = Self::family(&mut map, name, help, MetricType::Gauge);
        Gauge(fam.gauges.entry(owned(labels)).or_default().clone())
    }

    /// Current value of one series, for tests and the status output.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
        let map = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = map.get(name)?;
        let key = owned(labels);
        match fam.kind {
            MetricType::Counter => fam
                .counters
                .get(&key)
                .map(|c| c.load(Ordering::Relaxed) as i64),
            MetricType::Gauge => fam.gauges.get(&key).map(|g| g.load(Ordering::Relaxed)),
        }
    }

    /// Every series now: name, labels, value (the status page's counters).
    pub fn snapshot(&self) -> Vec<Series> {
        let map = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (name, fam) in map.iter() {
            match fam.kind {
                MetricType::Counter => {
                    for (l, v) in &fam.counters {
                        out.push(Series {
                            name: name.clone(),
                            counter: true,
                            labels: l.clone(),
                            value: v.load(Ordering::Relaxed) as i64,
                        });
                    }
                }
                MetricType::Gauge => {
                    for (l, v) in &fam.gauges {
                        out.push(Series {
                            name: name.clone(),
                            counter: false,
                            labels: l.clone(),
                            value: v.load(Ordering::Relaxed),
                        });
                    }
                }
            }
        }
        out
    }

    /// The Prometheus text exposition (version 0.0.4) of every series.
    pub fn render(&self) -> String {
        let map = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, fam) in map.iter() {
            let kind = match fam.kind {
                MetricType::Counter => "counter",
                MetricType::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let rows: Vec<(&Labels, i64)> = match fam.kind {
                MetricType::Counter => fam
                    .counters
                    .iter()
                    .map(|(l, v)| (l, v.load(Ordering::Relaxed) as i64))
                    .collect(),
                MetricType::Gauge => fam
                    .gauges
                    .iter()
                    .map(|(l, v)| (l, v.load(Ordering::Relaxed)))
                    .collect(),
            };
            for (labels, v) in rows {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {v}");
            }
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The collector's receiver counters for one receiver id and transport.
#[derive(Clone)]
pub struct ReceiverMetrics {
    accepted: [Counter; 3],
    refused: [Counter; 3],
    /// Requests that could not be decoded (bad protobuf/JSON/compression...).
    pub bad_requests: Counter,
    /// Requests refused by the `auth` authenticator (401 / UNAUTHENTICATED).
    pub unauthenticated: Counter,
    /// TLS handshakes that failed (a missing or untrusted client certificate
    /// with `client_ca_file`, a protocol error) or timed out.
    pub tls_handshake_failures: Counter,
}

fn idx(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

impl ReceiverMetrics {
    pub fn new(t: &Telemetry, id: &ComponentId, transport: &str) -> ReceiverMetrics {
        let id = id.to_string();
        let labels = [("receiver", id.as_str()), ("transport", transport)];
        let mk = |verb: &str, help: &str| {
            Signal::ALL.map(|s| {
                t.counter(
                    &format!("otelcol_receiver_{verb}_{}", s.item_name()),
                    &format!("{help} {}", s.item_name().replace('_', " ")),
                    &labels,
                )
            })
        };
        ReceiverMetrics {
            accepted: mk(
                "accepted",
                "Number of items successfully pushed into the pipeline:",
            ),
            refused: mk("refused", "Number of items that could not be pushed into the pipeline:"),
            bad_requests: t.counter(
                "weft_receiver_bad_requests",
                "Requests rejected before their data reached a pipeline (wrong method or content type, bad compression, malformed body, too large)",
                &labels,
            ),
            unauthenticated: t.counter(
                "weft_receiver_unauthenticated_requests",
                "Requests refused because the authenticator did not accept their credentials",
                &labels,
            ),
            tls_handshake_failures: t.counter(
                "weft_receiver_tls_handshake_failures",
                "TLS handshakes that failed or timed out (for instance a client certificate the client CA does not sign)",
                &labels,
            ),
        }
    }

    pub fn accepted(&self, s: Signal) -> &Counter {
        &self.accepted[idx(s)]
    }

    pub fn refused(&self, s: Signal) -> &Counter {
        &self.refused[idx(s)]
    }
}

/// The collector's exporter counters and queue gauges for one exporter id.
#[derive(Clone)]
pub struct ExporterMetrics {
    sent: [Counter; 3],
    send_failed: [Counter; 3],
    enqueue_failed: [Counter; 3],
    pub queue_size: Gauge,
    pub queue_capacity: Gauge,
}

impl ExporterMetrics {
    pub fn new(t: &Telemetry, id: &ComponentId) -> ExporterMetrics {
        let id = id.to_string();
        let labels = [("exporter", id.as_str())];
        let mk = |verb: &str, help: &str| {
            Signal::ALL.map(|s| {
                t.counter(
                    &format!("otelcol_exporter_{verb}_{}", s.item_name()),
                    &format!("{help} {}", s.item_name().replace('_', " ")),
                    &labels,
                )
            })
        };
        ExporterMetrics {
            sent: mk("sent", "Number of items successfully sent to destination:"),
            send_failed: mk(
                "send_failed",
                "Number of items the exporter failed to send (dropped):",
            ),
            enqueue_failed: mk(
                "enqueue_failed",
                "Number of items that could not be added to the sending queue (dropped):",
            ),
            queue_size: t.gauge(
                "otelcol_exporter_queue_size",
                "Current number of batches in the sending queue",
                &labels,
            ),
            queue_capacity: t.gauge(
                "otelcol_exporter_queue_capacity",
                "Fixed capacity of the sending queue, in batches",
                &labels,
            ),
        }
    }

    pub fn sent(&self, s: Signal) -> &Counter {
        &self.sent[idx(s)]
    }
    pub fn send_failed(&self, s: Signal) -> &Counter {
        &self.send_failed[idx(s)]
    }
    pub fn enqueue_failed(&self, s: Signal) -> &Counter {
        &self.enqueue_failed[idx(s)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_with_labels() {
        let t = Telemetry::new();
        let m = ReceiverMetrics::new(&t, &ComponentId::new("otlp"), "grpc");
        m.accepted(Signal::Traces).add(3);
        t.gauge("g", "a gauge", &[]).set(-2);
        let text = t.render();
        assert!(text
            .contains("otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"grpc\"} 3\n"));
        assert!(text.contains("# TYPE g gauge\ng -2\n"));
        // the same series comes back after a rebuild
        let again = ReceiverMetrics::new(&t, &ComponentId::new("otlp"), "grpc");
        again.accepted(Signal::Traces).inc();
        assert_eq!(
            t.value(
                "otelcol_receiver_accepted_spans",
                &[("receiver", "otlp"), ("transport", "grpc")]
            ),
            Some(4)
        );
    }
}
