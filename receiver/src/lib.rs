//! weft's receivers: servers that accept telemetry from the outside and feed
//! it into the pipelines.

pub mod common;
pub mod datadog;
pub mod ebpf;
pub mod jaeger;
pub mod otlp;
pub mod zipkin;

use std::sync::Arc;

/// Adds every receiver this crate provides to the registry.
pub fn register(r: &mut weft_pipeline::Registry) {
    r.add_receiver(Arc::new(otlp::OtlpReceiverFactory));
    r.add_receiver(Arc::new(datadog::DatadogReceiverFactory));
    r.add_receiver(Arc::new(jaeger::JaegerReceiverFactory));
    r.add_receiver(Arc::new(zipkin::ZipkinReceiverFactory));
    r.add_receiver(Arc::new(ebpf::EbpfReceiverFactory));
}
