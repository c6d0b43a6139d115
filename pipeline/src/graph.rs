//! Builds the running graph from a validated config and replaces it on reload.
//!
//! Order follows the collector: exporters start first and receivers last;
//! shutdown runs the other way (receivers stop accepting, processors flush,
//! exporters drain). A reload diffs by component id and config: unchanged
//! exporters and receivers keep running, a pipeline is rebuilt only when its
//! definition, one of its processors or one of its exporters changed.
//! Receivers send through [`SwapConsumer`]s, so swapping in the new pipelines
//! is one pointer store per signal and nothing in flight is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_yaml_ng::Value;
use tokio::sync::Mutex;
use tracing::warn;

use crate::component::{
    ComponentError, ComponentId, Exporter, Extension, Kind, Processor, Receiver, Registry, Settings,
};
use crate::config::{PipelineConfig, PipelineId, ServiceConfig};
use crate::consumer::{DynConsumer, Fanout, ReceiverOutputs, SwapConsumer};
use crate::data::Signal;
use crate::host::Host;
use crate::status::{GraphView, PipelineView, TapConsumer};
use crate::telemetry::{Counter, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("cannot create {kind} {id}: {source}")]
    Create {
        kind: &'static str,
        id: ComponentId,
        source: ComponentError,
    },
    #[error("cannot start {kind} {id}: {source}")]
    Start {
        kind: &'static str,
        id: ComponentId,
        source: ComponentError,
    },
}

struct RunningReceiver {
    config: Value,
    instance: Arc<dyn Receiver>,
    outputs: [Arc<SwapConsumer>; 3],
}

struct RunningExporter {
    config: Value,
    instance: Arc<dyn Exporter>,
}

struct RunningExtension {
    config: Value,
    instance: Arc<dyn Extension>,
}

/// What a pipeline was built from; equal keys mean the pipeline can be kept.
#[derive(Clone, PartialEq)]
struct PipelineKey {
    definition: PipelineConfig,
    processor_configs: Vec<Value>,
}

struct RunningPipeline {
    key: PipelineKey,
    /// Exporter instances it feeds; compared by pointer on reload.
    exporters: Vec<Arc<dyn Exporter>>,
    /// First to last in the chain.
    processors: Vec<(ComponentId, Arc<dyn Processor>)>,
    head: DynConsumer,
}

#[derive(Default)]
struct Running {
    receivers: BTreeMap<ComponentId, RunningReceiver>,
    exporters: BTreeMap<ComponentId, RunningExporter>,
    extensions: BTreeMap<ComponentId, RunningExtension>,
    pipelines: BTreeMap<PipelineId, RunningPipeline>,
}

/// The service: one running graph at a time, replaced on reload.
pub struct Service {
    registry: Arc<Registry>,
    telemetry: Telemetry,
    host: Arc<Host>,
    running: Mutex<Option<(ServiceConfig, Running)>>,
    reload_ok: Counter,
    reload_failed: Counter,
}

