//! weft's receivers: servers that accept telemetry from the outside and feed
//! it into the pipelines.

pub mod otlp;

use std::sync::Arc;

/// Adds every receiver this crate provides to the registry.
pub fn register(r: &mut weft_pipeline::Registry) {
    r.add_receiver(Arc::new(otlp::OtlpReceiverFactory));
}
