//! Replays recorded eBPF spans through the `autotracing` stitcher on one thread:
//! spans per second per core (ingest, decisions, emission, attribute stripping) and
//! bytes held per in-flight span.
//!
//! The recording (`benches/data/autotracing-zero-sdk.otlp.zst`) holds the raw eBPF
//! spans of the zero-SDK end-to-end topology: 300 requests through nginx and four
//! Python services, 10 spans each. Each replay round shifts every correlation fact
//! (TCP sequences, syscall ids, request ids) and the times, so rounds are distinct
//! requests with the same shape. Spans are fed in batches of 256 with the clock
//! advanced to keep the configured window and grace, as a live receiver would.
//!
//!   cargo bench -p weft-processors --bench autotracing_replay [-- ROUNDS]

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use weft_pipeline::Telemetry;
use weft_processors::autotracing::{AutotracingConfig, Stats, Stitcher};

/// weft's allocator (the binary uses mimalloc), counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { MiMalloc.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const RECORDING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../benches/data/autotracing-zero-sdk.otlp.zst"
);

/// The file exporter's proto framing: a 4-byte big-endian length, a zstd frame.
fn load() -> Vec<(ResourceSpans, Span)> {
    let raw = std::fs::read(RECORDING).expect("recording present");
    let mut out = Vec::new();
    let mut rest = raw.as_slice();
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let frame = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let mut body = Vec::new();
        zstd::Decoder::new(frame)
            .expect("zstd frame")
            .read_to_end(&mut body)
            .expect("zstd body");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP request");
        for rs in req.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let mut shell = rs.clone();
                    shell.scope_spans = vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: Vec::new(),
                        schema_url: ss.schema_url.clone(),
                    }];
                    out.push((shell, s.clone()));
                }
            }
        }
    }
    out.sort_by_key(|(_, s)| s.end_time_unix_nano);
    out
}

/// The same span as a distinct request of round `round`.
fn shift(span: &Span, round: u64, span_of: u64) -> Span {
    let mut s = span.clone();
    s.start_time_unix_nano += round * span_of;
    s.end_time_unix_nano += round * span_of;
    s.span_id = fastrand_id().to_be_bytes().to_vec();
    for kv in s.attributes.iter_mut() {
        let Some(v) = kv.value.as_mut().and_then(|v| v.value.as_mut()) else {
            continue;
        };
        match (kv.key.as_str(), v) {
            ("weft.tcp.req_seq" | "weft.tcp.resp_seq", Value::IntValue(i)) => {
                *i = (*i as u32).wrapping_add((round as u32).wrapping_mul(7_919_113)) as i64;
            }
            ("weft.syscall_trace_id.req" | "weft.syscall_trace_id.resp", Value::IntValue(i)) => {
                *i = i.wrapping_add((round as i64) << 32);
            }
            ("weft.x_request_id.req" | "weft.x_request_id.resp", Value::StringValue(r)) => {
                r.push_str(&format!("-{round}"));
            }
            _ => {}
        }
    }
    s
}

fn fastrand_id() -> u64 {
    use std::cell::Cell;
    thread_local!(static X: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) });
    X.with(|x| {
        let mut v = x.get();
        v ^= v << 13;
        v ^= v >> 7;
        v ^= v << 17;
        x.set(v);
        v | 1
    })
}

const BATCH: usize = 256;

/// One batch of round `round`: one ResourceSpans per process, as the receiver sends.
fn batch(chunk: &[(ResourceSpans, Span)], round: u64, span_of: u64) -> Vec<ResourceSpans> {
    let mut rs: Vec<ResourceSpans> = Vec::new();
    for (shell, s) in chunk {
        let span = shift(s, round, span_of);
        match rs.iter_mut().find(|r| r.resource == shell.resource) {
            Some(r) => r.scope_spans[0].spans.push(span),
            None => {
                let mut r = shell.clone();
                r.scope_spans[0].spans.push(span);
                rs.push(r);
            }
        }
    }
    rs
}

fn count(out: &[ResourceSpans]) -> usize {
    out.iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fn main() {
    let rounds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(150);
    let spans = load();
    let first = spans.first().map_or(0, |(_, s)| s.start_time_unix_nano);
    let last = spans
        .iter()
        .map(|(_, s)| s.end_time_unix_nano)
        .max()
        .unwrap_or(0);
    // Rounds follow each other in time at the recording's own pace.
    let span_of = last - first + 1_000_000;
    let total = spans.len() as u64 * rounds;
    let input_bytes: usize = spans
        .chunks(BATCH)
        .flat_map(|c| batch(c, 0, span_of))
        .map(|r| r.encoded_len())
        .sum();

    // Each batch is made (untimed, its bytes counted), then fed and timed. The
    // stitcher's heap is what it gained across ingest and tick, plus the batches it
    // took over (exact: one thread, every allocation counted).
    let stats = Arc::new(Stats::new(&Telemetry::new(), "autotracing"));
    let mut st = Stitcher::new(AutotracingConfig::default(), stats.clone());
    let clock0 = Instant::now();
    let (mut t_ingest, mut t_tick) = (Duration::ZERO, Duration::ZERO);
    let mut out_spans = 0usize;
    let mut peak_held = 0usize;
    let mut heap: i64 = 0;
    let mut heap_at_peak: i64 = 0;
    let mut known_at_peak = 0usize;
    let mut batch_heap: i64 = 0;
    let live = || LIVE.load(Ordering::Relaxed) as i64;
    for round in 0..rounds {
        for chunk in spans.chunks(BATCH) {
            let m0 = live();
            let rs = batch(chunk, round, span_of);
            let m1 = live();
            let now = clock0
                + Duration::from_nanos(chunk[0].1.end_time_unix_nano - first + round * span_of);
            let a = Instant::now();
            st.ingest(rs, now);
            let b = Instant::now();
            let out = st.tick(now);
            t_ingest += b - a;
            t_tick += b.elapsed();
            out_spans += count(&out);
            drop(out);
            heap += (live() - m1) + (m1 - m0);
            batch_heap += m1 - m0;
            if st.held_spans() > peak_held {
                peak_held = st.held_spans();
                heap_at_peak = heap;
                known_at_peak = st.known_spans();
            }
        }
    }
    out_spans += count(&st.flush_all(clock0 + Duration::from_secs(1 << 20)));
    assert_eq!(out_spans as u64, total, "every span leaves");
    let secs = (t_ingest + t_tick).as_secs_f64();
    println!(
        "recorded spans: {}, rounds: {rounds}, spans replayed: {total}",
        spans.len()
    );
    println!(
        "throughput: {:.0} spans/s on one core ({:.2} us per span: ingest {:.2}, decide and emit {:.2})",
        total as f64 / secs,
        secs * 1e6 / total as f64,
        t_ingest.as_secs_f64() * 1e6 / total as f64,
        t_tick.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "traces emitted: {}, spans held at most: {peak_held}",
        stats.traces_out.get()
    );
    println!(
        "heap at that point: {} KiB for {peak_held} held spans and {} emitted ones remembered \
         for late relatives: {:.0} bytes per held span, {:.0} per span known (the spans \
         themselves included; a span's OTLP encoding averages {:.0} bytes)",
        heap_at_peak / 1024,
        known_at_peak - peak_held,
        heap_at_peak as f64 / peak_held.max(1) as f64,
        heap_at_peak as f64 / known_at_peak.max(1) as f64,
        input_bytes as f64 / spans.len() as f64
    );
    println!(
        "a decoded span as it arrives takes {:.0} bytes of heap (its share of the batch)",
        batch_heap as f64 / total as f64
    );
}
