//! The `jaeger` receiver, as the collector's `jaegerreceiver`: gRPC
//! `api_v2.CollectorService` (`localhost:14250`), Thrift over HTTP
//! (`POST /api/traces`, `localhost:14268`) and the agent's UDP ports for
//! compact (`localhost:6831`) and binary (`localhost:6832`) Thrift.
//!
//! Every transport decodes into Jaeger's model, translates to OTLP with
//! `weft_jaeger` (the collector's mapping) and hands the spans to the
//! traces pipeline through `Ingest`, counted per transport under the
//! collector's names: `grpc`, `collector_http`, `udp_thrift_compact`,
//! `udp_thrift_binary`.

pub mod config;
pub mod decode;
mod grpc;
mod http;
mod udp;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{
    parse_config, ComponentError, ComponentId, ConfigFieldError, Counter, Lifecycle, Receiver,
    ReceiverFactory, ReceiverOutputs, Settings, Signal,
};

use crate::common::ingest::Ingest;
use crate::common::running::Running;
use crate::common::{net, tls};

pub use config::JaegerReceiverConfig;
pub use decode::{
    decode_agent_datagram, decode_post_spans, decode_thrift_http_body, DecodeError, Protocol,
};

/// Transport labels, as the collector names them.
pub const TRANSPORT_GRPC: &str = "grpc";
pub const TRANSPORT_HTTP: &str = "collector_http";
pub const TRANSPORT_COMPACT: &str = "udp_thrift_compact";
pub const TRANSPORT_BINARY: &str = "udp_thrift_binary";

/// Registers `jaeger` in the registry.
pub struct JaegerReceiverFactory;

fn parse(raw: &serde_yaml_ng::Value) -> Result<JaegerReceiverConfig, ConfigFieldError> {
    parse_config::<JaegerReceiverConfig>(&config::with_jaeger_defaults(raw))
}

impl ReceiverFactory for JaegerReceiverFactory {
    fn type_name(&self) -> &'static str {
        "jaeger"
    }

    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn check_config(&self, raw: &serde_yaml_ng::Value) -> Result<(), ConfigFieldError> {
        parse(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &serde_yaml_ng::Value,
        outputs: ReceiverOutputs,
    ) -> Result<Arc<dyn Receiver>, ComponentError> {
        let config = parse(raw)
            .map_err(|e| ComponentError::new(format!("{}: {}", settings.id, e.message)))?;
        Ok(Arc::new(JaegerReceiver::new(&settings, config, outputs)))
    }
}

/// Where the servers listen while running.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundAddrs {
    pub grpc: Option<SocketAddr>,
    pub thrift_http: Option<SocketAddr>,
    pub thrift_compact: Option<SocketAddr>,
    pub thrift_binary: Option<SocketAddr>,
}

/// One `jaeger` receiver instance.
pub struct JaegerReceiver {
    id: ComponentId,
    config: JaegerReceiverConfig,
    grpc: Arc<Ingest>,
    http: Arc<Ingest>,
    compact: Arc<Ingest>,
    binary: Arc<Ingest>,
    compact_dropped: Counter,
    binary_dropped: Counter,
    running: Mutex<Option<Running>>,
    bound: std::sync::Mutex<BoundAddrs>,
}

fn dropped_counter(settings: &Settings, transport: &str) -> Counter {
    let id = settings.id.to_string();
    settings.telemetry.counter(
        "weft_receiver_udp_packets_dropped",
        "Datagrams dropped because the receiver's queue was full",
        &[("receiver", id.as_str()), ("transport", transport)],
    )
}

impl JaegerReceiver {
    pub fn new(
        settings: &Settings,
        config: JaegerReceiverConfig,
        outputs: ReceiverOutputs,
    ) -> JaegerReceiver {
        JaegerReceiver {
            id: settings.id.clone(),
            grpc: Ingest::new(settings, TRANSPORT_GRPC, outputs.clone()),
            http: Ingest::new(settings, TRANSPORT_HTTP, outputs.clone()),
            compact: Ingest::new(settings, TRANSPORT_COMPACT, outputs.clone()),
            binary: Ingest::new(settings, TRANSPORT_BINARY, outputs),
            compact_dropped: dropped_counter(settings, TRANSPORT_COMPACT),
            binary_dropped: dropped_counter(settings, TRANSPORT_BINARY),
            config,
            running: Mutex::new(None),
            bound: std::sync::Mutex::new(BoundAddrs::default()),
        }
    }

