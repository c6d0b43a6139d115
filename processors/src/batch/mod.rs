//! `batch` processor: gathers incoming batches until `send_batch_size` items
//! or `timeout`, splits at `send_batch_max_size`, and sends downstream from one
//! task. Like the collector's, it accepts data asynchronously: a downstream
//! failure is logged and counted, not returned to the receiver. Unlike the
//! collector's, when the data goes on to a persistent sending queue
//! (`Capabilities::acks_on_disk`), each caller is answered only once its
//! items were handed on: on disk, or refused with the downstream error.

mod config;
pub mod split;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_yaml_ng::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot, Mutex, RwLock};
use tokio::task::JoinHandle;
use tracing::warn;
use weft_pipeline::otlp_wire::EncodedTraces;
use weft_pipeline::self_trace::{SpanContext, MAX_LINKS};

/// weft's own receive spans remembered for pending data, at most (older ones
/// are forgotten: their sends are not linked to them).
const MAX_PENDING_SELF_SPANS: usize = 4096;
use weft_pipeline::{
    parse_config, Batch, ComponentError, ConfigFieldError, ConsumeError, Consumer, Counter,
    DynConsumer, Lifecycle, Payload, Processor, ProcessorFactory, Settings, Signal,
};

pub use config::BatchConfig;

pub struct BatchFactory;

impl ProcessorFactory for BatchFactory {
    fn type_name(&self) -> &'static str {
        "batch"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<BatchConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
        signal: Signal,
        next: DynConsumer,
    ) -> Result<Arc<dyn Processor>, ComponentError> {
        let config =
            parse_config::<BatchConfig>(raw).map_err(|e| ComponentError::new(e.to_string()))?;
        Ok(Arc::new(BatchProcessor::new(
            settings, config, signal, next,
        )))
    }
}

/// Why a batch left the processor, for the collector's trigger counters.
#[derive(Clone, Copy)]
enum Trigger {
    Size,
    Timeout,
}

struct Stats {
    by_size: Counter,
    by_timeout: Counter,
    failed: Counter,
}

pub struct BatchProcessor {
    id: String,
    config: BatchConfig,
    signal: Signal,
    next: DynConsumer,
    stats: Arc<Stats>,
    /// None once shut down; later batches go straight downstream.
    tx: RwLock<Option<mpsc::Sender<Queued>>>,
    /// Callers wait until their items were handed on (the next consumer
    /// acknowledges on disk).
    wait: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl BatchProcessor {
    pub fn new(
        settings: Settings,
        config: BatchConfig,
        signal: Signal,
        next: DynConsumer,
    ) -> BatchProcessor {
        let id = settings.id.to_string();
        let t = &settings.telemetry;
        let labels = [("processor", id.as_str())];
        let stats = Arc::new(Stats {
            by_size: t.counter(
                "otelcol_processor_batch_batch_size_trigger_send",
                "Number of times the batch was sent due to a size trigger",
                &labels,
            ),
            by_timeout: t.counter(
                "otelcol_processor_batch_timeout_trigger_send",
                "Number of times the batch was sent due to a timeout trigger",
                &labels,
            ),
            failed: t.counter(
                &format!("weft_processor_batch_dropped_{}", signal.item_name()),
                "Items the next consumer refused after the batch processor had accepted them",
                &labels,
            ),
        });
        BatchProcessor {
            id,
            config,
            signal,
            next,
            stats,
            tx: RwLock::new(None),
            wait: AtomicBool::new(false),
            worker: Mutex::new(None),
        }
    }
}

type Reply = oneshot::Sender<Result<(), ConsumeError>>;
/// A batch on its way to the worker, with the caller's reply when it waits.
type Queued = (Batch, Option<Reply>);

/// A caller waiting for its items, which are items `start..end` of all
/// items ever added.
struct Waiter {
    start: u64,
    end: u64,
    error: Option<ConsumeError>,
    reply: Reply,
}

struct Worker {
    id: String,
    config: BatchConfig,
    next: DynConsumer,
    stats: Arc<Stats>,
    pending: Payload,
    /// Traces that arrived encoded, kept encoded while nothing decoded is
    /// pending: sent as one concatenated request when no split is needed.
    wire: Vec<EncodedTraces>,
    pending_items: usize,
    origin: Option<Arc<str>>,
    first_at: Option<Instant>,
    /// weft's own spans the pending data came through, with the item range
    /// (in `added` terms) each came with: a send links those of its items.
    self_spans: VecDeque<(u64, u64, SpanContext)>,
    waiters: VecDeque<Waiter>,
    /// Items added and items handed on, since the start.
    added: u64,
    handed_on: u64,
}

impl Worker {
    fn add(&mut self, batch: Batch, reply: Option<Reply>) {
        let items = batch.item_count() as u64;
        if let Some(reply) = reply {
            if items == 0 {
                let _ = reply.send(Ok(()));
            } else {
                self.waiters.push_back(Waiter {
                    start: self.added,
                    end: self.added + items,
                    error: None,
                    reply,
                });
            }
        }
        self.added += items;
        if batch.encoded_traces().is_some_and(|w| w.span_count() == 0) && self.pending.is_empty() {
            // Resources without spans: dropped, as a flush of decoded data drops them.
            return;
        }
        if self.origin.is_none() {
            self.origin = Some(batch.origin.clone());
        }
        if let Some(spans) = &batch.self_spans {
            let start = self.added - items;
            for sc in spans.iter() {
                if self.self_spans.len() >= MAX_PENDING_SELF_SPANS {
                    self.self_spans.pop_front();
                }
                self.self_spans.push_back((start, self.added, sc.clone()));
            }
        }
        let first = batch.received_at;
        self.first_at = Some(self.first_at.map_or(first, |f| f.min(first)));
        self.pending_items += batch.item_count();
        if let Some(w) = batch.encoded_traces() {
            if self.pending.is_empty() {
                self.wire.push(w.clone());
                return;
            }
        }
        self.unwire();
        split::append(&mut self.pending, batch.into_payload());
    }

