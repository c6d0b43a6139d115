//! Extraction cases ported from the upstream test suites (inputs and expected
//! results transcribed as facts; each table names its source). They add to
//! the shared vectors in tests/data.

use weft_propagation::{extract, ExtractOptions, Extracted, Headers, Style};

struct Case {
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// (trace id, span id) when valid.
    ids: Option<(&'static str, &'static str)>,
    sampled: Option<bool>,
}

const fn ok(
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
    trace: &'static str,
    span: &'static str,
    sampled: Option<bool>,
) -> Case {
    Case {
        name,
        headers,
        ids: Some((trace, span)),
        sampled,
    }
}

const fn bad(name: &'static str, headers: &'static [(&'static str, &'static str)]) -> Case {
    Case {
        name,
        headers,
        ids: None,
        sampled: None,
    }
}

fn run(style: &[Style], h: &[(&str, &str)]) -> Extracted {
    let headers: Headers = h.iter().copied().collect();
    extract(&headers, &ExtractOptions::with_styles(style))
}

fn check_table(style: &[Style], cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let e = run(style, c.headers);
        let got_ids = e
            .context
            .as_ref()
            .map(|c| (c.trace_id.to_hex(), c.span_id.to_hex()));
        let want_ids = c.ids.map(|(t, s)| (t.to_string(), s.to_string()));
        let got_sampled = if c.ids.is_some() { e.sampled() } else { None };
        if got_ids != want_ids || got_sampled != c.sampled {
            failures.push(format!(
                "{}: got {got_ids:?} sampled={got_sampled:?}, want {want_ids:?} sampled={:?}",
                c.name, c.sampled
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const S: &str = "00f067aa0ba902b7";
const T64: &str = "0000000000000000a3ce929d0e0e4736";

/// open-telemetry/opentelemetry-go-contrib propagators/b3/b3_data_test.go
/// (extractHeaders, extractInvalidHeaders). The B3 propagator reads the single
/// header first and the multi headers after, which is weft's `b3` style.
#[test]
fn b3_go_contrib() {
    check_table(
        &[Style::B3],
        &[
            ok(
                "multiple: sampling state defer",
                &[("x-b3-traceid", T), ("x-b3-spanid", S)],
                T,
                S,
                None,
            ),
            ok(
                "multiple: sampling state deny",
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "0"),
                ],
                T,
                S,
                Some(false),
            ),
            ok(
                "multiple: sampling state accept",
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "1"),
                ],
                T,
                S,
                Some(true),
            ),
            ok(
                "multiple: sampling state as a boolean: true",
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "true"),
                ],
                T,
                S,
                Some(true),
            ),
            ok(
                "multiple: sampling state as a boolean: false",
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "false"),
                ],
                T,
                S,
                Some(false),
            ),
            ok(
                "multiple: debug flag set",
                &[("x-b3-traceid", T), ("x-b3-spanid", S), ("x-b3-flags", "1")],
                T,
                S,
                Some(true),
            ),
            ok(
                "multiple: debug flag set to not 1 (ignored)",
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "1"),
                    ("x-b3-flags", "2"),
                ],
                T,
                S,
                Some(true),
            ),
            ok(
                "multiple: debug flag set and sampling state is deny",
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "0"),
                    ("x-b3-flags", "1"),
                ],
                T,
                S,
                Some(true),
            ),
            ok(
                "multiple: with parent span id",
                &[
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "1"),
                    ("x-b3-parentspanid", "00f067aa0ba90200"),
                ],
                T,
                S,
                Some(true),
            ),
            ok(
                "single: sampling state defer",
                &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")],
                T,
                S,
                None,
            ),
            ok(
                "single: sampling state deny",
                &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0")],
                T,
                S,
                Some(false),
            ),
            ok(
                "single: sampling state accept",
                &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")],
                T,
                S,
                Some(true),
            ),
            ok(
                "single: sampling state debug",
                &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-d")],
                T,
                S,
                Some(true),
            ),
            ok(
                "single: with parent span id",
                &[(
                    "b3",
                    "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-00000000000000cd",
                )],
                T,
                S,
                Some(true),
            ),
            ok(
                "single: left-padding 64-bit traceID",
                &[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")],
                T64,
                S,
                None,
            ),
            ok(
                "both single and multiple: single priority",
                &[
                    ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "0"),
                ],
                T,
                S,
                Some(true),
            ),
            ok(
                "both single and multiple: invalid single",
                &[
                    ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-"),
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "0"),
                ],
                T,
                S,
                Some(false),
            ),
            ok(
                "both single and multiple: invalid multiple",
                &[
                    ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
                    ("x-b3-traceid", T),
                    ("x-b3-spanid", S),
                    ("x-b3-sampled", "invalid"),
                ],
                T,
                S,
                Some(true),
            ),
            bad(
                "multiple: trace ID length > 32",
                &[
                    ("x-b3-traceid", "ab00000000000000000000000000000000"),
                    ("x-b3-spanid", "cd00000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: trace ID length <16",
                &[
                    ("x-b3-traceid", "ab0000000000"),
                    ("x-b3-spanid", "cd00000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: wrong span ID length",
                &[
                    ("x-b3-traceid", "ab000000000000000000000000000000"),
                    ("x-b3-spanid", "cd0000000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: wrong sampled flag length",
                &[
                    ("x-b3-traceid", "ab000000000000000000000000000000"),
                    ("x-b3-spanid", "cd00000000000000"),
                    ("x-b3-sampled", "10"),
                ],
            ),
            bad(
                "multiple: bogus trace ID",
                &[
                    ("x-b3-traceid", "qw000000000000000000000000000000"),
                    ("x-b3-spanid", "cd00000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: bogus span ID",
                &[
                    ("x-b3-traceid", "ab000000000000000000000000000000"),
                    ("x-b3-spanid", "qw00000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: bogus sampled flag",
                &[
                    ("x-b3-traceid", "ab000000000000000000000000000000"),
                    ("x-b3-spanid", "cd00000000000000"),
                    ("x-b3-sampled", "d"),
                ],
            ),
            bad(
                "multiple: upper case trace ID",
                &[
                    ("x-b3-traceid", "AB000000000000000000000000000000"),
                    ("x-b3-spanid", "cd00000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: upper case span ID",
                &[
                    ("x-b3-traceid", "ab000000000000000000000000000000"),
                    ("x-b3-spanid", "CD00000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: zero span ID",
                &[
                    ("x-b3-traceid", "ab000000000000000000000000000000"),
                    ("x-b3-spanid", "0000000000000000"),
                    ("x-b3-sampled", "1"),
                ],
            ),
            bad(
                "multiple: missing trace ID",
                &[("x-b3-spanid", "cd00000000000000"), ("x-b3-sampled", "1")],
            ),
            bad(
                "single: wrong trace ID length",
                &[(
                    "b3",
                    "ab00000000000000000000000000000000-cd00000000000000-1",
                )],
            ),
            bad(
                "single: wrong span ID length",
                &[(
                    "b3",
                    "ab000000000000000000000000000000-cd0000000000000000-1",
                )],
            ),
            bad(
                "single: wrong sampled state length",
                &[(
                    "b3",
                    "00-ab000000000000000000000000000000-cd00000000000000-01",
                )],
            ),
            bad(
                "single: bogus trace ID",
                &[("b3", "qw000000000000000000000000000000-cd00000000000000-1")],
            ),
            bad(
                "single: bogus span ID",
                &[("b3", "ab000000000000000000000000000000-qw00000000000000-1")],
            ),
            bad(
                "single: bogus sampled flag",
                &[("b3", "ab000000000000000000000000000000-cd00000000000000-q")],
            ),
            bad(
                "single: bogus parent span ID",
                &[(
                    "b3",
                    "ab000000000000000000000000000000-cd00000000000000-1-qw00000000000000",
                )],
            ),
            bad(
                "single: upper case trace ID",
                &[("b3", "AB000000000000000000000000000000-cd00000000000000-1")],
            ),
            bad(
                "single: upper case span ID",
                &[("b3", "ab000000000000000000000000000000-CD00000000000000-1")],
            ),
            bad(
                "single: upper case parent span ID",
                &[(
                    "b3",
                    "ab000000000000000000000000000000-cd00000000000000-1-EF00000000000000",
                )],
            ),
        ],
    );
    // "multiple: sampled header set to 1 but trace ID and span ID are missing":
    // no context, but the decision survives.
    let e = run(&[Style::B3], &[("x-b3-sampled", "1")]);
    assert_eq!((e.is_valid(), e.sampled()), (false, Some(true)));
    // "single: with only sampling state deny", with multi headers present: the
    // multi context is used.
    let e = run(
        &[Style::B3],
        &[
            ("b3", "0"),
            ("x-b3-traceid", T),
            ("x-b3-spanid", S),
            ("x-b3-sampled", "1"),
        ],
    );
    assert_eq!((e.is_valid(), e.sampled()), (true, Some(true)));
    // The debug state reads as sampling priority 2 (dd-trace-py B3 mapping).
    let e = run(
        &[Style::B3],
        &[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-d")],
    );
    let c = e.context.unwrap();
    assert_eq!((c.debug, c.sampling_priority), (true, Some(2)));
}

const TJ: &str = "a1ce929d0e0e4736a3ce929d0e0e4736";

/// open-telemetry/opentelemetry-go-contrib propagators/jaeger/jaeger_data_test.go.
/// The 19-digit trace id that older go-contrib rejected is valid here: the
/// spec pads any length 1–32 (as newer go-contrib, -java and -python do).
#[test]
fn jaeger_go_contrib() {
    check_table(
        &[Style::Jaeger],
        &[
            ok(
                "sampling state not sample",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b7:0:0",
                )],
                TJ,
                S,
                Some(false),
            ),
            ok(
                "sampling state sampled",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
                )],
                TJ,
                S,
                Some(true),
            ),
            ok(
                "debug but sampled bit not set: not sampled",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b7:0:2",
                )],
                TJ,
                S,
                Some(false),
            ),
            ok(
                "flag can be various length",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b7:0:00001",
                )],
                TJ,
                S,
                Some(true),
            ),
            ok(
                "left padding 64 bit trace ID",
                &[("uber-trace-id", "a3ce929d0e0e4736:00f067aa0ba902b7:0:1")],
                T64,
                S,
                Some(true),
            ),
            ok(
                "19-digit trace id is padded",
                &[("uber-trace-id", "1234567890abcd01234:00f067aa0ba902b7:0:1")],
                "00000000000001234567890abcd01234",
                S,
                Some(true),
            ),
            ok(
                "URL-encoded value",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A1",
                )],
                TJ,
                S,
                Some(true),
            ),
            bad(
                "span ID length > 16",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b70000:0:1",
                )],
            ),
            bad(
                "invalid trace ID",
                &[(
                    "uber-trace-id",
                    "zcd00v0000000000a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
                )],
            ),
            bad(
                "invalid span ID",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736:00f0wiredba902b7:0:1",
                )],
            ),
            bad(
                "invalid separator",
                &[(
                    "uber-trace-id",
                    "a1ce929d0e0e4736a3ce929d0e0e4736-00f067aa0ba902b7-0-1",
                )],
            ),
            bad(
                "missing jaeger header",
                &[(
                    "uber-trace-idnot",
                    "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
                )],
            ),
            bad("empty header value", &[("uber-trace-id", "")]),
            bad(
                "zero trace id",
                &[("uber-trace-id", "0:00f067aa0ba902b7:0:1")],
            ),
        ],
    );
    let e = run(
        &[Style::Jaeger],
        &[
            (
                "uber-trace-id",
                "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            ),
            ("uberctx-user", "a%20b"),
            ("UberCtx-Tier", "gold"),
        ],
    );
    assert_eq!(
        e.baggage.iter().collect::<Vec<_>>(),
        [("user", "a b"), ("tier", "gold")]
    );
}

