//! The `status` extension: a small web app, embedded in the binary, showing
//! the running pipelines with their live counters, the config as loaded
//! (secrets masked), the reload history, and the most recent traces leaving
//! each traces pipeline as waterfalls. The same data is served as JSON under
//! `/api/` ([`api`]).

pub mod api;
pub mod hub;
pub mod tap;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_yaml_ng::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::component::{
    parse_config, ComponentConfig, ComponentError, ConfigFieldError, Extension, ExtensionFactory,
    Lifecycle, Registry, Settings,
};
use crate::extensions::HttpServer;
use crate::host::Host;
use crate::telemetry::Telemetry;

pub use hub::{GraphView, PipelineView, StatusHub};
pub use tap::TapConsumer;

/// The zpages port, where a collector's operators look first.
pub const DEFAULT_ENDPOINT: &str = "localhost:55679";
pub const DEFAULT_MAX_SPANS: usize = 10_000;
/// The largest tap one pipeline may have.
pub const MAX_MAX_SPANS: usize = 1_000_000;
/// An assembled trace index nobody asked for in this long is dropped.
const CACHE_IDLE: Duration = Duration::from_secs(30);

pub fn register(r: &mut Registry) {
    r.add_extension(Arc::new(StatusFactory));
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// Keep the recent traces of each traces pipeline (default true).
    pub enabled: bool,
    /// Spans kept per traces pipeline (default 10000); the oldest batches go
    /// first.
    pub max_spans: usize,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            enabled: true,
            max_spans: DEFAULT_MAX_SPANS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Where the page listens (default localhost:55679).
    pub endpoint: String,
    pub traces: TracesConfig,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            traces: TracesConfig::default(),
        }
    }
}

impl ComponentConfig for StatusConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if !self.endpoint.contains(':') {
            return Err(ConfigFieldError::at(
                &["endpoint"],
                "endpoint must be host:port",
            ));
        }
        if self.traces.enabled && !(1..=MAX_MAX_SPANS).contains(&self.traces.max_spans) {
            return Err(ConfigFieldError::at(
                &["traces", "max_spans"],
                format!(
                    "max_spans must be from 1 to {MAX_MAX_SPANS} (or set traces.enabled: false)"
                ),
            ));
        }
        Ok(())
    }
}

impl StatusConfig {
    fn tap_size(&self) -> usize {
        if self.traces.enabled {
            self.traces.max_spans
        } else {
            0
        }
    }
}

struct StatusFactory;

impl ExtensionFactory for StatusFactory {
    fn type_name(&self) -> &'static str {
        "status"
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<StatusConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let config =
            parse_config::<StatusConfig>(raw).map_err(|e| ComponentError::new(e.to_string()))?;
        Ok(Arc::new(Status {
            config,
            host: settings.host,
            telemetry: settings.telemetry,
            running: Mutex::new(None),
        }))
    }
}

struct Status {
    config: StatusConfig,
    host: Arc<Host>,
    telemetry: Telemetry,
    /// The server, the cache sweeper, and the hub's token for this tap.
    running: Mutex<Option<(HttpServer, JoinHandle<()>, u64)>>,
}

#[async_trait]
impl Lifecycle for Status {
    async fn start(&self) -> Result<(), ComponentError> {
        let hub = self.host.status();
        let app = api::router(api::ApiState {
            hub: hub.clone(),
            telemetry: self.telemetry.clone(),
            endpoint_host: api::endpoint_host(&self.config.endpoint),
        });
        let server = HttpServer::serve(&self.config.endpoint, "status", app)
            .await
            .map_err(ComponentError::new)?;
        let token = hub.open_tap(self.config.tap_size());
        let sweeper_hub = hub.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                for t in sweeper_hub.taps() {
                    t.expire_cache(CACHE_IDLE);
                }
            }
        });
        tracing::info!(
            endpoint = %server.local_addr,
            "status page at http://{}/",
            server.local_addr
        );
        *self.running.lock().await = Some((server, sweeper, token));
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        if let Some((server, sweeper, token)) = self.running.lock().await.take() {
            sweeper.abort();
            self.host.status().close_tap(token);
            server.stop().await;
        }
        Ok(())
    }
}

impl Extension for Status {}

#[cfg(test)]
mod tests;
