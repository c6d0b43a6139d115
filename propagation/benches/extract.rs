//! Header extraction cost per format (ns/op): one request's headers, read
//! with that format alone; then the default multi-format extraction, which
//! is what a receiver or proxy pays per request.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use weft_propagation::{extract, ExtractOptions, Headers, Style};

/// A realistic request: a few unrelated headers around the context headers.
fn request(context: &[(&str, &str)]) -> Headers {
    let mut h: Headers = [
        ("host", "checkout.internal:8080"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .collect();
    for (k, v) in context {
        h.append(k, *v);
    }
    h
}

fn cases() -> Vec<(&'static str, Style, Headers)> {
    vec![
        (
            "tracecontext",
            Style::TraceContext,
            request(&[
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ("tracestate", "dd=s:2;o:rum;t.dm:-4;t.usr.id:baz64,congo=t61rcWkgMzE"),
            ]),
        ),
        ("baggage", Style::Baggage, request(&[("baggage", "userId=alice,serverNode=DF%2028,isProduction=false")])),
        ("b3", Style::B3, request(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")])),
        (
            "b3multi",
            Style::B3Multi,
            request(&[
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "1"),
            ]),
        ),
        (
            "jaeger",
            Style::Jaeger,
            request(&[("uber-trace-id", "a1ce929d0e0e4736a3ce929d0e0e4736:00f067aa0ba902b7:0:1"), ("uberctx-user", "alice")]),
        ),
        (
            "ottrace",
            Style::OtTrace,
            request(&[
                ("ot-tracer-traceid", "a3ce929d0e0e4736"),
                ("ot-tracer-spanid", "00f067aa0ba902b7"),
                ("ot-tracer-sampled", "true"),
            ]),
        ),
        (
            "datadog",
            Style::Datadog,
            request(&[
                ("x-datadog-trace-id", "13088165645273925489"),
                ("x-datadog-parent-id", "5678"),
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-origin", "synthetics"),
                ("x-datadog-tags", "_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4"),
            ]),
        ),
        (
            "sw8",
            Style::Sw8,
            request(&[
                ("sw8", "1-YTRlYzZmYzhjY2FiNGJiNGI2ODIwNjQ2OThjYzk3ZTYuNzQuMTYyMTgzODExMDQ1NTAwMDk=-YTRlYzZmYzhjY2FiNGJiNGI2ODIwNjQ2OThjYzk3ZTYuNzQuMTYyMTgzODExMDQ1NTAwMDg=-2-b25lbW9yZS1h-ZTFkMmZiYjYzYmJhNDMwNDk5YWY4OTVjMDQwZTMyZmVAMTkyLjE2OC4xLjEwMQ==-L29uZW1vcmUtYS9nZXQ=-MTkyLjE2OC4xLjEwMjo4MA=="),
                ("sw8-correlation", "dXNlci5pZA==:MTIzNDU="),
            ]),
        ),
        (
            "xray",
            Style::Xray,
            request(&[("x-amzn-trace-id", "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=1")]),
        ),
    ]
}

fn per_format(c: &mut Criterion) {
    let mut g = c.benchmark_group("extract");
    for (name, style, headers) in cases() {
        let opts = ExtractOptions::with_styles(&[style]);
        g.bench_function(name, |b| b.iter(|| extract(black_box(&headers), &opts)));
    }
    g.finish();
}

fn default_order(c: &mut Criterion) {
    let mut g = c.benchmark_group("extract_all_styles");
    let opts = ExtractOptions::default();
    let w3c = request(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )]);
    g.bench_function("w3c_only", |b| b.iter(|| extract(black_box(&w3c), &opts)));
    let merged = request(&[
        (
            "traceparent",
            "00-11111111111111110000000000000001-000000003ade68b1-01",
        ),
        ("tracestate", "dd=s:2;p:000000000000000a,foo=1"),
        ("x-datadog-trace-id", "1"),
        ("x-datadog-parent-id", "10"),
        ("x-datadog-tags", "_dd.p.tid=1111111111111111"),
    ]);
    g.bench_function("datadog_and_w3c", |b| {
        b.iter(|| extract(black_box(&merged), &opts))
    });
    let none = request(&[]);
    g.bench_function("no_context", |b| {
        b.iter(|| extract(black_box(&none), &opts))
    });
    g.finish();
}

criterion_group!(benches, per_format, default_order);
criterion_main!(benches);
