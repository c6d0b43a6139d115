//! Any Datadog v0.7 body (a TracerPayload map) decodes and translates to OTLP, or fails with a
//! status-mapped error; never a panic, and every decoded span comes out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_receiver::datadog::translate::{resolve_trace_id_highs, translate};
use weft_receiver::datadog::{decode_payload, ApiVersion, TraceIdCache, TracerHeaders};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type =
        ["application/msgpack", "application/json", "", "text/plain"][(selector % 4) as usize];
    match decode_payload(ApiVersion::V07, content_type, body) {
        Ok(payload) => {
            let mut cache = TraceIdCache::new(4);
            let highs = resolve_trace_id_highs(&payload, &mut cache);
            let out = translate(&payload, &TracerHeaders::default(), &highs);
            let spans: usize = out
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            assert_eq!(spans, payload.span_count());
        }
        Err(e) => {
            let status = e.http_status();
            assert!(matches!(status, 400 | 415), "{e}: {status}");
        }
    }
});