fn sig_idx(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

fn ptr_eq_exporter(a: &Arc<dyn Exporter>, b: &Arc<dyn Exporter>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Service {
    pub fn new(registry: Arc<Registry>, telemetry: Telemetry, host: Arc<Host>) -> Service {
        let reload_ok = telemetry.counter(
            "weft_config_reloads",
            "Config reloads by result",
            &[("result", "success")],
        );
        let reload_failed = telemetry.counter(
            "weft_config_reloads",
            "Config reloads by result",
            &[("result", "failure")],
        );
        Service {
            registry,
            telemetry,
            host,
            running: Mutex::new(None),
            reload_ok,
            reload_failed,
        }
    }

    /// Counts a reload whose config did not even validate.
    pub fn record_reload_failure(&self) {
        self.reload_failed.inc();
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    fn settings(&self, id: &ComponentId, kind: Kind) -> Settings {
        Settings {
            id: id.clone(),
            kind,
            telemetry: self.telemetry.clone(),
            host: self.host.clone(),
        }
    }

    /// Builds and starts the first graph.
    pub async fn start(&self, config: ServiceConfig) -> Result<(), GraphError> {
        self.apply(config, true).await.map(|_| ())
    }

    /// Replaces the running graph with one built from `config`. On any failure
    /// the previous graph keeps running and the error says why. Returns false
    /// when the config equals the running one and nothing was done.
    pub async fn reload(&self, config: ServiceConfig) -> Result<bool, GraphError> {
        let r = self.apply(config, false).await;
        match &r {
            Ok(true) => self.reload_ok.inc(),
            Ok(false) => {}
            Err(_) => self.reload_failed.inc(),
        }
        r
    }

    async fn apply(&self, config: ServiceConfig, first: bool) -> Result<bool, GraphError> {
        let mut guard = self.running.lock().await;
        let (old_config, mut old) = match guard.take() {
            Some((c, r)) => (Some(c), r),
            None => (None, Running::default()),
        };
        if !first && old_config.as_ref() == Some(&config) {
            *guard = old_config.map(|c| (c, old));
            return Ok(false);
        }
        match self.build(&config, &mut old).await {
            Ok((new, leftovers)) => {
                self.host.status().set_graph(graph_view(&config));
                *guard = Some((config, new));
                drop(guard);
                // Retire what the new graph no longer uses, upstream first.
                shutdown_leftovers(leftovers).await;
                self.host.set_ready(true);
                Ok(true)
            }
            Err(e) => {
                if let Some(c) = old_config {
                    *guard = Some((c, old));
                }
                Err(e)
            }
        }
    }

    /// Builds the new graph reusing what is unchanged in `old`. On success,
    /// returns the new graph and the old parts to shut down; on failure, `old`
    /// is left running as it was.
    async fn build(
        &self,
        cfg: &ServiceConfig,
        old: &mut Running,
    ) -> Result<(Running, Running), GraphError> {
        let mut new = Running::default();
        // Components created by this build, stopped again if the build fails.
        let mut created = Running::default();
        // Extensions (re)created by this build: a component that names one of
        // them (auth, storage) is rebuilt too, so it uses the new instance.
        let mut fresh_extensions: BTreeSet<String> = BTreeSet::new();
        let uses_fresh = |raw: &Value, fresh: &BTreeSet<String>| {
            let mut refs = Vec::new();
            crate::config::extension_refs(raw, &mut Vec::new(), &mut refs);
            refs.iter().any(|(_, id)| {
                ComponentId::parse(id).is_ok_and(|id| fresh.contains(&id.to_string()))
            })
        };

        macro_rules! bail {
            ($e:expr) => {{
                let err = $e;
                shutdown_leftovers(created).await;
                return Err(err);
            }};
        }

        // Extensions.
        for id in &cfg.service_extensions {
            let raw = cfg.extensions.get(id).cloned().unwrap_or(Value::Null);
            if let Some(prev) = old.extensions.get(id).filter(|p| p.config == raw) {
                new.extensions.insert(
                    id.clone(),
                    RunningExtension {
                        config: raw,
                        instance: prev.instance.clone(),
                    },
                );
                continue;
            }
            // A changed extension may hold the same port: stop the old one first.
            if let Some(prev) = old.extensions.remove(id) {
                let _ = prev.instance.shutdown().await;
            }
            let Some(f) = self.registry.extensions.get(id.type_name.as_str()) else {
                continue;
            };
            let inst = match f.create(self.settings(id, Kind::Extension), &raw) {
                Ok(i) => i,
                Err(source) => bail!(GraphError::Create {
                    kind: "extension",
                    id: id.clone(),
                    source
                }),
            };
            if let Err(source) = inst.start().await {
                bail!(GraphError::Start {
                    kind: "extension",
                    id: id.clone(),
                    source
                });
            }
            fresh_extensions.insert(id.to_string());
            created.extensions.insert(
                id.clone(),
                RunningExtension {
                    config: raw.clone(),
                    instance: inst.clone(),
                },
            );
            new.extensions.insert(
                id.clone(),
                RunningExtension {
                    config: raw,
                    instance: inst,
                },
            );
        }

        // Exporters used by some pipeline.
        let used_exporters: BTreeSet<&ComponentId> = cfg
            .pipelines
            .values()
            .flat_map(|p| p.exporters.iter())
            .collect();
        for id in used_exporters {
            let raw = cfg.exporters.get(id).cloned().unwrap_or(Value::Null);
            if let Some(prev) = old
                .exporters
                .get(id)
                .filter(|p| p.config == raw && !uses_fresh(&raw, &fresh_extensions))
            {
                new.exporters.insert(
                    id.clone(),
                    RunningExporter {
                        config: raw,
                        instance: prev.instance.clone(),
                    },
                );
                continue;
            }
            let Some(f) = self.registry.exporters.get(id.type_name.as_str()) else {
                continue;
            };
            let inst = match f.create(self.settings(id, Kind::Exporter), &raw) {
                Ok(i) => i,
                Err(source) => bail!(GraphError::Create {
                    kind: "exporter",
                    id: id.clone(),
                    source
                }),
            };
            if let Err(source) = inst.start().await {
                bail!(GraphError::Start {
                    kind: "exporter",
                    id: id.clone(),
                    source
                });
            }
            created.exporters.insert(
                id.clone(),
                RunningExporter {
                    config: raw.clone(),
                    instance: inst.clone(),
                },
            );
            new.exporters.insert(
                id.clone(),
                RunningExporter {
                    config: raw,
                    instance: inst,
                },
            );
        }

        // Pipelines: processor chains built back to front.
        for (pid, pc) in &cfg.pipelines {
            let key = PipelineKey {
                definition: pc.clone(),
                processor_configs: pc
                    .processors
                    .iter()
                    .map(|id| cfg.processors.get(id).cloned().unwrap_or(Value::Null))
                    .collect(),
            };
            let exporters: Vec<Arc<dyn Exporter>> = pc
                .exporters
                .iter()
                .filter_map(|id| new.exporters.get(id).map(|e| e.instance.clone()))
                .collect();
            if let Some(prev) = old.pipelines.get(pid) {
                let same_exporters = prev.exporters.len() == exporters.len()
                    && prev
                        .exporters
                        .iter()
                        .zip(&exporters)
                        .all(|(a, b)| ptr_eq_exporter(a, b));
                if prev.key == key && same_exporters {
                    new.pipelines.insert(
                        pid.clone(),
                        RunningPipeline {
                            key,
                            exporters,
                            processors: prev.processors.clone(),
                            head: prev.head.clone(),
                        },
                    );
                    continue;
                }
            }
            let mut next: DynConsumer =
                Fanout::build(exporters.iter().map(|e| e.clone() as DynConsumer).collect());
            if pid.signal == Signal::Traces {
                // What leaves the pipeline, for the status page (off unless a
                // `status` extension runs).
                let tap = self.host.status().tap(&pid.to_string());
                next = Arc::new(TapConsumer::new(tap, next));
            }
            let mut processors = Vec::new();
            for id in pc.processors.iter().rev() {
                let raw = cfg.processors.get(id).cloned().unwrap_or(Value::Null);
                let Some(f) = self.registry.processors.get(id.type_name.as_str()) else {
                    continue;
                };
                let proc = match f.create(
                    self.settings(id, Kind::Processor),
                    &raw,
                    pid.signal,
                    next.clone(),
                ) {
                    Ok(p) => p,
                    Err(source) => bail!(GraphError::Create {
                        kind: "processor",
                        id: id.clone(),
                        source
                    }),
                };
                if let Err(source) = proc.start().await {
                    bail!(GraphError::Start {
                        kind: "processor",
                        id: id.clone(),
                        source
                    });
                }
                next = proc.clone();
                processors.push((id.clone(), proc));
            }
            processors.reverse();
            let rp = RunningPipeline {
                key,
                exporters,
                processors,
                head: next,
            };
            created.pipelines.insert(
                pid.clone(),
                RunningPipeline {
                    key: rp.key.clone(),
                    exporters: rp.exporters.clone(),
                    processors: rp.processors.clone(),
                    head: rp.head.clone(),
                },
            );
            new.pipelines.insert(pid.clone(), rp);
        }

        // Receivers: keep unchanged ones; stop changed ones before starting
        // their replacement, since they usually hold the same port.
        let used_receivers: BTreeSet<&ComponentId> = cfg
            .pipelines
            .values()
            .flat_map(|p| p.receivers.iter())
            .collect();
        let mut stopped_old: Vec<(ComponentId, RunningReceiver)> = Vec::new();
        for id in &used_receivers {
            let raw = cfg.receivers.get(*id).cloned().unwrap_or(Value::Null);
            if let Some(prev) = old.receivers.get(*id) {
                if prev.config == raw && !uses_fresh(&raw, &fresh_extensions) {
                    new.receivers.insert(
                        (*id).clone(),
                        RunningReceiver {
                            config: raw,
                            instance: prev.instance.clone(),
                            outputs: prev.outputs.clone(),
                        },
                    );
                    continue;
                }
            }
            if let Some(prev) = old.receivers.remove(*id) {
                if let Err(e) = prev.instance.shutdown().await {
                    warn!(receiver = %id, error = %e, "receiver did not stop cleanly");
                }
                stopped_old.push(((*id).clone(), prev));
            }
        }
        for id in used_receivers {
            if new.receivers.contains_key(id) {
                continue;
            }
            let raw = cfg.receivers.get(id).cloned().unwrap_or(Value::Null);
            let outputs = Signal::ALL.map(|s| Arc::new(SwapConsumer::new(s)));
            let ro = ReceiverOutputs {
                traces: outputs[0].clone(),
                metrics: outputs[1].clone(),
                logs: outputs[2].clone(),
            };
            let result = match self.registry.receivers.get(id.type_name.as_str()) {
                Some(f) => f
                    .create(self.settings(id, Kind::Receiver), &raw, ro)
                    .map_err(|source| GraphError::Create {
                        kind: "receiver",
                        id: id.clone(),
                        source,
                    }),
                None => continue,
            };
            // Outputs must be wired before the receiver accepts anything.
            wire_receiver(id, &outputs, cfg, &new.pipelines);
            let started = match result {
                Ok(inst) => inst
                    .start()
                    .await
                    .map(|_| inst)
                    .map_err(|source| GraphError::Start {
                        kind: "receiver",
                        id: id.clone(),
                        source,
                    }),
                Err(e) => Err(e),
            };
            match started {
                Ok(inst) => {
                    created.receivers.insert(
                        id.clone(),
                        RunningReceiver {
                            config: raw.clone(),
                            instance: inst.clone(),
                            outputs: outputs.clone(),
                        },
                    );
                    new.receivers.insert(
                        id.clone(),
                        RunningReceiver {
                            config: raw,
                            instance: inst,
                            outputs,
                        },
                    );
                }
                Err(e) => {
                    // Put the receivers stopped above back in service.
                    for (rid, prev) in stopped_old {
                        match prev.instance.start().await {
                            Ok(()) => {
                                old.receivers.insert(rid, prev);
                            }
                            Err(re) => {
                                warn!(receiver = %rid, error = %re, "could not restart the previous receiver after a failed reload")
                            }
                        }
                    }
                    bail!(e);
                }
            }
        }

        // Swap every receiver onto the new pipelines.
        for (id, r) in &new.receivers {
            wire_receiver(id, &r.outputs, cfg, &new.pipelines);
        }

        // Everything in `old` not carried into `new` is retired.
        let mut leftovers = Running::default();
        for (id, r) in std::mem::take(&mut old.receivers) {
            if !new
                .receivers
                .get(&id)
                .is_some_and(|n| Arc::ptr_eq(&n.instance, &r.instance))
            {
                leftovers.receivers.insert(id, r);
            }
        }
        for (pid, p) in std::mem::take(&mut old.pipelines) {
            let kept = new
                .pipelines
                .get(&pid)
                .is_some_and(|n| Arc::ptr_eq(&n.head, &p.head));
            if !kept {
                leftovers.pipelines.insert(pid, p);
            }
        }
        for (id, e) in std::mem::take(&mut old.exporters) {
            if !new
                .exporters
                .get(&id)
                .is_some_and(|n| ptr_eq_exporter(&n.instance, &e.instance))
            {
                leftovers.exporters.insert(id, e);
            }
        }
        for (id, e) in std::mem::take(&mut old.extensions) {
            if !new
                .extensions
                .get(&id)
                .is_some_and(|n| Arc::ptr_eq(&n.instance, &e.instance))
            {
                leftovers.extensions.insert(id, e);
            }
        }
        Ok((new, leftovers))
    }

    /// Stops everything: receivers, then processors (flush), then exporters
    /// (drain), then extensions.
    pub async fn shutdown(&self) {
        self.host.set_ready(false);
        let mut guard = self.running.lock().await;
        if let Some((_, running)) = guard.take() {
            shutdown_leftovers(running).await;
        }
    }

    /// Each running component instance as `kind:id` → an identity token (its
    /// address). Equal tokens across a reload mean the instance was kept.
    pub async fn instance_tokens(&self) -> BTreeMap<String, usize> {
        let guard = self.running.lock().await;
        let mut out = BTreeMap::new();
        if let Some((_, r)) = guard.as_ref() {
            for (id, x) in &r.receivers {
                out.insert(
                    format!("receiver:{id}"),
                    Arc::as_ptr(&x.instance) as *const () as usize,
                );
            }
            for (id, x) in &r.exporters {
                out.insert(
                    format!("exporter:{id}"),
                    Arc::as_ptr(&x.instance) as *const () as usize,
                );
            }
            for (id, x) in &r.extensions {
                out.insert(
                    format!("extension:{id}"),
                    Arc::as_ptr(&x.instance) as *const () as usize,
                );
            }
            for (pid, p) in &r.pipelines {
                for (id, proc) in &p.processors {
                    out.insert(
                        format!("processor:{pid}:{id}"),
                        Arc::as_ptr(proc) as *const () as usize,
                    );
                }
            }
        }
        out
    }

    /// Ids of the running components, for logs and tests.
    pub async fn running_summary(&self) -> Option<String> {
        let guard = self.running.lock().await;
        guard.as_ref().map(|(_, r)| {
            format!(
                "receivers [{}], pipelines [{}], exporters [{}]",
                r.receivers
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                r.pipelines
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                r.exporters
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
    }
}

/// The running graph as the status page draws it.
fn graph_view(cfg: &ServiceConfig) -> GraphView {
    let ids = |v: &[ComponentId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    GraphView {
        pipelines: cfg
            .pipelines
            .iter()
            .map(|(pid, pc)| PipelineView {
                id: pid.to_string(),
                signal: pid.signal.to_string(),
                receivers: ids(&pc.receivers),
                processors: ids(&pc.processors),
                exporters: ids(&pc.exporters),
            })
            .collect(),
        extensions: ids(&cfg.service_extensions),
    }
}

fn wire_receiver(
    id: &ComponentId,
    outputs: &[Arc<SwapConsumer>; 3],
    cfg: &ServiceConfig,
    pipelines: &BTreeMap<PipelineId, RunningPipeline>,
) {
    for signal in Signal::ALL {
        let heads: Vec<DynConsumer> = cfg
            .pipelines
            .iter()
            .filter(|(pid, pc)| pid.signal == signal && pc.receivers.contains(id))
            .filter_map(|(pid, _)| pipelines.get(pid).map(|p| p.head.clone()))
            .collect();
        let target = if heads.is_empty() {
            None
        } else {
            Some(Fanout::build(heads))
        };
        outputs[sig_idx(signal)].set(target);
    }
}

async fn shutdown_leftovers(r: Running) {
    for (id, rec) in r.receivers {
        if let Err(e) = rec.instance.shutdown().await {
            warn!(receiver = %id, error = %e, "receiver did not stop cleanly");
        }
        for o in &rec.outputs {
            o.set(None);
        }
    }
    for (pid, p) in r.pipelines {
        for (id, proc) in p.processors {
            if let Err(e) = proc.shutdown().await {
                warn!(pipeline = %pid, processor = %id, error = %e, "processor did not stop cleanly");
            }
        }
    }
    let mut drains = Vec::new();
    for (id, e) in r.exporters {
        drains.push(async move {
            if let Err(err) = e.instance.shutdown().await {
                warn!(exporter = %id, error = %err, "exporter did not drain cleanly");
            }
        });
    }
    futures_util::future::join_all(drains).await;
    for (id, e) in r.extensions {
        if let Err(err) = e.instance.shutdown().await {
            warn!(extension = %id, error = %err, "extension did not stop cleanly");
        }
    }
}
