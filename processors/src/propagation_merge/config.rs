//! `propagation_merge` processor config.

use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PropagationMergeConfig {
    /// How long spans of a Datadog trace with a 64-bit id wait for a span (or a
    /// captured header) that shows the full 128-bit id with the same low 64 bits.
    /// After it they leave unchanged, counted as unmatched. 0 disables waiting:
    /// only ids already learned are used.
    #[serde(with = "weft_pipeline::config::duration")]
    pub window: Duration,
    /// How long a learned low-64 → 128-bit mapping is remembered, so spans that
    /// arrive after their trace was seen are still re-keyed (counted as late).
    #[serde(with = "weft_pipeline::config::duration")]
    pub index_ttl: Duration,
    /// Upper bound on remembered mappings (oldest forgotten first).
    pub max_index_entries: usize,
    /// Upper bound on spans held while waiting; beyond it the oldest trace
    /// leaves early, unchanged, counted as evicted.
    pub max_buffered_spans: usize,
    /// Keep the Datadog tracer's ids as `datadog.trace_id` / `datadog.span_id`
    /// decimal string attributes on every Datadog span.
    pub keep_original_ids: bool,
}

impl Default for PropagationMergeConfig {
    fn default() -> Self {
        PropagationMergeConfig {
            window: Duration::from_secs(5),
            index_ttl: Duration::from_secs(300),
            max_index_entries: 100_000,
            max_buffered_spans: 100_000,
            keep_original_ids: true,
        }
    }
}

impl ComponentConfig for PropagationMergeConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.max_index_entries == 0 {
            return Err(ConfigFieldError::at(
                &["max_index_entries"],
                "must be greater than zero",
            ));
        }
        if !self.window.is_zero() && self.max_buffered_spans == 0 {
            return Err(ConfigFieldError::at(
                &["max_buffered_spans"],
                "must be greater than zero while window is set",
            ));
        }
        if self.index_ttl < self.window {
            return Err(ConfigFieldError::at(
                &["index_ttl"],
                "index_ttl must be at least window",
            ));
        }
        Ok(())
    }
}
