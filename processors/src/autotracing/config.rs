//! `autotracing` processor config: windows, tolerances and the caps that bound memory.

use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

/// How an eBPF span and the SDK span of the same call relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SdkMerge {
    /// Both are kept: the eBPF client span becomes the child of the SDK client span
    /// whose id it carried, and the SDK server span becomes the child of the eBPF
    /// server span that received its parent's id (the network time stays visible).
    #[default]
    Child,
    /// The SDK span stands for the call: the eBPF span of the same call is dropped
    /// (counted) and its relatives are attached to the SDK span instead.
    Merge,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutotracingConfig {
    /// Grace period: a span waits this long after it arrived before its parent is
    /// chosen, so every candidate (parents end after their children) has arrived; a
    /// trace leaves once all its spans have waited this long.
    #[serde(with = "weft_pipeline::config::duration")]
    pub window: Duration,
    /// How long a trace whose spans have all been decided still waits for children
    /// that arrive late (SDK exporters batch their spans, so an SDK span can arrive
    /// after the eBPF span of the same call was decided).
    #[serde(with = "weft_pipeline::config::duration")]
    pub grace: Duration,
    /// Upper bound on how long a trace is held from its first span: past it, the
    /// spans already decided leave (counted) and later ones follow under the same
    /// trace id. Also how long emitted spans stay known, so a late child joins its
    /// trace and a late parent links to the child it can no longer adopt.
    #[serde(with = "weft_pipeline::config::duration")]
    pub max_hold: Duration,
    /// A parent and child whose starts lie further apart are never linked.
    #[serde(with = "weft_pipeline::config::duration")]
    pub max_transaction_time: Duration,
    /// Upper bound on spans held waiting; past it the oldest traces leave early
    /// (counted). Emitted spans remembered for late relatives are bounded by the
    /// same number (the oldest are forgotten first).
    pub max_spans_in_flight: usize,
    /// A trace never grows past this many spans: an edge that would is refused
    /// (counted), so one mis-linked connection cannot make a mega-trace.
    pub max_spans_per_trace: usize,
    /// Children one span can be given by stitching; further ones are refused (counted).
    pub max_children_per_span: usize,
    /// Slack when one span must lie inside another in time (clock conversion,
    /// syscall boundaries, SDK clocks against the kernel's).
    #[serde(with = "weft_pipeline::config::duration")]
    pub clock_tolerance: Duration,
    /// Request-id headers, in order. eBPF spans carry the receiver's captured
    /// request id; SDK spans are read through `http.request.header.<name>` /
    /// `http.response.header.<name>` attributes.
    pub request_id_headers: Vec<String>,
    /// How an eBPF span and the SDK span of the same call relate: `child` or `merge`.
    pub sdk_merge: SdkMerge,
    /// Keep the `weft.*` correlation attributes (and `weft.autotracing.rule`, the
    /// rule that chose each span's parent) on exported spans.
    pub keep_correlation_attributes: bool,
    /// T4: add span links (never parents) from an unlinked eBPF client span to the
    /// server spans of its process that were open when it started, with a
    /// `weft.autotracing.confidence` attribute. Off by default.
    pub inference: bool,
}

impl Default for AutotracingConfig {
    fn default() -> Self {
        AutotracingConfig {
            window: Duration::from_secs(2),
            grace: Duration::from_secs(2),
            max_hold: Duration::from_secs(30),
            max_transaction_time: Duration::from_secs(60),
            max_spans_in_flight: 200_000,
            max_spans_per_trace: 10_000,
            max_children_per_span: 1_000,
            clock_tolerance: Duration::from_millis(50),
            request_id_headers: vec!["X-Request-ID".to_string()],
            sdk_merge: SdkMerge::Child,
            keep_correlation_attributes: false,
            inference: false,
        }
    }
}

impl ComponentConfig for AutotracingConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.window.is_zero() {
            return Err(ConfigFieldError::at(
                &["window"],
                "must be greater than zero: spans need time for their relatives to arrive",
            ));
        }
        let needed = self.window.checked_add(self.grace);
        if needed.is_none_or(|n| self.max_hold < n) {
            return Err(ConfigFieldError::at(
                &["max_hold"],
                "must be at least window + grace",
            ));
        }
        if self.max_transaction_time.is_zero() {
            return Err(ConfigFieldError::at(
                &["max_transaction_time"],
                "must be greater than zero",
            ));
        }
        for (key, v) in [
            ("max_spans_in_flight", self.max_spans_in_flight),
            ("max_spans_per_trace", self.max_spans_per_trace),
            ("max_children_per_span", self.max_children_per_span),
        ] {
            if v == 0 {
                return Err(ConfigFieldError::at(&[key], "must be greater than zero"));
            }
        }
        if self.clock_tolerance > Duration::from_secs(10) {
            return Err(ConfigFieldError::at(
                &["clock_tolerance"],
                "must be at most 10s: a wider tolerance links spans that merely overlap",
            ));
        }
        for (i, h) in self.request_id_headers.iter().enumerate() {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !ok {
                return Err(ConfigFieldError::at(
                    &["request_id_headers", &i.to_string()],
                    format!("{h:?} is not an HTTP header name"),
                ));
            }
        }
        Ok(())
    }
}
