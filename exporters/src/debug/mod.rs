//! The `debug` exporter: writes what it receives to weft's log (or stdout),
//! as a summary, one line per item, or in full.
//!
//! It runs on the exporter helper with the queue and retries off: writing
//! cannot fail in a way a retry would fix, and the caller sees each batch
//! written before `consume` returns.

pub mod config;
pub mod text;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_yaml_ng::Value;
use weft_pipeline::exporterhelper::{
    ExportClient, ExportError, QueueSettings, QueuedExporter, RetrySettings, TimeoutSettings,
};
use weft_pipeline::{
    parse_config, ComponentError, ConfigFieldError, Exporter, ExporterFactory, Payload, Settings,
    Signal,
};

use crate::common::config_error;
use config::{DebugConfig, Verbosity};

/// Factory for `debug`.
pub struct DebugFactory;

impl ExporterFactory for DebugFactory {
    fn type_name(&self) -> &'static str {
        "debug"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<DebugConfig>(raw).map(|_| ())
    }

    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError> {
        let cfg = parse_config::<DebugConfig>(raw).map_err(config_error)?;
        let client = DebugClient::new(settings.id.to_string(), cfg);
        Ok(Arc::new(QueuedExporter::new(
            &settings,
            QueueSettings::disabled(),
            RetrySettings::disabled(),
            TimeoutSettings::none(),
            Arc::new(client),
        )))
    }
}

/// Per-second sampling of output, as the collector's logger samples: the
/// first `initial` batches of each second, then every `thereafter`-th.
struct Sampler {
    initial: u64,
    thereafter: u64,
    window: Mutex<(Instant, u64)>,
}

impl Sampler {
    fn admit(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        w.1 += 1;
        let n = w.1;
        n <= self.initial || (n - self.initial).is_multiple_of(self.thereafter)
    }
}

/// Renders payloads and writes them out.
pub struct DebugClient {
    id: String,
    cfg: DebugConfig,
    sampler: Sampler,
}

impl DebugClient {
    pub fn new(id: String, cfg: DebugConfig) -> DebugClient {
        DebugClient {
            id,
            sampler: Sampler {
                initial: cfg.sampling_initial,
                thereafter: cfg.sampling_thereafter.max(1),
                window: Mutex::new((Instant::now(), 0)),
            },
            cfg,
        }
    }

    /// The text written for one payload.
    pub fn render(&self, payload: &Payload) -> String {
        let summary = text::summary(payload);
        match self.cfg.verbosity {
            Verbosity::Basic => summary,
            Verbosity::Normal => format!("{summary}\n{}", text::normal(payload)),
            Verbosity::Detailed => format!("{summary}\n{}", text::detailed(payload)),
        }
    }
}

#[async_trait]
impl ExportClient for DebugClient {
    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        if self.cfg.use_internal_logger {
            if self.sampler.admit() {
                tracing::info!(exporter = %self.id, "{}", self.render(payload));
            }
            return Ok(());
        }
        let mut text = self.render(payload);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        // Output that cannot be written is not worth failing the pipeline for.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{exporter_value, settings, trace_batch, yaml};
    use weft_pipeline::Telemetry;

    #[test]
    fn config_keys_and_defaults() {
        let cfg: DebugConfig = parse_config(&yaml("{}")).unwrap();
        assert_eq!(cfg, DebugConfig::default());
        assert_eq!(cfg.verbosity, Verbosity::Basic);
        let cfg: DebugConfig = parse_config(&yaml(
            "{verbosity: detailed, sampling_initial: 5, sampling_thereafter: 200}",
        ))
        .unwrap();
        assert_eq!(cfg.verbosity, Verbosity::Detailed);
        let err = parse_config::<DebugConfig>(&yaml("verbosity: loud")).unwrap_err();
        assert_eq!(err.path, vec!["verbosity"]);
        let err = parse_config::<DebugConfig>(&yaml("sampling_thereafter: 0")).unwrap_err();
        assert_eq!(err.path, vec!["sampling_thereafter"]);
    }

    #[test]
    fn sampler_admits_initial_then_every_nth() {
        let s = Sampler {
            initial: 2,
            thereafter: 3,
            window: Mutex::new((Instant::now(), 0)),
        };
        let admitted: Vec<bool> = (0..8).map(|_| s.admit()).collect();
        assert_eq!(
            admitted,
            vec![true, true, false, false, true, false, false, true]
        );
    }

    #[tokio::test]
    async fn counts_what_it_writes() {
        let t = Telemetry::new();
        let exp = DebugFactory
            .create(settings("debug", &t), &yaml("verbosity: normal"))
            .unwrap();
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["a", "b"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(
            exporter_value(&t, "otelcol_exporter_sent_spans", "debug"),
            2
        );
    }

    #[test]
    fn render_by_verbosity() {
        let p = Payload::Traces(crate::testutil::resource_spans(&["a"]));
        let basic = DebugClient::new("debug".into(), DebugConfig::default());
        assert_eq!(basic.render(&p), "Traces: resource spans 1, spans 1");
        let normal = DebugClient::new(
            "debug".into(),
            DebugConfig {
                verbosity: Verbosity::Normal,
                ..DebugConfig::default()
            },
        );
        assert_eq!(normal.render(&p).lines().count(), 4);
    }
}
