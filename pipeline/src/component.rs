//! Component model: ids, lifecycle, factories and the registry that maps a
//! collector type name to its factory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::consumer::{Consumer, DynConsumer, ReceiverOutputs};
use crate::data::Signal;
use crate::telemetry::Telemetry;

/// The four kinds of configurable components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
    Extension,
}

impl Kind {
    /// The top-level config key that holds this kind.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
            Kind::Extension => "extensions",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
            Kind::Extension => "extension",
        }
    }
}

/// `type[/name]` as the collector spells component ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub type_name: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum IdError {
    #[error("the part before \"/\" should not be empty")]
    EmptyType,
    #[error("invalid character(s) in type {0:?}: a type starts with a letter and holds at most 63 letters, digits or underscores")]
    BadType(String),
    #[error("the part after \"/\" should not be empty")]
    EmptyName,
    #[error("the name {0:?} contains whitespace")]
    BadName(String),
}

impl ComponentId {
    pub fn new(type_name: &str) -> ComponentId {
        ComponentId {
            type_name: type_name.to_string(),
            name: None,
        }
    }

    pub fn parse(s: &str) -> Result<ComponentId, IdError> {
        let s = s.trim();
        let (t, n) = match s.split_once('/') {
            Some((t, n)) => (t.trim(), Some(n.trim())),
            None => (s, None),
        };
        if t.is_empty() {
            return Err(IdError::EmptyType);
        }
        if !valid_type(t) {
            return Err(IdError::BadType(t.to_string()));
        }
        let name = match n {
            None => None,
            Some("") => return Err(IdError::EmptyName),
            Some(n) if n.chars().any(char::is_whitespace) => {
                return Err(IdError::BadName(n.to_string()))
            }
            Some(n) => Some(n.to_string()),
        };
        Ok(ComponentId {
            type_name: t.to_string(),
            name,
        })
    }
}

fn valid_type(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && t.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.type_name, n),
            None => f.write_str(&self.type_name),
        }
    }
}

/// A failure to start, run or stop a component; the message is for the operator.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ComponentError(pub String);

impl ComponentError {
    pub fn new(msg: impl Into<String>) -> ComponentError {
        ComponentError(msg.into())
    }
}

/// Start returns quickly (sockets bound, tasks spawned); shutdown drains and is
/// safe to call without a start.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    async fn start(&self) -> Result<(), ComponentError> {
        Ok(())
    }
    async fn shutdown(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

pub trait Receiver: Lifecycle {}
pub trait Processor: Lifecycle + Consumer {}
pub trait Exporter: Lifecycle + Consumer {}
pub trait Extension: Lifecycle {}

/// What every factory gets at create time.
#[derive(Clone)]
pub struct Settings {
    pub id: ComponentId,
    pub kind: Kind,
    pub telemetry: Telemetry,
    /// Shared service state extensions can report on (health).
    pub host: Arc<crate::host::Host>,
}

/// A config problem inside one component's section: the key path relative to the
/// component (empty = the component itself) and what is wrong.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{message}")]
pub struct ConfigFieldError {
    pub path: Vec<String>,
    pub message: String,
}

impl ConfigFieldError {
    pub fn new(message: impl Into<String>) -> ConfigFieldError {
        ConfigFieldError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    pub fn at(path: &[&str], message: impl Into<String>) -> ConfigFieldError {
        ConfigFieldError {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }
}

/// A typed component config: serde with `deny_unknown_fields` and defaults,
/// plus semantic checks.
pub trait ComponentConfig: DeserializeOwned + Default + Send + Sync + 'static {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        Ok(())
    }
}

/// Deserializes and validates a component config from its raw YAML section.
/// A null section (`otlp:` with nothing under it) means all defaults.
pub fn parse_config<T: ComponentConfig>(raw: &Value) -> Result<T, ConfigFieldError> {
    let cfg: T = if raw.is_null() {
        T::default()
    } else {
        serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
            let path: Vec<String> = e
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect();
            ConfigFieldError {
                path,
                message: e.into_inner().to_string(),
            }
        })?
    };
    cfg.validate()?;
    Ok(cfg)
}

