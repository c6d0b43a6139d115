//! Any spans (decoded from arbitrary OTLP/protobuf: any ids, kinds, times and
//! attributes, including forged `weft.*` correlation facts and trace-context
//! headers) go through the stitcher with small caps: nothing panics, and every span
//! that enters leaves exactly once.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use weft_pipeline::{Payload, Signal, Telemetry};
use weft_processors::autotracing::{AutotracingConfig, Stats, Stitcher};
use weft_receiver::otlp::decode_request;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, body)) = data.split_first() else { return };
    let Ok(Payload::Traces(mut rs)) =
        decode_request(Signal::Traces, "application/x-protobuf", None, body, LIMIT)
    else {
        return;
    };
    let spans_in: usize = rs.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    let cfg = AutotracingConfig {
        max_spans_in_flight: 1 + usize::from(knobs & 0x0f),
        max_spans_per_trace: 1 + usize::from(knobs >> 4),
        max_children_per_span: 2,
        inference: knobs & 1 == 1,
        keep_correlation_attributes: knobs & 2 == 2,
        ..Default::default()
    };
    let stats = Arc::new(Stats::new(&Telemetry::new(), "autotracing"));
    let mut st = Stitcher::new(cfg, stats);
    let t = Instant::now();
    let mut out = 0usize;
    macro_rules! count {
        ($o:expr) => {
            out += $o.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>()
        };
    }
    // Feed in two batches, the second after a window, so late spans happen too.
    let second = rs.split_off(rs.len() / 2);
    st.ingest(rs, t);
    count!(st.tick(t + Duration::from_millis(2500)));
    st.ingest(second, t + Duration::from_millis(2500));
    count!(st.tick(t + Duration::from_secs(5)));
    count!(st.tick(t + Duration::from_secs(40)));
    count!(st.flush_all(t + Duration::from_secs(80)));
    assert_eq!(out, spans_in);
});
