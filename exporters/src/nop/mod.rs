//! The `nop` exporter, as the collector's: accepts every batch and drops it.
//!
//! It has no keys. Its sent counters move as for any exporter, so a pipeline
//! ending in `nop` measures everything before the export itself (benchmarks,
//! or a pipeline kept only for its side effects).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_yaml_ng::Value;
use weft_pipeline::exporterhelper::{
    ExportClient, ExportError, QueueSettings, QueuedExporter, RetrySettings, TimeoutSettings,
};
use weft_pipeline::otlp_wire::EncodedTraces;
use weft_pipeline::{
    parse_config, ComponentConfig, ComponentError, ConfigFieldError, Exporter, ExporterFactory,
    Payload, Settings, Signal,
};

use crate::common::config_error;

/// `nop` takes no keys; anything written under it is refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NopConfig {}

impl ComponentConfig for NopConfig {}

/// Factory for `nop`.
pub struct NopFactory;

impl ExporterFactory for NopFactory {
    fn type_name(&self) -> &'static str {
        "nop"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<NopConfig>(raw).map(|_| ())
    }

    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError> {
        parse_config::<NopConfig>(raw).map_err(config_error)?;
        Ok(Arc::new(QueuedExporter::new(
            &settings,
            QueueSettings::disabled(),
            RetrySettings::disabled(),
            TimeoutSettings::none(),
            Arc::new(NopClient),
        )))
    }
}

struct NopClient;

#[async_trait]
impl ExportClient for NopClient {
    async fn export(&self, _payload: &Payload) -> Result<(), ExportError> {
        Ok(())
    }

    // Encoded traces are dropped as they are, without decoding them first.
    fn sends_encoded_traces(&self) -> bool {
        true
    }

    async fn export_encoded(&self, _traces: &EncodedTraces) -> Result<(), ExportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{exporter_value, settings, trace_batch, yaml};
    use weft_pipeline::Telemetry;

    #[test]
    fn takes_no_keys() {
        assert!(NopFactory.check_config(&yaml("{}")).is_ok());
        assert!(NopFactory.check_config(&Value::Null).is_ok());
        let err = NopFactory.check_config(&yaml("endpoint: x")).unwrap_err();
        assert!(err.message.contains("endpoint"), "{}", err.message);
    }

    #[tokio::test]
    async fn drops_and_counts() {
        let t = Telemetry::new();
        let exp = NopFactory.create(settings("nop", &t), &yaml("{}")).unwrap();
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["a", "b", "c"])).await.unwrap();
        exp.shutdown().await.unwrap();
        assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", "nop"), 3);
    }
}