    fn nothing_pending(&self) -> bool {
        self.pending.is_empty() && self.wire.is_empty()
    }

    /// Decodes the encoded part into the decoded one (a split is needed, or
    /// decoded data arrived).
    fn unwire(&mut self) {
        for w in std::mem::take(&mut self.wire) {
            let b = Batch::encoded(w, Arc::from("batch"));
            split::append(&mut self.pending, b.into_payload());
        }
    }

    /// Sends the encoded part as one batch when it fits in `max` items;
    /// otherwise decodes it so the split can happen. True when sent.
    async fn send_wire(&mut self, max: usize, trigger: Trigger) -> bool {
        if self.wire.is_empty() {
            return false;
        }
        let items: usize = self.wire.iter().map(|w| w.span_count()).sum();
        if items > max {
            self.unwire();
            return false;
        }
        let joined = EncodedTraces::concat(&std::mem::take(&mut self.wire));
        self.pending_items = self.pending.item_count();
        let b = Batch::encoded(
            joined,
            self.origin.clone().unwrap_or_else(|| Arc::from("batch")),
        );
        self.send_batch(b, trigger).await;
        true
    }

    async fn send(&mut self, payload: Payload, trigger: Trigger) {
        if payload.is_empty() {
            return;
        }
        let b = Batch::new(
            payload,
            self.origin.clone().unwrap_or_else(|| Arc::from("batch")),
        );
        self.send_batch(b, trigger).await;
    }

    async fn send_batch(&mut self, mut b: Batch, trigger: Trigger) {
        match trigger {
            Trigger::Size => self.stats.by_size.inc(),
            Trigger::Timeout => self.stats.by_timeout.inc(),
        }
        let items = b.item_count();
        if let Some(at) = self.first_at {
            b.received_at = at;
        }
        let (from, to) = (self.handed_on, self.handed_on + items as u64);
        let linked: Vec<SpanContext> = self
            .self_spans
            .iter()
            .filter(|(s, e, _)| *s < to && *e > from)
            .take(MAX_LINKS)
            .map(|(_, _, sc)| sc.clone())
            .collect();
        while self.self_spans.front().is_some_and(|(_, e, _)| *e <= to) {
            self.self_spans.pop_front();
        }
        if !linked.is_empty() {
            b.self_spans = Some(Arc::from(linked));
        }
        let result = self.next.consume(b).await;
        self.handed_on = to;
        if let Err(e) = &result {
            self.stats.failed.add(items as u64);
            warn!(processor = %self.id, items, error = %e, "downstream refused a batch; it is dropped");
            for w in self.waiters.iter_mut() {
                if w.start < to && w.end > from && w.error.is_none() {
                    w.error = Some(e.clone());
                }
            }
        }
        while self
            .waiters
            .front()
            .is_some_and(|w| w.end <= self.handed_on)
        {
            if let Some(w) = self.waiters.pop_front() {
                let _ = w.reply.send(w.error.map_or(Ok(()), Err));
            }
        }
    }

