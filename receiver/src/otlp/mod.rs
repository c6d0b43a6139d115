//! The `otlp` receiver: OTLP over gRPC (`localhost:4317`) and HTTP
//! (`localhost:4318`, protobuf or JSON), as the collector's `otlpreceiver`.
//!
//! Both transports decode into a [`Payload`] and hand it to the signal's
//! consumer through `Ingest`, which keeps the collector's receiver counters.

pub mod config;
pub mod decode;
mod grpc;
mod grpc_traces;
mod http;
pub mod json;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{
    parse_config, ComponentError, ComponentId, ConfigFieldError, Lifecycle, Receiver,
    ReceiverFactory, ReceiverOutputs, Settings, Signal,
};

use crate::common::ingest::Ingest;
use crate::common::running::Running;
use crate::common::{net, tls};

pub use crate::common::running::SHUTDOWN_GRACE;
pub use config::OtlpReceiverConfig;
pub use decode::{decode_request, DecodeError, Encoding, Format};

/// Registers `otlp` in the registry.
pub struct OtlpReceiverFactory;

impl ReceiverFactory for OtlpReceiverFactory {
    fn type_name(&self) -> &'static str {
        "otlp"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &serde_yaml_ng::Value) -> Result<(), ConfigFieldError> {
        parse_config::<OtlpReceiverConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &serde_yaml_ng::Value,
        outputs: ReceiverOutputs,
    ) -> Result<Arc<dyn Receiver>, ComponentError> {
        let config = parse_config::<OtlpReceiverConfig>(raw)
            .map_err(|e| ComponentError::new(format!("{}: {}", settings.id, e.message)))?;
        Ok(Arc::new(OtlpReceiver::new(&settings, config, outputs)))
    }
}

/// Where the servers listen while running.
#[derive(Debug, Clone, Copy, Default)]
struct BoundAddrs {
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
}

/// One `otlp` receiver instance.
pub struct OtlpReceiver {
    id: ComponentId,
    config: OtlpReceiverConfig,
    grpc: Arc<Ingest>,
    http: Arc<Ingest>,
    running: Mutex<Option<Running>>,
    bound: std::sync::Mutex<BoundAddrs>,
}

impl OtlpReceiver {
    pub fn new(
        settings: &Settings,
        config: OtlpReceiverConfig,
        outputs: ReceiverOutputs,
    ) -> OtlpReceiver {
        OtlpReceiver {
            id: settings.id.clone(),
            grpc: Ingest::new(settings, "grpc", outputs.clone()),
            http: Ingest::new(settings, "http", outputs),
            config,
            running: Mutex::new(None),
            bound: std::sync::Mutex::new(BoundAddrs::default()),
        }
    }

    /// The address the gRPC server listens on, once started (the real port
    /// when the endpoint asked for port 0).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.bound_addrs().grpc
    }

    /// The address the HTTP server listens on, once started.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.bound_addrs().http
    }

    fn bound_addrs(&self) -> BoundAddrs {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_bound_addrs(&self, addrs: BoundAddrs) {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    fn error(&self, msg: impl std::fmt::Display) -> ComponentError {
        ComponentError::new(format!("{} receiver: {msg}", self.id))
    }

    async fn listen(&self, endpoint: &str) -> Result<TcpListener, ComponentError> {
        net::bind(endpoint).await.map_err(|e| self.error(e))
    }
}

#[async_trait]
impl Lifecycle for OtlpReceiver {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        // Everything that can fail happens before anything is spawned, so a
        // failed start leaves no server behind.
        let grpc = match &self.config.protocols.grpc {
            Some(cfg) => {
                let tls = match &cfg.tls {
                    Some(t) => Some(tls::server_config(t, &[b"h2"]).map_err(|e| self.error(e))?),
                    None => None,
                };
                let guard = self
                    .grpc
                    .guard(cfg.auth.as_ref())
                    .map_err(|e| self.error(e))?;
                Some((cfg, self.listen(&cfg.endpoint).await?, tls, guard))
            }
            None => None,
        };
        let http = match &self.config.protocols.http {
            Some(cfg) => {
                let tls = match &cfg.tls {
                    Some(t) => Some(
                        tls::server_config(t, &[b"h2", b"http/1.1"]).map_err(|e| self.error(e))?,
                    ),
                    None => None,
                };
                let guard = self
                    .http
                    .guard(cfg.auth.as_ref())
                    .map_err(|e| self.error(e))?;
                Some((cfg, self.listen(&cfg.endpoint).await?, tls, guard))
            }
            None => None,
        };

        let token = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut grpc_addr = None;
        let mut http_addr = None;
        if let Some((cfg, listener, tls, guard)) = grpc {
            grpc_addr = listener.local_addr().ok();
            tracing::info!(receiver = %self.id, endpoint = %crate::common::net::shown(grpc_addr), "OTLP/gRPC server listening");
            tasks.push((
                "grpc",
                grpc::spawn(listener, tls, guard, cfg, self.grpc.clone(), token.clone()),
            ));
        }
        if let Some((cfg, listener, tls, guard)) = http {
            http_addr = listener.local_addr().ok();
            tracing::info!(receiver = %self.id, endpoint = %crate::common::net::shown(http_addr), "OTLP/HTTP server listening");
            tasks.push((
                "http",
                http::spawn(listener, tls, guard, cfg, self.http.clone(), token.clone()),
            ));
        }
        self.set_bound_addrs(BoundAddrs {
            grpc: grpc_addr,
            http: http_addr,
        });
        *running = Some(Running { token, tasks });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let Some(running) = self.running.lock().await.take() else {
            return Ok(());
        };
        self.set_bound_addrs(BoundAddrs::default());
        running.stop(&self.id).await;
        Ok(())
    }
}

impl Receiver for OtlpReceiver {}
