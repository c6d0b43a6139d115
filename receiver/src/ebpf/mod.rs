//! The `ebpf` receiver: HTTP/1.x spans built from socket syscalls captured in the kernel,
//! with no SDK in the traced processes.
//!
//! Kernel probes on the socket layer's BTF tracepoints (`ebpf-probes/`) record, per send
//! or receive on a TCP socket, the socket identity, the TCP sequence of the first byte,
//! timestamps, the byte count and the first `payload_bytes` of the payload, into a
//! ring buffer. The user side drains it asynchronously and, in [`tracker`], reassembles
//! per-socket byte streams, assigns the per-thread syscall trace id, parses HTTP/1.x
//! ([`http1`]), pairs requests with responses ([`pairing`]) and builds one span per pair
//! ([`span`]): SERVER on the accepting side, CLIENT on the connecting side, carrying the
//! correlation facts the `autotracing` processor joins into traces.

pub mod config;
pub mod db;
pub mod dns;
pub mod hpack;
pub mod http1;
pub mod http2;
pub mod loader;
pub mod pairing;
pub mod record;
pub mod span;
pub mod tls;
pub mod tracker;

#[cfg(test)]
mod http2_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tracker_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use weft_pipeline::telemetry::{Counter, Gauge};
use weft_pipeline::{
    parse_config, ComponentError, ComponentId, ConfigFieldError, Lifecycle, Payload, Receiver,
    ReceiverFactory, ReceiverOutputs, Settings, Signal, Telemetry,
};

use crate::common::ingest::Ingest;
use crate::common::running::Running;

pub use config::EbpfReceiverConfig;
use loader::Probes;
use record::Record;
use tls::TlsDiscovery;
use tracker::{ProcFs, Tracker, TrackerStats};

/// Batches of spans waiting for the pipeline; when the pipeline is this far behind,
/// new spans are dropped and counted rather than stalling the ring buffer.
const PENDING_BATCHES: usize = 64;
/// A batch is handed on early once it holds this many spans.
const MAX_BATCH_SPANS: usize = 1024;
/// How often the ring buffer is read without a wakeup from the kernel (which only
/// wakes the reader once a sixteenth of the ring is unread).
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often weft's own listening ports are read again (receivers start, reload).
const OWN_PORTS_REFRESH: Duration = Duration::from_secs(2);
/// How often processes are looked at for OpenSSL files not yet probed.
const TLS_SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Records read per pass, so flushes and shutdown are not starved under load.
const RECORDS_PER_PASS: usize = 4096;

/// Registers `ebpf` in the registry.
pub struct EbpfReceiverFactory;

impl ReceiverFactory for EbpfReceiverFactory {
    fn type_name(&self) -> &'static str {
        "ebpf"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn check_config(&self, raw: &serde_yaml_ng::Value) -> Result<(), ConfigFieldError> {
        parse_config::<EbpfReceiverConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &serde_yaml_ng::Value,
        outputs: ReceiverOutputs,
    ) -> Result<Arc<dyn Receiver>, ComponentError> {
        let config = parse_config::<EbpfReceiverConfig>(raw)
            .map_err(|e| ComponentError::new(format!("{}: {}", settings.id, e.message)))?;
        Ok(Arc::new(EbpfReceiver::new(&settings, config, outputs)))
    }
}

/// Self-metrics of one `ebpf` receiver.
#[derive(Clone)]
struct Metrics {
    records: Counter,
    decode_errors: Counter,
    ringbuf_dropped: Counter,
    payload_truncated: Counter,
    payload_fault: Counter,
    inflight_full: Counter,
    sequence_gaps: Counter,
    non_http_streams: Counter,
    exchanges: Counter,
    spans_dropped: Counter,
    spans_built: Counter,
    dropped_line_too_long: Counter,
    dropped_head_not_captured: Counter,
    dropped_closed_mid_message: Counter,
    dropped_unpaired: Counter,
    db_connections: [Counter; 4],
    db_protocol_errors: [Counter; 4],
    db_not_followed: [Counter; 4],
    db_framing_lost: Counter,
    dns_bad_messages: Counter,
    dns_ambiguous: Counter,
    tls_connections: Counter,
    tls_no_socket: Counter,
    http2_connections: Counter,
    http2_header_blocks_lost: Counter,
    http2_unknown_fields: Counter,
    http2_framing_lost: Counter,
    http2_protocol_errors: Counter,
    tls_libraries: Gauge,
    connections: Gauge,
    active: Gauge,
}

