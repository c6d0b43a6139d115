//! The exporter helper every network exporter shares: a bounded in-memory
//! sending queue, retries with exponential backoff and jitter, a per-attempt
//! timeout, and the collector's exporter self-metrics.
//!
//! An exporter supplies an [`ExportClient`] (how to send one payload, and
//! whether a failure is worth retrying); [`QueuedExporter`] turns it into a
//! pipeline [`Exporter`].

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch, RwLock};
use tokio::task::JoinHandle;

use crate::component::{ComponentError, ConfigFieldError, Exporter, Lifecycle, Settings};
use crate::consumer::{ConsumeError, Consumer};
use crate::data::{Batch, Payload, Signal};
use crate::host::Host;
use crate::otlp_wire::EncodedTraces;
use crate::self_trace::{with_outgoing, Attr, OutgoingHeaders, Parent, SelfSpan, SpanKind};
use crate::storage::queue::{self as pqueue, FileQueue, QueueError};
use crate::telemetry::{Counter, ExporterMetrics};

/// The longest a shutdown waits for the sending queue to drain.
pub const DRAIN_DEADLINE_CAP: Duration = Duration::from_secs(10);

/// How long `block_on_overflow` waits for room before refusing as a full
/// queue does: about as long as clients wait for an answer, and it keeps a
/// shutdown from hanging on a queue that cannot drain (the pipeline flushes
/// into exporters before they are told to stop).
pub const BLOCK_ON_OVERFLOW_WAIT: Duration = Duration::from_secs(10);

/// The longest weft waits before a retry when a server asks for a delay
/// (HTTP `Retry-After`, gRPC `RetryInfo`), so one misbehaving answer cannot
/// park a batch for hours.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

/// `sending_queue`: the bounded in-memory queue between the pipeline and the
/// senders. Its size counts batches (requests), not spans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Queue batches and send them from background consumers. When false,
    /// `consume` sends synchronously (with retries) and returns the result to
    /// the caller.
    pub enabled: bool,
    /// Number of concurrent senders draining the queue.
    pub num_consumers: usize,
    /// Maximum number of batches waiting in the queue; when it is full, new
    /// batches are refused with a retryable error and counted in
    /// `otelcol_exporter_enqueue_failed_<items>`.
    pub queue_size: usize,
    /// Wait for room in a full queue instead of refusing the batch.
    pub block_on_overflow: bool,
    /// Make `consume` wait until the queued batch was sent (or dropped) and
    /// return that outcome to the caller.
    pub wait_for_result: bool,
    /// What `queue_size` counts: `requests` (batches), `items` (spans, data
    /// points, log records) or `bytes` (the data's encoded size), the last
    /// two bounding the queue's memory by its data.
    pub sizer: QueueSizer,
    /// A storage extension id (`file_storage`, `file_storage/q`): the queue
    /// is kept on disk there, a batch is acknowledged once it is written, and
    /// what was not sent when weft stopped is sent first at the next start.
    pub storage: Option<String>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            block_on_overflow: false,
            wait_for_result: false,
            sizer: QueueSizer::Requests,
            storage: None,
        }
    }
}

/// The unit of `sending_queue.queue_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueSizer {
    #[default]
    Requests,
    Items,
    /// The data's size as an OTLP request (decoded spans take about three
    /// times as much memory).
    Bytes,
}

impl QueueSettings {
    /// A queue that is off: `consume` sends synchronously.
    pub fn disabled() -> QueueSettings {
        QueueSettings {
            enabled: false,
            ..QueueSettings::default()
        }
    }

    /// Checks the values; `key` is where the section sits in the exporter's config.
    pub fn validate(&self, key: &str) -> Result<(), ConfigFieldError> {
        if !self.enabled {
            return Ok(());
        }
        if self.num_consumers == 0 {
            return Err(ConfigFieldError::at(
                &[key, "num_consumers"],
                "`num_consumers` must be positive",
            ));
        }
        if self.queue_size == 0 {
            return Err(ConfigFieldError::at(
                &[key, "queue_size"],
                "`queue_size` must be positive",
            ));
        }
        if let Some(id) = &self.storage {
            if crate::component::ComponentId::parse(id).is_err() {
                return Err(ConfigFieldError::at(
                    &[key, "storage"],
                    format!("`storage` {id:?} is not a component id such as file_storage/queue"),
                ));
            }
            if self.wait_for_result {
                return Err(ConfigFieldError::at(
                    &[key, "wait_for_result"],
                    "`wait_for_result` cannot be combined with `storage`: a persistent queue acknowledges once the data is on disk",
                ));
            }
        }
        Ok(())
    }
}

/// `retry_on_failure`: exponential backoff for retryable failures.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retry batches that failed with a retryable error.
    pub enabled: bool,
    /// Wait after the first failure.
    #[serde(with = "crate::config::duration")]
    pub initial_interval: Duration,
    /// Jitter: each wait is drawn from `interval * (1 ± randomization_factor)`.
    pub randomization_factor: f64,
    /// Growth of the interval after each failure.
    pub multiplier: f64,
    /// Upper bound of the interval (before jitter).
    #[serde(with = "crate::config::duration")]
    pub max_interval: Duration,
    /// Give up on a batch once retrying it would take longer than this since
    /// its first attempt; the batch is then dropped and counted in
    /// `otelcol_exporter_send_failed_<items>`. `0` retries forever.
    #[serde(with = "crate::config::duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetrySettings {
    /// No retries: a failed attempt drops the batch.
    pub fn disabled() -> RetrySettings {
        RetrySettings {
            enabled: false,
            ..RetrySettings::default()
        }
    }

    /// Checks the values; `key` is where the section sits in the exporter's config.
    pub fn validate(&self, key: &str) -> Result<(), ConfigFieldError> {
        if !self.enabled {
            return Ok(());
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(ConfigFieldError::at(
                &[key, "randomization_factor"],
                "`randomization_factor` must be within [0, 1]",
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier > 0.0) {
            return Err(ConfigFieldError::at(
                &[key, "multiplier"],
                "`multiplier` must be positive",
            ));
        }
        if !self.max_elapsed_time.is_zero() {
            if self.max_elapsed_time < self.initial_interval {
                return Err(ConfigFieldError::at(
                    &[key, "max_elapsed_time"],
                    "`max_elapsed_time` must not be less than `initial_interval`",
                ));
            }
            if self.max_elapsed_time < self.max_interval {
                return Err(ConfigFieldError::at(
                    &[key, "max_elapsed_time"],
                    "`max_elapsed_time` must not be less than `max_interval`",
                ));
            }
        }
        Ok(())
    }
}

/// `timeout`: how long one send attempt may take. `0` means no limit.
/// Written in the config as a plain duration (`timeout: 10s`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct TimeoutSettings {
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            timeout: Duration::from_secs(5),
        }
    }
}

impl TimeoutSettings {
    /// No per-attempt limit.
    pub fn none() -> TimeoutSettings {
        TimeoutSettings {
            timeout: Duration::ZERO,
        }
    }
}

/// Why one send attempt failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ExportError {
    /// The destination will never accept this data: drop it.
    #[error("{0}")]
    Permanent(String),
    /// Worth trying again; `retry_after` is the delay the server asked for.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl ExportError {
    pub fn permanent(message: impl Into<String>) -> ExportError {
        ExportError::Permanent(message.into())
    }

    pub fn retryable(message: impl Into<String>) -> ExportError {
        ExportError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ExportError::Retryable { .. })
    }
}

