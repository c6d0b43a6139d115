//! The counting sink: an OTLP receiver (gRPC and HTTP on one port) that
//! counts spans with a light scan, drops them, and says how many it got at
//! `GET /stats`.

use std::convert::Infallible;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::scan;

/// What the sink has taken in.
#[derive(Debug, Default)]
pub struct Stats {
    pub spans: AtomicU64,
    pub requests: AtomicU64,
    pub bad_requests: AtomicU64,
    /// Requests whose body came compressed (gRPC message flag or
    /// Content-Encoding), to tell what a sender really did.
    pub compressed_requests: AtomicU64,
    /// Bytes received, as sent (compressed or not).
    pub bytes: AtomicU64,
}

impl Stats {
    pub fn json(&self) -> String {
        format!(
            "{{\"spans\":{},\"requests\":{},\"bad_requests\":{},\"compressed_requests\":{},\"bytes\":{}}}",
            self.spans.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
            self.bad_requests.load(Ordering::Relaxed),
            self.compressed_requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed)
        )
    }
}

/// A response body of one empty gRPC message and an OK status in trailers.
enum GrpcBody {
    Message,
    Trailers(i32, String),
    Done,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match std::mem::replace(&mut *self, GrpcBody::Done) {
            GrpcBody::Message => {
                *self = GrpcBody::Trailers(0, String::new());
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])))))
            }
            GrpcBody::Trailers(code, message) => {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", code.into());
                if let Ok(m) = message.parse() {
                    t.insert("grpc-message", m);
                }
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            GrpcBody::Done => Poll::Ready(None),
        }
    }
}

type Reply = Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>;

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert("content-type", v);
    }
    r
}

fn decompress(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, String> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
            Ok(out)
        }
        Some("zstd") => zstd::decode_all(body).map_err(|e| format!("zstd: {e}")),
        Some(other) => Err(format!("unsupported encoding {other}")),
    }
}

/// Spans in the gRPC messages of one request body.
fn grpc_spans(encoding: Option<&str>, mut body: &[u8]) -> Result<u64, String> {
    let mut n = 0;
    while !body.is_empty() {
        if body.len() < 5 {
            return Err("truncated gRPC frame".into());
        }
        let compressed = body[0] == 1;
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let msg = body.get(5..5 + len).ok_or("truncated gRPC message")?;
        let msg = if compressed {
            decompress(encoding, msg)?
        } else {
            msg.to_vec()
        };
        n += scan::count_spans(&msg).map_err(|_| "malformed protobuf")?;
        body = &body[5 + len..];
    }
    Ok(n)
}

async fn handle(stats: Arc<Stats>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() == http::Method::GET && path == "/stats" {
        return Ok(reply(StatusCode::OK, "application/json", stats.json()));
    }
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let ctype = header("content-type").unwrap_or_default();
    let grpc_enc = header("grpc-encoding");
    let http_enc = header("content-encoding");
    let body = match req.into_body().collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "unreadable body",
            ));
        }
    };
    stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let compressed = if ctype.starts_with("application/grpc") {
        body.first() == Some(&1)
    } else {
        http_enc
            .as_deref()
            .is_some_and(|e| !e.is_empty() && e != "identity")
    };
    if compressed {
        stats.compressed_requests.fetch_add(1, Ordering::Relaxed);
    }
    if ctype.starts_with("application/grpc") {
        return Ok(match grpc_spans(grpc_enc.as_deref(), &body) {
            Ok(n) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.spans.fetch_add(n, Ordering::Relaxed);
                let mut r = Response::new(GrpcBody::Message.boxed_unsync());
                r.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/grpc"),
                );
                r
            }
            Err(why) => {
                stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                let mut r = Response::new(GrpcBody::Trailers(3, why).boxed_unsync());
                r.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/grpc"),
                );
                r
            }
        });
    }
    if path == "/v1/traces" {
        let counted = decompress(http_enc.as_deref(), &body).and_then(|b| {
            if ctype.starts_with("application/json") {
                scan::count_spans_json(&b).map_err(|_| "malformed JSON".to_string())
            } else {
                scan::count_spans(&b).map_err(|_| "malformed protobuf".to_string())
            }
        });
        return Ok(match counted {
            Ok(n) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.spans.fetch_add(n, Ordering::Relaxed);
                if ctype.starts_with("application/json") {
                    reply(StatusCode::OK, "application/json", "{}")
                } else {
                    reply(StatusCode::OK, "application/x-protobuf", Bytes::new())
                }
            }
            Err(why) => {
                stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                reply(StatusCode::BAD_REQUEST, "text/plain", why)
            }
        });
    }
    Ok(reply(StatusCode::NOT_FOUND, "text/plain", "not found"))
}

/// Serves until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, stats: Arc<Stats>) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let stats = stats.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(stats.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Format, Shape, Templates};
    use crate::send::{self, Compression, Plan, Protocol};
    use std::time::Duration;

    async fn sink() -> (String, Arc<Stats>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        tokio::spawn(serve(l, stats.clone()));
        (format!("http://{addr}"), stats)
    }

    /// The sender against the sink, both real, over loopback: every span
    /// sent is acknowledged and counted once.
    #[tokio::test]
    async fn sender_and_sink_agree() {
        let (url, stats) = sink().await;
        let shape = Shape {
            spans_per_request: 50,
            attributes: 4,
            attribute_size: 16,
        };
        let t = Templates::new(&shape, 4);
        let mut expected = 0;
        let mut compressed = 0;
        for (protocol, compression) in [
            (Protocol::OtlpGrpc, Compression::None),
            (Protocol::OtlpGrpc, Compression::Gzip),
            (Protocol::OtlpGrpc, Compression::Zstd),
            (Protocol::OtlpHttp, Compression::Gzip),
            (Protocol::OtlpHttpJson, Compression::None),
        ] {
            let plan = Plan {
                protocol,
                endpoint: url.clone(),
                compression,
                rate: 5000,
                connections: 2,
                duration: Duration::from_millis(300),
                spans_per_request: 50,
                request_timeout: Duration::from_secs(5),
                headers: vec![],
            };
            let (c, _) = send::run(plan, t.bodies(protocol.format())).await.unwrap();
            let sent = c.sent.load(Ordering::Relaxed);
            assert!(sent >= 1000, "{protocol:?}: sent {sent}");
            assert_eq!(c.acknowledged.load(Ordering::Relaxed), sent, "{protocol:?}");
            assert_eq!(c.failed.load(Ordering::Relaxed), 0, "{protocol:?}");
            expected += sent;
            if compression != Compression::None {
                compressed += c.requests.load(Ordering::Relaxed);
            }
            assert_eq!(
                stats.compressed_requests.load(Ordering::Relaxed),
                compressed,
                "{protocol:?}"
            );
            assert_eq!(
                stats.spans.load(Ordering::Relaxed),
                expected,
                "{protocol:?}"
            );
        }
        assert_eq!(stats.bad_requests.load(Ordering::Relaxed), 0);
        let _ = Format::OtlpProto;
    }

    #[tokio::test]
    async fn bad_bodies_are_refused_and_counted() {
        let (url, stats) = sink().await;
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let req = Request::post(format!("{url}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from_static(&[0x0a, 0x7f, 0x01])))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(stats.bad_requests.load(Ordering::Relaxed), 1);
        assert_eq!(stats.spans.load(Ordering::Relaxed), 0);
    }
}