/// open-telemetry/opentelemetry-go-contrib propagators/ot/ot_data_test.go.
#[test]
fn ottrace_go_contrib() {
    check_table(
        &[Style::OtTrace],
        &[
            ok(
                "sampling state not sample",
                &[
                    ("ot-tracer-traceid", TJ),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "0"),
                ],
                TJ,
                S,
                Some(false),
            ),
            ok(
                "sampling state sampled",
                &[
                    ("ot-tracer-traceid", TJ),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "1"),
                    ("ot-baggage-test", "value123"),
                ],
                TJ,
                S,
                Some(true),
            ),
            ok(
                "left padding 64 bit trace ID",
                &[
                    ("ot-tracer-traceid", "a3ce929d0e0e4736"),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "1"),
                ],
                T64,
                S,
                Some(true),
            ),
            ok(
                "invalid baggage key",
                &[
                    ("ot-tracer-traceid", TJ),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "1"),
                    ("ot-baggage-d\u{2013}76", "test"),
                ],
                TJ,
                S,
                Some(true),
            ),
            ok(
                "invalid baggage value",
                &[
                    ("ot-tracer-traceid", TJ),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "1"),
                    ("ot-baggage-test", "\u{f8}tel"),
                ],
                TJ,
                S,
                Some(true),
            ),
            bad(
                "trace ID length > 32",
                &[
                    ("ot-tracer-traceid", "a1ce929d0e0e4736a3ce929d0e0e47360000"),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "1"),
                ],
            ),
            bad(
                "span ID length is not 16",
                &[
                    ("ot-tracer-traceid", TJ),
                    ("ot-tracer-spanid", "00f067aa0ba902b70000"),
                    ("ot-tracer-sampled", "1"),
                ],
            ),
            bad(
                "invalid trace ID",
                &[
                    ("ot-tracer-traceid", "zcd00v0000000000a3ce929d0e0e4736"),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "1"),
                ],
            ),
            bad(
                "invalid span ID",
                &[
                    ("ot-tracer-traceid", TJ),
                    ("ot-tracer-spanid", "00f0wiredba902b7"),
                    ("ot-tracer-sampled", "1"),
                ],
            ),
            bad(
                "invalid sampled",
                &[
                    ("ot-tracer-traceid", TJ),
                    ("ot-tracer-spanid", S),
                    ("ot-tracer-sampled", "wired"),
                ],
            ),
            bad("empty header value", &[("ot-tracer-traceid", "")]),
        ],
    );
    let e = run(
        &[Style::OtTrace],
        &[
            ("ot-tracer-traceid", TJ),
            ("ot-tracer-spanid", S),
            ("ot-baggage-test", "value123"),
            ("ot-baggage-test2", "value456"),
        ],
    );
    assert_eq!(
        e.baggage.iter().collect::<Vec<_>>(),
        [("test", "value123"), ("test2", "value456")]
    );
    // "invalid baggage result (too large)": the context stays, baggage goes.
    let big = "s".repeat(8188);
    let h: Headers = [
        ("ot-tracer-traceid", TJ),
        ("ot-tracer-spanid", S),
        ("ot-tracer-sampled", "1"),
        ("ot-baggage-test", big.as_str()),
    ]
    .into_iter()
    .collect();
    let e = extract(&h, &ExtractOptions::with_styles(&[Style::OtTrace]));
    assert!(e.is_valid());
    assert!(e.baggage.is_empty());
}