/// One destination's wire protocol: sends a payload once. Retries, queueing,
/// timeouts and metrics are the helper's job.
#[async_trait]
pub trait ExportClient: Send + Sync + 'static {
    /// Called from the exporter's `start`: open files, check settings.
    async fn start(&self) -> Result<(), ComponentError> {
        Ok(())
    }

    /// Sends one payload. Called concurrently from several queue consumers.
    async fn export(&self, payload: &Payload) -> Result<(), ExportError>;

    /// Whether [`ExportClient::export_encoded`] sends traces in their OTLP
    /// wire form. When false (the default), encoded traces are decoded and
    /// go through `export`.
    fn sends_encoded_traces(&self) -> bool {
        false
    }

    /// Sends traces still in their OTLP wire form, without decoding them.
    async fn export_encoded(&self, _traces: &EncodedTraces) -> Result<(), ExportError> {
        Err(ExportError::Permanent(
            "this exporter does not send encoded traces".into(),
        ))
    }

    /// Called once after the queue drained: flush and close.
    async fn shutdown(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// A queued batch, with the channel to report its fate when the caller waits.
struct Item {
    batch: Batch,
    items: u64,
    /// What this batch counts for in `queue_size` (1, or its items).
    units: i64,
    /// Room held in an items-sized queue until the batch is sent or dropped.
    _room: Option<tokio::sync::OwnedSemaphorePermit>,
    done: Option<oneshot::Sender<Result<(), ConsumeError>>>,
}

/// The parts the senders share with the exporter.
struct Core {
    id: String,
    metrics: ExporterMetrics,
    client: Arc<dyn ExportClient>,
    retry: RetrySettings,
    timeout: Duration,
    /// Set when the drain deadline passes: senders give up at once.
    abort: watch::Sender<bool>,
    /// Where weft's own tracer lives (send spans).
    host: Arc<crate::host::Host>,
}

/// Waits until the abort flag is raised; never returns if its sender is gone.
async fn aborted(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|a| *a).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Core {
    async fn attempt(&self, batch: &Batch) -> Result<(), ExportError> {
        let export = async {
            match batch.encoded_traces() {
                Some(wire) if self.client.sends_encoded_traces() => {
                    self.client.export_encoded(wire).await
                }
                _ => self.client.export(batch.payload()).await,
            }
        };
        if self.timeout.is_zero() {
            return export.await;
        }
        match tokio::time::timeout(self.timeout, export).await {
            Ok(r) => r,
            Err(_) => Err(ExportError::retryable(format!(
                "request timed out after {}",
                crate::config::duration::format(self.timeout)
            ))),
        }
    }

    fn drop_batch(&self, signal: Signal, items: u64, reason: &str) -> ConsumeError {
        self.metrics.send_failed(signal).add(items);
        tracing::warn!(
            exporter = %self.id,
            signal = %signal,
            dropped_items = items,
            "Exporting failed; dropping data: {reason}"
        );
        ConsumeError::retryable(format!("exporter {}: {reason}", self.id))
    }

    /// Sends one batch until it succeeds, fails permanently, runs out of
    /// retry time, or the drain deadline aborts it. Updates the counters.
    async fn send(&self, batch: &Batch, items: u64) -> Result<(), ConsumeError> {
        match self.send_or_abort(batch, items).await {
            Some(r) => r,
            None => {
                Err(self.drop_batch(batch.signal(), items, "the shutdown drain deadline passed"))
            }
        }
    }

    /// As `send`, but an abort (the drain deadline) returns None and counts
    /// nothing: the caller still holds the batch (a persistent queue keeps it).
    async fn send_or_abort(&self, batch: &Batch, items: u64) -> Option<Result<(), ConsumeError>> {
        let mut span = self.send_span(batch);
        // The send span's context travels on the requests (`propagators`).
        let outgoing = span
            .as_ref()
            .and_then(|s| self.host.self_tracer().and_then(|t| t.inject(&s.context())));
        let result = self
            .send_or_abort_traced(batch, items, &mut span, outgoing)
            .await;
        if let Some(s) = &mut span {
            let (sent, failed) = match &result {
                Some(Ok(())) => (items, 0),
                Some(Err(_)) => (0, items),
                None => (0, 0),
            };
            s.set(Attr::new("items.sent", sent as i64));
            s.set(Attr::new("items.failed", failed as i64));
            match &result {
                Some(Ok(())) => {}
                Some(Err(e)) => s.error(e.to_string()),
                None => {
                    s.error("the shutdown drain deadline passed; the batch stays queued".into())
                }
            }
        }
        result
    }

    /// weft's own span of one send (the collector's `exporter/<id>/<signal>`),
    /// when the data came from a traced request: a child of its receive span,
    /// or linked to each when a batch processor merged several.
    fn send_span(&self, batch: &Batch) -> Option<SelfSpan> {
        let parents = batch.self_spans.as_ref()?;
        let tracer = self.host.self_tracer()?;
        let signal = batch.signal();
        Some(tracer.start(
            format!("exporter/{}/{signal}", self.id),
            SpanKind::Client,
            Parent::Of(parents),
            vec![
                Attr::new("otelcol.component.kind", "exporter"),
                Attr::new("otelcol.component.id", self.id.clone()),
                Attr::new("otelcol.signal", signal.as_str()),
                Attr::new("exporter", self.id.clone()),
                Attr::new("data_type", signal.as_str()),
                Attr::new("items", batch.item_count() as i64),
            ],
        ))
    }

    async fn send_or_abort_traced(
        &self,
        batch: &Batch,
        items: u64,
        span: &mut Option<SelfSpan>,
        outgoing: Option<OutgoingHeaders>,
    ) -> Option<Result<(), ConsumeError>> {
        let signal = batch.signal();
        let first_attempt = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        let mut retry_num: i64 = 0;
        loop {
            if let Some(s) = span {
                s.event("Sending request.", vec![Attr::new("retry_num", retry_num)]);
            }
            retry_num += 1;
            let result = tokio::select! {
                r = with_outgoing(outgoing.clone(), self.attempt(batch)) => r,
                _ = aborted(self.abort.subscribe()) => return None,
            };
            let (message, retry_after) = match result {
                Ok(()) => {
                    self.metrics.sent(signal).add(items);
                    return Some(Ok(()));
                }
                Err(ExportError::Permanent(message)) => {
                    self.metrics.send_failed(signal).add(items);
                    tracing::warn!(
                        exporter = %self.id,
                        signal = %signal,
                        dropped_items = items,
                        error = %message,
                        "Exporting failed with a permanent error; dropping data"
                    );
                    return Some(Err(ConsumeError::Permanent(message)));
                }
                Err(ExportError::Retryable {
                    message,
                    retry_after,
                }) => (message, retry_after),
            };
            if !self.retry.enabled {
                return Some(Err(self.drop_batch(
                    signal,
                    items,
                    &format!("{message} (retry_on_failure is disabled)"),
                )));
            }
            let mut delay = backoff.next_delay();
            if let Some(asked) = retry_after {
                delay = delay.max(asked.min(MAX_SERVER_DELAY));
            }
            let max_elapsed = self.retry.max_elapsed_time;
            if !max_elapsed.is_zero() && first_attempt.elapsed() + delay > max_elapsed {
                return Some(Err(self.drop_batch(
                    signal,
                    items,
                    &format!("no more retries left within max_elapsed_time: {message}"),
                )));
            }
            tracing::info!(
                exporter = %self.id,
                signal = %signal,
                error = %message,
                interval = %crate::config::duration::format(delay),
                "Exporting failed; will retry the request after the interval"
            );
            if let Some(s) = span {
                s.event(
                    "Exporting failed. Will retry the request after interval.",
                    vec![
                        Attr::new("interval", crate::config::duration::format(delay)),
                        Attr::new("error", message.clone()),
                    ],
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = aborted(self.abort.subscribe()) => return None,
            }
        }
    }
}

/// Exponential backoff with jitter, as `retry_on_failure` describes it.
struct Backoff {
    current: Duration,
    multiplier: f64,
    max_interval: Duration,
    randomization_factor: f64,
}

impl Backoff {
    fn new(s: &RetrySettings) -> Backoff {
        Backoff {
            current: s.initial_interval,
            multiplier: s.multiplier,
            max_interval: s.max_interval,
            randomization_factor: s.randomization_factor,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.current.as_secs_f64();
        let next = (base * self.multiplier).min(self.max_interval.as_secs_f64());
        self.current = Duration::from_secs_f64(next.max(0.0));
        let delta = self.randomization_factor * base;
        let low = base - delta;
        let jittered = low + random_unit() * (2.0 * delta);
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

/// A uniform number in [0, 1) for jitter; std's randomly keyed hasher is
/// plenty for spreading retries apart.
fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let h = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The queue's ends. The sender is taken out at shutdown so the consumers see
/// the end of the queue once it is empty.
struct Queue {
    settings: QueueSettings,
    /// For `sizer: items` or `bytes`: one permit per unit of room.
    room: Option<Arc<tokio::sync::Semaphore>>,
    tx: Mutex<Option<mpsc::Sender<Item>>>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>,
}

/// A sending queue kept by a storage extension (`sending_queue.storage`),
/// opened when the exporter starts.
struct Persistent {
    storage: String,
    settings: QueueSettings,
    host: Arc<Host>,
    queue: std::sync::OnceLock<Arc<FileQueue>>,
    /// Raised at shutdown: senders stop taking batches.
    stop: watch::Sender<bool>,
    recovered: Counter,
    damaged: Counter,
    damaged_bytes: Counter,
}

/// A pipeline exporter built from an [`ExportClient`]: queue, retries,
/// timeout and the collector's exporter metrics.
///
/// * Queue full: `consume` refuses the batch with a retryable
///   `sending queue is full` error and counts its items in
///   `otelcol_exporter_enqueue_failed_<items>` (or waits, with
///   `block_on_overflow`).
/// * Queue disabled: `consume` sends synchronously, with retries, and returns
///   the final outcome.
/// * After `shutdown` began, `consume` refuses every batch with a retryable
///   error (counted in `enqueue_failed`), so the caller — a receiver answering
///   503 / UNAVAILABLE — knows the data was not taken.
/// * `shutdown` drains: queued batches keep being sent, with retries, until the
///   queue is empty or the drain deadline (the retry `max_elapsed_time`, at most
///   [`DRAIN_DEADLINE_CAP`]) passes; whatever is left is dropped and counted in
///   `otelcol_exporter_send_failed_<items>`.
pub struct QueuedExporter {
    core: Arc<Core>,
    queue: Option<Queue>,
    persistent: Option<Persistent>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Held shared by synchronous sends; shutdown takes it exclusively to
    /// wait for them.
    in_flight: RwLock<()>,
    started: AtomicBool,
    stopping: AtomicBool,
    stopped: tokio::sync::Mutex<bool>,
    drain_deadline: Duration,
}

impl QueuedExporter {
    pub fn new(
        settings: &Settings,
        queue: QueueSettings,
        retry: RetrySettings,
        timeout: TimeoutSettings,
        client: Arc<dyn ExportClient>,
    ) -> QueuedExporter {
        let metrics = ExporterMetrics::new(&settings.telemetry, &settings.id);
        let drain_deadline = if !retry.enabled || retry.max_elapsed_time.is_zero() {
            DRAIN_DEADLINE_CAP
        } else {
            retry.max_elapsed_time.min(DRAIN_DEADLINE_CAP)
        };
        let persistent = match &queue.storage {
            Some(storage) if queue.enabled => {
                metrics.queue_capacity.set(queue.queue_size as i64);
                let id = settings.id.to_string();
                let labels = [("exporter", id.as_str())];
                let t = &settings.telemetry;
                Some(Persistent {
                    storage: storage.clone(),
                    settings: queue.clone(),
                    host: settings.host.clone(),
                    queue: std::sync::OnceLock::new(),
                    stop: watch::channel(false).0,
                    recovered: t.counter(
                        "weft_exporter_queue_recovered_batches",
                        "Batches found in the persistent queue at start, sent before new data",
                        &labels,
                    ),
                    damaged: t.counter(
                        "weft_exporter_queue_damaged_items",
                        "Items lost because their record in the persistent queue was damaged",
                        &labels,
                    ),
                    damaged_bytes: t.counter(
                        "weft_exporter_queue_damaged_bytes",
                        "Bytes of the persistent queue's files skipped as damaged at start",
                        &labels,
                    ),
                })
            }
            _ => None,
        };
        let queue = if persistent.is_some() {
            None
        } else if queue.enabled {
            metrics.queue_capacity.set(queue.queue_size as i64);
            let (tx, rx) = mpsc::channel(queue.queue_size.max(1));
            let room = (queue.sizer != QueueSizer::Requests).then(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    queue.queue_size.min(tokio::sync::Semaphore::MAX_PERMITS),
                ))
            });
            Some(Queue {
                room,
                settings: queue,
                tx: Mutex::new(Some(tx)),
                rx: Arc::new(tokio::sync::Mutex::new(rx)),
            })
        } else {
            metrics.queue_capacity.set(0);
            None
        };
        let (abort, _) = watch::channel(false);
        QueuedExporter {
            core: Arc::new(Core {
                id: settings.id.to_string(),
                metrics,
                client,
                retry,
                timeout: timeout.timeout,
                abort,
                host: settings.host.clone(),
            }),
            queue,
            persistent,
            workers: Mutex::new(Vec::new()),
            in_flight: RwLock::new(()),
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            stopped: tokio::sync::Mutex::new(false),
            drain_deadline,
        }
    }

    /// Overrides how long `shutdown` keeps draining.
    pub fn with_drain_deadline(mut self, deadline: Duration) -> QueuedExporter {
        self.drain_deadline = deadline;
        self
    }

    fn refuse_full(&self, signal: Signal, items: u64) -> ConsumeError {
        self.core.metrics.enqueue_failed(signal).add(items);
        tracing::warn!(
            exporter = %self.core.id,
            signal = %signal,
            dropped_items = items,
            "Sending queue is full; refusing data"
        );
        ConsumeError::retryable("sending queue is full")
    }

    fn refuse_after_shutdown(&self, signal: Signal, items: u64) -> ConsumeError {
        self.core.metrics.enqueue_failed(signal).add(items);
        ConsumeError::retryable(format!("exporter {} is shut down", self.core.id))
    }

    /// Drops whatever is still queued; used when no consumer is left to send it.
    async fn drop_queued(&self, queue: &Queue) {
        let mut rx = queue.rx.lock().await;
        let mut dropped = 0u64;
        while let Ok(item) = rx.try_recv() {
            self.core.metrics.queue_size.sub(item.units);
            let signal = item.batch.signal();
            self.core.metrics.send_failed(signal).add(item.items);
            dropped += item.items;
            if let Some(done) = item.done {
                let _ = done.send(Err(ConsumeError::retryable(format!(
                    "exporter {} shut down before sending",
                    self.core.id
                ))));
            }
        }
        if dropped > 0 {
            tracing::warn!(
                exporter = %self.core.id,
                dropped_items = dropped,
                "Exporter shut down with data still queued; dropping it"
            );
        }
    }
}

/// A sender of a persistent queue: a batch leaves the queue once it was sent
/// or dropped for good; one the drain deadline interrupts stays queued.
async fn run_persistent_consumer(
    core: Arc<Core>,
    queue: Arc<FileQueue>,
    mut stop: watch::Receiver<bool>,
    damaged: Counter,
) {
    loop {
        let popped = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            p = queue.pop() => p,
        };
        let lost = queue.take_damaged_reads();
        if lost > 0 {
            damaged.add(lost);
        }
        let kept = match core.send_or_abort(&popped.batch, popped.items).await {
            Some(_) => {
                queue.ack(popped.seq);
                false
            }
            None => {
                queue.nack(popped.seq);
                true
            }
        };
        core.metrics.queue_size.set(queue.used() as i64);
        if kept {
            break;
        }
    }
}

impl QueuedExporter {
    /// Opens the persistent queue and starts its senders.
    async fn start_persistent(&self, p: &Persistent) -> Result<(), ComponentError> {
        let spec = p.host.storage(&p.storage).ok_or_else(|| {
            ComponentError::new(format!(
                "sending_queue.storage: {:?} is not a started storage extension; configure it under `extensions` and list it in `service.extensions`",
                p.storage
            ))
        })?;
        let dir = spec.queue_dir(&self.core.id);
        let unit = match p.settings.sizer {
            QueueSizer::Requests => pqueue::Unit::Requests,
            QueueSizer::Items => pqueue::Unit::Items,
            QueueSizer::Bytes => pqueue::Unit::Bytes,
        };
        let opts = pqueue::OpenOptions {
            fsync: spec.fsync,
            capacity: p.settings.queue_size as u64,
            unit,
            lock_timeout: spec.timeout,
            ..pqueue::OpenOptions::default()
        };
        let (queue, recovery) = tokio::task::spawn_blocking(move || FileQueue::open(&dir, opts))
            .await
            .map_err(|e| ComponentError::new(format!("sending_queue.storage: {e}")))?
            .map_err(|e| ComponentError::new(format!("sending_queue.storage: {e}")))?;
        // A queue this process already had open (a reload) takes these settings.
        queue.reconfigure(p.settings.queue_size as u64, unit, spec.fsync);
        for line in &recovery.damage {
            tracing::error!(exporter = %self.core.id, dir = %queue.dir().display(), "persistent queue damaged: {line}");
        }
        p.damaged_bytes.add(recovery.damaged_bytes);
        p.recovered.add(recovery.records);
        if recovery.records > 0 {
            tracing::info!(
                exporter = %self.core.id,
                batches = recovery.records,
                items = recovery.items,
                "Persistent queue holds data from before the restart; it is sent before new data"
            );
        }
        self.core.metrics.queue_size.set(queue.used() as i64);
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..p.settings.num_consumers {
            workers.push(tokio::spawn(run_persistent_consumer(
                self.core.clone(),
                queue.clone(),
                p.stop.subscribe(),
                p.damaged.clone(),
            )));
        }
        let _ = p.queue.set(queue);
        Ok(())
    }

    /// Writes the batch to the persistent queue; Ok once it is on disk.
    async fn consume_persistent(&self, p: &Persistent, batch: Batch) -> Result<(), ConsumeError> {
        let signal = batch.signal();
        let items = batch.item_count() as u64;
        let Some(queue) = p.queue.get() else {
            return Err(self.refuse_after_shutdown(signal, items));
        };
        let payload = pqueue::encode_batch(&batch);
        let units = queue.units_for(items, payload.len());
        let give_up = tokio::time::Instant::now() + BLOCK_ON_OVERFLOW_WAIT;
        loop {
            match queue.push(signal, items, &payload).await {
                Ok(_) => {
                    self.core.metrics.queue_size.set(queue.used() as i64);
                    return Ok(());
                }
                Err(QueueError::Full) => {
                    let now = tokio::time::Instant::now();
                    if p.settings.block_on_overflow
                        && now < give_up
                        && queue.wait_for_room(units, give_up - now).await
                    {
                        continue;
                    }
                    return Err(self.refuse_full(signal, items));
                }
                Err(e) => {
                    self.core.metrics.enqueue_failed(signal).add(items);
                    tracing::error!(
                        exporter = %self.core.id,
                        signal = %signal,
                        dropped_items = items,
                        error = %e,
                        "Cannot write to the persistent sending queue; refusing data"
                    );
                    return Err(ConsumeError::retryable(format!(
                        "exporter {}: {e}",
                        self.core.id
                    )));
                }
            }
        }
    }

    /// Stops the senders; what they did not send stays on disk.
    async fn shutdown_persistent(&self, p: &Persistent, deadline: Instant) {
        p.stop.send_replace(true);
        let workers: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let all = futures_util::future::join_all(workers);
        tokio::pin!(all);
        if tokio::time::timeout_at(deadline.into(), &mut all)
            .await
            .is_err()
        {
            self.core.abort.send_replace(true);
            all.await;
        }
        if let Some(q) = p.queue.get() {
            let left = q.pending();
            if left > 0 {
                tracing::info!(
                    exporter = %self.core.id,
                    batches = left,
                    "Batches not yet sent stay in the persistent queue for the next start"
                );
            }
        }
    }
}

async fn run_consumer(core: Arc<Core>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>) {
    loop {
        let next = {
            let mut rx = rx.lock().await;
            rx.recv().await
        };
        let Some(item) = next else { break };
        core.metrics.queue_size.sub(item.units);
        let result = if *core.abort.borrow() {
            Err(core.drop_batch(
                item.batch.signal(),
                item.items,
                "the shutdown drain deadline passed",
            ))
        } else {
            core.send(&item.batch, item.items).await
        };
        if let Some(done) = item.done {
            let _ = done.send(result);
        }
    }
}

#[async_trait]
impl Lifecycle for QueuedExporter {
    async fn start(&self) -> Result<(), ComponentError> {
        if self.stopping.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.core.client.start().await?;
        if let Some(p) = &self.persistent {
            self.start_persistent(p).await?;
        }
        if let Some(queue) = &self.queue {
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..queue.settings.num_consumers {
                workers.push(tokio::spawn(run_consumer(
                    self.core.clone(),
                    queue.rx.clone(),
                )));
            }
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let mut stopped = self.stopped.lock().await;
        if *stopped {
            return Ok(());
        }
        self.stopping.store(true, Ordering::Release);
        let started = self.started.load(Ordering::Acquire);
        let deadline = Instant::now() + self.drain_deadline;

        if let Some(p) = &self.persistent {
            self.shutdown_persistent(p, deadline).await;
        }
        if let Some(queue) = &self.queue {
            // Closing the queue lets the consumers finish once it is empty.
            queue.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
            let workers: Vec<JoinHandle<()>> =
                std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
            if workers.is_empty() {
                // Never started: nobody can send what is queued.
                self.core.abort.send_replace(true);
                self.drop_queued(queue).await;
            } else {
                let all = futures_util::future::join_all(workers);
                tokio::pin!(all);
                if tokio::time::timeout_at(deadline.into(), &mut all)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        exporter = %self.core.id,
                        deadline = %crate::config::duration::format(self.drain_deadline),
                        "Sending queue did not drain before the deadline; dropping what is left"
                    );
                    self.core.abort.send_replace(true);
                    all.await;
                }
                // Batches a blocked producer slipped in after the consumers left.
                self.drop_queued(queue).await;
            }
        }
        if tokio::time::timeout_at(deadline.into(), self.in_flight.write())
            .await
            .is_err()
        {
            self.core.abort.send_replace(true);
            let _ = self.in_flight.write().await;
        }
        self.core.abort.send_replace(true);
        *stopped = true;
        if started {
            self.core.client.shutdown().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for QueuedExporter {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let signal = batch.signal();
        if batch.is_empty() {
            return Ok(());
        }
        let items = batch.item_count() as u64;
        if self.stopping.load(Ordering::Acquire) {
            return Err(self.refuse_after_shutdown(signal, items));
        }
        if let Some(p) = &self.persistent {
            return self.consume_persistent(p, batch).await;
        }
        let Some(queue) = &self.queue else {
            let Ok(_guard) = self.in_flight.try_read() else {
                // Shutdown holds the lock: it has begun.
                return Err(self.refuse_after_shutdown(signal, items));
            };
            return self.core.send(&batch, items).await;
        };
        let tx = queue.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tx) = tx else {
            return Err(self.refuse_after_shutdown(signal, items));
        };
        // Queued traces wait encoded when the exporter sends them encoded.
        let batch = if signal == Signal::Traces && self.core.client.sends_encoded_traces() {
            batch.into_encoded()
        } else {
            batch
        };
        let (done_tx, done_rx) = if queue.settings.wait_for_result {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        // An items-sized queue holds room for the batch's items (all of the
        // queue for a batch larger than it) until the batch leaves.
        let mut room = None;
        let mut units = 1i64;
        if let Some(sem) = &queue.room {
            let size = match queue.settings.sizer {
                QueueSizer::Bytes => batch.encoded_size() as u64,
                _ => items,
            };
            let want = size
                .clamp(1, queue.settings.queue_size as u64)
                .min(u64::from(u32::MAX)) as u32;
            units = i64::from(want);
            let got = if queue.settings.block_on_overflow {
                tokio::select! {
                    r = sem.clone().acquire_many_owned(want) => r.ok(),
                    _ = aborted(self.core.abort.subscribe()) => None,
                    _ = tokio::time::sleep(BLOCK_ON_OVERFLOW_WAIT) => {
                        return Err(self.refuse_full(signal, items));
                    }
                }
            } else {
                match sem.clone().try_acquire_many_owned(want) {
                    Ok(p) => Some(p),
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        return Err(self.refuse_full(signal, items));
                    }
                    Err(tokio::sync::TryAcquireError::Closed) => None,
                }
            };
            match got {
                Some(p) => room = Some(p),
                None => return Err(self.refuse_after_shutdown(signal, items)),
            }
        }
        let item = Item {
            batch,
            items,
            units,
            _room: room,
            done: done_tx,
        };
        // Counted before the send so a consumer's decrement never runs first.
        self.core.metrics.queue_size.add(units);
        let sent = if queue.settings.block_on_overflow {
            tokio::select! {
                r = tx.send(item) => r.map_err(|_| false),
                _ = aborted(self.core.abort.subscribe()) => Err(false),
                _ = tokio::time::sleep(BLOCK_ON_OVERFLOW_WAIT) => Err(true),
            }
        } else {
            tx.try_send(item)
                .map_err(|e| matches!(e, mpsc::error::TrySendError::Full(_)))
        };
        drop(tx);
        match sent {
            Ok(()) => {}
            Err(full) => {
                self.core.metrics.queue_size.sub(units);
                if !full {
                    return Err(self.refuse_after_shutdown(signal, items));
                }
                return Err(self.refuse_full(signal, items));
            }
        }
        match done_rx {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                Err(ConsumeError::retryable(format!(
                    "exporter {} stopped before sending",
                    self.core.id
                )))
            }),
            None => Ok(()),
        }
    }

    fn capabilities(&self) -> crate::consumer::Capabilities {
        crate::consumer::Capabilities {
            mutates_data: false,
            acks_on_disk: self.persistent.is_some(),
        }
    }
}

