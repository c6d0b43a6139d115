//! The OTLP/gRPC `TraceService`, served with the request kept in its wire
//! form: the message is checked by a walk over its fields (the same
//! acceptance as decoding it) and travels on encoded, so a pipeline that
//! never looks inside the spans never decodes them.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use weft_pipeline::otlp_wire::{EncodedTraces, WireError};

use crate::common::grpc::{client_metadata, mark_reached, to_status};
use crate::common::ingest::Ingest;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The trace service: `Export` only, as the generated server has.
#[derive(Clone)]
pub(crate) struct RawTraceServer {
    handler: Arc<TraceHandler>,
    max_decoding_message_size: usize,
}

pub(crate) struct TraceHandler {
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) include_metadata: bool,
}

impl RawTraceServer {
    pub(crate) fn new(handler: TraceHandler, max_decoding_message_size: usize) -> RawTraceServer {
        RawTraceServer {
            handler: Arc::new(handler),
            max_decoding_message_size,
        }
    }
}

impl NamedService for RawTraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for RawTraceServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let handler = self.handler.clone();
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(ExportSvc(handler), req).await)
        })
    }
}

struct ExportSvc(Arc<TraceHandler>);

impl tonic::server::UnaryService<Bytes> for ExportSvc {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Result<Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            handler
                .export(request)
                .await
                .map(|()| Response::new(ExportTraceServiceResponse::default()))
        })
    }
}

impl TraceHandler {
    async fn export(&self, req: Request<Bytes>) -> Result<(), Status> {
        let received_at = Instant::now();
        mark_reached(&req);
        let metadata = self.include_metadata.then(|| client_metadata(&req));
        let caller = self.ingest.caller_grpc(req.metadata());
        let traces = match EncodedTraces::new(req.into_inner()) {
            Ok(t) => t,
            Err(e) => {
                self.ingest.bad_request(&e);
                // As for a message tonic cannot decode (and as grpc-go
                // answers): INTERNAL; bad ids are INVALID_ARGUMENT.
                return Err(match e {
                    WireError::Malformed(_) => Status::internal(e.to_string()),
                    WireError::InvalidId(_) => Status::invalid_argument(e.to_string()),
                });
            }
        };
        self.ingest
            .consume_encoded(traces, metadata, received_at, caller)
            .await
            .map_err(|e| to_status(&e))
    }
}

/// Requests as bytes, responses as protobuf.
#[derive(Debug, Default, Clone, Copy)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[derive(Debug)]
struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        let mut buf = Vec::with_capacity(item.encoded_len());
        item.encode(&mut buf)
            .map_err(|e| Status::internal(format!("failed to encode the response: {e}")))?;
        dst.put_slice(&buf);
        Ok(())
    }
}

#[derive(Debug)]
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
