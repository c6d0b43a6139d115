//! weft's pipeline core: config model, component traits and registry, graph
//! builder and runtime, reload, exporter helper and self-telemetry.

pub mod auth;
pub mod component;
pub mod config;
pub mod consumer;
pub mod data;
pub mod exporterhelper;
pub mod extensions;
pub mod graph;
pub mod host;
pub mod otlp_wire;
pub mod self_telemetry;
pub mod self_trace;
pub mod status;
pub mod storage;
pub mod telemetry;

pub use component::{
    parse_config, ComponentConfig, ComponentError, ComponentId, ConfigFieldError, Exporter,
    ExporterFactory, Extension, ExtensionFactory, Kind, Lifecycle, Processor, ProcessorFactory,
    Receiver, ReceiverFactory, Registry, Settings,
};
pub use consumer::{Capabilities, ConsumeError, Consumer, DynConsumer, Fanout, ReceiverOutputs};
pub use data::{Batch, ClientMetadata, Payload, Signal};
pub use telemetry::{Counter, ExporterMetrics, Gauge, ReceiverMetrics, Telemetry};