    /// Sends full batches while the pending data reaches `send_batch_size`.
    async fn send_full(&mut self) -> bool {
        let size = self.config.send_batch_size;
        let mut sent = false;
        if size == 0 {
            return false;
        }
        while self.pending_items >= size {
            let max = if self.config.send_batch_max_size > 0 {
                self.config.send_batch_max_size
            } else {
                self.pending_items
            };
            if self.send_wire(max, Trigger::Size).await {
                sent = true;
                continue;
            }
            let piece = split::take_front(&mut self.pending, max);
            self.pending_items = self.pending.item_count();
            self.send(piece, Trigger::Size).await;
            sent = true;
        }
        if self.pending_items == 0 {
            self.first_at = None;
            self.origin = None;
        }
        sent
    }

    /// Sends everything pending, split at `send_batch_max_size`.
    async fn flush(&mut self) {
        while self.pending_items > 0 || !self.nothing_pending() {
            let max = if self.config.send_batch_max_size > 0 {
                self.config.send_batch_max_size
            } else {
                usize::MAX
            };
            if self.send_wire(max, Trigger::Timeout).await {
                continue;
            }
            let piece = split::take_front(&mut self.pending, max);
            let nothing_taken = piece.is_empty();
            self.pending_items = self.pending.item_count();
            self.send(piece, Trigger::Timeout).await;
            if nothing_taken {
                // Only item-less resources remain; drop them.
                self.pending = Payload::empty(self.pending.signal());
                self.pending_items = 0;
            }
        }
        self.first_at = None;
        self.origin = None;
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        let timeout = self.config.timeout;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let msg = match deadline {
                Some(d) => tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(d) => {
                        self.flush().await;
                        deadline = None;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some((batch, reply)) = msg else {
                // Channel closed: shutdown. Send the rest.
                self.flush().await;
                return;
            };
            let was_empty = self.nothing_pending();
            self.add(batch, reply);
            if timeout.is_zero() {
                self.flush().await;
                continue;
            }
            let sent = self.send_full().await;
            // The timer starts with the first pending item and restarts after a send.
            deadline = if self.nothing_pending() {
                None
            } else if was_empty || sent {
                Some(tokio::time::Instant::now() + timeout)
            } else {
                deadline
            };
        }
    }
}

#[async_trait]
impl Lifecycle for BatchProcessor {
    async fn start(&self) -> Result<(), ComponentError> {
        let (tx, rx) = mpsc::channel::<Queued>(64);
        self.wait
            .store(self.next.capabilities().acks_on_disk, Ordering::Relaxed);
        let worker = Worker {
            id: self.id.clone(),
            config: self.config.clone(),
            next: self.next.clone(),
            stats: self.stats.clone(),
            pending: Payload::empty(self.signal),
            wire: Vec::new(),
            pending_items: 0,
            origin: None,
            self_spans: VecDeque::new(),
            first_at: None,
            waiters: VecDeque::new(),
            added: 0,
            handed_on: 0,
        };
        *self.worker.lock().await = Some(tokio::spawn(worker.run(rx)));
        *self.tx.write().await = Some(tx);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        // Dropping the sender ends the worker after it sent what is pending.
        self.tx.write().await.take();
        if let Some(w) = self.worker.lock().await.take() {
            w.await
                .map_err(|e| ComponentError::new(format!("batch worker failed: {e}")))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for BatchProcessor {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let tx = self.tx.read().await.clone();
        let Some(tx) = tx else {
            return self.next.consume(batch).await;
        };
        let (reply, answer) = if self.wait.load(Ordering::Relaxed) {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        match tx.send((batch, reply)).await {
            Ok(()) => {}
            // The worker is gone (shutdown raced us): deliver directly.
            Err(mpsc::error::SendError((batch, _))) => return self.next.consume(batch).await,
        }
        match answer {
            None => Ok(()),
            Some(r) => r.await.unwrap_or_else(|_| {
                Err(ConsumeError::retryable(format!(
                    "processor {} stopped before handing the data on",
                    self.id
                )))
            }),
        }
    }

    fn capabilities(&self) -> weft_pipeline::Capabilities {
        weft_pipeline::Capabilities {
            mutates_data: false,
            acks_on_disk: self.next.capabilities().acks_on_disk,
        }
    }
}

impl Processor for BatchProcessor {}

/// The default flush period, exposed for docs and tests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use weft_pipeline::host::Host;
    use weft_pipeline::{ComponentId, Kind, Telemetry};

    struct Collect(std::sync::Mutex<Vec<Vec<String>>>);

    #[async_trait]
    impl Consumer for Collect {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            let names = match batch.payload() {
                Payload::Traces(rs) => rs
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                    .map(|s| s.name.clone())
                    .collect(),
                _ => vec![],
            };
            self.0.lock().unwrap().push(names);
            Ok(())
        }
    }

    fn batch_of(names: &[&str]) -> Batch {
        Batch::new(
            Payload::Traces(vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: names
                        .iter()
                        .map(|n| Span {
                            name: n.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }]),
            Arc::from("test"),
        )
    }

    fn processor(cfg: BatchConfig, next: Arc<Collect>) -> BatchProcessor {
        let settings = Settings {
            id: ComponentId::new("batch"),
            kind: Kind::Processor,
            telemetry: Telemetry::new(),
            host: Arc::new(Host::new()),
        };
        BatchProcessor::new(settings, cfg, Signal::Traces, next)
    }

    /// Records, per batch received, whether it was still encoded and its span names.
    #[derive(Default)]
    struct CollectWire(std::sync::Mutex<Vec<(bool, Vec<String>)>>);

    #[async_trait]
    impl Consumer for CollectWire {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            let encoded = batch.encoded_traces().is_some();
            let names = match batch.payload() {
                Payload::Traces(rs) => rs
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                    .map(|s| s.name.clone())
                    .collect(),
                _ => vec![],
            };
            self.0.lock().unwrap().push((encoded, names));
            Ok(())
        }
    }

