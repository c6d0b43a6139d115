//! `weft-loadgen`: trace load for benchmarking a collector, and a counting
//! sink to check that every acknowledged span came out the other side.
//!
//! ```text
//! weft-loadgen sink --listen 127.0.0.1:4999
//! weft-loadgen send --protocol otlp-grpc --endpoint http://127.0.0.1:4317 \
//!     --rate 10000 --duration 30s --sink-stats http://127.0.0.1:4999/stats --fail-on-loss
//! ```

mod payload;
mod scan;
mod send;
mod sink;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use payload::{Shape, Templates};
use send::{Compression, Plan, Protocol};

#[derive(Parser)]
#[command(
    name = "weft-loadgen",
    version,
    about = "Trace load generator and counting sink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send traces to a collector and report what was acknowledged.
    Send(SendArgs),
    /// Receive OTLP (gRPC and HTTP on one port), count spans, drop them.
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4999")]
        listen: String,
    },
}

#[derive(Parser)]
struct SendArgs {
    #[arg(long, value_enum, default_value = "otlp-grpc")]
    protocol: Protocol,
    /// Base URL (the protocol's usual path is added when none is given).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "none")]
    compression: Compression,
    /// Spans per second over all connections; 0 sends as fast as answers come.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long to send (`30s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 100)]
    spans_per_request: usize,
    /// String attributes per span.
    #[arg(long, default_value_t = 8)]
    attributes: usize,
    /// Bytes per attribute value.
    #[arg(long, default_value_t = 16)]
    attribute_size: usize,
    /// Distinct requests generated up front and sent in turn.
    #[arg(long, default_value_t = 64)]
    templates: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Extra request header, `name=value` (repeatable).
    #[arg(long = "header", value_parser = send::parse_header)]
    headers: Vec<(String, String)>,
    /// A sink's stats URL: after sending, wait for the sink to have received
    /// every acknowledged span and report how many arrived.
    #[arg(long)]
    sink_stats: Option<String>,
    /// How long to wait for the sink to catch up.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Exit with status 3 when acknowledged spans did not all arrive at the
    /// sink, or when requests failed (errors other than a retryable refusal).
    #[arg(long)]
    fail_on_loss: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

async fn sink_spans(client: &SinkClient, url: &str) -> anyhow::Result<u64> {
    let uri: http::Uri = url.parse().with_context(|| format!("sink URL `{url}`"))?;
    let resp = client
        .get(uri)
        .await
        .with_context(|| format!("reading {url}"))?;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).context("sink stats")?;
    v.get("spans")
        .and_then(|s| s.as_u64())
        .context("sink stats without `spans`")
}

type SinkClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

async fn send_cmd(a: SendArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        a.spans_per_request > 0,
        "--spans-per-request must be at least 1"
    );
    let shape = Shape {
        spans_per_request: a.spans_per_request,
        attributes: a.attributes,
        attribute_size: a.attribute_size,
    };
    let templates = Templates::new(&shape, a.templates.max(1));
    let bodies = templates.bodies(a.protocol.format());
    drop(templates);
    let sink_client: SinkClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let before = match &a.sink_stats {
        Some(url) => Some(sink_spans(&sink_client, url).await?),
        None => None,
    };
    let plan = Plan {
        protocol: a.protocol,
        endpoint: a.endpoint.clone(),
        compression: a.compression,
        rate: a.rate,
        connections: a.connections,
        duration: a.duration,
        spans_per_request: a.spans_per_request as u64,
        request_timeout: a.timeout,
        headers: a.headers.clone(),
    };
    let (c, elapsed) = send::run(plan, bodies).await?;
    let sent = c.sent.load(Ordering::Relaxed);
    let acked = c.acknowledged.load(Ordering::Relaxed);
    let refused = c.refused.load(Ordering::Relaxed);
    let failed = c.failed.load(Ordering::Relaxed);
    let mut delivered = None;
    let mut settle_s = 0.0;
    if let (Some(url), Some(before)) = (&a.sink_stats, before) {
        let t = Instant::now();
        loop {
            let d = sink_spans(&sink_client, url).await?.saturating_sub(before);
            delivered = Some(d);
            if d >= acked || t.elapsed() >= a.settle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        settle_s = t.elapsed().as_secs_f64();
    }
    let secs = elapsed.as_secs_f64();
    let errors = c
        .first_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let report = serde_json::json!({
        "protocol": format!("{:?}", a.protocol),
        "requests": c.requests.load(Ordering::Relaxed),
        "sent_spans": sent,
        "acknowledged_spans": acked,
        "refused_spans": refused,
        "failed_spans": failed,
        "delivered_spans": delivered,
        "elapsed_s": secs,
        "settle_s": settle_s,
        "acknowledged_per_s": acked as f64 / secs.max(1e-9),
        "latency_ms": {
            "p50": c.latency_ms(0.5),
            "p99": c.latency_ms(0.99),
            "max": c.latency_ms(1.0),
        },
        "errors": errors,
    });
    eprintln!(
        "sent {sent} acknowledged {acked} refused {refused} failed {failed}{} in {secs:.1}s ({:.0} spans/s acknowledged)",
        delivered.map_or(String::new(), |d| format!(" delivered {d}")),
        acked as f64 / secs.max(1e-9),
    );
    for e in &errors {
        eprintln!("  error: {e}");
    }
    if a.json {
        println!("{report}");
    }
    let lost = delivered.is_some_and(|d| d < acked) || failed > 0;
    if a.fail_on_loss && lost {
        eprintln!("loss: acknowledged spans missing at the sink, or failed requests");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Send(a) => send_cmd(a).await,
            Command::Sink { listen } => {
                let l = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                eprintln!("sink listening on {}", l.local_addr()?);
                sink::serve(l, Arc::new(sink::Stats::default())).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}
