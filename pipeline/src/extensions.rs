//! Built-in extensions (`health_check`) and the self-metrics HTTP endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_yaml_ng::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::component::{
    parse_config, ComponentConfig, ComponentError, ConfigFieldError, Extension, ExtensionFactory,
    Lifecycle, Registry, Settings,
};
use crate::host::Host;
use crate::telemetry::Telemetry;

pub fn register(r: &mut Registry) {
    r.add_extension(Arc::new(HealthCheckFactory));
}

/// Resolves `localhost:port`, `host:port` or `[::1]:port` to the address to bind.
/// `localhost` binds the IPv4 loopback, as the collector's default does.
pub async fn resolve_endpoint(endpoint: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = endpoint.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("endpoint {endpoint:?} must be host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("endpoint {endpoint:?}: invalid port {port:?}"))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if host == "localhost" {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {endpoint:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{endpoint:?} resolves to no address"))
}

/// A small HTTP server with graceful stop, shared by health_check and the
/// metrics endpoint.
pub struct HttpServer {
    pub local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    pub async fn serve(
        endpoint: &str,
        what: &str,
        app: axum::Router,
    ) -> Result<HttpServer, String> {
        let addr = resolve_endpoint(endpoint).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("{what}: cannot listen on {endpoint}: {e}"))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(HttpServer {
            local_addr,
            stop: Some(tx),
            task,
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

/// Serves `GET /metrics` with the Prometheus text of `telemetry`.
pub async fn serve_metrics(endpoint: &str, telemetry: Telemetry) -> Result<HttpServer, String> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let t = telemetry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    t.render(),
                )
            }
        }),
    );
    HttpServer::serve(endpoint, "self-metrics", app).await
}

/// `health_check`: answers 200 while a pipeline graph runs, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Where to listen (default localhost:13133).
    pub endpoint: String,
    /// The path that answers (default `/`).
    pub path: String,
    /// Accepted for compatibility with the collector's legacy option.
    pub check_collector_pipeline: Option<Value>,
    /// Accepted for compatibility.
    pub response_body: Option<Value>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "localhost:13133".into(),
            path: "/".into(),
            check_collector_pipeline: None,
            response_body: None,
        }
    }
}

impl ComponentConfig for HealthCheckConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if !self.path.starts_with('/') {
            return Err(ConfigFieldError::at(
                &["path"],
                "path must start with \"/\"",
            ));
        }
        if !self.endpoint.contains(':') {
            return Err(ConfigFieldError::at(
                &["endpoint"],
                "endpoint must be host:port",
            ));
        }
        Ok(())
    }
}

struct HealthCheckFactory;

impl ExtensionFactory for HealthCheckFactory {
    fn type_name(&self) -> &'static str {
        "health_check"
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<HealthCheckConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let config = parse_config::<HealthCheckConfig>(raw)
            .map_err(|e| ComponentError::new(e.to_string()))?;
        Ok(Arc::new(HealthCheck {
            config,
            host: settings.host,
            server: Mutex::new(None),
        }))
    }
}

struct HealthCheck {
    config: HealthCheckConfig,
    host: Arc<Host>,
    server: Mutex<Option<HttpServer>>,
}

#[async_trait]
impl Lifecycle for HealthCheck {
    async fn start(&self) -> Result<(), ComponentError> {
        let host = self.host.clone();
        let app = axum::Router::new().route(
            &self.config.path,
            axum::routing::get(move || {
                let ready = host.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, r#"{"status":"Server available"}"#)
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            r#"{"status":"Server not available"}"#,
                        )
                    }
                }
            }),
        );
        let server = HttpServer::serve(&self.config.endpoint, "health_check", app)
            .await
            .map_err(ComponentError::new)?;
        *self.server.lock().await = Some(server);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        if let Some(s) = self.server.lock().await.take() {
            s.stop().await;
        }
        Ok(())
    }
}

impl Extension for HealthCheck {}
