//! `autotracing` processor: joins eBPF spans and SDK spans into whole traces while
//! they stream, so any backend shows complete request trees without an SDK.
//!
//! Spans wait `window` for their relatives; then each span's parent is chosen by
//! the rules in [`graph`] (TCP sequence, SDK context and captured headers, the
//! same thread's syscall id, request ids). Every rule refuses to link when more
//! than one candidate qualifies. Connected spans leave as one trace: the SDK's
//! trace id when one is present, otherwise a fresh 128-bit id. See
//! docs/autotracing.md for the rules and their limits.

mod config;
mod facts;
mod graph;
mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_yaml_ng::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::warn;
use weft_pipeline::host::Host;
use weft_pipeline::self_trace::{Attr, Parent, SpanContext, SpanKind, MAX_LINKS};
use weft_pipeline::{
    parse_config, Batch, Capabilities, ComponentError, ConfigFieldError, ConsumeError, Consumer,
    DynConsumer, Lifecycle, Payload, Processor, ProcessorFactory, Settings, Signal,
};

pub use config::{AutotracingConfig, SdkMerge};
pub use graph::Stitcher;
pub use stats::Stats;

pub struct AutotracingFactory;

impl ProcessorFactory for AutotracingFactory {
    fn type_name(&self) -> &'static str {
        "autotracing"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<AutotracingConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
        _signal: Signal,
        next: DynConsumer,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let config = parse_config::<AutotracingConfig>(raw)
            .map_err(|e| ComponentError::new(e.to_string()))?;
        Ok(Arc::new(Autotracing::new(&settings, config, next)))
    }
}

pub struct Autotracing {
    id: Arc<str>,
    origin: Arc<str>,
    window: Duration,
    next: DynConsumer,
    stats: Arc<Stats>,
    state: Arc<StdMutex<Stitcher>>,
    shut: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
    host: Arc<Host>,
    /// weft's own spans of the data that arrived since the last traced flush
    /// (at most `MAX_LINKS`): a flush span is made only when there are some,
    /// so weft's own telemetry passing through never makes one (no loop).
    arrived: Arc<StdMutex<Vec<SpanContext>>>,
}

impl Autotracing {
    pub fn new(settings: &Settings, config: AutotracingConfig, next: DynConsumer) -> Autotracing {
        let id = settings.id.to_string();
        let stats = Arc::new(Stats::new(&settings.telemetry, &id));
        let window = config.window;
        Autotracing {
            origin: Arc::from(id.as_str()),
            id: Arc::from(id.as_str()),
            window,
            next,
            stats: stats.clone(),
            state: Arc::new(StdMutex::new(
                Stitcher::new(config, stats).with_status(settings.host.status()),
            )),
            shut: Arc::new(AtomicBool::new(false)),
            ticker: Mutex::new(None),
            host: settings.host.clone(),
            arrived: Arc::new(StdMutex::new(Vec::new())),
        }
    }

