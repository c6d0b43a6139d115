//! The `jaeger` receiver's decoders, pure and synchronous so they can be
//! fuzzed: request bytes in, OTLP resource spans or an error out.

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use weft_jaeger::proto::{batch_from_proto, PostSpansRequest, ProtoError};
use weft_jaeger::thrift::{self, ThriftError};

pub use weft_jaeger::thrift::Protocol;

/// Why a Jaeger payload was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decode the Thrift batch: {0}")]
    Thrift(#[from] ThriftError),
    #[error("cannot decode the protobuf request: {0}")]
    Protobuf(String),
    #[error("invalid span ids: {0}")]
    Ids(#[from] ProtoError),
}

/// The body of `POST /api/traces`: one `jaeger.Batch` in binary Thrift.
pub fn decode_thrift_http_body(body: &[u8]) -> Result<Vec<ResourceSpans>, DecodeError> {
    let batch = thrift::decode_batch(body, Protocol::Binary)?;
    Ok(weft_jaeger::to_otlp(vec![batch]))
}

/// One agent datagram: an `emitBatch` call in compact or binary Thrift.
pub fn decode_agent_datagram(
    datagram: &[u8],
    protocol: Protocol,
) -> Result<Vec<ResourceSpans>, DecodeError> {
    let batch = thrift::decode_emit_batch(datagram, protocol)?;
    Ok(weft_jaeger::to_otlp(vec![batch]))
}

/// A `PostSpansRequest` as received over gRPC, already decoded by tonic.
pub fn translate_post_spans(req: PostSpansRequest) -> Result<Vec<ResourceSpans>, DecodeError> {
    let batch = batch_from_proto(req.batch.unwrap_or_default())?;
    Ok(weft_jaeger::to_otlp(vec![batch]))
}

/// The protobuf bytes of a `PostSpansRequest` (what the gRPC server decodes
/// before [`translate_post_spans`]).
pub fn decode_post_spans(bytes: &[u8]) -> Result<Vec<ResourceSpans>, DecodeError> {
    let req = PostSpansRequest::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    translate_post_spans(req)
}
