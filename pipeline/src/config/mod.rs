//! The collector's config model: YAML files with positions, `${env:...}`
//! expansion, merging of several files and `--set`, and validation of the
//! service graph against the registry.
//!
//! Loading happens in two phases, as in the collector: text → generic YAML
//! value (merged, expanded), then each component section is handed to its
//! factory's typed config. Errors carry the key path, and the path is looked up
//! in the position index of the file that last wrote it.

pub mod duration;
pub mod expand;
pub mod positions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::component::{ComponentId, ConfigFieldError, Kind, Registry};
use crate::data::Signal;
use positions::LineCol;

/// Where a piece of config came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub source: Arc<str>,
    pub at: Option<LineCol>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "{} line {}, column {}", self.source, at.line, at.column),
            None => write!(f, "{}", self.source),
        }
    }
}

/// A configuration error: what is wrong, at which key, and where it is written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The key path, e.g. `receivers::otlp::protocols`.
    pub key: String,
    pub message: String,
    pub location: Option<Location>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.key, self.message)?;
        }
        if let Some(loc) = &self.location {
            write!(f, " ({loc})")?;
        }
        Ok(())
    }
}

/// One config input before merging.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// Text with a display name (the embedded default).
    Text {
        name: String,
        text: String,
    },
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Text { name, .. } => name.clone(),
        }
    }
}

/// The merged, expanded config document with the position of every key.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    positions: HashMap<Vec<String>, Location>,
    /// Variables that were referenced but unset (for a warning).
    pub unset_vars: Vec<String>,
}

pub(crate) fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn join_path(path: &[String]) -> String {
    path.join("::")
}

impl Document {
    /// Reads, parses, expands and merges the sources left to right, then applies
    /// each `--set key=value` (keys split on `::`, or on `.` when no `::` is used).
    pub fn load(sources: &[Source], sets: &[String]) -> Result<Document, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        Document::load_with_env(sources, sets, &env)
    }

    pub fn load_with_env(
        sources: &[Source],
        sets: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Document, ConfigError> {
        let mut doc = Document {
            value: Value::Mapping(Mapping::new()),
            positions: HashMap::new(),
            unset_vars: Vec::new(),
        };
        for source in sources {
            let name: Arc<str> = source.name().into();
            let text = match source {
                Source::File(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
                    key: String::new(),
                    message: format!("cannot read config file {}: {e}", p.display()),
                    location: None,
                })?,
                Source::Text { text, .. } => text.clone(),
            };
            let mut value: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError {
                key: String::new(),
                message: format!("cannot parse YAML: {e}"),
                location: Some(Location {
                    source: name.clone(),
                    at: e.location().map(|l| LineCol {
                        line: l.line(),
                        column: l.column(),
                    }),
                }),
            })?;
            if value.is_null() {
                value = Value::Mapping(Mapping::new());
            }
            if !value.is_mapping() {
                return Err(ConfigError {
                    key: String::new(),
                    message: "the config must be a YAML mapping at the top level".into(),
                    location: Some(Location {
                        source: name,
                        at: None,
                    }),
                });
            }
            let mut unset = Vec::new();
            expand::expand_value(&mut value, &mut Vec::new(), env, &mut |_, n| {
                unset.push(n.to_string())
            })
            .map_err(|(path, e)| doc.error_with(&path, e.to_string(), Some(&name), &text))?;
            doc.unset_vars.extend(unset);
            for (path, at) in positions::index(&text) {
                doc.positions.insert(
                    path,
                    Location {
                        source: name.clone(),
                        at: Some(at),
                    },
                );
            }
            merge(&mut doc.value, value);
        }
        for set in sets {
            doc.apply_set(set)?;
        }
        Ok(doc)
    }

    fn error_with(
        &self,
        path: &[String],
        message: String,
        source: Option<&Arc<str>>,
        text: &str,
    ) -> ConfigError {
        let location = source.map(|s| Location {
            source: s.clone(),
            at: positions::index(text).get(path).copied(),
        });
        ConfigError {
            key: join_path(path),
            message,
            location,
        }
    }

    fn apply_set(&mut self, set: &str) -> Result<(), ConfigError> {
        let bad = |m: &str| ConfigError {
            key: String::new(),
            message: format!("invalid --set {set:?}: {m}"),
            location: None,
        };
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| bad("expected key=value"))?;
        let parts: Vec<String> = if key.contains("::") {
            key.split("::").map(str::to_string).collect()
        } else {
            key.split('.').map(str::to_string).collect()
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty key segment"));
        }
        let value: Value = serde_yaml_ng::from_str(raw).unwrap_or(Value::String(raw.into()));
        let mut node = &mut self.value;
        for part in &parts {
            if !node.is_mapping() {
                *node = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(map) = node else {
                return Err(bad("not a mapping"));
            };
            node = map
                .entry(Value::String(part.clone()))
                .or_insert(Value::Null);
        }
        *node = value;
        self.positions.insert(
            parts,
            Location {
                source: "--set".into(),
                at: None,
            },
        );
        Ok(())
    }

    /// The location of the deepest written prefix of `path`.
    pub fn locate(&self, path: &[String]) -> Option<Location> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.positions.get(&path[..n]).cloned())
    }

    pub fn error(&self, path: &[String], message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: join_path(path),
            message: message.into(),
            location: self.locate(path),
        }
    }

    /// The merged, expanded config as YAML (what `print-config` shows), with
    /// secrets shown as `[REDACTED]`: the values of keys named `token`,
    /// `tokens`, `password`, `key_pem`, `client_secret`, `api_key`, every value
    /// of a `headers` map (as the collector treats them: opaque), and the
    /// password of any `scheme://user:password@host` URL.
    pub fn to_yaml(&self) -> String {
        let mut v = self.value.clone();
        redact(&mut v, false);
        serde_yaml_ng::to_string(&v).unwrap_or_default()
    }
}

