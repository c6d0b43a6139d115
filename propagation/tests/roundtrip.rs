//! Inject → extract round trips for every format, as examples and as
//! properties: any valid context survives, within what the format can carry
//! (OpenTracing sends 64-bit trace ids; W3C, Jaeger and SkyWalking have no
//! "decision deferred").

use proptest::prelude::*;
use weft_propagation::{
    extract, inject, Baggage, ExtractOptions, Extracted, Headers, SpanContext, SpanId, Style,
    TraceId,
};

const CONTEXT_STYLES: [Style; 8] = [
    Style::TraceContext,
    Style::Datadog,
    Style::B3,
    Style::B3Multi,
    Style::Jaeger,
    Style::OtTrace,
    Style::Xray,
    Style::Sw8,
];

fn ctx(trace: u128, span: u64, sampled: Option<bool>) -> SpanContext {
    let mut c = SpanContext::new(TraceId::from_u128(trace), SpanId::from_u64(span)).unwrap();
    c.sampled = sampled;
    c
}

fn round_trip(e: &Extracted, style: Style) -> (Headers, Extracted) {
    let h = inject(e, &[style, Style::Baggage]);
    let back = extract(&h, &ExtractOptions::with_styles(&[style]));
    (h, back)
}

/// What the format can carry of the trace id.
fn carried_trace(style: Style, t: TraceId) -> TraceId {
    match style {
        Style::OtTrace => TraceId::from_u64(t.low()),
        _ => t,
    }
}

/// What the format can carry of the decision.
fn carried_sampled(style: Style, s: Option<bool>) -> Option<bool> {
    match style {
        Style::TraceContext | Style::Jaeger | Style::Sw8 => Some(s.unwrap_or(false)),
        _ => s,
    }
}

fn check(style: Style, trace: u128, span: u64, sampled: Option<bool>) -> Result<(), TestCaseError> {
    let c = ctx(trace, span, sampled);
    let e = Extracted::from_context(None, c.clone());
    let (h, back) = round_trip(&e, style);
    let got = back
        .context
        .ok_or_else(|| TestCaseError::fail(format!("{style}: nothing extracted from {h:?}")))?;
    prop_assert_eq!(
        got.trace_id,
        carried_trace(style, c.trace_id),
        "{} {:?}",
        style,
        h
    );
    prop_assert_eq!(got.span_id, c.span_id, "{} {:?}", style, h);
    prop_assert_eq!(
        got.sampled,
        carried_sampled(style, sampled),
        "{} {:?}",
        style,
        h
    );
    prop_assert_eq!(back.format, Some(style));
    Ok(())
}

#[test]
fn examples_every_format() {
    for style in CONTEXT_STYLES {
        for sampled in [None, Some(true), Some(false)] {
            check(
                style,
                0x4bf92f3577b34da6a3ce929d0e0e4736,
                0x00f067aa0ba902b7,
                sampled,
            )
            .unwrap();
            check(style, 0xa3ce929d0e0e4736, 1, sampled).unwrap();
            check(style, u128::MAX, u64::MAX, sampled).unwrap();
        }
    }
}