    fn lock(state: &StdMutex<Stitcher>) -> std::sync::MutexGuard<'_, Stitcher> {
        state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one flush decided, for weft's own `processor/<id>/flush` span.
struct Flush {
    started: SystemTime,
    /// The receive spans of the data that arrived since the last traced flush.
    arrived: Vec<SpanContext>,
    trigger: &'static str,
    spans: u64,
    traces: u64,
    /// Spans of this flush whose parent a rule chose, by rule.
    rules: Vec<(&'static str, u64)>,
}

/// The counts a flush span reports, read before and after one decision.
struct Tally {
    spans: u64,
    traces: u64,
    rules: Vec<(&'static str, u64)>,
}

impl Tally {
    fn read(st: &Stitcher, stats: &Stats) -> Tally {
        Tally {
            spans: stats.spans_out.get(),
            traces: stats.traces_out.get(),
            rules: st.emitted_rules().to_vec(),
        }
    }
}

/// Runs `decide` on the stitcher; when weft traces itself, also notes what
/// the decision did (under the same lock, so the counts are this flush's).
fn decide(
    (state, arrived): (&StdMutex<Stitcher>, &StdMutex<Vec<SpanContext>>),
    stats: &Stats,
    host: &Host,
    trigger: &'static str,
    decide: impl FnOnce(&mut Stitcher) -> Vec<ResourceSpans>,
) -> (Vec<ResourceSpans>, Option<Flush>) {
    let traced = host.self_tracer().is_some();
    let mut st = Autotracing::lock(state);
    let started = traced.then(SystemTime::now);
    let before = traced.then(|| Tally::read(&st, stats));
    let out = decide(&mut st);
    let flush = match (before, started) {
        (Some(before), Some(started)) if !out.is_empty() => {
            let arrived = std::mem::take(&mut *arrived.lock().unwrap_or_else(|p| p.into_inner()));
            if arrived.is_empty() {
                return (out, None);
            }
            let after = Tally::read(&st, stats);
            let rules = after
                .rules
                .iter()
                .map(|(rule, n)| {
                    let was = before
                        .rules
                        .iter()
                        .find(|(r, _)| r == rule)
                        .map_or(0, |(_, b)| *b);
                    (*rule, n.saturating_sub(was))
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            Some(Flush {
                started,
                arrived,
                trigger,
                spans: after.spans.saturating_sub(before.spans),
                traces: after.traces.saturating_sub(before.traces),
                rules,
            })
        }
        _ => None,
    };
    (out, flush)
}

async fn forward(
    next: &DynConsumer,
    id: &str,
    origin: &Arc<str>,
    stats: &Stats,
    host: &Host,
    (out, flush): (Vec<ResourceSpans>, Option<Flush>),
) {
    if out.is_empty() {
        return;
    }
    let n: usize = out
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut batch = Batch::new(Payload::Traces(out), origin.clone());
    let mut span = match (flush, host.self_tracer()) {
        (Some(f), Some(t)) => {
            let mut attrs = vec![
                Attr::new("otelcol.component.kind", "processor"),
                Attr::new("otelcol.component.id", id.to_string()),
                Attr::new("otelcol.signal", "traces"),
                Attr::new("trigger", f.trigger),
                Attr::new("spans", f.spans as i64),
                Attr::new("traces", f.traces as i64),
            ];
            for (rule, n) in &f.rules {
                attrs.push(Attr::new(format!("edges.{rule}"), *n as i64));
            }
            let s = t.start_at(
                format!("processor/{id}/flush"),
                SpanKind::Internal,
                Parent::Of(&f.arrived),
                attrs,
                f.started,
            );
            batch.self_spans = s.as_parent();
            Some(s)
        }
        _ => None,
    };
    if let Err(e) = next.consume(batch).await {
        stats.dropped.add(n as u64);
        if let Some(s) = &mut span {
            s.error(e.to_string());
        }
        warn!(processor = %id, spans = n, error = %e, "downstream refused stitched spans");
    }
}

#[async_trait]
impl Lifecycle for Autotracing {
    async fn start(&self) -> Result<(), ComponentError> {
        let arrived = self.arrived.clone();
        let (state, stats, next, id, origin, host) = (
            self.state.clone(),
            self.stats.clone(),
            self.next.clone(),
            self.id.clone(),
            self.origin.clone(),
            self.host.clone(),
        );
        let period = (self.window / 8).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let out = decide((&state, &arrived), &stats, &host, "window", |st| {
                    st.tick(Instant::now())
                });
                forward(&next, &id, &origin, &stats, &host, out).await;
            }
        });
        *self.ticker.lock().await = Some(task);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.shut.store(true, Ordering::Release);
        if let Some(t) = self.ticker.lock().await.take() {
            t.abort();
        }
        let out = decide(
            (&self.state, &self.arrived),
            &self.stats,
            &self.host,
            "shutdown",
            |st| st.flush_all(Instant::now()),
        );
        forward(
            &self.next,
            &self.id,
            &self.origin,
            &self.stats,
            &self.host,
            out,
        )
        .await;
        Ok(())
    }
}

#[async_trait]
impl Consumer for Autotracing {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let origin = batch.origin.clone();
        let metadata = batch.metadata.clone();
        let self_spans = batch.self_spans.clone();
        match batch.into_payload() {
            Payload::Traces(rs) => {
                if let Some(spans) = &self_spans {
                    let mut a = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
                    let room = MAX_LINKS.saturating_sub(a.len());
                    a.extend(spans.iter().take(room).cloned());
                }
                let shut = self.shut.load(Ordering::Acquire);
                let trigger = if shut { "shutdown" } else { "arrival" };
                let out = decide(
                    (&self.state, &self.arrived),
                    &self.stats,
                    &self.host,
                    trigger,
                    |st| {
                        let now = Instant::now();
                        st.ingest(rs, now);
                        if shut {
                            // After shutdown began nothing waits: decide and send now.
                            st.flush_all(now)
                        } else {
                            st.tick(now)
                        }
                    },
                );
                forward(
                    &self.next,
                    &self.id,
                    &self.origin,
                    &self.stats,
                    &self.host,
                    out,
                )
                .await;
                Ok(())
            }
            other => {
                let mut b = Batch::new(other, origin);
                b.metadata = metadata;
                b.self_spans = self_spans;
                self.next.consume(b).await
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        // Spans wait in memory for their trace: acknowledged on arrival.
        Capabilities {
            mutates_data: true,
            acks_on_disk: false,
        }
    }
}

impl Processor for Autotracing {}

#[cfg(test)]
mod tests;
