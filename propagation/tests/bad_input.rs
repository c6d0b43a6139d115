//! Malformed and hostile headers of every format: no context (or the context
//! without the bad part), never a panic.

use proptest::prelude::*;
use weft_propagation::{extract, extract_json, ExtractOptions, Headers, Style};

fn all(h: &[(&str, &str)]) -> weft_propagation::Extracted {
    let headers: Headers = h.iter().copied().collect();
    extract(&headers, &ExtractOptions::default())
}

#[test]
fn malformed_headers_of_every_format_yield_nothing() {
    let cases: &[&[(&str, &str)]] = &[
        &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")],
        &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x")],
        &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-")],
        &[("traceparent", "\u{e9}0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
        &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736\u{e9}00f067aa0ba902b7-01xx")],
        &[("b3", "-")],
        &[("b3", "----")],
        &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-00f067aa0ba902b7-extra")],
        &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736--1")],
        &[("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"), ("x-b3-spanid", "")],
        &[("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"), ("x-b3-spanid", "00f067aa0ba902b7"), ("x-b3-parentspanid", "zz")],
        &[("uber-trace-id", ":::")],
        &[("uber-trace-id", "1:1:1:")],
        &[("uber-trace-id", "1:1:1:1:1")],
        &[("uber-trace-id", "%ZZ%:1:0:1")],
        &[("uber-trace-id", "%FF:1:0:1")],
        &[("uber-trace-id", "1:1:0:10000000000000000")],
        &[("ot-tracer-traceid", "a3ce929d0e0e4736")],
        &[("ot-tracer-spanid", "00f067aa0ba902b7")],
        &[("x-datadog-trace-id", "1")],
        &[("x-datadog-trace-id", "1"), ("x-datadog-parent-id", "0")],
        &[("x-datadog-trace-id", "18446744073709551616"), ("x-datadog-parent-id", "1")],
        &[("x-datadog-trace-id", "1e3"), ("x-datadog-parent-id", "1")],
        &[("x-datadog-trace-id", "0x10"), ("x-datadog-parent-id", "1")],
        &[("sw8", "1-a-b-c")],
        &[("sw8", "2-YQ==-Yg==-0-YQ==-YQ==-YQ==-YQ==")],
        &[("sw8", "1-!!!!-Yg==-0-YQ==-YQ==-YQ==-YQ==")],
        &[("sw8", "1--Yg==-0-YQ==-YQ==-YQ==-YQ==")],
        &[("sw8", "1-YQ==-Yg==--1-YQ==-YQ==-YQ==-YQ==")],
        &[("sw8", "1-YQ==-Yg==-x-YQ==-YQ==-YQ==-YQ==")],
        &[("sw8", "1-/w==-Yg==-0-YQ==-YQ==-YQ==-YQ==")],
        &[("x-amzn-trace-id", "")],
        &[("x-amzn-trace-id", "Root=;Parent=;Sampled=")],
        &[("x-amzn-trace-id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8")],
        &[("x-amzn-trace-id", "Root=1-8A3C60F7-D188F8FA79D48A391A778FA6;Parent=53995c3f42cd8ad8")],
        &[("x-amzn-trace-id", "Root=1-8a3c60f7\u{e9}d188f8fa79d48a391a778f;Parent=53995c3f42cd8ad8")],
    ];
    for h in cases {
        let e = all(h);
        assert!(!e.is_valid(), "{h:?} gave {:?}", e.context);
        assert!(e.links.is_empty());
    }
}

#[test]
fn repeated_single_valued_headers_are_ambiguous() {
    let e = all(&[
        ("x-datadog-trace-id", "1"),
        ("x-datadog-trace-id", "1"),
        ("x-datadog-parent-id", "2"),
    ]);
    assert!(!e.is_valid());
    let e = all(&[
        ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        ("b3", "0"),
    ]);
    assert!(!e.is_valid());
}

#[test]
fn huge_values_are_refused_quickly() {
    let huge = "a".repeat(1 << 20);
    let digits = "1".repeat(1 << 20);
    for name in [
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-b3-traceid",
        "uber-trace-id",
        "uberctx-k",
        "ot-tracer-traceid",
        "ot-baggage-k",
        "x-datadog-trace-id",
        "x-datadog-tags",
        "sw8",
        "sw8-correlation",
        "x-amzn-trace-id",
    ] {
        for v in [&huge, &digits] {
            let e = all(&[(name, v.as_str())]);
            assert!(!e.is_valid(), "{name}");
            assert!(e.baggage.is_empty(), "{name}");
        }
    }
    // A valid traceparent with a huge tracestate keeps the traceparent only.
    let ts = format!("a={}", "b".repeat(1 << 20));
    let e = all(&[
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", &ts),
    ]);
    assert!(e.is_valid());
    assert_eq!(e.context.unwrap().tracestate, None);
    // Many headers.
    let many: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("uberctx-k{i}"), "v".to_string()))
        .collect();
    let mut h: Headers = many.into_iter().collect();
    h.append("uber-trace-id", "1:1:0:1");
    let e = extract(&h, &ExtractOptions::default());
    assert!(e.is_valid());
    assert_eq!(e.baggage.len(), 10_000);
}

#[test]
fn bad_cli_input_is_an_error_not_a_panic() {
    for input in [
        "",
        "   ",
        "[]",
        "1",
        "{",
        "{\"a\": {}}",
        "{\"a\": [[\"x\"]]}",
        "{\"a\": null}",
        "{\"a\": true}",
        "{} {}",
    ] {
        assert!(extract_json(input, None).is_err(), "{input:?}");
    }
}

const HEADER_NAMES: &[&str] = &[
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_values_never_panic(
        entries in proptest::collection::vec(
            (proptest::sample::select(HEADER_NAMES), "(?s).{0,80}|[0-9a-f:;=,.-]{0,80}"),
            0..8,
        ),
    ) {
        let h: Headers = entries.into_iter().collect();
        let e = extract(&h, &ExtractOptions::default());
        if let Some(c) = &e.context {
            prop_assert!(c.trace_id.is_valid() && c.span_id.is_valid());
        }
        for style in Style::DEFAULT_ORDER {
            let _ = weft_propagation::inject(&e, &[style]);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(s in "(?s).{0,200}") {
        let _ = extract_json(&s, None);
        let _ = weft_propagation::inject_json(&s, None);
        let _ = weft_propagation::convert_json(&s);
    }
}