const SECRET_KEYS: [&str; 6] = [
    "token",
    "tokens",
    "password",
    "key_pem",
    "client_secret",
    "api_key",
];

const REDACTED: &str = "[REDACTED]";

/// Masks secrets in place; `secret` says every scalar below is one (the
/// values of a `headers` map, a secret key's list).
fn redact(v: &mut Value, secret: bool) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                let key = k.as_str().unwrap_or_default().to_ascii_lowercase();
                let below = secret || SECRET_KEYS.contains(&key.as_str()) || key == "headers";
                redact(child, below);
            }
        }
        Value::Sequence(s) => {
            for child in s.iter_mut() {
                redact(child, secret);
            }
        }
        Value::Null => {}
        Value::String(text) if !secret => {
            if let Some(masked) = mask_url_password(text) {
                *text = masked;
            }
        }
        _ if secret => *v = Value::String(REDACTED.into()),
        _ => {}
    }
}

/// `scheme://user:password@rest` with the password masked, or None when the
/// text holds no such URL.
fn mask_url_password(text: &str) -> Option<String> {
    let scheme_end = text.find("://")? + 3;
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(format!(
        "{}{}:{REDACTED}{}",
        &text[..scheme_end],
        &rest[..colon],
        &rest[at..]
    ))
}

/// Maps deep-merge, later scalars win, lists replace.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_mapping() && v.is_mapping() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `traces`, `metrics/2`: a pipeline id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.signal, n),
            None => write!(f, "{}", self.signal),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

/// `service.telemetry`: weft's own logs and metrics.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub logs: LogsTelemetry,
    pub metrics: MetricsTelemetry,
    /// weft's own spans (`self_trace::traces_settings` reads it).
    pub traces: Option<Value>,
    /// Attributes of weft's own telemetry (self-traces, pushed self-metrics).
    pub resource: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    /// debug, info (default), warn or error.
    pub level: String,
    /// console (default) or json.
    pub encoding: String,
    pub development: bool,
    pub disable_caller: bool,
    pub disable_stacktrace: bool,
    pub output_paths: Option<Vec<String>>,
    pub error_output_paths: Option<Vec<String>>,
    pub initial_fields: Option<Value>,
    pub sampling: Option<Value>,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: "info".into(),
            encoding: "console".into(),
            development: false,
            disable_caller: false,
            disable_stacktrace: false,
            output_paths: None,
            error_output_paths: None,
            initial_fields: None,
            sampling: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    /// none disables the endpoint; basic, normal (default) and detailed serve it.
    pub level: String,
    /// Where the Prometheus endpoint listens (default localhost:8888).
    pub address: Option<String>,
    /// The collector's newer form: `[{pull: {exporter: {prometheus: {host, port}}}}]`.
    pub readers: Option<Vec<Value>>,
}

impl Default for MetricsTelemetry {
    fn default() -> Self {
        MetricsTelemetry {
            level: "normal".into(),
            address: None,
            readers: None,
        }
    }
}