impl Metrics {
    fn new(t: &Telemetry, id: &ComponentId) -> Metrics {
        let id = id.to_string();
        let l = [("receiver", id.as_str())];
        let c = |name: &str, help: &str| t.counter(name, help, &l);
        let dropped = |reason: &str| {
            t.counter(
                "weft_ebpf_messages_dropped",
                "HTTP messages seen but not turned into spans, by reason",
                &[("receiver", id.as_str()), ("reason", reason)],
            )
        };
        let per_protocol = |name: &str, help: &str| {
            db::DbProtocol::ALL.map(|p| {
                t.counter(
                    name,
                    help,
                    &[("receiver", id.as_str()), ("protocol", p.name())],
                )
            })
        };
        Metrics {
            db_connections: per_protocol(
                "weft_ebpf_db_connections",
                "Connections read as a database or cache protocol",
            ),
            db_protocol_errors: per_protocol(
                "weft_ebpf_db_protocol_errors",
                "Connections given up because their bytes broke the protocol they were read as",
            ),
            db_not_followed: per_protocol(
                "weft_ebpf_db_not_followed",
                "Connections no longer followed: TLS, COPY-like modes, commands weft does not read",
            ),
            db_framing_lost: c(
                "weft_ebpf_db_framing_lost",
                "Times a database connection's framing fell in uncaptured bytes (picked up at the next request)",
            ),
            dns_bad_messages: c(
                "weft_ebpf_dns_bad_messages",
                "Datagrams on DNS ports that were not a DNS message with one question",
            ),
            dns_ambiguous: c(
                "weft_ebpf_dns_ambiguous",
                "DNS answers that two waiting queries (same id, name and type) could own: neither was paired",
            ),
            tls_connections: c(
                "weft_ebpf_tls_connections",
                "TLS connections whose plaintext was read from OpenSSL's calls",
            ),
            http2_connections: c(
                "weft_ebpf_http2_connections",
                "Connections read as HTTP/2 (and gRPC)",
            ),
            http2_header_blocks_lost: c(
                "weft_ebpf_http2_header_blocks_lost",
                "HTTP/2 header blocks not captured whole, too large or not decodable (their stream makes no span)",
            ),
            http2_unknown_fields: c(
                "weft_ebpf_http2_unknown_fields",
                "HTTP/2 header fields that referred to HPACK table entries weft never saw (not guessed)",
            ),
            http2_framing_lost: c(
                "weft_ebpf_http2_framing_lost",
                "Times an HTTP/2 direction's frame boundaries fell in uncaptured bytes",
            ),
            http2_protocol_errors: c(
                "weft_ebpf_http2_protocol_errors",
                "HTTP/2 frames that broke the protocol",
            ),
            tls_no_socket: c(
                "weft_ebpf_tls_no_socket",
                "OpenSSL calls not recorded because their socket was not known (a memory BIO, a socket gone)",
            ),
            tls_libraries: t.gauge(
                "weft_ebpf_tls_libraries",
                "OpenSSL library files the uprobes are attached to",
                &l,
            ),
            records: c(
                "weft_ebpf_records",
                "Records read from the kernel ring buffer",
            ),
            decode_errors: c(
                "weft_ebpf_record_errors",
                "Kernel records that could not be decoded",
            ),
            ringbuf_dropped: c(
                "weft_ebpf_ringbuf_dropped",
                "Records the kernel could not write because the ring buffer was full",
            ),
            payload_truncated: c(
                "weft_ebpf_payload_truncated",
                "Syscalls that moved more bytes than payload_bytes; the rest was not copied",
            ),
            payload_fault: c(
                "weft_ebpf_payload_unreadable",
                "Syscalls whose user buffer the kernel could not read",
            ),
            inflight_full: c(
                "weft_ebpf_inflight_full",
                "Sockets not captured because the kernel's socket table was full",
            ),
            sequence_gaps: c(
                "weft_ebpf_sequence_gaps",
                "Stream gaps: bytes on a connection that no record carried",
            ),
            non_http_streams: c(
                "weft_ebpf_non_http_streams",
                "Connections judged not to carry HTTP/1.x and ignored",
            ),
            exchanges: c(
                "weft_ebpf_exchanges",
                "Request/response pairs turned into spans",
            ),
            spans_built: c(
                "weft_ebpf_spans_built",
                "Spans built from captured exchanges: each is then accepted or refused by the pipeline (otelcol_receiver_*_spans) or dropped (weft_ebpf_spans_dropped)",
            ),
            spans_dropped: c(
                "weft_ebpf_spans_dropped",
                "Spans dropped because the pipeline fell too far behind",
            ),
            dropped_line_too_long: dropped("line_too_long"),
            dropped_head_not_captured: dropped("head_not_captured"),
            dropped_closed_mid_message: dropped("closed_mid_message"),
            dropped_unpaired: dropped("unpaired"),
            connections: t.gauge("weft_ebpf_connections", "Connections tracked", &l),
            active: t.gauge(
                "weft_ebpf_active",
                "1 while the probes are loaded and attached",
                &l,
            ),
        }
    }