    fn encoded_of(names: &[&str]) -> Batch {
        let Payload::Traces(rs) = batch_of(names).into_payload() else {
            unreachable!()
        };
        let wire =
            EncodedTraces::new(weft_pipeline::otlp_wire::encode_resource_spans(&rs)).unwrap();
        Batch::encoded(wire, Arc::from("test"))
    }

    fn wire_processor(cfg: BatchConfig, next: Arc<CollectWire>) -> BatchProcessor {
        let settings = Settings {
            id: ComponentId::new("batch"),
            kind: Kind::Processor,
            telemetry: Telemetry::new(),
            host: Arc::new(Host::new()),
        };
        BatchProcessor::new(settings, cfg, Signal::Traces, next)
    }

    fn owned(got: &[(bool, Vec<&str>)]) -> Vec<(bool, Vec<String>)> {
        got.iter()
            .map(|(e, n)| (*e, n.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    /// Records the span ids of the weft self spans each batch carries.
    struct CollectSelf(std::sync::Mutex<Vec<Vec<u64>>>);

    #[async_trait]
    impl Consumer for CollectSelf {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            let ids = batch
                .self_spans
                .iter()
                .flat_map(|s| s.iter())
                .map(|sc| u64::from_be_bytes(sc.span_id().to_bytes()))
                .collect();
            self.0.lock().unwrap().push(ids);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_send_links_the_receive_spans_of_its_own_items() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let sink = Arc::new(CollectSelf(std::sync::Mutex::new(Vec::new())));
        let settings = Settings {
            id: ComponentId::new("batch"),
            kind: Kind::Processor,
            telemetry: Telemetry::new(),
            host: Arc::new(Host::new()),
        };
        let p = BatchProcessor::new(
            settings,
            BatchConfig {
                send_batch_size: 4,
                send_batch_max_size: 4,
                timeout: Duration::from_secs(3600),
                ..Default::default()
            },
            Signal::Traces,
            sink.clone(),
        );
        let traced = |names: &[&str], id: u64| {
            let mut b = batch_of(names);
            b.self_spans = Some(Arc::from([SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes(id.to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            )]));
            b
        };
        p.start().await.unwrap();
        p.consume(traced(&["a1", "a2"], 0xa)).await.unwrap();
        p.consume(traced(&["b1", "b2", "b3"], 0xb)).await.unwrap();
        p.consume(batch_of(&["u1"])).await.unwrap();
        p.consume(traced(&["c1"], 0xc)).await.unwrap();
        p.shutdown().await.unwrap();
        // [a1 a2 b1 b2] then [b3 u1 c1]: each send links whose items it carries.
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![vec![0xa, 0xb], vec![0xb, 0xc]]
        );
    }

    #[tokio::test]
    async fn encoded_batches_are_joined_without_decoding() {
        let sink = Arc::new(CollectWire::default());
        let p = wire_processor(
            BatchConfig {
                send_batch_size: 4,
                timeout: Duration::from_secs(3600),
                ..Default::default()
            },
            sink.clone(),
        );
        p.start().await.unwrap();
        p.consume(encoded_of(&["a", "b"])).await.unwrap();
        p.consume(encoded_of(&["c", "d", "e"])).await.unwrap();
        p.consume(encoded_of(&["f"])).await.unwrap();
        p.consume(encoded_of(&[])).await.unwrap();
        p.shutdown().await.unwrap();
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got,
            owned(&[(true, vec!["a", "b", "c", "d", "e"]), (true, vec!["f"])])
        );
    }

    #[tokio::test]
    async fn encoded_and_decoded_mix_in_order_and_split_at_max() {
        let sink = Arc::new(CollectWire::default());
        let p = wire_processor(
            BatchConfig {
                send_batch_size: 3,
                send_batch_max_size: 4,
                timeout: Duration::from_secs(3600),
                ..Default::default()
            },
            sink.clone(),
        );
        p.start().await.unwrap();
        // Fits under the max: stays encoded.
        p.consume(encoded_of(&["a", "b", "c"])).await.unwrap();
        // Encoded, then decoded data: the encoded part is decoded and joined.
        p.consume(encoded_of(&["d"])).await.unwrap();
        p.consume(batch_of(&["e", "f"])).await.unwrap();
        // Over the max: decoded to be split.
        p.consume(encoded_of(&["g", "h", "i", "j", "k"]))
            .await
            .unwrap();
        p.shutdown().await.unwrap();
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got,
            owned(&[
                (true, vec!["a", "b", "c"]),
                (false, vec!["d", "e", "f"]),
                (false, vec!["g", "h", "i", "j"]),
                (false, vec!["k"]),
            ])
        );
    }