impl MetricsTelemetry {
    /// The address to serve self-metrics on, or None when disabled.
    pub fn endpoint(&self) -> Result<Option<String>, String> {
        if self.level == "none" {
            return Ok(None);
        }
        if let Some(addr) = &self.address {
            return Ok(Some(addr.clone()));
        }
        if let Some(readers) = &self.readers {
            for r in readers {
                let prom = &r["pull"]["exporter"]["prometheus"];
                if prom.is_mapping() {
                    let host = prom["host"].as_str().unwrap_or("localhost");
                    let port = prom["port"].as_u64().ok_or(
                        "service::telemetry::metrics::readers: prometheus reader needs a port",
                    )?;
                    return Ok(Some(format!("{host}:{port}")));
                }
            }
            // Periodic readers only: no Prometheus endpoint (as the collector).
            return Ok(None);
        }
        Ok(Some("localhost:8888".into()))
    }
}

/// A validated service config: every component section checked by its factory,
/// every pipeline resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub receivers: BTreeMap<ComponentId, Value>,
    pub processors: BTreeMap<ComponentId, Value>,
    pub exporters: BTreeMap<ComponentId, Value>,
    pub extensions: BTreeMap<ComponentId, Value>,
    pub service_extensions: Vec<ComponentId>,
    pub pipelines: BTreeMap<PipelineId, PipelineConfig>,
    pub telemetry: TelemetryConfig,
}

const TOP_KEYS: [&str; 6] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];

fn as_map<'a>(
    doc: &Document,
    v: &'a Value,
    path: &[String],
) -> Result<Option<&'a Mapping>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        _ => Err(doc.error(path, "expected a mapping")),
    }
}

/// Where a component's config names an extension: `auth: {authenticator: id}`
/// anywhere, and `sending_queue: {storage: id}`. A reload rebuilds a component
/// whose extension changed, even when its own config did not.
pub(crate) fn extension_refs(
    v: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    let Value::Mapping(m) = v else { return };
    for (k, child) in m {
        let Some(key) = k.as_str() else { continue };
        path.push(key.to_string());
        let named = match key {
            "auth" => child.get("authenticator").map(|x| ("authenticator", x)),
            "sending_queue" => child.get("storage").map(|x| ("storage", x)),
            _ => None,
        };
        match named {
            Some((field, Value::String(id))) => {
                let mut at = path.clone();
                at.push(field.to_string());
                out.push((at, id.clone()));
            }
            _ => extension_refs(child, path, out),
        }
        path.pop();
    }
}

