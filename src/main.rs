//! The `weft` binary: command line, logging, signals and config reload. All
//! pipeline logic lives in the library crates.

mod context;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
use weft_pipeline::config::{ConfigError, Document, ServiceConfig, Source};
use weft_pipeline::extensions::serve_metrics;
use weft_pipeline::graph::Service;
use weft_pipeline::host::Host;
use weft_pipeline::self_telemetry::{instance_id, SelfMetrics};
use weft_pipeline::self_trace::{Attr, Parent, SelfSpan, SelfTraces, SpanKind};
use weft_pipeline::{Kind, Registry, Telemetry};

// The data path allocates per span (attributes, ids); glibc malloc spent a third
// of the Datadog decode benchmark in its own bookkeeping (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Memory settings of the process, made before anything else runs.
mod memory {
    /// mimalloc's `mi_option_purge_delay` (its v3 `mi_option_t`).
    const MI_OPTION_PURGE_DELAY: i32 = 15;

    extern "C" {
        fn mi_option_set(option: i32, value: std::ffi::c_long);
    }

    /// Resident memory against speed:
    /// - No transparent huge pages for this process: mimalloc asks for them
    ///   on its arenas, and a 2 MiB page stays resident for a few live bytes.
    ///   At 10k spans/s this alone takes peak RSS from about 62 MiB to 22.
    /// - Freed memory goes back to the kernel after 100 ms rather than 10:
    ///   returning it sooner cost up to a third of the CPU on allocation-heavy
    ///   paths (page faults and TLB shootdowns when it is touched again), for
    ///   a few MiB less (docs/benchmarks.md).
    ///
    /// `MIMALLOC_PURGE_DELAY` in the environment is left as set;
    /// `WEFT_ALLOW_THP=1` keeps huge pages.
    pub fn tune() {
        if std::env::var_os("WEFT_ALLOW_THP").is_none_or(|v| v != "1") {
            // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: mi_option_set only stores a value in mimalloc's option
            // table; the option exists in the linked mimalloc (v3).
            unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
        }
    }
}

const DEFAULT_CONFIG: &str = include_str!("../pipelines.example.yaml");
const DEFAULT_CONFIG_NAME: &str = "pipelines.example.yaml (embedded)";

/// weft: a trace pipeline that reads the OpenTelemetry Collector's configuration.
#[derive(Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    /// Config file; repeat to merge several, left to right. Without it, the
    /// embedded pipelines.example.yaml runs.
    #[arg(long = "config", global = true, value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Override one key after the files are merged: `a::b::c=value` (or `a.b.c=value`).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration and exit: 0 when valid, 2 otherwise.
    Validate,
    /// List the available receivers, processors, exporters and extensions as YAML.
    Components,
    /// Print the merged, expanded configuration as YAML.
    PrintConfig,
    /// Extract, inject and convert trace-context headers (JSON on stdin and stdout).
    #[command(subcommand)]
    Context(context::ContextCommand),
}

fn registry() -> Registry {
    let mut r = Registry::new();
    weft_receiver::register(&mut r);
    weft_processors::register(&mut r);
    weft_exporters::register(&mut r);
    r
}

fn sources(cli: &Cli) -> Vec<Source> {
    if cli.config.is_empty() {
        vec![Source::Text {
            name: DEFAULT_CONFIG_NAME.into(),
            text: DEFAULT_CONFIG.into(),
        }]
    } else {
        cli.config.iter().cloned().map(Source::File).collect()
    }
}

fn load(cli: &Cli, registry: &Registry) -> Result<(Document, ServiceConfig), ConfigError> {
    let doc = Document::load(&sources(cli), &cli.set)?;
    let cfg = ServiceConfig::from_document(&doc, registry)?;
    Ok((doc, cfg))
}

