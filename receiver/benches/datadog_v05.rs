//! Datadog v0.5 payload to OTLP, spans per second on one core: decode,
//! resolve 128-bit trace ids and translate one ddtrace-shaped payload of
//! 100 traces of 10 spans, as the receiver does per request.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rmp::encode as e;
use weft_receiver::datadog::translate::{resolve_trace_id_highs, translate};
use weft_receiver::datadog::{decode_payload, ApiVersion, TraceIdCache, TracerHeaders};

// The allocator the weft binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TRACES: u64 = 100;
const SPANS_PER_TRACE: u64 = 10;

/// A payload shaped like ddtrace's: a web root carrying the trace-level tags,
/// children in a second service, a dozen tags and a few metrics per span.
fn payload() -> Vec<u8> {
    let mut table: Vec<String> = Vec::new();
    let mut idx = |s: &str| -> u64 {
        match table.iter().position(|t| t == s) {
            Some(i) => i as u64,
            None => {
                table.push(s.to_string());
                table.len() as u64 - 1
            }
        }
    };
    let mut traces = Vec::new();
    e::write_array_len(&mut traces, TRACES as u32).unwrap();
    for t in 0..TRACES {
        let trace_id = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(t + 1);
        e::write_array_len(&mut traces, SPANS_PER_TRACE as u32).unwrap();
        for s in 0..SPANS_PER_TRACE {
            let root = s == 0;
            let (service, name, resource, kind) = if root {
                ("checkout", "flask.request", "GET /cart/<id>", "server")
            } else {
                (
                    "checkout-postgres",
                    "postgres.query",
                    "SELECT * FROM carts WHERE id = ?",
                    "client",
                )
            };
            let mut meta: Vec<(String, String)> = vec![
                ("env".into(), "prod".into()),
                ("version".into(), "2.3.1".into()),
                ("span.kind".into(), kind.into()),
                (
                    "component".into(),
                    if root { "flask" } else { "psycopg" }.into(),
                ),
                (
                    "runtime-id".into(),
                    "31cd624b3a5348119bfe60dc68edb0df".into(),
                ),
                ("language".into(), "python".into()),
            ];
            if root {
                meta.extend([
                    (
                        "_dd.p.tid".into(),
                        format!("{:016x}", 0x6b02_7742_0000_0000u64 + t),
                    ),
                    ("_dd.p.dm".into(), "-0".into()),
                    ("http.method".into(), "GET".into()),
                    ("http.route".into(), "/cart/<id>".into()),
                    ("http.status_code".into(), "200".into()),
                    ("http.url".into(), format!("http://shop.internal/cart/{t}")),
                ]);
            } else {
                meta.extend([
                    ("_dd.base_service".into(), "checkout".into()),
                    ("db.type".into(), "postgres".into()),
                    ("db.instance".into(), "shop".into()),
                    ("peer.hostname".into(), "db.internal".into()),
                    ("out.host".into(), "db.internal".into()),
                    ("db.row_count".into(), format!("{s}")),
                ]);
            }
            let metrics = [
                ("_dd.top_level", 1.0),
                ("_sampling_priority_v1", 1.0),
                ("process_id", 4242.0),
            ];
            e::write_array_len(&mut traces, 12).unwrap();
            for v in [idx(service), idx(name), idx(resource)] {
                e::write_uint(&mut traces, v).unwrap();
            }
            e::write_uint(&mut traces, trace_id).unwrap();
            e::write_uint(&mut traces, trace_id ^ (s + 1)).unwrap();
            e::write_uint(&mut traces, if root { 0 } else { trace_id ^ 1 }).unwrap();
            e::write_sint(&mut traces, 1_700_000_000_000_000_000 + (s as i64) * 1_000).unwrap();
            e::write_sint(&mut traces, 250_000).unwrap();
            e::write_sint(&mut traces, 0).unwrap();
            e::write_map_len(&mut traces, meta.len() as u32).unwrap();
            for (k, v) in &meta {
                e::write_uint(&mut traces, idx(k)).unwrap();
                e::write_uint(&mut traces, idx(v)).unwrap();
            }
            e::write_map_len(&mut traces, metrics.len() as u32).unwrap();
            for (k, v) in metrics {
                e::write_uint(&mut traces, idx(k)).unwrap();
                e::write_f64(&mut traces, v).unwrap();
            }
            e::write_uint(&mut traces, idx(if root { "web" } else { "sql" })).unwrap();
        }
    }
    let mut body = Vec::new();
    e::write_array_len(&mut body, 2).unwrap();
    e::write_array_len(&mut body, table.len() as u32).unwrap();
    for s in &table {
        e::write_str(&mut body, s).unwrap();
    }
    body.extend_from_slice(&traces);
    body
}

fn v05_to_otlp(c: &mut Criterion) {
    let body = payload();
    let headers = TracerHeaders {
        lang: Some("python".into()),
        lang_version: Some("3.11.7".into()),
        tracer_version: Some("4.16.0".into()),
        container_id: None,
    };
    let mut cache = TraceIdCache::new(10_000);
    let mut group = c.benchmark_group("datadog");
    group.throughput(Throughput::Elements(TRACES * SPANS_PER_TRACE));
    group.bench_function("v0.5 to OTLP (spans)", |b| {
        b.iter(|| {
            let payload = decode_payload(ApiVersion::V05, "application/msgpack", black_box(&body))
                .expect("the bench payload decodes");
            let highs = resolve_trace_id_highs(&payload, &mut cache);
            black_box(translate(&payload, &headers, &highs))
        })
    });
    group.finish();
}

criterion_group!(benches, v05_to_otlp);
criterion_main!(benches);
