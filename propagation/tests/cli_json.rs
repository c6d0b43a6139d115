//! The JSON shapes of `weft context extract|inject|convert`, exactly.

use weft_propagation::{convert_json, extract_json, inject_json, Style};

#[test]
fn extract_prints_the_canonical_shape() {
    let out = extract_json(
        r#"{"TraceParent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": ["dd=s:2;o:rum", "congo=t61rcWkgMzE"],
            "baggage": "userId=alice,serverNode=DF%2028",
            "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}"#,
        None,
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"valid":true,"format":"tracecontext","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","sampled":true,"sampling_priority":2,"origin":"rum","tracestate":"dd=s:2;o:rum,congo=t61rcWkgMzE","baggage":{"userId":"alice","serverNode":"DF 28"},"links":[{"trace_id":"80f198ee56343ba864fe8b2a57d3eff7","span_id":"e457b5a2e4d86bd1","attributes":{"reason":"terminated_context","context_headers":"b3"}}]}"#
    );
}

#[test]
fn extract_invalid_is_valid_false() {
    assert_eq!(
        extract_json(r#"{"x-b3-sampled": "0", "traceparent": "ff-x"}"#, None).unwrap(),
        r#"{"valid":false,"format":null,"trace_id":null,"span_id":null,"sampled":false,"sampling_priority":null,"origin":null,"tracestate":null,"baggage":{},"links":[]}"#
    );
    assert_eq!(
        extract_json("{}", None).unwrap(),
        r#"{"valid":false,"format":null,"trace_id":null,"span_id":null,"sampled":null,"sampling_priority":null,"origin":null,"tracestate":null,"baggage":{},"links":[]}"#
    );
}

#[test]
fn extract_honours_styles_and_numbers() {
    let input = r#"{"x-datadog-trace-id": 13088165645273925489, "x-datadog-parent-id": "5678",
                    "x-datadog-sampling-priority": 1, "x-datadog-origin": "synthetics",
                    "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-00f067aa0ba902b7-00"}"#;
    let out = extract_json(input, Some(&[Style::Datadog, Style::TraceContext])).unwrap();
    assert_eq!(
        out,
        r#"{"valid":true,"format":"datadog","trace_id":"0000000000000000b5a2814f70060771","span_id":"000000000000162e","sampled":true,"sampling_priority":1,"origin":"synthetics","tracestate":null,"baggage":{},"links":[{"trace_id":"80f198ee56343ba864fe8b2a57d3eff7","span_id":"00f067aa0ba902b7","attributes":{"reason":"terminated_context","context_headers":"tracecontext"}}]}"#
    );
    let only_w3c = extract_json(input, Some(&[Style::TraceContext])).unwrap();
    assert!(
        only_w3c.starts_with(r#"{"valid":true,"format":"tracecontext""#),
        "{only_w3c}"
    );
}

#[test]
fn inject_prints_headers() {
    let ctx = r#"{"valid":true,"format":"tracecontext","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","sampled":true,"sampling_priority":2,"origin":"rum","tracestate":"dd=s:2;o:rum;t.dm:-4,congo=t61rcWkgMzE","baggage":{"userId":"alice"},"links":[]}"#;
    assert_eq!(
        inject_json(
            ctx,
            Some(&[Style::TraceContext, Style::Datadog, Style::Baggage])
        )
        .unwrap(),
        r#"{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"dd=s:2;o:rum;t.dm:-4,congo=t61rcWkgMzE","x-datadog-trace-id":"11803532876627986230","x-datadog-parent-id":"67667974448284343","x-datadog-sampling-priority":"2","x-datadog-origin":"rum","x-datadog-tags":"_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-4","baggage":"userId=alice"}"#
    );
    assert_eq!(
        inject_json(
            r#"{"trace_id":"a3ce929d0e0e4736","span_id":"1","sampled":null}"#,
            Some(&[Style::B3, Style::Jaeger])
        )
        .unwrap(),
        r#"{"b3":"a3ce929d0e0e4736-0000000000000001","uber-trace-id":"0000000000000000a3ce929d0e0e4736:0000000000000001:0:0"}"#
    );
    // The example in docs/propagation.md.
    assert_eq!(
        inject_json(
            r#"{"trace_id":"a3ce929d0e0e4736","span_id":"1","sampled":true}"#,
            Some(&[Style::B3, Style::Datadog])
        )
        .unwrap(),
        r#"{"b3":"a3ce929d0e0e4736-0000000000000001-1","x-datadog-trace-id":"11803532876627986230","x-datadog-parent-id":"1","x-datadog-sampling-priority":"1"}"#
    );
    assert_eq!(
        inject_json(r#"{"sampled":false}"#, Some(&[Style::B3])).unwrap(),
        r#"{"b3":"0"}"#
    );
    for bad in [
        r#"{"trace_id":"zz","span_id":"1"}"#,
        r#"{"trace_id":"1"}"#,
        r#"{"trace_id":"0","span_id":"1"}"#,
        r#"{"trace_id":"1","span_id":"1","tracestate":"BAD=1"}"#,
        r#"{"trace_id":"1","span_id":"1","unknown":1}"#,
    ] {
        assert!(inject_json(bad, None).is_err(), "{bad}");
    }
}

#[test]
fn extract_inject_extract_is_stable() {
    let headers = r#"{"x-datadog-trace-id": "1", "x-datadog-parent-id": "22", "x-datadog-sampling-priority": "2",
                      "x-datadog-tags": "_dd.p.tid=1111111111111111,_dd.p.dm=-3", "x-datadog-origin": "rum",
                      "baggage": "a=1"}"#;
    let first = extract_json(headers, None).unwrap();
    let styles = [Style::TraceContext, Style::Baggage];
    let injected = inject_json(&first, Some(&styles)).unwrap();
    let second = extract_json(&injected, None).unwrap();
    assert_eq!(
        second,
        r#"{"valid":true,"format":"tracecontext","trace_id":"11111111111111110000000000000001","span_id":"0000000000000016","sampled":true,"sampling_priority":2,"origin":"rum","tracestate":"dd=s:2;o:rum","baggage":{"a":"1"},"links":[]}"#
    );
    assert_eq!(
        extract_json(&inject_json(&second, Some(&styles)).unwrap(), None).unwrap(),
        second
    );
}

#[test]
fn convert_both_ways() {
    let dd_out = r#"{"otel":{"trace_id":"80000000000000008000000000000000","span_id":"000000000000162e"},"datadog":{"trace_id":"9223372036854775808","span_id":"5678","_dd.p.tid":"8000000000000000"}}"#;
    assert_eq!(
        convert_json(r#"{"trace_id": "9223372036854775808", "span_id": "5678", "_dd.p.tid": "8000000000000000"}"#).unwrap(),
        dd_out
    );
    assert_eq!(
        convert_json(
            r#"{"trace_id": "80000000000000008000000000000000", "span_id": "000000000000162e"}"#
        )
        .unwrap(),
        dd_out
    );
    assert_eq!(
        convert_json(r#"{"trace_id": 13088165645273925489, "span_id": 5678}"#).unwrap(),
        r#"{"otel":{"trace_id":"0000000000000000b5a2814f70060771","span_id":"000000000000162e"},"datadog":{"trace_id":"13088165645273925489","span_id":"5678","_dd.p.tid":null}}"#
    );
    assert_eq!(
        convert_json(r#"{"span_id": "00f067aa0ba902b7"}"#).unwrap(),
        r#"{"otel":{"trace_id":null,"span_id":"00f067aa0ba902b7"},"datadog":{"trace_id":null,"span_id":"67667974448284343","_dd.p.tid":null}}"#
    );
    assert_eq!(
        convert_json(r#"{"span_id": "1234", "from": "otel"}"#).unwrap(),
        r#"{"otel":{"trace_id":null,"span_id":"0000000000001234"},"datadog":{"trace_id":null,"span_id":"4660","_dd.p.tid":null}}"#
    );
    for bad in [
        "{}",
        r#"{"trace_id": "-1"}"#,
        r#"{"trace_id": "0"}"#,
        r#"{"trace_id": "18446744073709551616"}"#,
        r#"{"trace_id": "1", "_dd.p.tid": "AABBCCDD00112233"}"#,
        r#"{"trace_id": "zz", "from": "otel"}"#,
        r#"{"trace_id": "1", "from": "zipkin"}"#,
        r#"{"trace_id": "1", "other": 1}"#,
    ] {
        assert!(convert_json(bad).is_err(), "{bad}");
    }
}