    #[tokio::test]
    async fn sends_by_size_and_splits_at_max() {
        let sink = Arc::new(Collect(Default::default()));
        let p = processor(
            BatchConfig {
                send_batch_size: 3,
                send_batch_max_size: 4,
                timeout: Duration::from_secs(3600),
                ..Default::default()
            },
            sink.clone(),
        );
        p.start().await.unwrap();
        p.consume(batch_of(&["a", "b"])).await.unwrap();
        p.consume(batch_of(&["c", "d", "e", "f", "g"]))
            .await
            .unwrap();
        p.shutdown().await.unwrap();
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(got, vec![vec!["a", "b", "c", "d"], vec!["e", "f", "g"]]);
    }

    #[tokio::test]
    async fn flushes_on_timeout() {
        let sink = Arc::new(Collect(Default::default()));
        let p = processor(
            BatchConfig {
                send_batch_size: 100,
                timeout: Duration::from_millis(20),
                ..Default::default()
            },
            sink.clone(),
        );
        p.start().await.unwrap();
        p.consume(batch_of(&["a"])).await.unwrap();
        for _ in 0..200 {
            if !sink.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sink.0.lock().unwrap().clone(), vec![vec!["a"]]);
        p.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_flushes_and_later_batches_pass_through() {
        let sink = Arc::new(Collect(Default::default()));
        let p = processor(
            BatchConfig {
                send_batch_size: 100,
                timeout: Duration::from_secs(3600),
                ..Default::default()
            },
            sink.clone(),
        );
        p.shutdown().await.unwrap(); // safe without start
        p.start().await.unwrap();
        p.consume(batch_of(&["a"])).await.unwrap();
        p.shutdown().await.unwrap();
        p.consume(batch_of(&["late"])).await.unwrap();
        assert_eq!(
            sink.0.lock().unwrap().clone(),
            vec![vec!["a"], vec!["late"]]
        );
    }

    #[test]
    fn config_rules() {
        let raw: Value =
            serde_yaml_ng::from_str("send_batch_size: 10\nsend_batch_max_size: 5").unwrap();
        let e = parse_config::<BatchConfig>(&raw).unwrap_err();
        assert_eq!(e.path, vec!["send_batch_max_size"]);
        let raw: Value = serde_yaml_ng::from_str("timeout: 1s\nsend_batch_sizee: 1").unwrap();
        assert!(parse_config::<BatchConfig>(&raw)
            .unwrap_err()
            .message
            .contains("unknown field `send_batch_sizee`"));
        let c = parse_config::<BatchConfig>(&Value::Null).unwrap();
        assert_eq!(
            (c.send_batch_size, c.send_batch_max_size, c.timeout),
            (8192, 0, DEFAULT_TIMEOUT)
        );
    }

    /// A downstream that acknowledges on disk: records what it got, refuses
    /// batches holding a span named "refuse".
    #[derive(Default)]
    struct Disk(std::sync::Mutex<Vec<Vec<String>>>);

    #[async_trait]
    impl Consumer for Disk {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            let names: Vec<String> = match batch.payload() {
                Payload::Traces(rs) => rs
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                    .map(|s| s.name.clone())
                    .collect(),
                _ => vec![],
            };
            let refuse = names.iter().any(|n| n == "refuse");
            self.0.lock().unwrap().push(names);
            if refuse {
                return Err(ConsumeError::retryable("disk full"));
            }
            Ok(())
        }

        fn capabilities(&self) -> weft_pipeline::Capabilities {
            weft_pipeline::Capabilities {
                mutates_data: false,
                acks_on_disk: true,
            }
        }
    }

