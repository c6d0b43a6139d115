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
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_yaml_ng::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::warn;
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
        }
    }

    fn lock(state: &StdMutex<Stitcher>) -> std::sync::MutexGuard<'_, Stitcher> {
        state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn forward(
    next: &DynConsumer,
    id: &str,
    origin: &Arc<str>,
    stats: &Stats,
    out: Vec<ResourceSpans>,
) {
    if out.is_empty() {
        return;
    }
    let n: usize = out
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if let Err(e) = next
        .consume(Batch::new(Payload::Traces(out), origin.clone()))
        .await
    {
        stats.dropped.add(n as u64);
        warn!(processor = %id, spans = n, error = %e, "downstream refused stitched spans");
    }
}

#[async_trait]
impl Lifecycle for Autotracing {
    async fn start(&self) -> Result<(), ComponentError> {
        let (state, stats, next, id, origin) = (
            self.state.clone(),
            self.stats.clone(),
            self.next.clone(),
            self.id.clone(),
            self.origin.clone(),
        );
        let period = (self.window / 8).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let out = Self::lock(&state).tick(Instant::now());
                forward(&next, &id, &origin, &stats, out).await;
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
        let out = Self::lock(&self.state).flush_all(Instant::now());
        forward(&self.next, &self.id, &self.origin, &self.stats, out).await;
        Ok(())
    }
}

#[async_trait]
impl Consumer for Autotracing {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let origin = batch.origin.clone();
        let metadata = batch.metadata.clone();
        match batch.into_payload() {
            Payload::Traces(rs) => {
                let out = {
                    let mut st = Self::lock(&self.state);
                    let now = Instant::now();
                    if self.shut.load(Ordering::Acquire) {
                        // After shutdown began nothing waits: decide and send now.
                        st.ingest(rs, now);
                        st.flush_all(now)
                    } else {
                        st.ingest(rs, now);
                        st.tick(now)
                    }
                };
                forward(&self.next, &self.id, &self.origin, &self.stats, out).await;
                Ok(())
            }
            other => {
                let mut b = Batch::new(other, origin);
                b.metadata = metadata;
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
