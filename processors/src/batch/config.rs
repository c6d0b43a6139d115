//! `batch` processor config, with the collector's keys and defaults.

use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items (spans, metric points, log records) after which a batch is sent
    /// regardless of the timeout. Default 8192; 0 sends on timeout only.
    pub send_batch_size: usize,
    /// Upper bound on a sent batch; larger batches are split. 0 (default) means
    /// no bound. Must be 0 or at least `send_batch_size`.
    pub send_batch_max_size: usize,
    /// Time after which a non-empty batch is sent regardless of size. Default 200ms;
    /// 0 sends every incoming batch at once (only splitting applies).
    #[serde(with = "weft_pipeline::config::duration")]
    pub timeout: Duration,
    /// Batching per client metadata value is not supported yet; only an empty list is accepted.
    pub metadata_keys: Vec<String>,
    /// Accepted for compatibility (used with metadata_keys).
    pub metadata_cardinality_limit: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
        }
    }
}

impl ComponentConfig for BatchConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(ConfigFieldError::at(
                &["send_batch_max_size"],
                "send_batch_max_size must be greater or equal to send_batch_size",
            ));
        }
        if !self.metadata_keys.is_empty() {
            return Err(ConfigFieldError::at(
                &["metadata_keys"],
                "batching by metadata_keys is not supported by weft yet",
            ));
        }
        Ok(())
    }
}
