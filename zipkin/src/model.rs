//! Zipkin's v2 span model, independent of the wire format: ids as integers,
//! times in microseconds, tags as strings.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A 64- or 128-bit trace id; `high` is zero for 64-bit ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceId {
    pub high: u64,
    pub low: u64,
}

impl TraceId {
    pub fn is_zero(self) -> bool {
        self.high == 0 && self.low == 0
    }

    /// The OTLP form: 16 bytes, big-endian, upper half first.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.high.to_be_bytes());
        out[8..].copy_from_slice(&self.low.to_be_bytes());
        out
    }

    /// Reads 8 (64-bit) or 16 (128-bit) big-endian bytes.
    pub fn from_bytes(b: &[u8]) -> Option<TraceId> {
        match b.len() {
            8 => Some(TraceId {
                high: 0,
                low: u64::from_be_bytes(b.try_into().ok()?),
            }),
            16 => Some(TraceId {
                high: u64::from_be_bytes(b[..8].try_into().ok()?),
                low: u64::from_be_bytes(b[8..].try_into().ok()?),
            }),
            _ => None,
        }
    }

    /// Zipkin's text form: 16 hex digits when the upper half is zero, else 32.
    pub fn to_hex(self) -> String {
        if self.high == 0 {
            format!("{:016x}", self.low)
        } else {
            format!("{:016x}{:016x}", self.high, self.low)
        }
    }

    /// Parses 1 to 32 hex digits, upper or lower case (shorter ids are
    /// left-padded, as Zipkin's own readers do).
    pub fn parse_hex(s: &str) -> Result<TraceId, String> {
        // Checked before splitting: a multi-byte character would put the split
        // inside it (found by fuzzing; slicing there panics).
        if s.is_empty() || s.len() > 32 || !s.is_ascii() {
            return Err(format!("trace id {s:?} must be 16 or 32 hex characters"));
        }
        let split = s.len().saturating_sub(16);
        let high = if split == 0 {
            0
        } else {
            parse_hex_u64(&s[..split])?
        };
        let low = parse_hex_u64(&s[split..])?;
        Ok(TraceId { high, low })
    }
}

/// Parses 1 to 16 hex digits into a u64 (no sign, no `0x`).
pub fn parse_hex_u64(s: &str) -> Result<u64, String> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a hex id of at most 16 characters"));
    }
    u64::from_str_radix(s, 16).map_err(|e| format!("{s:?}: {e}"))
}

/// 16 lower-case hex digits.
pub fn span_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Lower-case hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What a span's timestamp, duration and remote endpoint mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "CLIENT",
            Kind::Server => "SERVER",
            Kind::Producer => "PRODUCER",
            Kind::Consumer => "CONSUMER",
        }
    }

    /// Reads the JSON name, in any case; anything else is "no kind".
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Client, Kind::Server, Kind::Producer, Kind::Consumer]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// The proto3 enum number (`SPAN_KIND_UNSPECIFIED` is 0).
    pub fn proto_number(self) -> i32 {
        match self {
            Kind::Client => 1,
            Kind::Server => 2,
            Kind::Producer => 3,
            Kind::Consumer => 4,
        }
    }

    pub fn from_proto_number(n: i32) -> Option<Kind> {
        match n {
            1 => Some(Kind::Client),
            2 => Some(Kind::Server),
            3 => Some(Kind::Producer),
            4 => Some(Kind::Consumer),
            _ => None,
        }
    }
}

/// A node of the service graph: the host that recorded a span, or its peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Endpoint {
    pub service_name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// 0 means unknown.
    pub port: u16,
}

impl Endpoint {
    pub fn is_empty(&self) -> bool {
        self.service_name.is_empty() && self.ipv4.is_none() && self.ipv6.is_none() && self.port == 0
    }
}

/// An event with its time in epoch microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Annotation {
    pub timestamp: u64,
    pub value: String,
}

/// One Zipkin v2 span.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Span {
    pub trace_id: TraceId,
    pub id: u64,
    pub parent_id: Option<u64>,
    pub name: String,
    pub kind: Option<Kind>,
    /// Start, epoch microseconds; None when unknown.
    pub timestamp: Option<u64>,
    /// Microseconds; None when unknown.
    pub duration: Option<u64>,
    pub local_endpoint: Option<Endpoint>,
    pub remote_endpoint: Option<Endpoint>,
    pub annotations: Vec<Annotation>,
    /// Sorted by key, so encodings and translations are deterministic.
    pub tags: BTreeMap<String, String>,
    pub debug: bool,
    pub shared: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_text_is_16_or_32_hex() {
        let short = TraceId {
            high: 0,
            low: 0xabc,
        };
        assert_eq!(short.to_hex(), "0000000000000abc");
        let long = TraceId {
            high: 1,
            low: 0xffee_ddcc_bbaa_0099,
        };
        assert_eq!(long.to_hex(), "0000000000000001ffeeddccbbaa0099");
        assert_eq!(TraceId::parse_hex("0000000000000abc"), Ok(short));
        assert_eq!(
            TraceId::parse_hex("0000000000000001FFEEDDCCBBAA0099"),
            Ok(long)
        );
        // Zipkin pads short ids; a 128-bit id with a zero upper half is 64-bit.
        assert_eq!(TraceId::parse_hex("abc"), Ok(short));
        assert_eq!(
            TraceId::parse_hex("00000000000000000000000000000abc"),
            Ok(short)
        );
        assert!(TraceId::parse_hex("").is_err());
        assert!(TraceId::parse_hex(&"1".repeat(33)).is_err());
        assert!(TraceId::parse_hex("xyz").is_err());
        // Found by fuzzing: 17 to 32 bytes with a multi-byte character where the
        // high and low halves split used to panic.
        assert!(TraceId::parse_hex("4bf92f3577b3\u{319}a6a3ce8").is_err());
        assert!(TraceId::parse_hex("ééééééééé").is_err());
        assert!(TraceId::parse_hex("-1").is_err());
        assert!(TraceId::parse_hex("+1").is_err());
    }

    #[test]
    fn trace_id_bytes() {
        let id = TraceId {
            high: 0x0102_0304_0506_0708,
            low: 0x090a_0b0c_0d0e_0f10,
        };
        let b = id.to_bytes();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(TraceId::from_bytes(&b), Some(id));
        assert_eq!(
            TraceId::from_bytes(&b[8..]),
            Some(TraceId {
                high: 0,
                low: id.low
            })
        );
        assert_eq!(TraceId::from_bytes(&b[..5]), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::parse("client"), Some(Kind::Client));
        assert_eq!(Kind::parse("CONSUMER"), Some(Kind::Consumer));
        assert_eq!(Kind::parse("INTERNAL"), None);
        for k in [Kind::Client, Kind::Server, Kind::Producer, Kind::Consumer] {
            assert_eq!(Kind::from_proto_number(k.proto_number()), Some(k));
        }
        assert_eq!(Kind::from_proto_number(0), None);
        assert_eq!(Kind::from_proto_number(9), None);
    }
}
