//! Trace and span ids in their canonical form (128-bit trace, 64-bit span) and
//! the conversions between OTel hex and Datadog decimal (`_dd.p.tid` for the
//! upper 64 bits).

use std::fmt;

/// A 128-bit trace id. Zero is representable (ids read from spans may be zero)
/// but never valid: see [`TraceId::is_valid`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(u128);

/// A 64-bit span id. Zero is representable but never valid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(u64);

impl TraceId {
    pub const ZERO: TraceId = TraceId(0);

    pub const fn from_u128(v: u128) -> Self {
        TraceId(v)
    }

    /// Joins upper and lower halves.
    pub const fn from_parts(high: u64, low: u64) -> Self {
        TraceId(((high as u128) << 64) | low as u128)
    }

    /// Widens a 64-bit id: the upper half is zero.
    pub const fn from_u64(low: u64) -> Self {
        TraceId(low as u128)
    }

    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The upper 64 bits (what Datadog carries in `_dd.p.tid`).
    pub const fn high(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// The lower 64 bits (what Datadog carries as its decimal trace id).
    pub const fn low(self) -> u64 {
        self.0 as u64
    }

    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// True when the upper half is zero, as ids from 64-bit tracers are.
    pub const fn is_64bit(self) -> bool {
        self.high() == 0
    }

    /// Narrows to the low 64 bits.
    pub const fn narrow(self) -> u64 {
        self.low()
    }

    /// Same trace, comparing only the low 64 bits when either side has a zero
    /// upper half (a 64-bit sender cannot know the upper bits).
    pub const fn same_trace(self, other: TraceId) -> bool {
        if self.is_64bit() || other.is_64bit() {
            self.low() == other.low()
        } else {
            self.0 == other.0
        }
    }

    /// Exactly 32 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        parse_lower_hex_u128(s).map(TraceId)
    }

    /// 1 to 32 lowercase hex digits, left-padded with zeros.
    pub fn from_hex_padded(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 32 {
            return None;
        }
        parse_lower_hex_u128(s).map(TraceId)
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Big-endian bytes, as OTLP carries them.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub const fn from_bytes(b: [u8; 16]) -> Self {
        TraceId(u128::from_be_bytes(b))
    }

    /// OTLP `trace_id` bytes: 16 bytes, or `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(b).ok().map(Self::from_bytes)
    }

    /// Datadog's pair: the low 64 bits as decimal and, when the upper half is
    /// not zero, the `_dd.p.tid` value.
    pub fn to_datadog(self) -> (String, Option<String>) {
        let tid = (!self.is_64bit()).then(|| format_dd_tid(self.high()));
        (self.low().to_string(), tid)
    }

    /// From Datadog's decimal low half and an optional `_dd.p.tid`. A
    /// malformed decimal is `None`; a malformed tid is `Err` with the low half
    /// alone, so callers can keep the 64-bit id and record the error.
    pub fn from_datadog(decimal: &str, tid: Option<&str>) -> Option<Result<Self, Self>> {
        let low = parse_dd_decimal(decimal)?;
        Some(match tid {
            None => Ok(TraceId::from_u64(low)),
            Some(t) => match parse_dd_tid(t) {
                Some(high) => Ok(TraceId::from_parts(high, low)),
                None => Err(TraceId::from_u64(low)),
            },
        })
    }
}

impl SpanId {
    pub const ZERO: SpanId = SpanId(0);

    pub const fn from_u64(v: u64) -> Self {
        SpanId(v)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// Exactly 16 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        parse_lower_hex_u64(s).map(SpanId)
    }

    /// 1 to 16 lowercase hex digits, left-padded with zeros.
    pub fn from_hex_padded(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        parse_lower_hex_u64(s).map(SpanId)
    }

    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// Datadog decimal form.
    pub fn from_decimal(s: &str) -> Option<Self> {
        parse_dd_decimal(s).map(SpanId)
    }

    pub fn to_decimal(self) -> String {
        self.0.to_string()
    }

    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub const fn from_bytes(b: [u8; 8]) -> Self {
        SpanId(u64::from_be_bytes(b))
    }