fn p(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

impl ServiceConfig {
    pub fn from_document(
        doc: &Document,
        registry: &Registry,
    ) -> Result<ServiceConfig, ConfigError> {
        let root = as_map(doc, &doc.value, &[])?.cloned().unwrap_or_default();
        let unknown: Vec<String> = root
            .keys()
            .map(key_string)
            .filter(|k| !TOP_KEYS.contains(&k.as_str()))
            .collect();
        if let Some(first) = unknown.first() {
            return Err(doc.error(
                std::slice::from_ref(first),
                format!("'' has invalid keys: {}", unknown.join(", ")),
            ));
        }
        if let Some(c) = root.get("connectors") {
            if as_map(doc, c, &p(&["connectors"]))?.is_some_and(|m| !m.is_empty()) {
                return Err(doc.error(
                    &p(&["connectors"]),
                    "connectors are not supported by weft yet",
                ));
            }
        }
        let mut sections = BTreeMap::new();
        for kind in [
            Kind::Receiver,
            Kind::Processor,
            Kind::Exporter,
            Kind::Extension,
        ] {
            let mut parsed = BTreeMap::new();
            let section = kind.section();
            if let Some(m) = root.get(section) {
                for (k, v) in as_map(doc, m, &p(&[section]))?.into_iter().flatten() {
                    let key = key_string(k);
                    let path = vec![section.to_string(), key.clone()];
                    let id = ComponentId::parse(&key).map_err(|e| {
                        doc.error(
                            &path,
                            format!("invalid {} id {key:?}: {e}", kind.singular()),
                        )
                    })?;
                    if !registry.knows(kind, &id.type_name) {
                        return Err(doc.error(
                            &path,
                            format!(
                                "unknown type: {:?} for id: {:?} (valid values: [{}])",
                                id.type_name,
                                key,
                                registry.type_names(kind).join(" ")
                            ),
                        ));
                    }
                    registry
                        .check_config(kind, &id.type_name, v)
                        .map_err(|e| field_error(doc, &path, e))?;
                    if parsed.insert(id.clone(), v.clone()).is_some() {
                        return Err(
                            doc.error(&path, format!("duplicate {} id {id}", kind.singular()))
                        );
                    }
                }
            }
            sections.insert(kind, parsed);
        }
        let mut take = |k: Kind| sections.remove(&k).unwrap_or_default();
        let receivers = take(Kind::Receiver);
        let processors = take(Kind::Processor);
        let exporters = take(Kind::Exporter);
        let extensions = take(Kind::Extension);

        let service = root.get("service").cloned().unwrap_or(Value::Null);
        let service_map = as_map(doc, &service, &p(&["service"]))?
            .cloned()
            .unwrap_or_default();
        for k in service_map.keys().map(key_string) {
            if !["extensions", "pipelines", "telemetry"].contains(&k.as_str()) {
                return Err(doc.error(
                    &p(&["service", &k]),
                    format!("'service' has invalid keys: {k}"),
                ));
            }
        }
        if receivers.is_empty() {
            return Err(doc.error(
                &p(&["receivers"]),
                "no receiver configuration specified in config",
            ));
        }
        if exporters.is_empty() {
            return Err(doc.error(
                &p(&["exporters"]),
                "no exporter configuration specified in config",
            ));
        }

        let telemetry: TelemetryConfig = match service_map.get("telemetry") {
            None | Some(Value::Null) => TelemetryConfig::default(),
            Some(v) => serde_path_to_error::deserialize(v.clone()).map_err(|e| {
                let mut path = p(&["service", "telemetry"]);
                path.extend(e.path().iter().map(|s| s.to_string()).filter(|s| s != "?"));
                doc.error(&path, e.into_inner().to_string())
            })?,
        };
        telemetry
            .metrics
            .endpoint()
            .map_err(|m| doc.error(&p(&["service", "telemetry", "metrics"]), m))?;
        if let Err(e) = crate::self_telemetry::periodic_readers(&telemetry)
            .and_then(|_| crate::self_telemetry::resource(&telemetry, ""))
            .and_then(|_| crate::self_trace::traces_settings(&telemetry).map(|_| ()))
        {
            return Err(match e {
                crate::self_telemetry::SelfTelemetryError::Config { path, message } => {
                    let mut full = p(&["service", "telemetry"]);
                    full.extend(path.split("::").map(str::to_string));
                    doc.error(&full, message)
                }
                other => doc.error(&p(&["service", "telemetry"]), other.to_string()),
            });
        }
        if !["debug", "info", "warn", "error"]
            .contains(&telemetry.logs.level.to_ascii_lowercase().as_str())
        {
            return Err(doc.error(
                &p(&["service", "telemetry", "logs", "level"]),
                format!(
                    "unknown log level {:?} (valid: debug, info, warn, error)",
                    telemetry.logs.level
                ),
            ));
        }

        let mut service_extensions = Vec::new();
        if let Some(list) = service_map.get("extensions") {
            let ids = id_list(doc, list, &p(&["service", "extensions"]))?;
            for (i, id) in ids.into_iter().enumerate() {
                if !extensions.contains_key(&id) {
                    return Err(doc.error(
                        &p(&["service", "extensions", &i.to_string()]),
                        format!(
                            "references extension {:?} which is not configured",
                            id.to_string()
                        ),
                    ));
                }
                service_extensions.push(id);
            }
        }

        // `auth.authenticator` and `sending_queue.storage` name extensions
        // that must be enabled in service.extensions.
        for (section, parsed) in [("receivers", &receivers), ("exporters", &exporters)] {
            for (id, raw) in parsed.iter() {
                let mut refs = Vec::new();
                extension_refs(
                    raw,
                    &mut vec![section.to_string(), id.to_string()],
                    &mut refs,
                );
                for (path, wanted) in refs {
                    let enabled =
                        ComponentId::parse(&wanted).is_ok_and(|w| service_extensions.contains(&w));
                    if !enabled {
                        return Err(doc.error(
                            &path,
                            format!(
                                "references extension {wanted:?}, which is not configured under `extensions` and listed in `service.extensions`"
                            ),
                        ));
                    }
                }
            }
        }

        let pipelines_v = service_map.get("pipelines").cloned().unwrap_or(Value::Null);
        let pipelines_m = as_map(doc, &pipelines_v, &p(&["service", "pipelines"]))?
            .cloned()
            .unwrap_or_default();
        if pipelines_m.is_empty() {
            return Err(doc.error(
                &p(&["service", "pipelines"]),
                "service must have at least one pipeline",
            ));
        }
        let mut pipelines = BTreeMap::new();
        for (k, v) in &pipelines_m {
            let key = key_string(k);
            let path = p(&["service", "pipelines", &key]);
            let (sig, name) = match key.split_once('/') {
                Some((s, n)) => (s, Some(n)),
                None => (key.as_str(), None),
            };
            let signal = Signal::parse(sig).ok_or_else(|| {
                doc.error(&path, format!("pipeline id {key:?}: unknown signal {sig:?} (valid: traces, metrics, logs)"))
            })?;
            if matches!(name, Some(n) if n.is_empty() || n.chars().any(char::is_whitespace)) {
                return Err(doc.error(&path, format!("invalid pipeline id {key:?}")));
            }
            let pid = PipelineId {
                signal,
                name: name.map(str::to_string),
            };
            let body = as_map(doc, v, &path)?.cloned().unwrap_or_default();
            for bk in body.keys().map(key_string) {
                if !["receivers", "processors", "exporters"].contains(&bk.as_str()) {
                    return Err(doc.error(
                        &[path.clone(), vec![bk.clone()]].concat(),
                        format!("'pipelines::{key}' has invalid keys: {bk}"),
                    ));
                }
            }
            let list = |which: &str| -> Result<Vec<ComponentId>, ConfigError> {
                match body.get(which) {
                    None => Ok(Vec::new()),
                    Some(l) => id_list(doc, l, &[path.clone(), vec![which.to_string()]].concat()),
                }
            };
            let pc = PipelineConfig {
                receivers: list("receivers")?,
                processors: list("processors")?,
                exporters: list("exporters")?,
            };
            if pc.receivers.is_empty() {
                return Err(doc.error(
                    &path,
                    format!("pipeline {key:?}: must have at least one receiver"),
                ));
            }
            if pc.exporters.is_empty() {
                return Err(doc.error(
                    &path,
                    format!("pipeline {key:?}: must have at least one exporter"),
                ));
            }
            for (which, kind, ids, defined) in [
                ("receivers", Kind::Receiver, &pc.receivers, &receivers),
                ("processors", Kind::Processor, &pc.processors, &processors),
                ("exporters", Kind::Exporter, &pc.exporters, &exporters),
            ] {
                let mut seen = BTreeSet::new();
                for (i, id) in ids.iter().enumerate() {
                    let ipath = [path.clone(), p(&[which, &i.to_string()])].concat();
                    if !defined.contains_key(id) {
                        return Err(doc.error(
                            &ipath,
                            format!(
                                "pipeline {key:?} references {} {:?} which is not configured",
                                kind.singular(),
                                id.to_string()
                            ),
                        ));
                    }
                    if !seen.insert(id) {
                        return Err(doc.error(
                            &ipath,
                            format!(
                                "pipeline {key:?} references {} {:?} multiple times",
                                kind.singular(),
                                id.to_string()
                            ),
                        ));
                    }
                    if !registry.signals(kind, &id.type_name).contains(&signal) {
                        return Err(doc.error(
                            &ipath,
                            format!(
                                "{} {:?} does not support {signal}",
                                kind.singular(),
                                id.to_string()
                            ),
                        ));
                    }
                }
            }
            pipelines.insert(pid, pc);
        }
        Ok(ServiceConfig {
            receivers,
            processors,
            exporters,
            extensions,
            service_extensions,
            pipelines,
            telemetry,
        })
    }

    /// Loads and validates in one step.
    pub fn load(
        sources: &[Source],
        sets: &[String],
        registry: &Registry,
    ) -> Result<(Document, ServiceConfig), ConfigError> {
        let doc = Document::load(sources, sets)?;
        let cfg = ServiceConfig::from_document(&doc, registry)?;
        Ok((doc, cfg))
    }
}

fn field_error(doc: &Document, base: &[String], e: ConfigFieldError) -> ConfigError {
    let mut path = base.to_vec();
    path.extend(e.path.iter().cloned());
    // serde names an unknown key in backticks; point at the key itself.
    let mut lookup = path.clone();
    if let Some(unknown) = e
        .message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        lookup.push(unknown.to_string());
    }
    // serde quotes the offending value; under a secret key that is the secret.
    let secret = path.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        SECRET_KEYS.contains(&p.as_str()) || p == "headers"
    });
    let message = if secret {
        mask_quoted(&e.message)
    } else {
        e.message
    };
    ConfigError {
        key: join_path(&path),
        message,
        location: doc.locate(&lookup),
    }
}

