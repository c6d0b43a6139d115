//! The encoded-traces walk accepts exactly what prost decodes (with the
//! receivers' id checks), and what it accepts decodes to as many spans and
//! resources as it counted, and to the same request.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use weft_pipeline::otlp_wire::EncodedTraces;

fn ids_ok(req: &ExportTraceServiceRequest) -> bool {
    let ok = |id: &[u8], n: usize| id.is_empty() || id.len() == n;
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .all(|sp| {
            ok(&sp.trace_id, 16)
                && ok(&sp.span_id, 8)
                && ok(&sp.parent_span_id, 8)
                && sp.links.iter().all(|l| ok(&l.trace_id, 16) && ok(&l.span_id, 8))
        })
}

fuzz_target!(|data: &[u8]| {
    let walked = EncodedTraces::new(Bytes::copy_from_slice(data));
    let decoded = ExportTraceServiceRequest::decode(data);
    let prost_ok = decoded.as_ref().is_ok_and(ids_ok);
    assert_eq!(walked.is_ok(), prost_ok, "walk {walked:?}, prost {decoded:?}");
    if let (Ok(w), Ok(req)) = (walked, decoded) {
        assert_eq!(w.resource_count(), req.resource_spans.len());
        let spans: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(w.span_count(), spans);
        // Compared encoded: a NaN attribute is never equal to itself.
        let again = w.decode().ok().map(|resource_spans| {
            ExportTraceServiceRequest { resource_spans }.encode_to_vec()
        });
        assert_eq!(again, Some(req.encode_to_vec()));
    }
});
