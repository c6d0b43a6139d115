//! The `otlp` receiver: OTLP over gRPC (`localhost:4317`) and HTTP
//! (`localhost:4318`, protobuf or JSON), as the collector's `otlpreceiver`.
//!
//! Both transports decode into a [`Payload`] and hand it to the signal's
//! consumer through `Ingest`, which keeps the collector's receiver counters.

pub mod config;
pub mod decode;
mod grpc;
mod http;
pub mod json;
mod tls;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{
    parse_config, Batch, ClientMetadata, ComponentError, ComponentId, ConfigFieldError,
    ConsumeError, Lifecycle, Payload, Receiver, ReceiverFactory, ReceiverMetrics, ReceiverOutputs,
    Settings, Signal,
};

pub use config::OtlpReceiverConfig;
pub use decode::{decode_request, DecodeError, Encoding, Format};

/// How long shutdown waits for in-flight requests before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// Hands decoded requests to the pipeline and counts the outcome, for one transport.
pub(crate) struct Ingest {
    origin: Arc<str>,
    transport: &'static str,
    outputs: ReceiverOutputs,
    metrics: ReceiverMetrics,
}

impl Ingest {
    /// Sends one request's data downstream. A request without any resource
    /// entry is acknowledged without bothering the pipeline.
    pub(crate) async fn consume(
        &self,
        payload: Payload,
        metadata: Option<ClientMetadata>,
        received_at: Instant,
    ) -> Result<(), ConsumeError> {
        if payload.is_empty() {
            return Ok(());
        }
        let signal = payload.signal();
        let items = payload.item_count() as u64;
        let mut batch = Batch::new(payload, self.origin.clone());
        batch.received_at = received_at;
        batch.metadata = metadata.map(Arc::new);
        let result = self.outputs.for_signal(signal).consume(batch).await;
        match &result {
            Ok(()) => self.metrics.accepted(signal).add(items),
            Err(e) => {
                self.metrics.refused(signal).add(items);
                tracing::debug!(
                    receiver = %self.origin,
                    transport = self.transport,
                    %signal,
                    items,
                    error = %e,
                    "pipeline refused data"
                );
            }
        }
        result
    }

    /// Counts a request rejected before it reached the pipeline.
    pub(crate) fn bad_request(&self, why: &dyn std::fmt::Display) {
        self.metrics.bad_requests.inc();
        tracing::debug!(
            receiver = %self.origin,
            transport = self.transport,
            "rejected request: {why}"
        );
    }
}

struct Running {
    token: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
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
        let origin: Arc<str> = Arc::from(settings.id.to_string());
        let ingest = |transport: &'static str| {
            Arc::new(Ingest {
                origin: origin.clone(),
                transport,
                outputs: outputs.clone(),
                metrics: ReceiverMetrics::new(&settings.telemetry, &settings.id, transport),
            })
        };
        OtlpReceiver {
            id: settings.id.clone(),
            grpc: ingest("grpc"),
            http: ingest("http"),
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
        let addrs = resolve(endpoint)
            .await
            .map_err(|e| self.error(format!("cannot listen on {endpoint}: {e}")))?;
        let mut last = None;
        for addr in addrs {
            match TcpListener::bind(addr).await {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        let why = last.map_or_else(|| "no address".to_string(), |e| io_reason(&e));
        Err(self.error(format!("cannot listen on {endpoint}: {why}")))
    }
}

/// Short reasons for the bind errors an operator meets.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_string(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// Addresses to bind for an endpoint. `localhost` means the IPv4 loopback
/// (the resolver's answer varies between hosts), an empty host every interface.
async fn resolve(endpoint: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = config::parse_endpoint(endpoint)?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        )]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(addrs)
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
                Some((cfg, self.listen(&cfg.endpoint).await?, tls))
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
                Some((cfg, self.listen(&cfg.endpoint).await?, tls))
            }
            None => None,
        };

        let token = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut grpc_addr = None;
        let mut http_addr = None;
        if let Some((cfg, listener, tls)) = grpc {
            grpc_addr = listener.local_addr().ok();
            tracing::info!(receiver = %self.id, endpoint = ?grpc_addr, "OTLP/gRPC server listening");
            tasks.push((
                "grpc",
                grpc::spawn(listener, tls, cfg, self.grpc.clone(), token.clone()),
            ));
        }
        if let Some((cfg, listener, tls)) = http {
            http_addr = listener.local_addr().ok();
            tracing::info!(receiver = %self.id, endpoint = ?http_addr, "OTLP/HTTP server listening");
            tasks.push((
                "http",
                http::spawn(listener, tls, cfg, self.http.clone(), token.clone()),
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
        running.token.cancel();
        self.set_bound_addrs(BoundAddrs::default());
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for (transport, mut task) in running.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    receiver = %self.id,
                    transport,
                    "requests still in flight after {}s; dropped",
                    SHUTDOWN_GRACE.as_secs()
                );
            }
        }
        Ok(())
    }
}

impl Receiver for OtlpReceiver {}