    /// Adds the growth of the tracker's and kernel's counters since the last call.
    fn publish(
        &self,
        now: &TrackerStats,
        last: &mut TrackerStats,
        kernel: [u64; loader::STAT_COUNT],
        last_kernel: &mut [u64; loader::STAT_COUNT],
    ) {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.records.add(d(now.records, last.records));
        self.sequence_gaps
            .add(d(now.sequence_gaps, last.sequence_gaps));
        self.non_http_streams
            .add(d(now.non_http_streams, last.non_http_streams));
        self.exchanges.add(d(now.exchanges, last.exchanges));
        self.dropped_line_too_long
            .add(d(now.line_too_long, last.line_too_long));
        self.dropped_head_not_captured
            .add(d(now.head_not_captured, last.head_not_captured));
        self.dropped_closed_mid_message
            .add(d(now.closed_mid_message, last.closed_mid_message));
        self.dropped_unpaired.add(d(now.unpaired, last.unpaired));
        for i in 0..db::DbProtocol::ALL.len() {
            self.db_connections[i].add(d(now.db_connections[i], last.db_connections[i]));
            self.db_protocol_errors[i]
                .add(d(now.db_protocol_errors[i], last.db_protocol_errors[i]));
            self.db_not_followed[i].add(d(now.db_not_followed[i], last.db_not_followed[i]));
        }
        self.db_framing_lost
            .add(d(now.db_framing_lost, last.db_framing_lost));
        self.dns_bad_messages
            .add(d(now.dns_bad_messages, last.dns_bad_messages));
        self.dns_ambiguous
            .add(d(now.dns_ambiguous, last.dns_ambiguous));
        self.tls_connections
            .add(d(now.tls_connections, last.tls_connections));
        self.http2_connections
            .add(d(now.http2_connections, last.http2_connections));
        self.http2_header_blocks_lost.add(d(
            now.http2_header_blocks_lost,
            last.http2_header_blocks_lost,
        ));
        self.http2_unknown_fields
            .add(d(now.http2_unknown_fields, last.http2_unknown_fields));
        self.http2_framing_lost
            .add(d(now.http2_framing_lost, last.http2_framing_lost));
        self.http2_protocol_errors
            .add(d(now.http2_protocol_errors, last.http2_protocol_errors));
        *last = now.clone();
        for (i, counter) in [
            (loader::STAT_RINGBUF_DROPS, &self.ringbuf_dropped),
            (loader::STAT_TRUNCATED, &self.payload_truncated),
            (loader::STAT_PAYLOAD_FAULT, &self.payload_fault),
            (loader::STAT_SOCKETS_FULL, &self.inflight_full),
            (loader::STAT_TLS_NO_SOCKET, &self.tls_no_socket),
        ] {
            counter.add(d(kernel[i], last_kernel[i]));
        }
        *last_kernel = kernel;
    }
}

/// One `ebpf` receiver instance.
pub struct EbpfReceiver {
    id: ComponentId,
    config: Arc<EbpfReceiverConfig>,
    ingest: Arc<Ingest>,
    metrics: Metrics,
    running: Mutex<Option<Running>>,
}

