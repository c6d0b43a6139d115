//! Settings and helpers the exporters share: compression, headers, config
//! error formatting.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Deserializer};
use weft_pipeline::{ComponentError, ConfigFieldError};

/// `compression` of the OTLP exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The `Content-Encoding` / `grpc-encoding` token.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }

    /// Compresses a request body; `level` None is the codec's default.
    pub fn compress(self, body: Vec<u8>, level: Option<i32>) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(body),
            Compression::Gzip => {
                let level = level
                    .map(|l| flate2::Compression::new(l.clamp(1, 9) as u32))
                    .unwrap_or_default();
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), level);
                enc.write_all(&body)?;
                enc.finish()
            }
            Compression::Zstd => zstd::bulk::compress(&body, level.unwrap_or(0)),
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Compression, D::Error> {
        // A null value keeps the default, as the collector does.
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("gzip") => Ok(Compression::Gzip),
            Some("zstd") => Ok(Compression::Zstd),
            Some("none") | Some("") => Ok(Compression::None),
            Some(other) => Err(serde::de::Error::custom(format!(
                "unsupported compression {other:?}: weft supports gzip, zstd and none"
            ))),
        }
    }
}

/// Checks that every header name and value can go on the wire.
pub fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ConfigFieldError> {
    for (name, value) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigFieldError::at(
                &["headers", name],
                format!("{name:?} is not a valid header name"),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(ConfigFieldError::at(
                &["headers", name],
                "the value is not a valid header value (control characters?)",
            ));
        }
    }
    Ok(())
}

/// A config error turned into a create-time error that names the key.
pub fn config_error(e: ConfigFieldError) -> ComponentError {
    if e.path.is_empty() {
        ComponentError::new(e.message)
    } else {
        ComponentError::new(format!("{}: {}", e.path.join("::"), e.message))
    }
}

/// The `User-Agent` weft's exporters send.
pub fn user_agent() -> String {
    format!("weft/{}", env!("CARGO_PKG_VERSION"))
}

/// Runs CPU- or disk-bound work (encoding, compression, file writes) without
/// stalling the other tasks of a multi-threaded runtime's worker.
pub fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