fn config_exit(e: &ConfigError) -> ExitCode {
    eprintln!("weft: invalid configuration: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    memory::tune();
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = registry();
    match cli.command {
        Some(Command::Context(cmd)) => context::run(cmd),
        Some(Command::Components) => {
            print!("{}", components_yaml(&registry));
            ExitCode::SUCCESS
        }
        Some(Command::Validate) => match load(&cli, &registry) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => config_exit(&e),
        },
        Some(Command::PrintConfig) => match Document::load(&sources(&cli), &cli.set) {
            Ok(doc) => {
                print!("{}", doc.to_yaml());
                ExitCode::SUCCESS
            }
            Err(e) => config_exit(&e),
        },
        None => {
            let (doc, cfg) = match load(&cli, &registry) {
                Ok(v) => v,
                Err(e) => return config_exit(&e),
            };
            init_logging(&cfg.telemetry.logs.level);
            for var in &doc.unset_vars {
                warn!(variable = %var, "environment variable referenced by the config is not set; it expands to an empty string");
            }
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("weft: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cli, registry, doc, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let msg = one_line(&e);
                    error!("{msg}");
                    eprintln!("weft: {msg}");
                    if e.downcast_ref::<StartFailed>().is_some() {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// An error and its causes on one line, skipping a cause the message before already
/// quotes (component errors carry their cause in their own text).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The pipelines could not start here as configured (a port in use, eBPF unavailable):
/// exit 2, as for a configuration that does not validate.
#[derive(Debug)]
struct StartFailed;

impl std::fmt::Display for StartFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot start the pipelines")
    }
}

fn components_yaml(r: &Registry) -> String {
    let mut out = format!(
        "buildinfo:\n  command: weft\n  version: {}\n",
        env!("CARGO_PKG_VERSION")
    );
    for kind in [
        Kind::Receiver,
        Kind::Processor,
        Kind::Exporter,
        Kind::Extension,
    ] {
        out.push_str(&format!("{}:\n", kind.section()));
        for name in r.type_names(kind) {
            out.push_str(&format!("  - {name}\n"));
        }
    }
    out
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_ascii_lowercase()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A fingerprint of the config files, to notice edits without a file watcher
/// (editors replace files in ways inotify users trip over; polling is simple).
fn fingerprint(paths: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    paths.iter().map(|p| std::fs::read(p).ok()).collect()
}

async fn run(
    cli: Cli,
    registry: Registry,
    doc: Document,
    cfg: ServiceConfig,
) -> anyhow::Result<()> {
    let telemetry = Telemetry::new();
    let host = Arc::new(Host::new());
    let status = host.status();
    status.set_config(doc.to_yaml());
    let metrics_endpoint = cfg
        .telemetry
        .metrics
        .endpoint()
        .map_err(anyhow::Error::msg)?;
    let metrics_server = match &metrics_endpoint {
        Some(ep) => Some(
            serve_metrics(ep, telemetry.clone())
                .await
                .map_err(anyhow::Error::msg)
                .context("cannot serve self-metrics")?,
        ),
        None => None,
    };
    let registry = Arc::new(registry);
    let mut running_telemetry = cfg.telemetry.clone();
    let running_logs = cfg.telemetry.logs.clone();
    let instance = instance_id();
    // weft's own telemetry first, so the first requests are traced.
    let mut self_telemetry =
        match start_self_telemetry(&registry, &telemetry, &host, &running_telemetry, &instance)
            .await
        {
            Ok(started) => Some(started),
            Err(e) => return Err(anyhow::Error::new(e).context(StartFailed)),
        };
    let service = Service::new(registry.clone(), telemetry.clone(), host.clone());
    if let Err(e) = service.start(cfg).await {
        service.shutdown().await;
        if let Some((m, t)) = self_telemetry.take() {
            m.shutdown().await;
            t.shutdown().await;
        }
        return Err(anyhow::Error::new(e).context(StartFailed));
    }
    let mut running_doc = doc;
    if let Some(summary) = service.running_summary().await {
        info!(metrics = ?metrics_endpoint, "weft is running: {summary}");
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = fingerprint(&cli.config);
    loop {
        let why = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => "SIGHUP",
            _ = poll.tick() => {
                let now = fingerprint(&cli.config);
                if now == last_seen { continue; }
                "config file change"
            }
        };
        last_seen = fingerprint(&cli.config);
        // weft's own span of this reload (when it traces itself).
        let mut span = host.self_tracer().map(|t| {
            t.start(
                "service/reload".into(),
                SpanKind::Internal,
                Parent::Remote(None),
                vec![Attr::new("reload.trigger", why)],
            )
        });
        let note = |span: &mut Option<SelfSpan>, result: &'static str, detail: &str| {
            if let Some(s) = span {
                s.set(Attr::new("reload.result", result));
                if result == "failure" {
                    s.error(detail.to_string());
                } else {
                    s.set(Attr::new("reload.summary", detail.to_string()));
                }
            }
            status.record_reload(result, why, detail.to_string());
        };
        let mut replaced_telemetry = None;
        match load(&cli, &registry) {
            Err(e) => {
                service.record_reload_failure();
                note(&mut span, "failure", &format!("invalid configuration: {e}"));
                error!(
                    trigger = why,
                    "reload failed, the running configuration stays: invalid configuration: {e}"
                );
            }
            Ok((new_doc, new_cfg)) => {
                let changed = changed_sections(&running_doc, &new_doc);
                if let Some(s) = &mut span {
                    s.set(Attr::new(
                        "reload.changed",
                        weft_pipeline::self_trace::string_array(&changed),
                    ));
                }
                let new_telemetry = new_cfg.telemetry.clone();
                let result = service.reload(new_cfg).await;
                let accepted = result.is_ok();
                // service.telemetry, once the pipelines took the new config: the
                // logs and the Prometheus endpoint need a restart; traces,
                // resource and the pushed metrics start anew.
                let mut telemetry_note = String::new();
                if accepted {
                    let mut needs_restart = Vec::new();
                    if new_telemetry.logs != running_logs {
                        needs_restart.push("logs");
                    }
                    if new_telemetry.metrics.endpoint().ok().flatten() != metrics_endpoint {
                        needs_restart.push("the metrics endpoint");
                    }
                    if !needs_restart.is_empty() {
                        let which = needs_restart.join(" and ");
                        warn!(
                            trigger = why,
                            "service.telemetry {which} changed; not applied on reload, takes \
                             effect at the next start"
                        );
                        telemetry_note = format!(
                            "; service.telemetry {which} changed: not applied on reload, takes effect at the next start"
                        );
                    }
                    if pushed_telemetry_changed(&running_telemetry, &new_telemetry) {
                        match start_self_telemetry(
                            &registry,
                            &telemetry,
                            &host,
                            &new_telemetry,
                            &instance,
                        )
                        .await
                        {
                            Ok(started) => {
                                replaced_telemetry = self_telemetry.replace(started);
                                running_telemetry = new_telemetry;
                                telemetry_note.push_str(
                                    "; service.telemetry traces, resource and metric readers applied",
                                );
                                info!(trigger = why, "service.telemetry applied");
                            }
                            Err(e) => {
                                telemetry_note.push_str(&format!(
                                    "; service.telemetry not applied, the running self-telemetry stays: {e}"
                                ));
                                error!(
                                    trigger = why,
                                    "service.telemetry could not start; the running self-telemetry \
                                     stays: {e}"
                                );
                            }
                        }
                    }
                }
                match result {
                    Ok(false) => {
                        note(
                            &mut span,
                            "unchanged",
                            &format!("nothing to reload{telemetry_note}"),
                        );
                        info!(trigger = why, "configuration unchanged; nothing to reload")
                    }
                    Ok(true) => {
                        status.set_config(new_doc.to_yaml());
                        let summary = service.running_summary().await.unwrap_or_default();
                        note(&mut span, "success", &format!("{summary}{telemetry_note}"));
                        info!(trigger = why, "configuration reloaded: {summary}");
                    }
                    Err(e) => {
                        note(&mut span, "failure", &e.to_string());
                        error!(
                            trigger = why,
                            "reload failed, the running configuration stays: {e}"
                        )
                    }
                }
                if accepted {
                    running_doc = new_doc;
                }
            }
        }
        // The reload's span ends into the tracer that started it; the replaced
        // self-telemetry then sends what it holds and stops.
        drop(span);
        if let Some((m, t)) = replaced_telemetry {
            m.shutdown().await;
            t.shutdown().await;
        }
    }
    info!("shutting down: receivers stop, batches flush, queues drain");
    service.shutdown().await;
    // Last, so the final self-metrics push counts everything the drain did,
    // and the last spans (the drain's exports) go out.
    if let Some((m, t)) = self_telemetry.take() {
        m.shutdown().await;
        t.shutdown().await;
    }
    if let Some(s) = metrics_server {
        s.stop().await;
    }
    info!("shutdown complete");
    Ok(())
}

/// The config sections a reload changes, by component (`exporters::otlp/b`,
/// `service::pipelines`, `service::telemetry`).
fn changed_sections(old: &Document, new: &Document) -> Vec<String> {
    let parse = |d: &Document| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&d.to_yaml()).unwrap_or(serde_yaml_ng::Value::Null)
    };
    let (old, new) = (parse(old), parse(new));
    let mut out = Vec::new();
    for section in [
        "receivers",
        "processors",
        "exporters",
        "connectors",
        "extensions",
    ] {
        let (a, b) = (&old[section], &new[section]);
        let mut keys: Vec<String> = a
            .as_mapping()
            .into_iter()
            .chain(b.as_mapping())
            .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)))
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if a[k.as_str()] != b[k.as_str()]
                || a.get(k.as_str()).is_none() != b.get(k.as_str()).is_none()
            {
                out.push(format!("{section}::{k}"));
            }
        }
    }
    for key in ["extensions", "pipelines", "telemetry"] {
        if old["service"][key] != new["service"][key] {
            out.push(format!("service::{key}"));
        }
    }
    out
}

/// Starts weft's own spans and pushed metrics for `cfg`.
async fn start_self_telemetry(
    registry: &Registry,
    telemetry: &Telemetry,
    host: &Arc<Host>,
    cfg: &weft_pipeline::config::TelemetryConfig,
    instance: &str,
) -> Result<(SelfMetrics, SelfTraces), weft_pipeline::self_telemetry::SelfTelemetryError> {
    let traces = SelfTraces::start(registry, telemetry, host.clone(), cfg, instance).await?;
    match SelfMetrics::start(registry, telemetry, host.clone(), cfg, instance).await {
        Ok(metrics) => Ok((metrics, traces)),
        Err(e) => {
            traces.shutdown().await;
            Err(e)
        }
    }
}

/// Whether a reload changes what `start_self_telemetry` reads.
fn pushed_telemetry_changed(
    old: &weft_pipeline::config::TelemetryConfig,
    new: &weft_pipeline::config::TelemetryConfig,
) -> bool {
    old.traces != new.traces || old.resource != new.resource || old.metrics != new.metrics
}