impl EbpfReceiver {
    pub fn new(
        settings: &Settings,
        config: EbpfReceiverConfig,
        outputs: ReceiverOutputs,
    ) -> EbpfReceiver {
        EbpfReceiver {
            id: settings.id.clone(),
            config: Arc::new(config),
            ingest: Ingest::new(settings, "ebpf", outputs),
            metrics: Metrics::new(&settings.telemetry, &settings.id),
            running: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Lifecycle for EbpfReceiver {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let cfg = self.config.clone();
        let id = self.id.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut probes = Probes::load(&cfg)?;
            let ring = probes.ring_buffer()?;
            let tls = start_tls(&id, &cfg, &mut probes);
            Ok::<_, loader::LoadError>((probes, ring, tls))
        })
        .await
        .map_err(|e| ComponentError::new(format!("{} receiver: {e}", self.id)))?;
        let (probes, ring, tls) = match loaded {
            Ok(v) => v,
            Err(e) if self.config.optional => {
                tracing::warn!(
                    receiver = %self.id,
                    "eBPF capture is off: {e} (the receiver is optional, the rest of the pipelines run)"
                );
                return Ok(());
            }
            Err(e) => return Err(ComponentError::new(format!("{} receiver: {e}", self.id))),
        };
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until
        // the AsyncFd (and the RingBuf inside it) is dropped.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| {
            ComponentError::new(format!(
                "{} receiver: cannot poll the ring buffer: {e}",
                self.id
            ))
        })?;
        let token = CancellationToken::new();
        let (tx, rx) = mpsc::channel(PENDING_BATCHES);
        let forward = tokio::spawn(forward(self.ingest.clone(), rx));
        let tracker = Tracker::new(
            self.config.clone(),
            Box::new(ProcFs::new(self.config.service_names.clone())),
        );
        let capture = tokio::spawn(capture(
            self.id.clone(),
            self.config.clone(),
            probes,
            tls,
            ring,
            tracker,
            tx,
            self.metrics.clone(),
            token.clone(),
        ));
        tracing::info!(
            receiver = %self.id,
            payload_bytes = self.config.payload_bytes,
            ring_buffer_bytes = self.config.ring_buffer_bytes,
            protocols = %self.config.protocols.enabled_names().join(", "),
            "eBPF probes attached; capturing socket traffic"
        );
        *running = Some(Running {
            token,
            tasks: vec![("capture", capture), ("forward", forward)],
        });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let Some(running) = self.running.lock().await.take() else {
            return Ok(());
        };
        running.stop(&self.id).await;
        Ok(())
    }
}

impl Receiver for EbpfReceiver {}

/// Loads the OpenSSL probes and attaches them to the host's libraries and the
/// processes running now. Off (with one warning) where uprobes cannot load; clear-text
/// capture is unaffected either way.
fn start_tls(
    id: &ComponentId,
    cfg: &EbpfReceiverConfig,
    probes: &mut Probes,
) -> Option<TlsDiscovery> {
    if !cfg.tls.openssl && cfg.tls.libraries.is_empty() {
        return None;
    }
    if let Err(e) = probes.enable_tls() {
        tracing::warn!(receiver = %id, "TLS capture is off: the OpenSSL uprobes cannot load ({e}); clear-text capture continues");
        return None;
    }
    let mut d = TlsDiscovery::new(cfg.tls.clone());
    let mut attach = |p: &std::path::Path| {
        probes
            .attach_ssl(p, cfg.tls.shared_functions)
            .map(|a| a.to_string())
            .map_err(|e| e.to_string())
    };
    let host = d.startup_candidates();
    let mut done = d.attach_files(host, &mut attach);
    let running = d.scan(std::path::Path::new("/proc"), &mut attach);
    done.files.extend(running.files);
    done.failed.extend(running.failed);
    log_tls(id, &done);
    if d.probed() == 0 {
        tracing::info!(receiver = %id, "no OpenSSL library found yet; processes are looked at every {}s", TLS_SCAN_INTERVAL.as_secs());
    }
    Some(d)
}

fn log_tls(id: &ComponentId, done: &tls::Attached) {
    for (path, probed) in &done.files {
        tracing::info!(receiver = %id, file = %path.display(), probed = %probed, "TLS plaintext probes attached");
    }
    for (path, error) in &done.failed {
        tracing::warn!(receiver = %id, file = %path.display(), "cannot probe this file for TLS plaintext: {error}");
    }
}

/// Hands span batches to the pipeline, in order, until the capture side is gone.
async fn forward(ingest: Arc<Ingest>, mut rx: mpsc::Receiver<Payload>) {
    while let Some(payload) = rx.recv().await {
        // Refusals are counted by Ingest; the kernel cannot be asked to resend.
        let _ = ingest
            .consume(payload, None, Instant::now(), Default::default())
            .await;
    }
}