    #[tokio::test]
    async fn callers_wait_until_a_disk_backed_downstream_has_their_items() {
        let disk = Arc::new(Disk::default());
        let settings = Settings {
            id: ComponentId::new("batch"),
            kind: Kind::Processor,
            telemetry: Telemetry::new(),
            host: Arc::new(Host::new()),
        };
        let cfg = BatchConfig {
            send_batch_size: 3,
            send_batch_max_size: 3,
            timeout: Duration::from_millis(100),
            ..BatchConfig::default()
        };
        let p = Arc::new(BatchProcessor::new(
            settings,
            cfg,
            Signal::Traces,
            disk.clone(),
        ));
        assert!(p.capabilities().acks_on_disk);
        p.start().await.unwrap();
        // Two spans wait for a third (or the timeout): the caller waits too.
        let first = {
            let p = p.clone();
            tokio::spawn(async move { p.consume(batch_of(&["a", "b"])).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !first.is_finished(),
            "answered before its items were handed on"
        );
        assert!(disk.0.lock().unwrap().is_empty());
        // The next caller's items fill the batch: a, b, c go; d stays.
        let second = {
            let p = p.clone();
            tokio::spawn(async move { p.consume(batch_of(&["c", "d"])).await })
        };
        first.await.unwrap().unwrap();
        assert_eq!(disk.0.lock().unwrap()[0], ["a", "b", "c"]);
        assert!(!second.is_finished(), "d is not on disk yet");
        // d leaves at the timeout, in a batch with a refused item: the caller
        // of d and the caller of "refuse" hear the error.
        let third = {
            let p = p.clone();
            tokio::spawn(async move { p.consume(batch_of(&["refuse"])).await })
        };
        let err = second.await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert!(third.await.unwrap().is_err());
        assert_eq!(disk.0.lock().unwrap()[1], ["d", "refuse"]);
        // An empty batch is answered at once.
        p.consume(batch_of(&[])).await.unwrap();
        p.shutdown().await.unwrap();
    }
}
