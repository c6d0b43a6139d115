//! Turns one OTLP/HTTP request body into a [`Payload`]: content type,
//! Content-Encoding, size limits, protobuf or JSON, id checks. Pure and
//! synchronous so it can be fuzzed and run on a blocking thread.

use std::io::Read;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, Exemplar};
use prost::Message;
use weft_pipeline::{Payload, Signal};

use super::json;

/// The two OTLP/HTTP body encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// Reads a Content-Type header; parameters such as `charset` are ignored.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Format::Protobuf)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// A request body's Content-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
    /// `deflate` and `zlib`: zlib-wrapped deflate, as the collector reads both.
    Zlib,
}

impl Encoding {
    /// Parses a Content-Encoding value; `None` for anything weft cannot decode.
    pub fn parse(value: &str) -> Option<Encoding> {
        let v = value.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("identity") {
            Some(Encoding::Identity)
        } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
            Some(Encoding::Gzip)
        } else if v.eq_ignore_ascii_case("zstd") {
            Some(Encoding::Zstd)
        } else if v.eq_ignore_ascii_case("deflate") || v.eq_ignore_ascii_case("zlib") {
            Some(Encoding::Zlib)
        } else {
            None
        }
    }

    /// The name `compression_algorithms` uses for this encoding.
    pub fn config_name(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
            Encoding::Zlib => "zlib",
        }
    }
}

/// Why a request body was rejected; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("unsupported Content-Encoding: {0}")]
    UnsupportedEncoding(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot decompress the {encoding} request body: {message}")]
    Decompress {
        encoding: &'static str,
        message: String,
    },
    #[error("cannot decode the protobuf request body: {0}")]
    Protobuf(String),
    #[error("cannot decode the JSON request body: {0}")]
    Json(String),
    #[error("{0}")]
    InvalidId(String),
}