/// Drains the ring buffer into the tracker and ships spans every flush interval.
#[allow(clippy::too_many_arguments)]
async fn capture(
    id: ComponentId,
    config: Arc<EbpfReceiverConfig>,
    mut probes: Probes,
    mut tls: Option<TlsDiscovery>,
    mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    mut tracker: Tracker,
    tx: mpsc::Sender<Payload>,
    metrics: Metrics,
    token: CancellationToken,
) {
    metrics.active.set(1);
    tracker.set_clock_offset(loader::clock_offset_ns());
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(config.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_stats = TrackerStats::default();
    let mut last_kernel = [0u64; loader::STAT_COUNT];
    let mut last_expire = Instant::now();
    let mut log_decode = true;
    // weft's own listening ports, refreshed as receivers start, stop or reload.
    let mut own_ports = std::collections::BTreeSet::new();
    let mut last_own_ports: Option<Instant> = None;
    let mut last_tls_scan = Instant::now();
    if let Some(d) = &tls {
        metrics.tls_libraries.set(d.probed() as i64);
    }
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            guard = ring.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(receiver = %id, "ring buffer poll failed: {e}; capture stops");
                        break;
                    }
                };
                // Readiness is cleared only once the ring is empty: the kernel wakes the
                // reader again only when it has caught up, so leftovers would wait.
                if drain(guard.get_inner_mut(), &mut tracker, &metrics, &id, &mut log_decode) {
                    guard.clear_ready();
                }
                if tracker.pending_spans() >= MAX_BATCH_SPANS {
                    ship(&mut tracker, &tx, &metrics);
                }
            }
            _ = poll.tick() => {
                drain(ring.get_mut(), &mut tracker, &metrics, &id, &mut log_decode);
                if tracker.pending_spans() >= MAX_BATCH_SPANS {
                    ship(&mut tracker, &tx, &metrics);
                }
            }
            _ = flush.tick() => {
                if last_own_ports.is_none_or(|t| t.elapsed() >= OWN_PORTS_REFRESH) {
                    last_own_ports = Some(Instant::now());
                    let now = loader::own_listening_ports();
                    if now != own_ports {
                        if let Err(e) = probes.set_own_ports(&now) {
                            tracing::warn!(receiver = %id, "cannot tell the kernel weft's own ports: {e}");
                        }
                        own_ports = now;
                    }
                }
                if let Some(d) = tls.as_mut().filter(|_| last_tls_scan.elapsed() >= TLS_SCAN_INTERVAL) {
                    last_tls_scan = Instant::now();
                    let shared = config.tls.shared_functions;
                    let done = d.scan(std::path::Path::new("/proc"), &mut |p| {
                        probes
                            .attach_ssl(p, shared)
                            .map(|a| a.to_string())
                            .map_err(|e| e.to_string())
                    });
                    log_tls(&id, &done);
                    metrics.tls_libraries.set(d.probed() as i64);
                }
                tracker.set_clock_offset(loader::clock_offset_ns());
                if last_expire.elapsed() >= Duration::from_secs(1) {
                    tracker.expire(loader::monotonic_ns());
                    last_expire = Instant::now();
                }
                ship(&mut tracker, &tx, &metrics);
                metrics.publish(tracker.stats(), &mut last_stats, probes.stats(), &mut last_kernel);
                metrics.connections.set(tracker.connections() as i64);
            }
        }
    }
    // Drain what the kernel already wrote, then hand on every finished span.
    // Bounded: the probes are still attached and the kernel keeps writing.
    for _ in 0..64 {
        if drain(ring.get_mut(), &mut tracker, &metrics, &id, &mut log_decode) {
            break;
        }
    }
    ship(&mut tracker, &tx, &metrics);
    metrics.publish(
        tracker.stats(),
        &mut last_stats,
        probes.stats(),
        &mut last_kernel,
    );
    metrics.active.set(0);
    // Detaching waits for an RCU grace period per tracepoint: keep it off the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(probes)).await;
}

/// Reads up to [`RECORDS_PER_PASS`] records into the tracker; true when the ring is empty.
fn drain(
    rb: &mut aya::maps::RingBuf<aya::maps::MapData>,
    tracker: &mut Tracker,
    metrics: &Metrics,
    id: &ComponentId,
    log_decode: &mut bool,
) -> bool {
    for _ in 0..RECORDS_PER_PASS {
        let Some(item) = rb.next() else {
            return true;
        };
        match Record::parse(&item) {
            Ok(r) => tracker.push(&r),
            Err(e) => {
                metrics.decode_errors.inc();
                if std::mem::take(log_decode) {
                    tracing::warn!(receiver = %id, "undecodable kernel record: {e} (logged once, counted in weft_ebpf_record_errors)");
                }
            }
        }
    }
    false
}

fn ship(tracker: &mut Tracker, tx: &mpsc::Sender<Payload>, metrics: &Metrics) {
    let n = tracker.pending_spans();
    if n == 0 {
        return;
    }
    let rs = tracker.take_spans();
    metrics.spans_built.add(n as u64);
    if tx.try_send(Payload::Traces(rs)).is_err() {
        metrics.spans_dropped.add(n as u64);
    }
}