impl Exporter for QueuedExporter {}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::component::{parse_config, ComponentConfig, ComponentId, Kind};
    use crate::host::Host;
    use crate::telemetry::Telemetry;

    /// An exporter config embedding the three sections, as real exporters do.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct TestConfig {
        timeout: TimeoutSettings,
        retry_on_failure: RetrySettings,
        sending_queue: QueueSettings,
    }

    impl ComponentConfig for TestConfig {
        fn validate(&self) -> Result<(), ConfigFieldError> {
            self.retry_on_failure.validate("retry_on_failure")?;
            self.sending_queue.validate("sending_queue")
        }
    }

    fn parse(yaml: &str) -> Result<TestConfig, ConfigFieldError> {
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        parse_config::<TestConfig>(&raw)
    }

    /// A real client driven by a script of outcomes; records every attempt.
    #[derive(Default)]
    struct ScriptedClient {
        script: Mutex<VecDeque<Result<(), ExportError>>>,
        /// Span names of each successfully delivered payload, in order.
        delivered: Mutex<Vec<Vec<String>>>,
        attempts: Mutex<Vec<Instant>>,
        /// Extra time each attempt takes.
        delay: Duration,
        /// Only the first attempt is slow.
        slow_first_only: bool,
        shutdowns: AtomicU64,
    }

    impl ScriptedClient {
        fn with_script(script: Vec<Result<(), ExportError>>) -> ScriptedClient {
            ScriptedClient {
                script: Mutex::new(script.into()),
                ..Default::default()
            }
        }
        fn attempts(&self) -> usize {
            self.attempts.lock().unwrap().len()
        }
        fn delivered(&self) -> Vec<Vec<String>> {
            self.delivered.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl ExportClient for ScriptedClient {
        async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
            let n = {
                let mut a = self.attempts.lock().unwrap();
                a.push(Instant::now());
                a.len()
            };
            if !self.delay.is_zero() && (n == 1 || !self.slow_first_only) {
                tokio::time::sleep(self.delay).await;
            }
            let outcome = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
            if outcome.is_ok() {
                let Payload::Traces(rs) = payload else {
                    panic!("test sends traces only")
                };
                let names = rs
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                    .map(|s| s.name.clone())
                    .collect();
                self.delivered.lock().unwrap().push(names);
            }
            outcome
        }

        async fn shutdown(&self) -> Result<(), ComponentError> {
            self.shutdowns.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    /// A client that always fails with a retryable error.
    struct DownClient;

    #[async_trait]
    impl ExportClient for DownClient {
        async fn export(&self, _: &Payload) -> Result<(), ExportError> {
            Err(ExportError::retryable("connection refused"))
        }
    }

    fn batch(names: &[&str]) -> Batch {
        let spans = names
            .iter()
            .map(|n| Span {
                name: n.to_string(),
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                ..Default::default()
            })
            .collect();
        Batch::new(
            Payload::Traces(vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }]),
            Arc::from("otlp"),
        )
    }

    fn settings(t: &Telemetry) -> Settings {
        Settings {
            id: ComponentId::parse("otlp/test").unwrap(),
            kind: Kind::Exporter,
            telemetry: t.clone(),
            host: Arc::new(Host::new()),
        }
    }

    const LABELS: [(&str, &str); 1] = [("exporter", "otlp/test")];

    fn value(t: &Telemetry, name: &str) -> i64 {
        t.value(name, &LABELS)
            .unwrap_or_else(|| panic!("{name} not registered"))
    }

    fn fast_retry() -> RetrySettings {
        RetrySettings {
            initial_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(20),
            max_elapsed_time: Duration::from_secs(10),
            ..RetrySettings::default()
        }
    }

    fn queue(consumers: usize, size: usize) -> QueueSettings {
        QueueSettings {
            num_consumers: consumers,
            queue_size: size,
            ..QueueSettings::default()
        }
    }

    #[test]
    fn defaults_are_the_collectors() {
        let cfg = parse("{}").unwrap();
        assert_eq!(cfg.timeout.timeout, Duration::from_secs(5));
        let q = cfg.sending_queue;
        assert!(q.enabled);
        assert_eq!((q.num_consumers, q.queue_size), (10, 1000));
        assert_eq!(q.storage, None);
        let r = cfg.retry_on_failure;
        assert!(r.enabled);
        assert_eq!(r.initial_interval, Duration::from_secs(5));
        assert_eq!(r.randomization_factor, 0.5);
        assert_eq!(r.multiplier, 1.5);
        assert_eq!(r.max_interval, Duration::from_secs(30));
        assert_eq!(r.max_elapsed_time, Duration::from_secs(300));
    }

    #[test]
    fn parses_collector_keys() {
        let cfg = parse(
            "timeout: 10s\n\
             retry_on_failure: {enabled: false, initial_interval: 1s, max_interval: 2s, max_elapsed_time: 0}\n\
             sending_queue: {num_consumers: 2, queue_size: 50, block_on_overflow: true, sizer: requests}\n",
        )
        .unwrap();
        assert_eq!(cfg.timeout.timeout, Duration::from_secs(10));
        assert!(!cfg.retry_on_failure.enabled);
        assert_eq!(cfg.retry_on_failure.max_elapsed_time, Duration::ZERO);
        assert_eq!(cfg.sending_queue.num_consumers, 2);
        assert_eq!(cfg.sending_queue.queue_size, 50);
        assert!(cfg.sending_queue.block_on_overflow);
    }

    #[test]
    fn storage_names_an_extension() {
        let cfg = parse("sending_queue:\n  storage: file_storage/q\n").unwrap();
        assert_eq!(cfg.sending_queue.storage.as_deref(), Some("file_storage/q"));
        let err = parse("sending_queue:\n  storage: 'file storage'\n").unwrap_err();
        assert_eq!(err.path, vec!["sending_queue", "storage"]);
        let err = parse("sending_queue:\n  storage: file_storage\n  wait_for_result: true\n")
            .unwrap_err();
        assert_eq!(err.path, vec!["sending_queue", "wait_for_result"]);
        // an explicit null is the same as leaving it out
        assert_eq!(
            parse("sending_queue:\n  storage:\n")
                .unwrap()
                .sending_queue
                .storage,
            None
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse("sending_queue: {queue_size: 0}").unwrap_err();
        assert_eq!(err.path, vec!["sending_queue", "queue_size"]);
        let err = parse("sending_queue: {num_consumers: 0}").unwrap_err();
        assert_eq!(err.path, vec!["sending_queue", "num_consumers"]);
        let err = parse("retry_on_failure: {randomization_factor: 1.5}").unwrap_err();
        assert_eq!(err.path, vec!["retry_on_failure", "randomization_factor"]);
        let err = parse("retry_on_failure: {multiplier: 0}").unwrap_err();
        assert_eq!(err.path, vec!["retry_on_failure", "multiplier"]);
        let err = parse("retry_on_failure: {max_elapsed_time: 10s}").unwrap_err();
        assert_eq!(err.path, vec!["retry_on_failure", "max_elapsed_time"]);
        let err = parse("sending_queue: {sizer: spans}").unwrap_err();
        assert_eq!(err.path, vec!["sending_queue", "sizer"]);
        assert!(err.message.contains("bytes"), "{}", err.message);
        assert_eq!(
            parse("sending_queue: {sizer: items, queue_size: 50000}")
                .unwrap()
                .sending_queue
                .sizer,
            QueueSizer::Items
        );
        let err = parse("sending_queue: {queue_sise: 3}").unwrap_err();
        assert!(err.message.contains("queue_sise"), "{}", err.message);
        // a disabled queue is not checked
        assert!(parse("sending_queue: {enabled: false, queue_size: 0}").is_ok());
    }

    #[test]
    fn backoff_grows_to_the_cap_within_the_jitter_band() {
        let s = RetrySettings {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            ..RetrySettings::default()
        };
        let mut b = Backoff::new(&s);
        for base in [100.0, 150.0, 225.0, 337.5, 400.0, 400.0] {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            assert!(
                d >= base * 0.5 - 1e-6 && d <= base * 1.5 + 1e-6,
                "{d} outside {base}±50%"
            );
        }
        let mut exact = Backoff::new(&RetrySettings {
            randomization_factor: 0.0,
            ..s
        });
        let got: Vec<u128> = (0..4).map(|_| exact.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 150, 225, 337]);
    }

    #[tokio::test]
    async fn fails_twice_then_delivers_once() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::with_script(vec![
            Err(ExportError::retryable("unavailable")),
            Err(ExportError::retryable("unavailable")),
        ]));
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(1, 10),
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        assert_eq!(value(&t, "otelcol_exporter_queue_capacity"), 10);
        exp.start().await.unwrap();
        exp.consume(batch(&["a", "b", "c"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(client.attempts(), 3);
        assert_eq!(client.delivered(), vec![vec!["a", "b", "c"]]);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 3);
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 0);
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 0);
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);
        assert_eq!(client.shutdowns.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn one_consumer_keeps_order_across_retries() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::with_script(vec![Err(
            ExportError::retryable("busy"),
        )]));
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(1, 10),
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        for name in ["1", "2", "3", "4", "5"] {
            exp.consume(batch(&[name])).await.unwrap();
        }
        exp.shutdown().await.unwrap();
        assert_eq!(
            client.delivered(),
            vec![vec!["1"], vec!["2"], vec!["3"], vec!["4"], vec!["5"]]
        );
        assert_eq!(client.attempts(), 6);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 5);
    }

    #[tokio::test]
    async fn permanent_errors_drop_without_retry() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::with_script(vec![Err(
            ExportError::permanent("400 Bad Request"),
        )]));
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(1, 10),
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        exp.consume(batch(&["bad", "bad2"])).await.unwrap();
        exp.consume(batch(&["good"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(client.attempts(), 2);
        assert_eq!(client.delivered(), vec![vec!["good"]]);
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 2);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 1);
    }

    #[tokio::test]
    async fn server_delay_is_honoured() {
        let t = Telemetry::new();
        let asked = Duration::from_millis(150);
        let client = Arc::new(ScriptedClient::with_script(vec![Err(
            ExportError::Retryable {
                message: "throttled".into(),
                retry_after: Some(asked),
            },
        )]));
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(1, 10),
            RetrySettings {
                initial_interval: Duration::from_millis(1),
                randomization_factor: 0.0,
                ..fast_retry()
            },
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        exp.consume(batch(&["x"])).await.unwrap();
        exp.shutdown().await.unwrap();
        let attempts = client.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 2);
        // sleeps never end early, so this lower bound is exact
        assert!(attempts[1] - attempts[0] >= asked);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_elapsed_time() {
        let t = Telemetry::new();
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(1, 10),
            RetrySettings {
                initial_interval: Duration::from_millis(10),
                max_interval: Duration::from_millis(10),
                max_elapsed_time: Duration::from_millis(60),
                ..fast_retry()
            },
            TimeoutSettings::default(),
            Arc::new(DownClient),
        );
        exp.start().await.unwrap();
        exp.consume(batch(&["a", "b"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 2);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 0);
    }

    #[tokio::test]
    async fn full_queue_refuses_and_counts() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::default());
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(1, 2),
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        // not started: nothing drains the queue
        exp.consume(batch(&["a"])).await.unwrap();
        exp.consume(batch(&["b", "c"])).await.unwrap();
        let err = exp.consume(batch(&["d", "e", "f"])).await.unwrap_err();
        assert_eq!(err, ConsumeError::retryable("sending queue is full"));
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 3);
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 2);
        assert_eq!(value(&t, "otelcol_exporter_queue_capacity"), 2);
        // shutdown without start: safe, and the queued spans are counted as dropped
        exp.shutdown().await.unwrap();
        assert_eq!(client.attempts(), 0);
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 3);
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);
        assert_eq!(client.shutdowns.load(Ordering::Relaxed), 0);
        exp.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_drains_the_queue_then_refuses() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient {
            delay: Duration::from_millis(10),
            ..ScriptedClient::with_script(vec![Err(ExportError::retryable("blip"))])
        });
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(2, 100),
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        for i in 0..20 {
            exp.consume(batch(&[&format!("s{i}")])).await.unwrap();
        }
        exp.shutdown().await.unwrap();
        let mut names: Vec<String> = client.delivered().into_iter().flatten().collect();
        names.sort_by_key(|n| n[1..].parse::<u32>().unwrap());
        let want: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        assert_eq!(names, want);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 20);
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);

        let err = exp.consume(batch(&["late", "later"])).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 2);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 20);
    }

    #[tokio::test]
    async fn drain_deadline_drops_and_counts_the_rest() {
        let t = Telemetry::new();
        let exp = QueuedExporter::new(
            &settings(&t),
            queue(1, 10),
            RetrySettings {
                max_elapsed_time: Duration::ZERO,
                ..fast_retry()
            },
            TimeoutSettings::default(),
            Arc::new(DownClient),
        )
        .with_drain_deadline(Duration::from_millis(100));
        exp.start().await.unwrap();
        exp.consume(batch(&["a"])).await.unwrap();
        exp.consume(batch(&["b", "c"])).await.unwrap();
        exp.consume(batch(&["d", "e", "f"])).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), exp.shutdown())
            .await
            .expect("shutdown returns after the drain deadline")
            .unwrap();
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 6);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 0);
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);
    }

    #[tokio::test]
    async fn disabled_queue_sends_synchronously_and_returns_the_outcome() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::with_script(vec![
            Err(ExportError::retryable("once")),
            Ok(()),
            Err(ExportError::permanent("rejected")),
        ]));
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings::disabled(),
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        assert_eq!(value(&t, "otelcol_exporter_queue_capacity"), 0);
        exp.start().await.unwrap();
        exp.consume(batch(&["a"])).await.unwrap();
        assert_eq!(client.delivered(), vec![vec!["a"]]);
        let err = exp.consume(batch(&["b", "c"])).await.unwrap_err();
        assert_eq!(err, ConsumeError::Permanent("rejected".into()));
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 1);
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 2);
        exp.shutdown().await.unwrap();
        let err = exp.consume(batch(&["d"])).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 1);
    }

    #[tokio::test]
    async fn retries_disabled_drops_on_first_failure() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::with_script(vec![Err(
            ExportError::retryable("down"),
        )]));
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings::disabled(),
            RetrySettings::disabled(),
            TimeoutSettings::default(),
            client.clone(),
        );
        let err = exp.consume(batch(&["a"])).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(client.attempts(), 1);
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 1);
    }

    #[tokio::test]
    async fn slow_attempts_time_out_and_are_retried() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient {
            delay: Duration::from_secs(30),
            slow_first_only: true,
            ..ScriptedClient::default()
        });
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings::disabled(),
            fast_retry(),
            TimeoutSettings {
                timeout: Duration::from_millis(20),
            },
            client.clone(),
        );
        exp.consume(batch(&["a"])).await.unwrap();
        assert_eq!(client.attempts(), 2);
        assert_eq!(client.delivered(), vec![vec!["a"]]);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 1);
    }

    #[tokio::test]
    async fn wait_for_result_reports_the_outcome() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::with_script(vec![Err(
            ExportError::permanent("no"),
        )]));
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings {
                wait_for_result: true,
                ..queue(1, 10)
            },
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        let err = exp.consume(batch(&["a"])).await.unwrap_err();
        assert_eq!(err, ConsumeError::Permanent("no".into()));
        exp.consume(batch(&["b"])).await.unwrap();
        assert_eq!(client.delivered(), vec![vec!["b"]]);
        exp.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn block_on_overflow_waits_for_room() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient {
            delay: Duration::from_millis(5),
            ..ScriptedClient::default()
        });
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings {
                block_on_overflow: true,
                ..queue(1, 1)
            },
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        for i in 0..5 {
            exp.consume(batch(&[&i.to_string()])).await.unwrap();
        }
        exp.shutdown().await.unwrap();
        assert_eq!(client.delivered().len(), 5);
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 0);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 5);
    }

    #[tokio::test]
    async fn items_sizer_counts_spans_and_refuses_past_them() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::default());
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings {
                sizer: QueueSizer::Items,
                ..queue(1, 5)
            },
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        // not started: nothing drains the queue
        exp.consume(batch(&["a", "b"])).await.unwrap();
        exp.consume(batch(&["c", "d", "e"])).await.unwrap();
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 5);
        let err = exp.consume(batch(&["f"])).await.unwrap_err();
        assert_eq!(err, ConsumeError::retryable("sending queue is full"));
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 1);
        exp.shutdown().await.unwrap();
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 5);
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);
    }

    #[tokio::test]
    async fn items_sizer_blocks_until_sent_and_takes_oversized_batches() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient {
            delay: Duration::from_millis(5),
            ..ScriptedClient::default()
        });
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings {
                sizer: QueueSizer::Items,
                block_on_overflow: true,
                ..queue(2, 3)
            },
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        for i in 0..6 {
            exp.consume(batch(&[&i.to_string(), "x"])).await.unwrap();
        }
        // Larger than the whole queue: it waits for all the room, then goes.
        exp.consume(batch(&["p", "q", "r", "s", "t"]))
            .await
            .unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(client.delivered().len(), 7);
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 0);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 17);
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);
    }

    #[tokio::test]
    async fn bytes_sizer_counts_the_encoded_size() {
        let t = Telemetry::new();
        let client = Arc::new(ScriptedClient::default());
        let one = batch(&["a"]).encoded_size();
        assert!(one > 20, "{one}");
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings {
                sizer: QueueSizer::Bytes,
                ..queue(1, 2 * one + one / 2)
            },
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        // not started: nothing drains the queue
        exp.consume(batch(&["a"])).await.unwrap();
        exp.consume(batch(&["b"])).await.unwrap();
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 2 * one as i64);
        let err = exp.consume(batch(&["c"])).await.unwrap_err();
        assert_eq!(err, ConsumeError::retryable("sending queue is full"));
        exp.shutdown().await.unwrap();
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn block_on_overflow_gives_up_after_its_wait() {
        for sizer in [QueueSizer::Requests, QueueSizer::Items] {
            let t = Telemetry::new();
            let exp = QueuedExporter::new(
                &settings(&t),
                QueueSettings {
                    block_on_overflow: true,
                    sizer,
                    ..queue(1, 1)
                },
                fast_retry(),
                TimeoutSettings::default(),
                Arc::new(DownClient),
            );
            // not started: nothing drains the queue
            exp.consume(batch(&["a"])).await.unwrap();
            let started = tokio::time::Instant::now();
            let err = exp.consume(batch(&["b"])).await.unwrap_err();
            assert_eq!(err, ConsumeError::retryable("sending queue is full"));
            assert_eq!(started.elapsed(), BLOCK_ON_OVERFLOW_WAIT);
            assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 1);
            assert_eq!(value(&t, "otelcol_exporter_queue_size"), 1);
            exp.shutdown().await.unwrap();
        }
    }

    /// Records what reaches it encoded, and what reaches it decoded.
    #[derive(Default)]
    struct WireClient {
        encoded: Mutex<Vec<Vec<String>>>,
        decoded: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl ExportClient for WireClient {
        async fn export(&self, _: &Payload) -> Result<(), ExportError> {
            self.decoded.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }

        fn sends_encoded_traces(&self) -> bool {
            true
        }

        async fn export_encoded(&self, traces: &EncodedTraces) -> Result<(), ExportError> {
            let names = traces
                .decode()
                .unwrap()
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| s.name.clone())
                .collect();
            self.encoded.lock().unwrap().push(names);
            Ok(())
        }
    }

    #[tokio::test]
    async fn queued_traces_wait_encoded_for_an_exporter_that_sends_them_so() {
        let t = Telemetry::new();
        let client = Arc::new(WireClient::default());
        let exp = QueuedExporter::new(
            &settings(&t),
            QueueSettings {
                sizer: QueueSizer::Bytes,
                ..queue(1, 1 << 20)
            },
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        exp.start().await.unwrap();
        exp.consume(batch(&["a", "b"])).await.unwrap();
        exp.consume(batch(&["c"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(
            *client.encoded.lock().unwrap(),
            vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["c".to_string()]
            ]
        );
        assert_eq!(client.decoded.load(Ordering::Relaxed), 0);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 3);
    }

    /// A host with a started `file_storage` at a fresh directory.
    fn storage_host(name: &str) -> (Arc<Host>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("weft-pq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let host = Arc::new(Host::new());
        host.add_storage(
            "file_storage",
            Arc::new(crate::storage::StorageSpec {
                directory: dir.clone(),
                fsync: true,
                timeout: Duration::from_secs(1),
            }),
        );
        (host, dir)
    }

    fn persistent(consumers: usize, size: usize) -> QueueSettings {
        QueueSettings {
            storage: Some("file_storage".into()),
            ..queue(consumers, size)
        }
    }

    #[tokio::test]
    async fn a_persistent_queue_keeps_what_was_not_sent_for_the_next_start() {
        let t = Telemetry::new();
        let (host, dir) = storage_host("restart");
        let s = Settings {
            host: host.clone(),
            ..settings(&t)
        };
        let down = QueuedExporter::new(
            &s,
            persistent(2, 100),
            fast_retry(),
            TimeoutSettings::default(),
            Arc::new(DownClient),
        )
        .with_drain_deadline(Duration::from_millis(50));
        assert!(down.capabilities().acks_on_disk);
        down.start().await.unwrap();
        for i in 0..5 {
            down.consume(batch(&[&format!("s{i}")])).await.unwrap();
        }
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 5);
        down.shutdown().await.unwrap();
        drop(down);
        // Nothing was dropped: the batches wait on disk.
        assert_eq!(value(&t, "otelcol_exporter_send_failed_spans"), 0);
        assert!(dir.join("exporter_otlp~test").is_dir());

        let client = Arc::new(ScriptedClient::default());
        let up = QueuedExporter::new(
            &s,
            persistent(1, 100),
            fast_retry(),
            TimeoutSettings::default(),
            client.clone(),
        );
        up.start().await.unwrap();
        assert_eq!(value(&t, "weft_exporter_queue_recovered_batches"), 5);
        up.consume(batch(&["new"])).await.unwrap();
        for _ in 0..200 {
            if client.delivered().len() == 6 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let names: Vec<String> = client.delivered().into_iter().flatten().collect();
        assert_eq!(names, ["s0", "s1", "s2", "s3", "s4", "new"]);
        assert_eq!(value(&t, "otelcol_exporter_sent_spans"), 6);
        up.shutdown().await.unwrap();
        assert_eq!(value(&t, "otelcol_exporter_queue_size"), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_full_persistent_queue_refuses_and_counts() {
        let t = Telemetry::new();
        let (host, dir) = storage_host("full");
        let s = Settings {
            host,
            ..settings(&t)
        };
        let exp = QueuedExporter::new(
            &s,
            persistent(1, 2),
            fast_retry(),
            TimeoutSettings::default(),
            Arc::new(DownClient),
        )
        .with_drain_deadline(Duration::from_millis(20));
        exp.start().await.unwrap();
        exp.consume(batch(&["a"])).await.unwrap();
        exp.consume(batch(&["b"])).await.unwrap();
        let err = exp.consume(batch(&["c", "d"])).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "sending queue is full");
        assert_eq!(value(&t, "otelcol_exporter_enqueue_failed_spans"), 2);
        exp.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_storage_extension_fails_the_start_clearly() {
        let t = Telemetry::new();
        let exp = QueuedExporter::new(
            &settings(&t),
            persistent(1, 2),
            fast_retry(),
            TimeoutSettings::default(),
            Arc::new(DownClient),
        );
        let err = exp.start().await.unwrap_err().to_string();
        assert!(
            err.contains("\"file_storage\" is not a started storage extension"),
            "{err}"
        );
    }
}
