//! One module per format; each reads a [`Headers`] into a [`Found`] and writes
//! an [`Extracted`] back into headers.

pub mod b3;
pub mod baggage;
pub mod datadog;
pub mod jaeger;
pub mod ottrace;
pub mod sw8;
pub mod tracecontext;
pub mod xray;

use crate::context::{Baggage, Extracted, SpanContext, Style};
use crate::headers::Headers;

/// What one format found on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing usable (absent or malformed).
    Nothing,
    /// A sampling decision without ids.
    Decision(bool),
    /// A valid context, with the baggage this format carries beside it
    /// (`uberctx-*`, `ot-baggage-*`, `sw8-correlation`).
    Context(Box<SpanContext>, Baggage),
}

impl Found {
    pub fn context(&self) -> Option<&SpanContext> {
        match self {
            Found::Context(c, _) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn ctx(c: SpanContext) -> Found {
        Found::Context(Box::new(c), Baggage::new())
    }
}

/// Reads one style. `Style::Baggage` never yields a context: use
/// [`baggage::extract`].
pub fn extract_style(h: &Headers, style: Style) -> Found {
    match style {
        Style::TraceContext => tracecontext::extract(h),
        Style::Baggage => Found::Nothing,
        Style::B3 => b3::extract_single_then_multi(h),
        Style::B3Multi => b3::extract_multi(h),
        Style::Jaeger => jaeger::extract(h),
        Style::OtTrace => ottrace::extract(h),
        Style::Datadog => datadog::extract(h),
        Style::Sw8 => sw8::extract(h),
        Style::Xray => xray::extract(h),
    }
}

/// Writes one style. Formats that need ids write nothing without a context
/// (B3 writes a bare decision).
pub fn inject_style(e: &Extracted, style: Style, out: &mut Headers) {
    match style {
        Style::TraceContext => tracecontext::inject(e, out),
        Style::Baggage => baggage::inject(&e.baggage, out),
        Style::B3 => b3::inject_single(e, out),
        Style::B3Multi => b3::inject_multi(e, out),
        Style::Jaeger => jaeger::inject(e, out),
        Style::OtTrace => ottrace::inject(e, out),
        Style::Datadog => datadog::inject(e, out),
        Style::Sw8 => sw8::inject(e, out),
        Style::Xray => xray::inject(e, out),
    }
}

/// HTTP token characters (RFC 9110 `tchar`), the rule for baggage keys and
/// for header-name suffixes such as `uberctx-{key}`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Optional whitespace around HTTP list items.
pub(crate) fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}
