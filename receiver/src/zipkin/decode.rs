//! Turns one Zipkin request body into a [`Payload`]: API version and content
//! type, Content-Encoding, size limit, then v2 JSON, v2 proto3 or v1 JSON.
//! Pure and synchronous so it can be fuzzed and run on a blocking thread.

use weft_pipeline::Payload;
use weft_zipkin::{json, proto, to_otlp, v1};

use crate::otlp::decode::{decompress, DecodeError as BodyError, Encoding};

/// The two span APIs a Zipkin server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `/api/v1/spans`: v1 JSON (binary annotations, core annotations).
    V1,
    /// `/api/v2/spans`: v2 JSON or proto3.
    V2,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 2] = [ApiVersion::V1, ApiVersion::V2];

    pub fn path(self) -> &'static str {
        match self {
            ApiVersion::V1 => "/api/v1/spans",
            ApiVersion::V2 => "/api/v2/spans",
        }
    }

    pub fn from_path(path: &str) -> Option<ApiVersion> {
        ApiVersion::ALL.into_iter().find(|v| v.path() == path)
    }
}

/// A request body's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Proto,
}

impl Format {
    /// The format a Content-Type asks for at `version`'s path. A missing
    /// Content-Type means JSON, as Zipkin servers read it.
    pub fn for_request(version: ApiVersion, content_type: &str) -> Result<Format, DecodeError> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match (version, mime.as_str()) {
            (_, "" | "application/json") => Ok(Format::Json),
            (ApiVersion::V2, "application/x-protobuf") => Ok(Format::Proto),
            (ApiVersion::V2, _) => Err(DecodeError::UnsupportedContentType {
                content_type: content_type.to_string(),
                supported: "application/json, application/x-protobuf",
            }),
            // v1 Thrift (application/x-thrift) is not implemented.
            (ApiVersion::V1, _) => Err(DecodeError::UnsupportedContentType {
                content_type: content_type.to_string(),
                supported: "application/json",
            }),
        }
    }
}