impl DecodeError {
    /// The HTTP status the receiver answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::UnsupportedContentType(_) => 415,
            DecodeError::TooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// Decodes one OTLP/HTTP export request body. `limit` bounds both the body as
/// sent and its decompressed size, so a small compressed bomb cannot inflate
/// past it.
pub fn decode_request(
    signal: Signal,
    content_type: &str,
    content_encoding: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<Payload, DecodeError> {
    let format = Format::from_content_type(content_type)
        .ok_or_else(|| DecodeError::UnsupportedContentType(content_type.to_string()))?;
    let encoding = match content_encoding {
        None => Encoding::Identity,
        Some(v) => {
            Encoding::parse(v).ok_or_else(|| DecodeError::UnsupportedEncoding(v.to_string()))?
        }
    };
    if body.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    let plain = decompress(encoding, body, limit)?;
    let payload = decode_body(signal, format, &plain)?;
    validate_ids(&payload)?;
    Ok(payload)
}

/// A request body as it goes to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Payload(Payload),
    /// Protobuf traces, checked and kept encoded.
    Traces(weft_pipeline::otlp_wire::EncodedTraces),
}

/// As [`decode_request`], but protobuf traces stay encoded (checked by the
/// same acceptance as decoding them, ids included).
pub fn decode_request_wire(
    signal: Signal,
    content_type: &str,
    content_encoding: Option<&str>,
    body: bytes::Bytes,
    limit: usize,
) -> Result<Decoded, DecodeError> {
    let format = Format::from_content_type(content_type)
        .ok_or_else(|| DecodeError::UnsupportedContentType(content_type.to_string()))?;
    if signal != Signal::Traces || format != Format::Protobuf {
        return decode_request(signal, content_type, content_encoding, &body, limit)
            .map(Decoded::Payload);
    }
    let encoding = match content_encoding {
        None => Encoding::Identity,
        Some(v) => {
            Encoding::parse(v).ok_or_else(|| DecodeError::UnsupportedEncoding(v.to_string()))?
        }
    };
    if body.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    let plain = match decompress(encoding, &body, limit)? {
        std::borrow::Cow::Borrowed(_) => body,
        std::borrow::Cow::Owned(v) => bytes::Bytes::from(v),
    };
    weft_pipeline::otlp_wire::EncodedTraces::new(plain)
        .map(Decoded::Traces)
        .map_err(|e| match e {
            weft_pipeline::otlp_wire::WireError::Malformed(m) => {
                DecodeError::Protobuf(m.to_string())
            }
            weft_pipeline::otlp_wire::WireError::InvalidId(m) => DecodeError::InvalidId(m),
        })
}

/// Inflates `body`, failing once the output would pass `limit` bytes.
pub fn decompress(
    encoding: Encoding,
    body: &[u8],
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    let name = match encoding {
        Encoding::Identity => return Ok(std::borrow::Cow::Borrowed(body)),
        Encoding::Gzip => "gzip",
        Encoding::Zstd => "zstd",
        Encoding::Zlib => "zlib",
    };
    let err = |e: std::io::Error| DecodeError::Decompress {
        encoding: name,
        message: e.to_string(),
    };
    let reader: Box<dyn Read + '_> = match encoding {
        // MultiGzDecoder: concatenated gzip members are one valid body (RFC 1952).
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Zlib => Box::new(flate2::read::ZlibDecoder::new(body)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(err)?),
        Encoding::Identity => return Ok(std::borrow::Cow::Borrowed(body)),
    };
    // One byte past the limit tells "exactly at the limit" from "over it".
    let cap = limit.saturating_add(1);
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(cap));
    reader
        .take(u64::try_from(cap).unwrap_or(u64::MAX))
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Decodes an uncompressed body of one signal.
pub fn decode_body(signal: Signal, format: Format, body: &[u8]) -> Result<Payload, DecodeError> {
    match format {
        Format::Protobuf => {
            let perr = |e: prost::DecodeError| DecodeError::Protobuf(e.to_string());
            Ok(match signal {
                Signal::Traces => Payload::Traces(
                    ExportTraceServiceRequest::decode(body)
                        .map_err(perr)?
                        .resource_spans,
                ),
                Signal::Metrics => Payload::Metrics(
                    ExportMetricsServiceRequest::decode(body)
                        .map_err(perr)?
                        .resource_metrics,
                ),
                Signal::Logs => Payload::Logs(
                    ExportLogsServiceRequest::decode(body)
                        .map_err(perr)?
                        .resource_logs,
                ),
            })
        }
        Format::Json => json::decode(signal, body).map_err(DecodeError::Json),
    }
}