/// open-telemetry/opentelemetry-go-contrib propagators/aws/xray/propagator_test.go.
#[test]
fn xray_go_contrib() {
    let tx = "8a3c60f7d188f8fa79d48a391a778fa6";
    check_table(
        &[Style::Xray],
        &[
            ok("not sampled", &[("X-Amzn-Trace-Id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=0")], tx, "53995c3f42cd8ad8", Some(false)),
            ok("sampled", &[("X-Amzn-Trace-Id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=1")], tx, "53995c3f42cd8ad8", Some(true)),
            ok(
                "any key order, Self ignored",
                &[("x-amzn-trace-id", "Self=1-67891234-12456789abcdef012345678;Sampled=1;Parent=53995c3f42cd8ad8;Root=1-8a3c60f7-d188f8fa79d48a391a778fa6")],
                tx,
                "53995c3f42cd8ad8",
                Some(true),
            ),
            ok(
                "missing Sampled leaves the decision open",
                &[("X-Amzn-Trace-Id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8")],
                tx,
                "53995c3f42cd8ad8",
                None,
            ),
            bad("zero parent", &[("X-Amzn-Trace-Id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=0000000000000000;Sampled=1")]),
            bad("root of wrong length", &[("X-Amzn-Trace-Id", "Root=1-82138-1203123;Parent=53995c3f42cd8ad8;Sampled=1")]),
            bad("wrong version", &[("X-Amzn-Trace-Id", "Root=5b00000000b000000000000000000000000;Parent=53995c3f42cd8ad8;Sampled=1")]),
            bad("part without =", &[("X-Amzn-Trace-Id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled")]),
            bad("missing parent", &[("X-Amzn-Trace-Id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Sampled=1")]),
        ],
    );
}