    /// OTLP `span_id` bytes: 8 bytes, or `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 8]>::try_from(b).ok().map(Self::from_bytes)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({:032x})", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({:016x})", self.0)
    }
}

/// A Datadog decimal id: ASCII digits only (no sign, no spaces), at most
/// 20 digits, fitting in 64 bits. Zero parses (validity is the caller's
/// business).
pub fn parse_dd_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok()
}

/// A `_dd.p.tid` value: exactly 16 lowercase hex digits, not all zero.
pub fn parse_dd_tid(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    parse_lower_hex_u64(s).filter(|v| *v != 0)
}

/// The `_dd.p.tid` form of an upper half.
pub fn format_dd_tid(high: u64) -> String {
    format!("{high:016x}")
}

pub(crate) fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// 1..=16 lowercase hex digits.
pub(crate) fn parse_lower_hex_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        v = (v << 4) | hex_val(b)? as u64;
    }
    Some(v)
}

/// 1..=32 lowercase hex digits.
pub(crate) fn parse_lower_hex_u128(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let mut v: u128 = 0;
    for b in s.bytes() {
        v = (v << 4) | hex_val(b)? as u128;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_padding() {
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(t.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.high(), 0x4bf92f3577b34da6);
        assert_eq!(t.low(), 0xa3ce929d0e0e4736);
        assert_eq!(
            TraceId::from_hex_padded("a3ce929d0e0e4736")
                .unwrap()
                .to_hex(),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(TraceId::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736").is_none());
        assert!(TraceId::from_hex("a3ce929d0e0e4736").is_none());
        assert!(TraceId::from_hex_padded(&"1".repeat(33)).is_none());
        assert_eq!(
            SpanId::from_hex_padded("e0c63257de34c92").unwrap().to_hex(),
            "0e0c63257de34c92"
        );
        assert!(SpanId::from_hex("00f067aa0ba902b").is_none());
    }

    #[test]
    fn datadog_conversions() {
        // 13088165645273925489 is 0xb5a2814f70060771 (dd-trace-py fixtures).
        let t = TraceId::from_datadog("13088165645273925489", None)
            .unwrap()
            .unwrap();
        assert_eq!(t.to_hex(), "0000000000000000b5a2814f70060771");
        let t = TraceId::from_datadog("9223372036854775808", Some("8000000000000000"))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_hex(), "80000000000000008000000000000000");
        assert_eq!(
            t.to_datadog(),
            (
                "9223372036854775808".to_string(),
                Some("8000000000000000".to_string())
            )
        );
        assert_eq!(
            TraceId::from_datadog("1", Some("AABBCCDD00112233")),
            Some(Err(TraceId::from_u64(1)))
        );
        assert_eq!(
            TraceId::from_datadog("1", Some("0000000000000000")),
            Some(Err(TraceId::from_u64(1)))
        );
        assert_eq!(TraceId::from_datadog("-1", None), None);
        assert_eq!(TraceId::from_datadog("18446744073709551616", None), None);
        assert_eq!(parse_dd_decimal("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_dd_decimal("+1"), None);
        assert_eq!(parse_dd_decimal(" 1"), None);
        assert_eq!(
            SpanId::from_decimal("5678").unwrap().to_hex(),
            "000000000000162e"
        );
        assert_eq!(SpanId::from_u64(5678).to_decimal(), "5678");
    }

    #[test]
    fn same_trace_compares_low_half_for_64bit_ids() {
        let full = TraceId::from_parts(0x1111, 7);
        assert!(full.same_trace(TraceId::from_u64(7)));
        assert!(TraceId::from_u64(7).same_trace(full));
        assert!(!full.same_trace(TraceId::from_parts(0x2222, 7)));
        assert!(!full.same_trace(TraceId::from_u64(8)));
    }

    #[test]
    fn bytes() {
        let t = TraceId::from_parts(1, 2);
        assert_eq!(TraceId::from_slice(&t.to_bytes()), Some(t));
        assert_eq!(TraceId::from_slice(&[0u8; 8]), None);
        let s = SpanId::from_u64(0x0102030405060708);
        assert_eq!(s.to_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(SpanId::from_slice(&s.to_bytes()), Some(s));
    }
}