/// Every `"..."` in a message replaced by `"[REDACTED]"`.
fn mask_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        out.push('"');
        out.push_str(if inside { REDACTED } else { part });
        inside = !inside;
    }
    out
}

fn id_list(doc: &Document, v: &Value, path: &[String]) -> Result<Vec<ComponentId>, ConfigError> {
    let Value::Sequence(items) = v else {
        if v.is_null() {
            return Ok(Vec::new());
        }
        return Err(doc.error(path, "expected a list of component ids"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let ipath = [path.to_vec(), vec![i.to_string()]].concat();
            let s = item
                .as_str()
                .ok_or_else(|| doc.error(&ipath, "expected a component id string"))?;
            ComponentId::parse(s).map_err(|e| doc.error(&ipath, format!("invalid id {s:?}: {e}")))
        })
        .collect()
}

/// Convenience for the CLI: file paths to sources.
pub fn file_sources(paths: &[impl AsRef<Path>]) -> Vec<Source> {
    paths
        .iter()
        .map(|p| Source::File(p.as_ref().to_path_buf()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(name: &str, t: &str) -> Source {
        Source::Text {
            name: name.into(),
            text: t.into(),
        }
    }

    #[test]
    fn merges_left_to_right_and_applies_set() {
        let a = text(
            "a.yaml",
            "exporters:\n  debug:\n    verbosity: basic\nlist: [1, 2]\nkeep: 1\n",
        );
        let b = text(
            "b.yaml",
            "exporters:\n  debug:\n    verbosity: detailed\n  file:\n    path: x\nlist: [3]\n",
        );
        let doc = Document::load_with_env(
            &[a, b],
            &["exporters::file::path=y".into(), "keep=2".into()],
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            doc.value["exporters"]["debug"]["verbosity"],
            Value::String("detailed".into())
        );
        assert_eq!(
            doc.value["exporters"]["file"]["path"],
            Value::String("y".into())
        );
        assert_eq!(
            doc.value["list"],
            serde_yaml_ng::from_str::<Value>("[3]").unwrap()
        );
        assert_eq!(doc.value["keep"], Value::Number(2.into()));
        let loc = doc
            .locate(&p(&["exporters", "debug", "verbosity"]))
            .unwrap();
        assert_eq!(&*loc.source, "b.yaml");
        assert_eq!(loc.at, Some(LineCol { line: 3, column: 5 }));
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let e = Document::load_with_env(&[text("c.yaml", "a:\n  b: [1,\n")], &[], &|_| None)
            .unwrap_err();
        assert!(e.message.starts_with("cannot parse YAML"), "{e}");
        assert!(e.location.unwrap().at.is_some());
    }

    #[test]
    fn print_config_redacts_secrets() {
        let doc = Document::load_with_env(
            &[text(
                "c.yaml",
                "extensions:\n  bearertokenauth:\n    token: hunter2\n  bearertokenauth/b:\n    tokens: [a1, b2]\nexporters:\n  otlp:\n    endpoint: h:1\n    headers: {Authorization: Bearer hunter2, x-honeycomb-team: abc123}\n  otlp_http:\n    endpoint: http://h:4318\n    proxy_url: http://bob:pa55@proxy:3128/x\n",
            )],
            &[],
            &|_| None,
        )
        .unwrap();
        let y = doc.to_yaml();
        assert!(!y.contains("hunter2") && !y.contains("a1"), "{y}");
        assert!(!y.contains("abc123") && !y.contains("pa55"), "{y}");
        assert!(y.contains("x-honeycomb-team: '[REDACTED]'"), "{y}");
        assert!(y.contains("http://bob:[REDACTED]@proxy:3128/x"), "{y}");
        assert!(y.contains("endpoint: http://h:4318"), "{y}");
        assert_eq!(
            mask_quoted(r#"invalid type: string "s3cret", expected a sequence"#),
            r#"invalid type: string "[REDACTED]", expected a sequence"#
        );
    }
}
