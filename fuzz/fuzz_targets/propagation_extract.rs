//! Arbitrary header maps through every extractor: no panic, and any context a
//! format reads comes back unchanged through that format's injector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_propagation::{extract, inject, ExtractOptions, Headers, Style};

/// Header names the extractors look at; a chunk whose first byte selects past
/// the end names its own header (up to the first `:`).
const NAMES: &[&str] = &[
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-b3-parentspanid",
    "uber-trace-id",
    "uberctx-k",
    "ot-tracer-traceid",
    "ot-tracer-spanid",
    "ot-tracer-sampled",
    "ot-baggage-k",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-origin",
    "x-datadog-tags",
    "sw8",
    "sw8-correlation",
    "x-amzn-trace-id",
];

fn headers(data: &[u8]) -> Headers {
    let mut h = Headers::new();
    for chunk in data.split(|b| *b == 0) {
        let Some((&sel, rest)) = chunk.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(rest);
        match NAMES.get(sel as usize % (NAMES.len() + 1)) {
            Some(name) => h.append(name, text.into_owned()),
            None => {
                if let Some((n, v)) = text.split_once(':') {
                    h.append(n, v);
                }
            }
        }
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let h = headers(data);
    let all = extract(&h, &ExtractOptions::default());
    if let Some(c) = &all.context {
        assert!(c.trace_id.is_valid() && c.span_id.is_valid());
    }
    let _ = inject(&all, &Style::DEFAULT_ORDER);
    for style in Style::DEFAULT_ORDER
        .into_iter()
        .filter(|s| s.carries_context())
    {
        let one = extract(&h, &ExtractOptions::with_styles(&[style]));
        let Some(c) = &one.context else { continue };
        let again = extract(
            &inject(&one, &[style]),
            &ExtractOptions::with_styles(&[style]),
        );
        let back = again.context.expect("an injected context extracts");
        let want_trace = if style == Style::OtTrace {
            c.trace_id.low() as u128
        } else {
            c.trace_id.as_u128()
        };
        assert_eq!(back.trace_id.as_u128(), want_trace, "{style}");
        assert_eq!(back.span_id, c.span_id, "{style}");
    }
});