    /// The addresses the servers listen on, once started (the real ports
    /// when an endpoint asked for port 0).
    pub fn addrs(&self) -> BoundAddrs {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_addrs(&self, addrs: BoundAddrs) {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    fn error(&self, msg: impl std::fmt::Display) -> ComponentError {
        ComponentError::new(format!("{} receiver: {msg}", self.id))
    }
}

#[async_trait]
impl Lifecycle for JaegerReceiver {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let p = &self.config.protocols;
        // Everything that can fail happens before anything is spawned, so a
        // failed start leaves no server behind.
        let grpc = match &p.grpc {
            Some(cfg) => {
                let tls = match &cfg.tls {
                    Some(t) => Some(tls::server_config(t, &[b"h2"]).map_err(|e| self.error(e))?),
                    None => None,
                };
                let guard = self
                    .grpc
                    .guard(cfg.auth.as_ref())
                    .map_err(|e| self.error(e))?;
                let listener = net::bind(&cfg.endpoint).await.map_err(|e| self.error(e))?;
                Some((cfg, listener, tls, guard))
            }
            None => None,
        };
        let http = match &p.thrift_http {
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
                let listener = net::bind(&cfg.endpoint).await.map_err(|e| self.error(e))?;
                Some((cfg, listener, tls, guard))
            }
            None => None,
        };
        let mut udp = Vec::new();
        for (cfg, protocol) in [
            (&p.thrift_compact, Protocol::Compact),
            (&p.thrift_binary, Protocol::Binary),
        ] {
            if let Some(cfg) = cfg {
                let socket = net::bind_udp(&cfg.endpoint, cfg.socket_buffer_size)
                    .await
                    .map_err(|e| self.error(e))?;
                udp.push((cfg, protocol, socket));
            }
        }

        let token = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut addrs = BoundAddrs::default();
        if let Some((cfg, listener, tls, guard)) = grpc {
            addrs.grpc = listener.local_addr().ok();
            tracing::info!(receiver = %self.id, endpoint = %crate::common::net::shown(addrs.grpc), "Jaeger gRPC server listening");
            tasks.push((
                TRANSPORT_GRPC,
                grpc::spawn(listener, tls, guard, cfg, self.grpc.clone(), token.clone()),
            ));
        }
        if let Some((cfg, listener, tls, guard)) = http {
            addrs.thrift_http = listener.local_addr().ok();
            tracing::info!(receiver = %self.id, endpoint = %crate::common::net::shown(addrs.thrift_http), "Jaeger Thrift/HTTP server listening");
            tasks.push((
                TRANSPORT_HTTP,
                http::spawn(listener, tls, guard, cfg, self.http.clone(), token.clone()),
            ));
        }
        for (cfg, protocol, socket) in udp {
            let local = socket.local_addr().ok();
            let (transport, ingest, dropped) = match protocol {
                Protocol::Compact => {
                    addrs.thrift_compact = local;
                    (TRANSPORT_COMPACT, &self.compact, &self.compact_dropped)
                }
                Protocol::Binary => {
                    addrs.thrift_binary = local;
                    (TRANSPORT_BINARY, &self.binary, &self.binary_dropped)
                }
            };
            tracing::info!(receiver = %self.id, endpoint = %crate::common::net::shown(local), transport, "Jaeger agent UDP server listening");
            tasks.push((
                transport,
                udp::spawn(
                    socket,
                    cfg,
                    protocol,
                    ingest.clone(),
                    dropped.clone(),
                    token.clone(),
                ),
            ));
        }
        self.set_addrs(addrs);
        *running = Some(Running { token, tasks });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let Some(running) = self.running.lock().await.take() else {
            return Ok(());
        };
        self.set_addrs(BoundAddrs::default());
        running.stop(&self.id).await;
        Ok(())
    }
}

impl Receiver for JaegerReceiver {}