/// OTLP ids are 16-byte trace ids and 8-byte span ids, or empty. The
/// collector rejects other lengths; so does weft, before they reach an
/// exporter that needs fixed-size ids.
pub fn validate_ids(payload: &Payload) -> Result<(), DecodeError> {
    fn check(what: &str, id: &[u8], len: usize) -> Result<(), DecodeError> {
        if id.is_empty() || id.len() == len {
            Ok(())
        } else {
            Err(DecodeError::InvalidId(format!(
                "invalid {what}: {} bytes, expected {len} (or empty)",
                id.len()
            )))
        }
    }
    fn exemplars(ex: &[Exemplar]) -> Result<(), DecodeError> {
        for e in ex {
            check("exemplar trace id", &e.trace_id, 16)?;
            check("exemplar span id", &e.span_id, 8)?;
        }
        Ok(())
    }
    match payload {
        Payload::Traces(rs) => {
            for span in rs
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                check("trace id", &span.trace_id, 16)?;
                check("span id", &span.span_id, 8)?;
                check("parent span id", &span.parent_span_id, 8)?;
                for link in &span.links {
                    check("link trace id", &link.trace_id, 16)?;
                    check("link span id", &link.span_id, 8)?;
                }
            }
        }
        Payload::Logs(rl) => {
            for rec in rl
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
            {
                check("log trace id", &rec.trace_id, 16)?;
                check("log span id", &rec.span_id, 8)?;
            }
        }
        Payload::Metrics(rm) => {
            let metrics = rm
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics);
            for m in metrics {
                match &m.data {
                    Some(metric::Data::Gauge(g)) => {
                        for p in &g.data_points {
                            exemplars(&p.exemplars)?;
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        for p in &s.data_points {
                            exemplars(&p.exemplars)?;
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for p in &h.data_points {
                            exemplars(&p.exemplars)?;
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        for p in &h.data_points {
                            exemplars(&p.exemplars)?;
                        }
                    }
                    Some(metric::Data::Summary(_)) | None => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::io::Write;

    fn one_span_request() -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "op".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn content_types_with_parameters() {
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type("Application/X-Protobuf"),
            Some(Format::Protobuf)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
        assert_eq!(Format::from_content_type(""), None);
    }

    #[test]
    fn decodes_every_encoding() {
        let body = one_span_request();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&body).unwrap();
        let zlib = z.finish().unwrap();
        let zstd = zstd::encode_all(&body[..], 3).unwrap();
        let cases: [(Option<&str>, Vec<u8>); 6] = [
            (None, body.clone()),
            (Some("identity"), body.clone()),
            (Some("gzip"), gzip(&body)),
            (Some("x-gzip"), gzip(&body)),
            (Some("zstd"), zstd),
            (Some("deflate"), zlib),
        ];
        for (enc, data) in cases {
            let p = decode_request(
                Signal::Traces,
                "application/x-protobuf",
                enc,
                &data,
                1 << 20,
            )
            .unwrap_or_else(|e| panic!("{enc:?}: {e}"));
            assert_eq!(p.item_count(), 1, "{enc:?}");
        }
    }

    #[test]
    fn rejections_map_to_statuses() {
        let body = one_span_request();
        let ct = "application/x-protobuf";
        let e = decode_request(Signal::Traces, "text/plain", None, &body, 1 << 20).unwrap_err();
        assert_eq!(e.http_status(), 415);
        let e = decode_request(Signal::Traces, ct, Some("br"), &body, 1 << 20).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedEncoding("br".into()));
        assert_eq!(e.http_status(), 400);
        let e = decode_request(Signal::Traces, ct, None, &body, body.len() - 1).unwrap_err();
        assert_eq!(e.http_status(), 413);
        assert!(decode_request(Signal::Traces, ct, None, &body, body.len()).is_ok());
        let e =
            decode_request(Signal::Traces, ct, None, &body[..body.len() - 3], 1 << 20).unwrap_err();
        assert!(matches!(e, DecodeError::Protobuf(_)), "{e:?}");
        let e = decode_request(Signal::Traces, ct, Some("gzip"), b"not gzip", 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Decompress {
                    encoding: "gzip",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = decode_request(Signal::Traces, ct, Some("zstd"), b"not zstd", 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Decompress {
                    encoding: "zstd",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        // 64 MiB of zeros gzip to about 64 KiB.
        let zeros = vec![0u8; 64 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 1 << 20);
        let e = decode_request(
            Signal::Traces,
            "application/x-protobuf",
            Some("gzip"),
            &bomb,
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(e, DecodeError::TooLarge { limit: 1 << 20 });
        let zbomb = zstd::encode_all(&zeros[..], 3).unwrap();
        let e = decode_request(
            Signal::Traces,
            "application/x-protobuf",
            Some("zstd"),
            &zbomb,
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(e, DecodeError::TooLarge { limit: 1 << 20 });
    }

    #[test]
    fn wrong_id_lengths_are_rejected() {
        let mut req = ExportTraceServiceRequest::decode(&one_span_request()[..]).unwrap();
        req.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1; 5];
        let body = req.encode_to_vec();
        let e = decode_request(
            Signal::Traces,
            "application/x-protobuf",
            None,
            &body,
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(
            e,
            DecodeError::InvalidId("invalid span id: 5 bytes, expected 8 (or empty)".into())
        );
    }
}
