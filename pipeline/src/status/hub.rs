//! What the `status` extension shows, gathered while weft runs: the running
//! graph, the config as loaded (secrets masked), the reload history, one trace
//! tap per traces pipeline, and the rule autotracing used for each edge.
//!
//! The hub lives in the [`Host`](crate::host::Host) whether or not a `status`
//! extension is configured. Until one starts, the taps are off (one atomic load
//! per batch) and autotracing records no edge rules.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::tap::TapBuffer;

/// Reloads remembered for the page.
const RELOAD_HISTORY: usize = 50;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One pipeline of the running graph.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PipelineView {
    pub id: String,
    pub signal: String,
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

/// The running graph as the page draws it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GraphView {
    pub pipelines: Vec<PipelineView>,
    pub extensions: Vec<String>,
}

/// One attempt to reload the config.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadEvent {
    /// Milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// `success`, `unchanged` or `failure`.
    pub result: &'static str,
    /// What started it (`SIGHUP`, `config file change`).
    pub trigger: String,
    /// The running graph after a success, or the error of a failure.
    pub detail: String,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The rule that chose a span's parent, by span id, for spans whose
/// `weft.autotracing.rule` attribute is stripped on the way out. Bounded: the
/// oldest entries go first.
#[derive(Debug, Default)]
pub struct EdgeRules {
    inner: Mutex<EdgeRulesInner>,
}

#[derive(Debug, Default)]
struct EdgeRulesInner {
    by_span: HashMap<[u8; 8], &'static str>,
    order: VecDeque<[u8; 8]>,
    capacity: usize,
}

impl EdgeRules {
    pub fn record(&self, span_id: [u8; 8], rule: &'static str) {
        let mut g = lock(&self.inner);
        if g.capacity == 0 {
            return;
        }
        if g.by_span.insert(span_id, rule).is_none() {
            g.order.push_back(span_id);
        }
        while g.order.len() > g.capacity {
            if let Some(old) = g.order.pop_front() {
                g.by_span.remove(&old);
            }
        }
    }

    pub fn get(&self, span_id: &[u8]) -> Option<&'static str> {
        let key: [u8; 8] = span_id.try_into().ok()?;
        lock(&self.inner).by_span.get(&key).copied()
    }

    fn set_capacity(&self, capacity: usize) {
        let mut g = lock(&self.inner);
        g.capacity = capacity;
        while g.order.len() > capacity {
            if let Some(old) = g.order.pop_front() {
                g.by_span.remove(&old);
            }
        }
        if capacity == 0 {
            g.by_span = HashMap::new();
            g.order = VecDeque::new();
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).by_span.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default)]
pub struct StatusHub {
    /// True while a `status` extension with a trace tap runs.
    tap_on: Arc<AtomicBool>,
    max_spans: Arc<AtomicUsize>,
    /// Arrival order of batches across every tap.
    seq: Arc<AtomicU64>,
    /// The `status` extensions running, each with its tap size: the newest
    /// decides; the tap goes off when the last one stops (a renamed extension
    /// starts before the old one stops on reload).
    owners: Mutex<Vec<(u64, usize)>>,
    next_owner: AtomicU64,
    taps: Mutex<BTreeMap<String, Arc<TapBuffer>>>,
    graph: Mutex<GraphView>,
    config_yaml: Mutex<(String, u64)>,
    reloads: Mutex<VecDeque<ReloadEvent>>,
    started_unix_ms: Mutex<u64>,
    edge_rules: EdgeRules,
}

impl StatusHub {
    /// The tap of one traces pipeline (made on first use; kept across reloads
    /// so a rebuilt pipeline keeps its recent traces).
    pub fn tap(&self, pipeline: &str) -> Arc<TapBuffer> {
        lock(&self.taps)
            .entry(pipeline.to_string())
            .or_insert_with(|| {
                Arc::new(TapBuffer::new(
                    pipeline,
                    self.tap_on.clone(),
                    self.max_spans.clone(),
                    self.seq.clone(),
                ))
            })
            .clone()
    }

    /// The taps of the pipelines now running, by pipeline id.
    pub fn taps(&self) -> Vec<Arc<TapBuffer>> {
        let running: Vec<String> = lock(&self.graph)
            .pipelines
            .iter()
            .filter(|p| p.signal == "traces")
            .map(|p| p.id.clone())
            .collect();
        let taps = lock(&self.taps);
        running
            .iter()
            .filter_map(|id| taps.get(id).cloned())
            .collect()
    }

    /// A `status` extension starts with taps of `max_spans` spans per
    /// pipeline (0: no tap); the token given back closes it.
    pub fn open_tap(&self, max_spans: usize) -> u64 {
        let token = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let mut owners = lock(&self.owners);
        owners.push((token, max_spans));
        self.configure_tap(max_spans);
        token
    }

    /// That extension stopped: the newest one still running decides, or the
    /// taps go off, dropping what they hold.
    pub fn close_tap(&self, token: u64) {
        let mut owners = lock(&self.owners);
        owners.retain(|(t, _)| *t != token);
        self.configure_tap(owners.last().map_or(0, |(_, size)| *size));
    }

