//! Trace-context propagation: reads and writes the W3C, B3, Jaeger,
//! OpenTracing, Datadog, SkyWalking and X-Ray headers into one canonical
//! context, and reconciles several formats arriving on one request.
//!
//! Pure: no I/O, no clocks, no allocation beyond the values returned. Every
//! parser accepts arbitrary input and never panics (the crate is fuzzed).
//!
//! ```
//! use weft_propagation::{extract, ExtractOptions, Headers};
//! let h: Headers = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
//!     .into_iter()
//!     .collect();
//! let e = extract(&h, &ExtractOptions::default());
//! assert_eq!(e.context.unwrap().trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! ```

pub mod cli;
pub mod context;
pub mod formats;
pub mod headers;
pub mod id;

pub use cli::{convert_json, extract_json, extract_json_with, inject_json, CliInputError};
pub use context::{
    Baggage, Extracted, OrderedMap, SpanContext, SpanLink, Style, Sw8Parent, UnknownStyle,
};
pub use formats::{extract_style, inject_style, Found};
pub use headers::{Headers, One};
pub use id::{format_dd_tid, parse_dd_decimal, parse_dd_tid, SpanId, TraceId};

/// Which formats to read, in which order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Formats in precedence order; `Style::Baggage` may appear anywhere (it
    /// never competes for the primary context).
    pub styles: Vec<Style>,
    /// Stop at the first format that yields a context: no enrichment, no
    /// links (the Datadog tracers' `DD_TRACE_PROPAGATION_EXTRACT_FIRST`).
    pub extract_first: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            styles: Style::DEFAULT_ORDER.to_vec(),
            extract_first: false,
        }
    }
}

impl ExtractOptions {
    pub fn with_styles(styles: &[Style]) -> Self {
        ExtractOptions {
            styles: styles.to_vec(),
            extract_first: false,
        }
    }
}

/// Reads every configured format and reconciles them (the Datadog tracers'
/// rule):
/// - the first format, in order, that yields a valid context is the primary;
/// - a later context of the same trace (only the low 64 bits are compared
///   when either side has a zero upper half) enriches it: a 128-bit id
///   replaces a 64-bit one; from `tracecontext`, the tracestate is copied and,
///   when the parent span ids differ, the W3C parent wins and the replaced one
///   is kept as `dd_parent_id` (the `dd=` member's `p:` when present,
///   otherwise the Datadog headers' parent);
/// - a later context of another trace becomes a span link with
///   `reason=terminated_context` and `context_headers=<style>`;
/// - baggage: the `baggage` header (when `Style::Baggage` is configured), then
///   the format-specific baggage of the primary and the enriching contexts for
///   keys not already set.
pub fn extract(h: &Headers, opts: &ExtractOptions) -> Extracted {
    let mut found: Vec<(Style, SpanContext, Baggage)> = Vec::new();
    let mut decision = None;
    for &style in opts.styles.iter().filter(|s| s.carries_context()) {
        match extract_style(h, style) {
            Found::Context(c, b) => {
                found.push((style, *c, b));
                if opts.extract_first {
                    break;
                }
            }
            Found::Decision(d) => {
                decision.get_or_insert(d);
            }
            Found::Nothing => {}
        }
    }

    let mut out = Extracted::default();
    if opts.styles.contains(&Style::Baggage) {
        out.baggage = formats::baggage::extract(h);
    }
    let mut found = found.into_iter();
    let Some((primary_style, mut primary, primary_bag)) = found.next() else {
        out.decision = decision;
        return out;
    };
    for (k, v) in primary_bag.iter() {
        out.baggage.insert_missing(k, v);
    }
    let rest: Vec<_> = found.collect();
    let dd_parent = rest
        .iter()
        .find(|(s, c, _)| *s == Style::Datadog && c.trace_id.same_trace(primary.trace_id))
        .map(|(_, c, _)| c.span_id)
        .or((primary_style == Style::Datadog).then_some(primary.span_id));

    for (style, c, bag) in rest {
        if !c.trace_id.same_trace(primary.trace_id) {
            let duplicate = out
                .links
                .iter()
                .any(|l| l.trace_id == c.trace_id && l.span_id == c.span_id);
            if !duplicate {
                out.links.push(SpanLink {
                    trace_id: c.trace_id,
                    span_id: c.span_id,
                    flags: u8::from(c.sampled == Some(true)),
                    tracestate: if style == Style::TraceContext {
                        c.tracestate.clone()
                    } else {
                        None
                    },
                    attributes: [
                        ("reason", "terminated_context"),
                        ("context_headers", style.name()),
                    ]
                    .into_iter()
                    .collect(),
                });
            }
            continue;
        }
        if primary.trace_id.is_64bit() && !c.trace_id.is_64bit() {
            primary.trace_id = c.trace_id;
        }
        for (k, v) in bag.iter() {
            out.baggage.insert_missing(k, v);
        }
        if style == Style::TraceContext {
            if c.tracestate.is_some() {
                primary.tracestate = c.tracestate.clone();
            }
            if c.span_id != primary.span_id {
                primary.dd_parent_id = c.dd_parent_id.or(dd_parent);
                primary.span_id = c.span_id;
            }
        }
    }
    out.format = Some(primary_style);
    out.context = Some(primary);
    out
}

/// Writes `e` in every given style (in order; a later style overwrites a
/// header an earlier one wrote, which no two styles share).
pub fn inject(e: &Extracted, styles: &[Style]) -> Headers {
    let mut out = Headers::new();
    inject_into(e, styles, &mut out);
    out
}

/// Like [`inject`], into existing headers (replacing the headers written).
pub fn inject_into(e: &Extracted, styles: &[Style], out: &mut Headers) {
    for &style in styles {
        inject_style(e, style, out);
    }
}