const TW: &str = "12345678901234567890123456789012";
const SW: &str = "1234567890123456";

/// w3c/trace-context test/test.py (TraceContextTest): traceparent parsing.
#[test]
fn w3c_traceparent() {
    check_table(
        &[Style::TraceContext],
        &[
            ok("traceparent_included_tracestate_missing", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-01")], TW, SW, Some(true)),
            ok("header_name_valid_casing TRACEPARENT", &[("TRACEPARENT", "00-12345678901234567890123456789012-1234567890123456-01")], TW, SW, Some(true)),
            ok("version_0xcc", &[("traceparent", "cc-12345678901234567890123456789012-1234567890123456-01")], TW, SW, Some(true)),
            ok(
                "version_0xcc with future part",
                &[("traceparent", "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like")],
                TW,
                SW,
                Some(true),
            ),
            ok("ows_handling leading space", &[("traceparent", " 00-12345678901234567890123456789012-1234567890123456-01")], TW, SW, Some(true)),
            ok("ows_handling leading tab", &[("traceparent", "\t00-12345678901234567890123456789012-1234567890123456-01")], TW, SW, Some(true)),
            ok("ows_handling trailing space", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-01 ")], TW, SW, Some(true)),
            ok("ows_handling both", &[("traceparent", "\t 00-12345678901234567890123456789012-1234567890123456-01 \t")], TW, SW, Some(true)),
            bad("header_name trace-parent", &[("trace-parent", "00-12345678901234567890123456789012-1234567890123456-01")]),
            bad("header_name trace.parent", &[("trace.parent", "00-12345678901234567890123456789012-1234567890123456-01")]),
            bad("version_0x00 trailing dot", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-01.")]),
            bad("version_illegal_characters 0.", &[("traceparent", "0.-12345678901234567890123456789012-1234567890123456-01")]),
            bad("version_too_long 0000", &[("traceparent", "0000-12345678901234567890123456789012-1234567890123456-01")]),
            bad("version_too_short", &[("traceparent", "0-12345678901234567890123456789012-1234567890123456-01")]),
            bad("trace_id_illegal_characters lead", &[("traceparent", "00-.2345678901234567890123456789012-1234567890123456-01")]),
            bad("trace_id_illegal_characters tail", &[("traceparent", "00-1234567890123456789012345678901.-1234567890123456-01")]),
            bad("trace_id_too_short", &[("traceparent", "00-1234567890123456789012345678901-1234567890123456-01")]),
            bad("parent_id_illegal_characters lead", &[("traceparent", "00-12345678901234567890123456789012-.234567890123456-01")]),
            bad("parent_id_illegal_characters tail", &[("traceparent", "00-12345678901234567890123456789012-123456789012345.-01")]),
            bad("parent_id_too_short", &[("traceparent", "00-12345678901234567890123456789012-123456789012345-01")]),
            bad("trace_flags_illegal_characters .0", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-.0")]),
            bad("trace_flags_illegal_characters 0.", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-0.")]),
            bad("trace_flags_too_long", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-001")]),
            bad("trace_flags_too_short", &[("traceparent", "00-12345678901234567890123456789012-1234567890123456-1")]),
        ],
    );
}

fn tracestate_of(h: &[(&str, &str)]) -> Option<String> {
    let mut all = vec![(
        "traceparent",
        "00-12345678901234567890123456789012-1234567890123456-00",
    )];
    all.extend_from_slice(h);
    let e = run(&[Style::TraceContext], &all);
    assert!(
        e.is_valid(),
        "a bad tracestate never invalidates the traceparent"
    );
    e.context.unwrap().tracestate
}

/// w3c/trace-context test/test.py (TraceContextTest): tracestate handling. A
/// tracestate that fails validation is discarded whole.
#[test]
fn w3c_tracestate() {
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        tracestate_of(&[("tracestate", "foo=1,bar=2")]),
        some("foo=1,bar=2")
    );
    assert_eq!(tracestate_of(&[("TrAcEsTaTe", "foo=1")]), some("foo=1"));
    assert_eq!(tracestate_of(&[("trace-state", "foo=1")]), None);
    assert_eq!(tracestate_of(&[("tracestate", "")]), None);
    assert_eq!(
        tracestate_of(&[("tracestate", "foo=1"), ("tracestate", "")]),
        some("foo=1")
    );
    assert_eq!(
        tracestate_of(&[("tracestate", ""), ("tracestate", "foo=1")]),
        some("foo=1")
    );
    assert_eq!(
        tracestate_of(&[
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", "rojo=1,congo=2"),
            ("tracestate", "baz=3")
        ]),
        some("foo=1,bar=2,rojo=1,congo=2,baz=3")
    );
    for dup in [
        &[("tracestate", "foo=1,foo=1")][..],
        &[("tracestate", "foo=1,foo=2")],
        &[("tracestate", "foo=1"), ("tracestate", "foo=1")],
    ] {
        assert_eq!(tracestate_of(dup), None, "{dup:?}");
    }
    let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let value: String = (0x20u8..=0x7e)
        .filter(|c| *c != b',' && *c != b'=')
        .map(char::from)
        .collect();
    let member = format!("{key}={value}");
    assert_eq!(
        tracestate_of(&[("tracestate", &member)]),
        Some(member.clone())
    );
    let member = format!("{key}@a-z0-9_-*/={value}");
    assert_eq!(
        tracestate_of(&[("tracestate", &member)]),
        Some(member.clone())
    );
    assert_eq!(
        tracestate_of(&[("tracestate", "foo=1 \t , \t bar=2, \t baz=3")]),
        some("foo=1,bar=2,baz=3")
    );
    assert_eq!(
        tracestate_of(&[("tracestate", "\t foo=1 \t")]),
        some("foo=1")
    );
    for bad in [
        "foo =1",
        "FOO=1",
        "foo.bar=1",
        "foo@=1,bar=2",
        "@foo=1,bar=2",
        "foo@@bar=1,bar=2",
        "foo@bar@baz=1,bar=2",
        "foo=bar=baz",
        "foo=,bar=3",
    ] {
        assert_eq!(tracestate_of(&[("tracestate", bad)]), None, "{bad}");
    }
    let thirty_two: Vec<String> = (1..=32).map(|i| format!("bar{i:02}={i:02}")).collect();
    assert_eq!(
        tracestate_of(&[("tracestate", &thirty_two.join(","))]),
        Some(thirty_two.join(","))
    );
    let thirty_three = format!("{},bar33=33", thirty_two.join(","));
    assert_eq!(tracestate_of(&[("tracestate", &thirty_three)]), None);
    let z256 = format!("{}=1", "z".repeat(256));
    assert!(tracestate_of(&[("tracestate", "foo=1"), ("tracestate", &z256)]).is_some());
    let z257 = format!("{}=1", "z".repeat(257));
    assert_eq!(
        tracestate_of(&[("tracestate", "foo=1"), ("tracestate", &z257)]),
        None
    );
    let tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    assert!(tracestate_of(&[("tracestate", "foo=1"), ("tracestate", &tenant)]).is_some());
    let tenant = format!("{}@v=1", "t".repeat(242));
    assert_eq!(
        tracestate_of(&[("tracestate", "foo=1"), ("tracestate", &tenant)]),
        None
    );
    let system = format!("t@{}=1", "v".repeat(15));
    assert_eq!(
        tracestate_of(&[("tracestate", "foo=1"), ("tracestate", &system)]),
        None
    );
}

/// DataDog/dd-trace-py tests/tracer/test_propagation.py: Datadog headers and
/// `x-datadog-tags` handling.
#[test]
fn datadog_dd_trace_py() {
    let dd = |tags: Option<&str>| {
        let mut h = vec![
            ("x-datadog-trace-id", "1234"),
            ("x-datadog-parent-id", "5678"),
            ("x-datadog-sampling-priority", "1"),
            ("x-datadog-origin", "synthetics"),
        ];
        if let Some(t) = tags {
            h.push(("x-datadog-tags", t));
        }
        let e = run(&[Style::Datadog], &h);
        e.context.expect("valid datadog context")
    };
    // test_extract: only _dd.p.* tags are kept.
    let c = dd(Some("_dd.p.test=value,any=tag"));
    assert_eq!(c.trace_id.low(), 1234);
    assert_eq!(c.span_id.as_u64(), 5678);
    assert_eq!(
        (c.sampling_priority, c.sampled, c.origin.as_deref()),
        (Some(1), Some(true), Some("synthetics"))
    );
    assert_eq!(
        c.propagated_tags.iter().collect::<Vec<_>>(),
        [("_dd.p.test", "value")]
    );
    assert_eq!(c.propagation_error, None);
    // test_extract_dm
    assert_eq!(
        dd(Some("_dd.p.dm=-0")).propagated_tags.get("_dd.p.dm"),
        Some("-0")
    );
    for bad in [
        "_dd.p.dm=-",
        "_dd.p.dm=--1",
        "_dd.p.dm=-1.0",
        "_dd.p.dm=-10",
    ] {
        let c = dd(Some(bad));
        assert!(c.propagated_tags.is_empty(), "{bad}");
        assert_eq!(
            c.propagation_error.as_deref(),
            Some("decoding_error"),
            "{bad}"
        );
    }
    // test_extract_invalid_tags
    let c = dd(Some("malformed=,=tags,"));
    assert_eq!(c.propagation_error.as_deref(), Some("decoding_error"));
    // test_extract_tags_large: 513 bytes.
    let large = format!("key={}", "x".repeat(512 - 4 + 1));
    let c = dd(Some(&large));
    assert_eq!(c.propagation_error.as_deref(), Some("extract_max_size"));
    assert!(c.propagated_tags.is_empty());
    // dd-09 (shared vectors) and its note: a malformed tid is dropped and recorded.
    let c = dd(Some("_dd.p.tid=AABBCCDD00112233,_dd.p.dm=-4"));
    assert_eq!(c.trace_id.to_hex(), "000000000000000000000000000004d2");
    assert_eq!(
        c.propagation_error.as_deref(),
        Some("malformed_tid AABBCCDD00112233")
    );
    assert_eq!(
        c.propagated_tags.iter().collect::<Vec<_>>(),
        [("_dd.p.dm", "-4")]
    );

    // test_extract_bad_values: a bad trace id voids the context whatever else is sent.
    for trace in ["one", "123.4", ""] {
        for parent in ["one", "123.4", "10", ""] {
            let e = run(
                &[Style::Datadog],
                &[
                    ("x-datadog-trace-id", trace),
                    ("x-datadog-parent-id", parent),
                ],
            );
            assert!(!e.is_valid(), "{trace:?}/{parent:?}");
        }
    }
}

/// DataDog/system-tests tests/parametric/test_headers_tracecontext.py and
/// dd-trace-py's tracestate tests: the `dd=` member.
#[test]
fn dd_member_in_tracestate() {
    let e = run(
        &[Style::TraceContext],
        &[
            (
                "traceparent",
                "00-00000000000000001111111111111111-2222222222222222-01",
            ),
            (
                "tracestate",
                "dd=s:2;o:synthetics~web;t.dm:-4;t.usr.id:baz64~~;t.tid:6666666666666666,foo=1",
            ),
        ],
    );
    let c = e.context.unwrap();
    assert_eq!(c.sampling_priority, Some(2));
    assert_eq!(c.origin.as_deref(), Some("synthetics=web"));
    assert_eq!(
        c.propagated_tags.iter().collect::<Vec<_>>(),
        [("_dd.p.dm", "-4"), ("_dd.p.usr.id", "baz64==")]
    );
    assert_eq!(
        c.tracestate.as_deref(),
        Some("dd=s:2;o:synthetics~web;t.dm:-4;t.usr.id:baz64~~;t.tid:6666666666666666,foo=1")
    );
    // No dd member: the priority is the sampled flag.
    let e = run(
        &[Style::TraceContext],
        &[
            (
                "traceparent",
                "00-00000000000000001111111111111111-2222222222222222-00",
            ),
            ("tracestate", "foo=1"),
        ],
    );
    assert_eq!(e.context.unwrap().sampling_priority, Some(0));
    // Never parse tracestate if traceparent failed.
    let e = run(
        &[Style::TraceContext],
        &[("traceparent", "00-0-0-01"), ("tracestate", "dd=s:2;o:rum")],
    );
    assert!(e.context.is_none());
}

/// DataDog/system-tests tests/parametric/test_headers_precedence.py and
/// dd-trace-py's `_resolve_contexts`: several formats on one request.
#[test]
fn precedence() {
    let h: &[(&str, &str)] = &[
        (
            "traceparent",
            "00-11111111111111110000000000000001-000000003ade68b1-01",
        ),
        ("tracestate", "dd=s:2;p:000000003ade68b1,foo=1"),
        ("x-datadog-trace-id", "1"),
        ("x-datadog-parent-id", "987654321"),
        ("x-datadog-tags", "_dd.p.tid=1111111111111111"),
        ("b3", "2222222222222222-0000000000000001-1"),
    ];
    // Default order: tracecontext first.
    let e = run(&Style::DEFAULT_ORDER, h);
    assert_eq!(e.format, Some(Style::TraceContext));
    let c = e.context.as_ref().unwrap();
    assert_eq!(c.trace_id.to_hex(), "11111111111111110000000000000001");
    assert_eq!(c.sampled, Some(true));
    assert_eq!(e.links.len(), 1);
    assert_eq!(
        e.links[0].trace_id.to_hex(),
        "00000000000000002222222222222222"
    );
    assert_eq!(e.links[0].attributes.get("context_headers"), Some("b3"));
    assert_eq!(
        e.links[0].attributes.get("reason"),
        Some("terminated_context")
    );
    assert_eq!(e.links[0].flags, 1);
    assert_eq!(e.links[0].tracestate, None);

    // A 64-bit primary is widened by a same-trace 128-bit context.
    let e = run(
        &[Style::Datadog, Style::TraceContext],
        &[
            ("x-datadog-trace-id", "1"),
            ("x-datadog-parent-id", "2"),
            (
                "traceparent",
                "00-11111111111111110000000000000001-0000000000000002-01",
            ),
        ],
    );
    assert!(e.links.is_empty());
    let c = e.context.unwrap();
    assert_eq!(c.trace_id.to_hex(), "11111111111111110000000000000001");
    assert_eq!(c.dd_parent_id, None);

    // extract_first: the first valid wins, nothing else is looked at.
    let e = extract(
        &h.iter().copied().collect(),
        &ExtractOptions {
            styles: vec![Style::B3, Style::TraceContext],
            extract_first: true,
        },
    );
    assert_eq!(e.format, Some(Style::B3));
    assert!(e.links.is_empty());
    assert_eq!(e.context.unwrap().tracestate, None);
}
