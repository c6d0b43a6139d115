//! Jaeger for weft: the Thrift and protobuf wire formats Jaeger clients,
//! agents and collectors speak, the api_v2 gRPC `CollectorService`, and the
//! translation between Jaeger spans and OTLP that the `jaeger` receiver and
//! exporter share.
//!
//! Everything is written by hand from the jaeger-idl definitions: no code is
//! generated at build time, and the decoders are bounded and total (they
//! return errors, never panic), so they can face the network and a fuzzer.

pub mod grpc;
pub mod model;
pub mod proto;
pub mod thrift;
pub mod translate;

pub use translate::{from_otlp, to_otlp};
