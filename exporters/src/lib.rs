//! weft's exporters: `otlp_grpc` (alias `otlp`), `otlp_http` (alias
//! `otlphttp`), `zipkin`, `jaeger`, `debug`, `file` and `nop`, built on the
//! pipeline's exporter helper.

pub mod common;
pub mod debug;
pub mod file;
pub mod jaeger;
pub mod nop;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod otlp_json;
mod otlp_json_traces;
pub mod tls;
pub mod zipkin;

#[cfg(test)]
mod testutil;

use std::sync::Arc;

/// Adds every exporter factory of this crate to the registry.
pub fn register(r: &mut weft_pipeline::Registry) {
    r.add_exporter(Arc::new(debug::DebugFactory));
    r.add_exporter(Arc::new(file::FileFactory));
    r.add_exporter(Arc::new(jaeger::JaegerFactory));
    r.add_exporter(Arc::new(nop::NopFactory));
    r.add_exporter(Arc::new(otlp_grpc::OtlpGrpcFactory));
    r.add_exporter(Arc::new(otlp_http::OtlpHttpFactory));
    r.add_exporter(Arc::new(zipkin::ZipkinFactory));
}