    /// Turns the taps on with room for `max_spans` spans per pipeline, or off
    /// (0), dropping what they hold.
    pub fn configure_tap(&self, max_spans: usize) {
        self.max_spans.store(max_spans, Ordering::Relaxed);
        self.tap_on.store(max_spans > 0, Ordering::Release);
        self.size_ledger();
        for t in lock(&self.taps).values() {
            t.trim();
        }
    }

    /// Room for the rules of twice the spans every running tap can hold.
    fn size_ledger(&self) {
        let pipelines = lock(&self.graph)
            .pipelines
            .iter()
            .filter(|p| p.signal == "traces")
            .count()
            .max(1);
        let max = if self.tap_on() { self.max_spans() } else { 0 };
        self.edge_rules
            .set_capacity(max.saturating_mul(2).saturating_mul(pipelines));
    }

    pub fn tap_on(&self) -> bool {
        self.tap_on.load(Ordering::Acquire)
    }

    pub fn max_spans(&self) -> usize {
        self.max_spans.load(Ordering::Relaxed)
    }

    /// Where autotracing records the rule of each edge it makes, while a
    /// status page runs; `None` otherwise, so it costs nothing.
    pub fn edge_rules(&self) -> Option<&EdgeRules> {
        self.tap_on().then_some(&self.edge_rules)
    }

    pub fn rule_of(&self, span_id: &[u8]) -> Option<&'static str> {
        self.edge_rules.get(span_id)
    }

    /// The graph now running; the taps of traces pipelines it no longer has
    /// are dropped with what they hold.
    pub fn set_graph(&self, graph: GraphView) {
        {
            let running: Vec<&str> = graph
                .pipelines
                .iter()
                .filter(|p| p.signal == "traces")
                .map(|p| p.id.as_str())
                .collect();
            lock(&self.taps).retain(|id, _| running.contains(&id.as_str()));
        }
        *lock(&self.graph) = graph;
        self.size_ledger();
    }

    pub fn graph(&self) -> GraphView {
        lock(&self.graph).clone()
    }

    /// The config as loaded, already redacted (`Document::to_yaml`).
    pub fn set_config(&self, yaml: String) {
        *lock(&self.config_yaml) = (yaml, unix_ms(SystemTime::now()));
        let mut s = lock(&self.started_unix_ms);
        if *s == 0 {
            *s = unix_ms(SystemTime::now());
        }
    }

    /// The redacted config and when it was loaded (ms since the epoch).
    pub fn config(&self) -> (String, u64) {
        lock(&self.config_yaml).clone()
    }

    pub fn started_unix_ms(&self) -> u64 {
        *lock(&self.started_unix_ms)
    }

    pub fn record_reload(&self, result: &'static str, trigger: &str, detail: String) {
        let mut r = lock(&self.reloads);
        r.push_back(ReloadEvent {
            time_unix_ms: unix_ms(SystemTime::now()),
            result,
            trigger: trigger.to_string(),
            detail,
        });
        while r.len() > RELOAD_HISTORY {
            r.pop_front();
        }
    }

    /// Newest first.
    pub fn reloads(&self) -> Vec<ReloadEvent> {
        lock(&self.reloads).iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_rules_are_bounded_and_off_without_capacity() {
        let r = EdgeRules::default();
        r.record([1; 8], "tcp_seq");
        assert_eq!(r.get(&[1; 8]), None);
        r.set_capacity(2);
        r.record([1; 8], "tcp_seq");
        r.record([2; 8], "syscall_trace_id");
        r.record([3; 8], "request_id");
        assert_eq!(r.get(&[1; 8]), None);
        assert_eq!(r.get(&[2; 8]), Some("syscall_trace_id"));
        assert_eq!(r.get(&[3; 8]), Some("request_id"));
        assert_eq!(r.get(&[3; 4]), None);
        r.set_capacity(0);
        assert!(r.is_empty());
    }

    #[test]
    fn reload_history_is_newest_first_and_bounded() {
        let h = StatusHub::default();
        for i in 0..(RELOAD_HISTORY + 5) {
            h.record_reload("success", "SIGHUP", format!("n{i}"));
        }
        let r = h.reloads();
        assert_eq!(r.len(), RELOAD_HISTORY);
        assert_eq!(r[0].detail, format!("n{}", RELOAD_HISTORY + 4));
        assert_eq!(r[RELOAD_HISTORY - 1].detail, "n5");
    }

    #[test]
    fn edge_rules_only_while_the_tap_is_on() {
        let h = StatusHub::default();
        assert!(h.edge_rules().is_none());
        h.configure_tap(10);
        h.edge_rules().expect("on").record([9; 8], "tcp_seq");
        assert_eq!(h.rule_of(&[9; 8]), Some("tcp_seq"));
        h.configure_tap(0);
        assert!(h.edge_rules().is_none());
        assert_eq!(h.rule_of(&[9; 8]), None);
    }
}
