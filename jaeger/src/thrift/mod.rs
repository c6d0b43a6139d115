//! Jaeger over Thrift: the protocols and the `jaeger.thrift` structs.

pub mod jaeger;
pub mod protocol;

pub use jaeger::{decode_batch, decode_emit_batch, encode_batch, encode_emit_batch};
pub use protocol::{Protocol, ThriftError, MAX_DEPTH};
