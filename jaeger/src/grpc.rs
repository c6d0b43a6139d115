//! `jaeger.api_v2.CollectorService` over gRPC, written against tonic's
//! runtime APIs directly (no build-time code generation): a server that
//! routes `PostSpans` to a [`CollectorService`] and a client.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{
    http, Body, BoxFuture, Bytes, CompressionEncoding, EnabledCompressionEncodings, GrpcMethod,
    Service, StdError,
};

use crate::proto::{PostSpansRequest, PostSpansResponse};

/// The service's full name.
pub const SERVICE_NAME: &str = "jaeger.api_v2.CollectorService";
/// The one method's path.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// What a server does with a `PostSpans` call.
#[tonic::async_trait]
pub trait CollectorService: Send + Sync + 'static {
    async fn post_spans(
        &self,
        request: tonic::Request<PostSpansRequest>,
    ) -> Result<tonic::Response<PostSpansResponse>, tonic::Status>;
}

/// A tower service to add to a tonic `Server`.
#[derive(Debug)]
pub struct CollectorServiceServer<T> {
    inner: Arc<T>,
    accept: EnabledCompressionEncodings,
    send: EnabledCompressionEncodings,
    max_decoding: Option<usize>,
    max_encoding: Option<usize>,
}

impl<T> Clone for CollectorServiceServer<T> {
    fn clone(&self) -> Self {
        CollectorServiceServer {
            inner: self.inner.clone(),
            accept: self.accept,
            send: self.send,
            max_decoding: self.max_decoding,
            max_encoding: self.max_encoding,
        }
    }
}

impl<T> CollectorServiceServer<T> {
    pub fn new(inner: T) -> Self {
        Self::from_arc(Arc::new(inner))
    }

    pub fn from_arc(inner: Arc<T>) -> Self {
        CollectorServiceServer {
            inner,
            accept: EnabledCompressionEncodings::default(),
            send: EnabledCompressionEncodings::default(),
            max_decoding: None,
            max_encoding: None,
        }
    }

    /// Accept requests compressed with `encoding`.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.accept.enable(encoding);
        self
    }

    /// Compress responses with `encoding` when the client accepts it.
    #[must_use]
    pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.send.enable(encoding);
        self
    }

    /// Largest decoded request message (tonic's default: 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding = Some(limit);
        self
    }
}

/// Adapts the trait to tonic's unary-call interface.
struct PostSpansCall<T>(Arc<T>);

impl<T: CollectorService> tonic::server::UnaryService<PostSpansRequest> for PostSpansCall<T> {
    type Response = PostSpansResponse;
    type Future = BoxFuture<tonic::Response<PostSpansResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<PostSpansRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.post_spans(request).await })
    }
}

impl<T, B> Service<http::Request<B>> for CollectorServiceServer<T>
where
    T: CollectorService,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != POST_SPANS_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let call = PostSpansCall(self.inner.clone());
        let (accept, send) = (self.accept, self.send);
        let (max_decoding, max_encoding) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .apply_compression_config(accept, send)
                .apply_max_message_size_config(max_decoding, max_encoding);
            Ok(grpc.unary(call, req).await)
        })
    }
}

impl<T> tonic::server::NamedService for CollectorServiceServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

/// A `CollectorService` client over any tonic transport.
#[derive(Debug, Clone)]
pub struct CollectorServiceClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> CollectorServiceClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    pub fn new(inner: T) -> Self {
        CollectorServiceClient {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// Compress requests with `encoding`.
    #[must_use]
    pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.inner = self.inner.send_compressed(encoding);
        self
    }

    /// Accept responses compressed with `encoding`.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.inner = self.inner.accept_compressed(encoding);
        self
    }

    pub async fn post_spans(
        &mut self,
        request: tonic::Request<PostSpansRequest>,
    ) -> Result<tonic::Response<PostSpansResponse>, tonic::Status> {
        self.inner.ready().await.map_err(|e| {
            tonic::Status::unavailable(format!("the channel is not ready: {}", e.into()))
        })?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE_NAME, "PostSpans"));
        let path = http::uri::PathAndQuery::from_static(POST_SPANS_PATH);
        self.inner
            .unary(request, path, tonic_prost::ProstCodec::default())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Batch, Process};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Record(Mutex<Vec<PostSpansRequest>>);

    #[tonic::async_trait]
    impl CollectorService for Record {
        async fn post_spans(
            &self,
            request: tonic::Request<PostSpansRequest>,
        ) -> Result<tonic::Response<PostSpansResponse>, tonic::Status> {
            let req = request.into_inner();
            let refuse = req
                .batch
                .as_ref()
                .and_then(|b| b.process.as_ref())
                .is_some_and(|p| p.service_name == "refuse");
            self.0.lock().unwrap().push(req);
            if refuse {
                return Err(tonic::Status::resource_exhausted("full"));
            }
            Ok(tonic::Response::new(PostSpansResponse {}))
        }
    }

    #[tokio::test]
    async fn client_and_server_talk_over_a_socket() {
        let record = Arc::new(Record::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = CollectorServiceServer::from_arc(record.clone())
            .accept_compressed(CompressionEncoding::Gzip);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client =
            CollectorServiceClient::new(channel).send_compressed(CompressionEncoding::Gzip);
        let batch = |name: &str| PostSpansRequest {
            batch: Some(Batch {
                spans: vec![],
                process: Some(Process {
                    service_name: name.into(),
                    tags: vec![],
                }),
            }),
        };
        client
            .post_spans(tonic::Request::new(batch("checkout")))
            .await
            .unwrap();
        let err = client
            .post_spans(tonic::Request::new(batch("refuse")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        let got = record.0.lock().unwrap().clone();
        assert_eq!(got, vec![batch("checkout"), batch("refuse")]);
    }
}
