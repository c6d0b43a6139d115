//! Configuration of the `debug` exporter, as the collector's.

use serde::Deserialize;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

/// How much the debug exporter writes per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch with its counts.
    #[default]
    Basic,
    /// One line per span, data point or log record.
    Normal,
    /// Every field of every item.
    Detailed,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// `basic` (default), `normal` or `detailed`.
    pub verbosity: Verbosity,
    /// Batches written per second before sampling starts (default 2).
    pub sampling_initial: u64,
    /// After `sampling_initial` batches in a second, write every Nth
    /// (default 1: all of them).
    pub sampling_thereafter: u64,
    /// Write through weft's log (true, default, with sampling) or straight to
    /// stdout (false, no sampling).
    pub use_internal_logger: bool,
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            verbosity: Verbosity::Basic,
            sampling_initial: 2,
            sampling_thereafter: 1,
            use_internal_logger: true,
        }
    }
}

impl ComponentConfig for DebugConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.sampling_thereafter == 0 {
            return Err(ConfigFieldError::at(
                &["sampling_thereafter"],
                "`sampling_thereafter` must be at least 1",
            ));
        }
        Ok(())
    }
}