#[test]
fn exact_headers_written() {
    let mut c = ctx(
        0x4bf92f3577b34da6a3ce929d0e0e4736,
        0x00f067aa0ba902b7,
        Some(true),
    );
    c.sampling_priority = Some(1);
    let e = Extracted::from_context(None, c);
    let h = inject(&e, &CONTEXT_STYLES);
    let got: Vec<(&str, &str)> = h.iter().collect();
    assert_eq!(
        got,
        [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("x-datadog-trace-id", "11803532876627986230"),
            ("x-datadog-parent-id", "67667974448284343"),
            ("x-datadog-sampling-priority", "1"),
            ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6"),
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
            ("uber-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"),
            ("ot-tracer-traceid", "a3ce929d0e0e4736"),
            ("ot-tracer-spanid", "00f067aa0ba902b7"),
            ("ot-tracer-sampled", "true"),
            ("x-amzn-trace-id", "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"),
            (
                "sw8",
                "1-NGJmOTJmMzU3N2IzNGRhNmEzY2U5MjlkMGUwZTQ3MzY=-MDBmMDY3YWEwYmE5MDJiNw==-0-dW5rbm93bg==-dW5rbm93bg==-dW5rbm93bg==-dW5rbm93bg=="
            ),
        ]
    );
    // B3 debug goes as `d` / X-B3-Flags; a bare decision without ids too.
    let mut c = ctx(0xa3ce929d0e0e4736, 0x00f067aa0ba902b7, Some(true));
    c.debug = true;
    let h = inject(
        &Extracted::from_context(None, c),
        &[Style::B3, Style::B3Multi],
    );
    assert_eq!(h.get("b3"), Some("a3ce929d0e0e4736-00f067aa0ba902b7-d"));
    assert_eq!(
        (h.get("x-b3-flags"), h.get("x-b3-sampled")),
        (Some("1"), None)
    );
    let bare = Extracted {
        decision: Some(false),
        ..Default::default()
    };
    let h = inject(
        &bare,
        &[
            Style::B3,
            Style::B3Multi,
            Style::TraceContext,
            Style::Datadog,
        ],
    );
    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        [("b3", "0"), ("x-b3-sampled", "0")]
    );
}

#[test]
fn datadog_details_survive_tracecontext_and_datadog() {
    let mut c = ctx(0x11111111111111110000000000000001, 0x3ade68b1, Some(true));
    c.sampling_priority = Some(2);
    c.origin = Some("synthetics=web".into());
    c.propagated_tags.insert("_dd.p.dm", "-4");
    c.propagated_tags.insert("_dd.p.usr.id", "baz64==");
    c.dd_parent_id = Some(SpanId::from_u64(10));
    c.tracestate = Some("dd=s:1,foo=1,bar=2".into());
    let e = Extracted::from_context(None, c.clone());

    let (h, back) = round_trip(&e, Style::TraceContext);
    assert_eq!(
        h.get("tracestate"),
        Some("dd=s:2;o:synthetics~web;p:000000000000000a;t.dm:-4;t.usr.id:baz64~~,foo=1,bar=2")
    );
    let got = back.context.unwrap();
    assert_eq!(got.sampling_priority, Some(2));
    assert_eq!(got.origin, c.origin);
    assert_eq!(got.propagated_tags, c.propagated_tags);
    assert_eq!(got.dd_parent_id, c.dd_parent_id);

    let (h, back) = round_trip(&e, Style::Datadog);
    assert_eq!(
        h.get("x-datadog-tags"),
        Some("_dd.p.tid=1111111111111111,_dd.p.dm=-4,_dd.p.usr.id=baz64==")
    );
    let got = back.context.unwrap();
    assert_eq!(got.trace_id, c.trace_id);
    assert_eq!(got.sampling_priority, Some(2));
    assert_eq!(got.origin, c.origin);
    assert_eq!(got.propagated_tags, c.propagated_tags);

    // Pure W3C traffic: no dd member is added, the tracestate is untouched.
    let mut w = ctx(0x11111111111111110000000000000001, 0x3ade68b1, Some(true));
    w.sampling_priority = Some(1);
    w.tracestate = Some("foo=1".into());
    let (h, _) = round_trip(&Extracted::from_context(None, w), Style::TraceContext);
    assert_eq!(h.get("tracestate"), Some("foo=1"));
}