pub trait ReceiverFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn signals(&self) -> &'static [Signal];
    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError>;
    fn create(
        &self,
        settings: Settings,
        raw: &Value,
        outputs: ReceiverOutputs,
    ) -> Result<Arc<dyn Receiver>, ComponentError>;
}

pub trait ProcessorFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn signals(&self) -> &'static [Signal];
    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError>;
    fn create(
        &self,
        settings: Settings,
        raw: &Value,
        signal: Signal,
        next: DynConsumer,
    ) -> Result<Arc<dyn Processor>, ComponentError>;
}

pub trait ExporterFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    /// Other spellings the collector accepts (`otlp` for `otlp_grpc`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    fn signals(&self) -> &'static [Signal];
    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError>;
    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError>;
}

pub trait ExtensionFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError>;
    fn create(&self, settings: Settings, raw: &Value)
        -> Result<Arc<dyn Extension>, ComponentError>;
}

/// Maps collector type names (and aliases) to factories.
#[derive(Default, Clone)]
pub struct Registry {
    pub receivers: BTreeMap<&'static str, Arc<dyn ReceiverFactory>>,
    pub processors: BTreeMap<&'static str, Arc<dyn ProcessorFactory>>,
    pub exporters: BTreeMap<&'static str, Arc<dyn ExporterFactory>>,
    pub extensions: BTreeMap<&'static str, Arc<dyn ExtensionFactory>>,
}

impl Registry {
    pub fn new() -> Registry {
        let mut r = Registry::default();
        crate::extensions::register(&mut r);
        crate::storage::register(&mut r);
        crate::auth::register(&mut r);
        crate::status::register(&mut r);
        r
    }

    pub fn add_receiver(&mut self, f: Arc<dyn ReceiverFactory>) {
        self.receivers.insert(f.type_name(), f);
    }

    pub fn add_processor(&mut self, f: Arc<dyn ProcessorFactory>) {
        self.processors.insert(f.type_name(), f);
    }

    pub fn add_exporter(&mut self, f: Arc<dyn ExporterFactory>) {
        for alias in f.aliases() {
            self.exporters.insert(alias, f.clone());
        }
        self.exporters.insert(f.type_name(), f);
    }

    pub fn add_extension(&mut self, f: Arc<dyn ExtensionFactory>) {
        self.extensions.insert(f.type_name(), f);
    }

    /// The type names known for a kind, sorted (aliases included).
    pub fn type_names(&self, kind: Kind) -> Vec<&'static str> {
        match kind {
            Kind::Receiver => self.receivers.keys().copied().collect(),
            Kind::Processor => self.processors.keys().copied().collect(),
            Kind::Exporter => self.exporters.keys().copied().collect(),
            Kind::Extension => self.extensions.keys().copied().collect(),
        }
    }

    pub fn knows(&self, kind: Kind, type_name: &str) -> bool {
        match kind {
            Kind::Receiver => self.receivers.contains_key(type_name),
            Kind::Processor => self.processors.contains_key(type_name),
            Kind::Exporter => self.exporters.contains_key(type_name),
            Kind::Extension => self.extensions.contains_key(type_name),
        }
    }

    pub fn check_config(
        &self,
        kind: Kind,
        type_name: &str,
        raw: &Value,
    ) -> Result<(), ConfigFieldError> {
        match kind {
            Kind::Receiver => self.receivers.get(type_name).map(|f| f.check_config(raw)),
            Kind::Processor => self.processors.get(type_name).map(|f| f.check_config(raw)),
            Kind::Exporter => self.exporters.get(type_name).map(|f| f.check_config(raw)),
            Kind::Extension => self.extensions.get(type_name).map(|f| f.check_config(raw)),
        }
        .unwrap_or_else(|| Err(ConfigFieldError::new("unknown type")))
    }

    pub fn signals(&self, kind: Kind, type_name: &str) -> &'static [Signal] {
        match kind {
            Kind::Receiver => self.receivers.get(type_name).map(|f| f.signals()),
            Kind::Processor => self.processors.get(type_name).map(|f| f.signals()),
            Kind::Exporter => self.exporters.get(type_name).map(|f| f.signals()),
            Kind::Extension => None,
        }
        .unwrap_or(&[])
    }
}