/// Why a request body was rejected; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content type {content_type:?}: use {supported}")]
    UnsupportedContentType {
        content_type: String,
        supported: &'static str,
    },
    #[error("unsupported Content-Encoding: {0}")]
    UnsupportedEncoding(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot decompress the {encoding} request body: {message}")]
    Decompress {
        encoding: &'static str,
        message: String,
    },
    #[error(transparent)]
    Zipkin(#[from] weft_zipkin::Error),
}

impl DecodeError {
    /// The HTTP status the receiver answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::UnsupportedContentType { .. } => 415,
            DecodeError::TooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// Decodes one Zipkin POST body into OTLP traces. `limit` bounds the body
/// as sent and after decompression.
pub fn decode_zipkin(
    version: ApiVersion,
    content_type: &str,
    content_encoding: Option<&str>,
    body: &[u8],
    limit: usize,
    parse_string_tags: bool,
) -> Result<Payload, DecodeError> {
    let format = Format::for_request(version, content_type)?;
    let encoding = match content_encoding {
        None => Encoding::Identity,
        Some(v) => {
            Encoding::parse(v).ok_or_else(|| DecodeError::UnsupportedEncoding(v.to_string()))?
        }
    };
    if body.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    let plain = decompress(encoding, body, limit).map_err(|e| match e {
        BodyError::TooLarge { limit } => DecodeError::TooLarge { limit },
        BodyError::Decompress { encoding, message } => {
            DecodeError::Decompress { encoding, message }
        }
        other => DecodeError::Decompress {
            encoding: encoding.config_name(),
            message: other.to_string(),
        },
    })?;
    let resource_spans = match (version, format) {
        (ApiVersion::V2, Format::Json) => to_otlp(json::decode(&plain)?, parse_string_tags),
        (ApiVersion::V2, Format::Proto) => to_otlp(proto::decode(&plain)?, parse_string_tags),
        (ApiVersion::V1, _) => v1::decode(&plain, parse_string_tags)?,
    };
    Ok(Payload::Traces(resource_spans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const V2_JSON: &[u8] =
        br#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","name":"get /api",
        "localEndpoint":{"serviceName":"backend"}}]"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn paths() {
        assert_eq!(ApiVersion::from_path("/api/v2/spans"), Some(ApiVersion::V2));
        assert_eq!(ApiVersion::from_path("/api/v1/spans"), Some(ApiVersion::V1));
        assert_eq!(ApiVersion::from_path("/api/v2/spans/"), None);
        assert_eq!(ApiVersion::from_path("/api/v2/traces"), None);
    }

    #[test]
    fn content_types() {
        use ApiVersion::*;
        let ok = [
            (V2, "application/json", Format::Json),
            (V2, "Application/JSON; charset=utf-8", Format::Json),
            (V2, "", Format::Json),
            (V2, "application/x-protobuf", Format::Proto),
            (V1, "application/json", Format::Json),
            (V1, "", Format::Json),
        ];
        for (v, ct, want) in ok {
            assert_eq!(Format::for_request(v, ct), Ok(want), "{v:?} {ct}");
        }
        for (v, ct) in [
            (V2, "text/plain"),
            (V2, "application/x-thrift"),
            (V1, "application/x-thrift"),
            (V1, "application/x-protobuf"),
        ] {
            let e = Format::for_request(v, ct).unwrap_err();
            assert_eq!(e.http_status(), 415, "{v:?} {ct}");
        }
        assert_eq!(
            Format::for_request(V1, "application/x-thrift")
                .unwrap_err()
                .to_string(),
            "unsupported content type \"application/x-thrift\": use application/json"
        );
    }

    #[test]
    fn encodings_and_limits() {
        let d = |ct: &str, enc: Option<&str>, body: &[u8], limit: usize| {
            decode_zipkin(ApiVersion::V2, ct, enc, body, limit, false)
        };
        let p = d("application/json", None, V2_JSON, 1 << 20).unwrap();
        assert_eq!(p.item_count(), 1);
        let p = d("application/json", Some("gzip"), &gzip(V2_JSON), 1 << 20).unwrap();
        assert_eq!(p.item_count(), 1);
        let z = zstd::encode_all(V2_JSON, 3).unwrap();
        assert_eq!(
            d("application/json", Some("zstd"), &z, 1 << 20)
                .unwrap()
                .item_count(),
            1
        );

        let cases: Vec<(Result<Payload, DecodeError>, u16)> = vec![
            (d("application/json", Some("br"), V2_JSON, 1 << 20), 400),
            (
                d("application/json", Some("gzip"), b"not gzip", 1 << 20),
                400,
            ),
            (d("application/json", None, V2_JSON, V2_JSON.len() - 1), 413),
            (
                d(
                    "application/json",
                    Some("gzip"),
                    &gzip(&vec![b' '; 1 << 20]),
                    4096,
                ),
                413,
            ),
            (d("application/json", None, b"[{", 1 << 20), 400),
            (d("application/x-protobuf", None, &[0xff; 11], 1 << 20), 400),
            (d("text/plain", None, V2_JSON, 1 << 20), 415),
        ];
        for (i, (result, want)) in cases.into_iter().enumerate() {
            let e = result.unwrap_err();
            assert_eq!(e.http_status(), want, "case {i}: {e}");
        }
        assert!(d("application/json", None, V2_JSON, V2_JSON.len()).is_ok());
    }

    #[test]
    fn v1_is_json_only() {
        let body = br#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","timestamp":1}]"#;
        let p = decode_zipkin(
            ApiVersion::V1,
            "application/json",
            None,
            body,
            1 << 20,
            false,
        )
        .unwrap();
        assert_eq!(p.item_count(), 1);
        // A v2 body at the v1 path is still read as v1: its ids parse, its
        // localEndpoint is unknown to v1.
        let p = decode_zipkin(
            ApiVersion::V1,
            "application/json",
            None,
            V2_JSON,
            1 << 20,
            false,
        )
        .unwrap();
        assert_eq!(p.item_count(), 1);
    }
}