#[test]
fn sw8_native_ids_are_sent_back_as_received() {
    let sw8 = "1-YTRlYzZmYzhjY2FiNGJiNGI2ODIwNjQ2OThjYzk3ZTYuNzQuMTYyMTgzODExMDQ1NTAwMDk=-YTRlYzZmYzhjY2FiNGJiNGI2ODIwNjQ2OThjYzk3ZTYuNzQuMTYyMTgzODExMDQ1NTAwMDg=-2-b25lbW9yZS1h-ZTFkMmZiYjYzYmJhNDMwNDk5YWY4OTVjMDQwZTMyZmVAMTkyLjE2OC4xLjEwMQ==-L29uZW1vcmUtYS9nZXQ=-MTkyLjE2OC4xLjEwMjo4MA==";
    let h: Headers = [("sw8", sw8), ("sw8-correlation", "dXNlci5pZA==:MTIzNDU=")]
        .into_iter()
        .collect();
    let e = extract(&h, &ExtractOptions::with_styles(&[Style::Sw8]));
    let out = inject(&e, &[Style::Sw8]);
    assert_eq!(out.get("sw8"), Some(sw8));
    assert_eq!(out.get("sw8-correlation"), Some("dXNlci5pZA==:MTIzNDU="));
}

fn baggage_of(style: Style, b: &Baggage) -> Baggage {
    let c = ctx(
        0x4bf92f3577b34da6a3ce929d0e0e4736,
        0x00f067aa0ba902b7,
        Some(true),
    );
    let e = Extracted {
        baggage: b.clone(),
        ..Extracted::from_context(None, c)
    };
    let h = inject(&e, &[style]);
    extract(&h, &ExtractOptions::with_styles(&[style])).baggage
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_context_survives(
        trace in 1u128..,
        span in 1u64..,
        sampled in proptest::option::of(any::<bool>()),
        style in proptest::sample::select(CONTEXT_STYLES.to_vec()),
    ) {
        check(style, trace, span, sampled)?;
    }

    #[test]
    fn sixty_four_bit_trace_ids_survive_everywhere(
        low in 1u64..,
        span in 1u64..,
        style in proptest::sample::select(CONTEXT_STYLES.to_vec()),
    ) {
        check(style, low as u128, span, Some(true))?;
    }

    #[test]
    fn w3c_baggage_survives(entries in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9_.-]{0,12}", any::<String>()), 0..8)) {
        let b: Baggage = entries.into_iter().collect();
        let h = inject(&Extracted { baggage: b.clone(), ..Default::default() }, &[Style::Baggage]);
        let back = extract(&h, &ExtractOptions::with_styles(&[Style::Baggage])).baggage;
        // Entries that do not fit the 8192-byte limit are left out on injection.
        if weft_propagation::formats::baggage::encode(&b).len() < 8000 {
            prop_assert_eq!(back, b);
        }
    }

    #[test]
    fn jaeger_and_ot_baggage_survive(entries in proptest::collection::vec(("[a-z][a-z0-9_]{0,12}", "[ -~]{0,40}"), 0..6)) {
        let b: Baggage = entries.into_iter().collect();
        prop_assert_eq!(baggage_of(Style::Jaeger, &b), b.clone());
        prop_assert_eq!(baggage_of(Style::OtTrace, &b), b.clone());
        let first3: Baggage = b.iter().take(3).collect();
        prop_assert_eq!(baggage_of(Style::Sw8, &b), first3);
    }

    #[test]
    fn datadog_origin_and_tags_survive(
        origin in "[!-~][ -~]{0,30}",
        tags in proptest::collection::vec(("[a-z][a-z0-9_.]{0,10}", "[!-+\\--~]{1,20}"), 0..4),
        priority in -1i32..=3,
    ) {
        let mut c = ctx(0x11111111111111110000000000000001, 7, Some(priority > 0));
        c.sampling_priority = Some(priority);
        c.origin = Some(origin);
        for (k, v) in tags {
            c.propagated_tags.insert(format!("_dd.p.{k}"), v);
        }
        let e = Extracted::from_context(None, c.clone());
        let (_, back) = round_trip(&e, Style::Datadog);
        let got = back.context.unwrap();
        prop_assert_eq!(got.sampling_priority, c.sampling_priority);
        prop_assert_eq!(got.origin, c.origin);
        // Tag sets larger than 512 bytes are not sent.
        if !got.propagated_tags.is_empty() || c.propagated_tags.is_empty() {
            prop_assert_eq!(got.propagated_tags, c.propagated_tags);
        }
    }
}
