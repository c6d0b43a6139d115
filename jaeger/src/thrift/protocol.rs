//! Thrift's binary and compact protocols: a reader that checks every length
//! against the bytes left, bounds nesting and never panics, and a writer.
//!
//! Only what Jaeger's IDL needs is typed here; anything else a sender puts
//! in a struct is skipped, as generated Thrift code skips unknown fields.

/// Deepest nesting of structs and containers the reader follows, as the
/// Thrift libraries' default recursion limit.
pub const MAX_DEPTH: usize = 64;

/// The two Thrift encodings Jaeger uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `TBinaryProtocol`: big-endian fixed-width integers (HTTP, UDP 6832).
    Binary,
    /// `TCompactProtocol`: zigzag varints and packed headers (UDP 6831).
    Compact,
}

/// Thrift's value types, independent of how a protocol numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TType {
    Bool,
    Byte,
    I16,
    I32,
    I64,
    Double,
    Binary,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

impl TType {
    fn binary_code(self) -> u8 {
        match self {
            TType::Bool => 2,
            TType::Byte => 3,
            TType::Double => 4,
            TType::I16 => 6,
            TType::I32 => 8,
            TType::I64 => 10,
            TType::Binary => 11,
            TType::Struct => 12,
            TType::Map => 13,
            TType::Set => 14,
            TType::List => 15,
            TType::Uuid => 16,
        }
    }

    fn from_binary(code: u8) -> Option<TType> {
        Some(match code {
            2 => TType::Bool,
            3 => TType::Byte,
            4 => TType::Double,
            6 => TType::I16,
            8 => TType::I32,
            10 => TType::I64,
            11 => TType::Binary,
            12 => TType::Struct,
            13 => TType::Map,
            14 => TType::Set,
            15 => TType::List,
            16 => TType::Uuid,
            _ => return None,
        })
    }

    /// Compact codes; booleans as fields carry their value in the code
    /// (1 true, 2 false), in containers either code means "bool".
    fn compact_code(self) -> u8 {
        match self {
            TType::Bool => 1,
            TType::Byte => 3,
            TType::I16 => 4,
            TType::I32 => 5,
            TType::I64 => 6,
            TType::Double => 7,
            TType::Binary => 8,
            TType::List => 9,
            TType::Set => 10,
            TType::Map => 11,
            TType::Struct => 12,
            TType::Uuid => 13,
        }
    }

    fn from_compact(code: u8) -> Option<TType> {
        Some(match code {
            1 | 2 => TType::Bool,
            3 => TType::Byte,
            4 => TType::I16,
            5 => TType::I32,
            6 => TType::I64,
            7 => TType::Double,
            8 => TType::Binary,
            9 => TType::List,
            10 => TType::Set,
            11 => TType::Map,
            12 => TType::Struct,
            13 => TType::Uuid,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes on the wire, so a
    /// container's declared size can be checked against the bytes left.
    fn min_size(self, proto: Protocol) -> usize {
        match (proto, self) {
            (_, TType::Uuid) => 16,
            (Protocol::Binary, TType::I16) => 2,
            (Protocol::Binary, TType::I32) => 4,
            (Protocol::Binary, TType::I64 | TType::Double) => 8,
            (Protocol::Binary, TType::Binary | TType::Map | TType::Set) => 4,
            (Protocol::Binary, TType::List) => 5,
            (Protocol::Compact, TType::Double) => 8,
            _ => 1,
        }
    }
}

/// Why Thrift bytes could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThriftError {
    #[error("unexpected end of data at byte {offset}: {wanted} more bytes needed")]
    Eof { offset: usize, wanted: usize },
    #[error("unknown Thrift type code {code} at byte {offset}")]
    BadType { code: u8, offset: usize },
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
    #[error("negative {what} {len} at byte {offset}")]
    Negative {
        what: &'static str,
        len: i64,
        offset: usize,
    },
    #[error("{what} of {len} at byte {offset} does not fit in the {left} bytes left")]
    TooLong {
        what: &'static str,
        len: usize,
        offset: usize,
        left: usize,
    },
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("required field {field} of {strukt} is missing")]
    MissingField {
        strukt: &'static str,
        field: &'static str,
    },
    #[error("invalid message header: {0}")]
    BadMessage(String),
    #[error("unknown method {0:?}: only emitBatch is served")]
    UnknownMethod(String),
    #[error("{0} bytes left over after the message")]
    Trailing(usize),
}

/// Reads Thrift values from a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    proto: Protocol,
    depth: usize,
    /// Compact: the last field id of each open struct (ids are deltas).
    last_field: Vec<i16>,
    /// Compact: a boolean field's value, carried in its header.
    pending_bool: Option<bool>,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], proto: Protocol) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            proto,
            depth: 0,
            last_field: Vec::new(),
            pending_bool: None,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ThriftError> {
        if self.remaining() < n {
            return Err(ThriftError::Eof {
                offset: self.pos,
                wanted: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ThriftError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ThriftError> {
        Ok(self.array::<1>()?[0])
    }

    fn varint(&mut self, max_bytes: usize) -> Result<u64, ThriftError> {
        let start = self.pos;
        let mut out: u64 = 0;
        for i in 0..max_bytes {
            let b = self.u8()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(ThriftError::BadVarint(start))
    }

    fn zigzag(v: u64) -> i64 {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    fn enter(&mut self) -> Result<(), ThriftError> {
        if self.depth >= MAX_DEPTH {
            return Err(ThriftError::TooDeep);
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// A length or count, checked to be non-negative and to fit in what is
    /// left when each unit takes at least `unit` bytes.
    fn checked_len(
        &self,
        what: &'static str,
        len: i64,
        unit: usize,
        at: usize,
    ) -> Result<usize, ThriftError> {
        if len < 0 {
            return Err(ThriftError::Negative {
                what,
                len,
                offset: at,
            });
        }
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        if n.saturating_mul(unit.max(1)) > self.remaining() {
            return Err(ThriftError::TooLong {
                what,
                len: n,
                offset: at,
                left: self.remaining(),
            });
        }
        Ok(n)
    }

    /// Reads a message header: (method name, message type, sequence id).
    pub fn read_message_begin(&mut self) -> Result<(String, u8, i32), ThriftError> {
        match self.proto {
            Protocol::Binary => {
                let at = self.pos;
                let first = self.read_i32()?;
                if first < 0 {
                    // Strict: version 1 in the high half, type in the low byte.
                    let word = first as u32;
                    if word & 0xffff_0000 != 0x8001_0000 {
                        return Err(ThriftError::BadMessage(format!(
                            "bad version {:#010x} at byte {at}",
                            word
                        )));
                    }
                    let kind = (word & 0xff) as u8;
                    let name = self.read_string()?;
                    let seq = self.read_i32()?;
                    Ok((name, kind, seq))
                } else {
                    // Old non-strict form: the name's length comes first.
                    let n = self.checked_len("method name", i64::from(first), 1, at)?;
                    let name = String::from_utf8_lossy(self.take(n)?).into_owned();
                    let kind = self.u8()?;
                    let seq = self.read_i32()?;
                    Ok((name, kind, seq))
                }
            }
            Protocol::Compact => {
                let at = self.pos;
                let id = self.u8()?;
                if id != 0x82 {
                    return Err(ThriftError::BadMessage(format!(
                        "protocol id {id:#04x} at byte {at}, want 0x82"
                    )));
                }
                let vt = self.u8()?;
                if vt & 0x1f != 1 {
                    return Err(ThriftError::BadMessage(format!(
                        "compact protocol version {} at byte {}, want 1",
                        vt & 0x1f,
                        at + 1
                    )));
                }
                let kind = (vt >> 5) & 0x07;
                let seq = self.varint(5)? as u32 as i32;
                let name = self.read_string()?;
                Ok((name, kind, seq))
            }
        }
    }

    pub fn read_struct_begin(&mut self) -> Result<(), ThriftError> {
        self.enter()?;
        if self.proto == Protocol::Compact {
            self.last_field.push(0);
        }
        Ok(())
    }

    pub fn read_struct_end(&mut self) {
        if self.proto == Protocol::Compact {
            self.last_field.pop();
        }
        self.leave();
    }

    /// The next field's type and id, or None at the struct's end.
    pub fn read_field_begin(&mut self) -> Result<Option<(TType, i16)>, ThriftError> {
        match self.proto {
            Protocol::Binary => {
                let at = self.pos;
                let code = self.u8()?;
                if code == 0 {
                    return Ok(None);
                }
                let ttype =
                    TType::from_binary(code).ok_or(ThriftError::BadType { code, offset: at })?;
                let id = self.read_i16()?;
                Ok(Some((ttype, id)))
            }
            Protocol::Compact => {
                let at = self.pos;
                let header = self.u8()?;
                let code = header & 0x0f;
                if code == 0 {
                    return Ok(None);
                }
                let ttype =
                    TType::from_compact(code).ok_or(ThriftError::BadType { code, offset: at })?;
                let delta = header >> 4;
                let last = self.last_field.last().copied().unwrap_or(0);
                let id = if delta == 0 {
                    self.read_i16()?
                } else {
                    last.wrapping_add(i16::from(delta))
                };
                if let Some(l) = self.last_field.last_mut() {
                    *l = id;
                }
                if ttype == TType::Bool {
                    self.pending_bool = Some(code == 1);
                }
                Ok(Some((ttype, id)))
            }
        }
    }

    pub fn read_bool(&mut self) -> Result<bool, ThriftError> {
        if let Some(v) = self.pending_bool.take() {
            return Ok(v);
        }
        // Binary: any non-zero byte; compact list element: 1 is true.
        let b = self.u8()?;
        Ok(match self.proto {
            Protocol::Binary => b != 0,
            Protocol::Compact => b == 1,
        })
    }

    pub fn read_byte(&mut self) -> Result<i8, ThriftError> {
        Ok(self.u8()? as i8)
    }

    pub fn read_i16(&mut self) -> Result<i16, ThriftError> {
        match self.proto {
            Protocol::Binary => Ok(i16::from_be_bytes(self.array()?)),
            Protocol::Compact => Ok(Self::zigzag(self.varint(3)?) as i16),
        }
    }

    pub fn read_i32(&mut self) -> Result<i32, ThriftError> {
        match self.proto {
            Protocol::Binary => Ok(i32::from_be_bytes(self.array()?)),
            Protocol::Compact => Ok(Self::zigzag(self.varint(5)?) as i32),
        }
    }

    pub fn read_i64(&mut self) -> Result<i64, ThriftError> {
        match self.proto {
            Protocol::Binary => Ok(i64::from_be_bytes(self.array()?)),
            Protocol::Compact => Ok(Self::zigzag(self.varint(10)?)),
        }
    }

    pub fn read_double(&mut self) -> Result<f64, ThriftError> {
        match self.proto {
            Protocol::Binary => Ok(f64::from_bits(u64::from_be_bytes(self.array()?))),
            Protocol::Compact => Ok(f64::from_bits(u64::from_le_bytes(self.array()?))),
        }
    }

    pub fn read_binary(&mut self) -> Result<&'a [u8], ThriftError> {
        let at = self.pos;
        let len = match self.proto {
            Protocol::Binary => i64::from(self.read_i32()?),
            Protocol::Compact => i64::try_from(self.varint(5)?).unwrap_or(i64::MAX),
        };
        let n = self.checked_len("string", len, 1, at)?;
        self.take(n)
    }

    /// A Thrift string; bytes that are not UTF-8 become U+FFFD.
    pub fn read_string(&mut self) -> Result<String, ThriftError> {
        Ok(String::from_utf8_lossy(self.read_binary()?).into_owned())
    }

    /// A list or set header: element type and count. The caller reads the
    /// elements, then calls [`Reader::read_container_end`].
    pub fn read_list_begin(&mut self) -> Result<(TType, usize), ThriftError> {
        let at = self.pos;
        let (elem, len) = match self.proto {
            Protocol::Binary => {
                let code = self.u8()?;
                let elem =
                    TType::from_binary(code).ok_or(ThriftError::BadType { code, offset: at })?;
                (elem, i64::from(self.read_i32()?))
            }
            Protocol::Compact => {
                let header = self.u8()?;
                let code = header & 0x0f;
                let elem =
                    TType::from_compact(code).ok_or(ThriftError::BadType { code, offset: at })?;
                let short = header >> 4;
                let len = if short == 0x0f {
                    i64::try_from(self.varint(5)?).unwrap_or(i64::MAX)
                } else {
                    i64::from(short)
                };
                (elem, len)
            }
        };
        let n = self.checked_len("list", len, elem.min_size(self.proto), at)?;
        self.enter()?;
        Ok((elem, n))
    }

    /// A map header: key type, value type and count.
    pub fn read_map_begin(&mut self) -> Result<(TType, TType, usize), ThriftError> {
        let at = self.pos;
        let (k, v, len) = match self.proto {
            Protocol::Binary => {
                let kc = self.u8()?;
                let vc = self.u8()?;
                let k = TType::from_binary(kc).ok_or(ThriftError::BadType {
                    code: kc,
                    offset: at,
                })?;
                let v = TType::from_binary(vc).ok_or(ThriftError::BadType {
                    code: vc,
                    offset: at + 1,
                })?;
                (k, v, i64::from(self.read_i32()?))
            }
            Protocol::Compact => {
                let len = i64::try_from(self.varint(5)?).unwrap_or(i64::MAX);
                if len == 0 {
                    // An empty map has no type byte.
                    (TType::Byte, TType::Byte, 0)
                } else {
                    let kv_at = self.pos;
                    let kv = self.u8()?;
                    let k = TType::from_compact(kv >> 4).ok_or(ThriftError::BadType {
                        code: kv >> 4,
                        offset: kv_at,
                    })?;
                    let v = TType::from_compact(kv & 0x0f).ok_or(ThriftError::BadType {
                        code: kv & 0x0f,
                        offset: kv_at,
                    })?;
                    (k, v, len)
                }
            }
        };
        let unit = k.min_size(self.proto) + v.min_size(self.proto);
        let n = self.checked_len("map", len, unit, at)?;
        self.enter()?;
        Ok((k, v, n))
    }

    pub fn read_container_end(&mut self) {
        self.leave();
    }

    /// Reads and discards one value of `ttype`.
    pub fn skip(&mut self, ttype: TType) -> Result<(), ThriftError> {
        match ttype {
            TType::Bool => {
                self.read_bool()?;
            }
            TType::Byte => {
                self.u8()?;
            }
            TType::I16 => {
                self.read_i16()?;
            }
            TType::I32 => {
                self.read_i32()?;
            }
            TType::I64 => {
                self.read_i64()?;
            }
            TType::Double => {
                self.read_double()?;
            }
            TType::Binary => {
                self.read_binary()?;
            }
            TType::Uuid => {
                self.take(16)?;
            }
            TType::Struct => {
                self.read_struct_begin()?;
                while let Some((t, _)) = self.read_field_begin()? {
                    self.skip(t)?;
                }
                self.read_struct_end();
            }
            TType::List | TType::Set => {
                let (elem, n) = self.read_list_begin()?;
                for _ in 0..n {
                    self.skip(elem)?;
                }
                self.read_container_end();
            }
            TType::Map => {
                let (k, v, n) = self.read_map_begin()?;
                for _ in 0..n {
                    self.skip(k)?;
                    self.skip(v)?;
                }
                self.read_container_end();
            }
        }
        Ok(())
    }
}

/// Writes Thrift values into a growing buffer.
pub struct Writer {
    buf: Vec<u8>,
    proto: Protocol,
    last_field: Vec<i16>,
}

impl Writer {
    pub fn new(proto: Protocol) -> Writer {
        Writer {
            buf: Vec::new(),
            proto,
            last_field: Vec::new(),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(b);
                return;
            }
            self.buf.push(b | 0x80);
        }
    }

    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    /// A message header; `kind` 1 is CALL, 4 ONEWAY.
    pub fn write_message_begin(&mut self, name: &str, kind: u8, seq: i32) {
        match self.proto {
            Protocol::Binary => {
                self.write_i32((0x8001_0000u32 | u32::from(kind)) as i32);
                self.write_string(name);
                self.write_i32(seq);
            }
            Protocol::Compact => {
                self.buf.push(0x82);
                self.buf.push(1 | (kind << 5));
                self.varint(u64::from(seq as u32));
                self.write_string(name);
            }
        }
    }

    pub fn write_struct_begin(&mut self) {
        if self.proto == Protocol::Compact {
            self.last_field.push(0);
        }
    }

    /// Ends a struct: writes the STOP field.
    pub fn write_struct_end(&mut self) {
        self.buf.push(0);
        if self.proto == Protocol::Compact {
            self.last_field.pop();
        }
    }

    fn field_header(&mut self, ttype: TType, id: i16, compact_code: u8) {
        match self.proto {
            Protocol::Binary => {
                self.buf.push(ttype.binary_code());
                self.buf.extend_from_slice(&id.to_be_bytes());
            }
            Protocol::Compact => {
                let last = self.last_field.last().copied().unwrap_or(0);
                let delta = i32::from(id) - i32::from(last);
                if (1..=15).contains(&delta) {
                    self.buf.push(((delta as u8) << 4) | compact_code);
                } else {
                    self.buf.push(compact_code);
                    self.varint(Self::zigzag(i64::from(id)));
                }
                if let Some(l) = self.last_field.last_mut() {
                    *l = id;
                }
            }
        }
    }

    /// A field header for any type but bool (see [`Writer::field_bool`]).
    pub fn write_field_begin(&mut self, ttype: TType, id: i16) {
        self.field_header(ttype, id, ttype.compact_code());
    }

    pub fn field_bool(&mut self, id: i16, v: bool) {
        match self.proto {
            Protocol::Binary => {
                self.field_header(TType::Bool, id, 0);
                self.buf.push(u8::from(v));
            }
            Protocol::Compact => self.field_header(TType::Bool, id, if v { 1 } else { 2 }),
        }
    }

    pub fn field_i32(&mut self, id: i16, v: i32) {
        self.write_field_begin(TType::I32, id);
        self.write_i32(v);
    }

    pub fn field_i64(&mut self, id: i16, v: i64) {
        self.write_field_begin(TType::I64, id);
        self.write_i64(v);
    }

    pub fn field_double(&mut self, id: i16, v: f64) {
        self.write_field_begin(TType::Double, id);
        self.write_double(v);
    }

    pub fn field_binary(&mut self, id: i16, v: &[u8]) {
        self.write_field_begin(TType::Binary, id);
        self.write_binary(v);
    }

    pub fn field_string(&mut self, id: i16, v: &str) {
        self.field_binary(id, v.as_bytes());
    }

    /// A bool as a container element.
    pub fn write_bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn write_i16(&mut self, v: i16) {
        match self.proto {
            Protocol::Binary => self.buf.extend_from_slice(&v.to_be_bytes()),
            Protocol::Compact => self.varint(Self::zigzag(i64::from(v))),
        }
    }

    pub fn write_i32(&mut self, v: i32) {
        match self.proto {
            Protocol::Binary => self.buf.extend_from_slice(&v.to_be_bytes()),
            Protocol::Compact => self.varint(Self::zigzag(i64::from(v))),
        }
    }

    pub fn write_i64(&mut self, v: i64) {
        match self.proto {
            Protocol::Binary => self.buf.extend_from_slice(&v.to_be_bytes()),
            Protocol::Compact => self.varint(Self::zigzag(v)),
        }
    }

    pub fn write_double(&mut self, v: f64) {
        match self.proto {
            Protocol::Binary => self.buf.extend_from_slice(&v.to_bits().to_be_bytes()),
            Protocol::Compact => self.buf.extend_from_slice(&v.to_bits().to_le_bytes()),
        }
    }

    pub fn write_binary(&mut self, v: &[u8]) {
        match self.proto {
            Protocol::Binary => self.write_i32(i32::try_from(v.len()).unwrap_or(i32::MAX)),
            Protocol::Compact => self.varint(v.len() as u64),
        }
        self.buf.extend_from_slice(v);
    }

    pub fn write_string(&mut self, v: &str) {
        self.write_binary(v.as_bytes());
    }

    pub fn write_list_begin(&mut self, elem: TType, len: usize) {
        match self.proto {
            Protocol::Binary => {
                self.buf.push(elem.binary_code());
                self.write_i32(i32::try_from(len).unwrap_or(i32::MAX));
            }
            Protocol::Compact => {
                if len < 15 {
                    self.buf.push(((len as u8) << 4) | elem.compact_code());
                } else {
                    self.buf.push(0xf0 | elem.compact_code());
                    self.varint(len as u64);
                }
            }
        }
    }

    pub fn write_map_begin(&mut self, key: TType, value: TType, len: usize) {
        match self.proto {
            Protocol::Binary => {
                self.buf.push(key.binary_code());
                self.buf.push(value.binary_code());
                self.write_i32(i32::try_from(len).unwrap_or(i32::MAX));
            }
            Protocol::Compact => {
                self.varint(len as u64);
                if len > 0 {
                    self.buf
                        .push((key.compact_code() << 4) | value.compact_code());
                }
            }
        }
    }

    /// Raw bytes, for tests that build malformed input.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> [Protocol; 2] {
        [Protocol::Binary, Protocol::Compact]
    }

    #[test]
    fn scalars_round_trip() {
        for p in both() {
            let mut w = Writer::new(p);
            for v in [0i64, 1, -1, i64::MAX, i64::MIN, 300, -300] {
                w.write_i64(v);
            }
            for v in [0i32, i32::MAX, i32::MIN, -7] {
                w.write_i32(v);
            }
            w.write_i16(-2);
            w.write_double(-0.125);
            w.write_string("héllo");
            w.write_bool(true);
            w.write_bool(false);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes, p);
            for v in [0i64, 1, -1, i64::MAX, i64::MIN, 300, -300] {
                assert_eq!(r.read_i64().unwrap(), v, "{p:?}");
            }
            for v in [0i32, i32::MAX, i32::MIN, -7] {
                assert_eq!(r.read_i32().unwrap(), v, "{p:?}");
            }
            assert_eq!(r.read_i16().unwrap(), -2);
            assert_eq!(r.read_double().unwrap(), -0.125);
            assert_eq!(r.read_string().unwrap(), "héllo");
            assert!(r.read_bool().unwrap());
            assert!(!r.read_bool().unwrap());
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn compact_wire_bytes_match_the_spec() {
        let mut w = Writer::new(Protocol::Compact);
        w.write_struct_begin();
        w.field_i64(1, 1); // delta 1, type 6, zigzag(1) = 2
        w.field_bool(2, true); // delta 1, type 1
        w.field_string(20, "a"); // delta 18 > 15: long form, zigzag(20) = 40
        w.write_struct_end();
        assert_eq!(
            w.into_bytes(),
            vec![0x16, 0x02, 0x11, 0x08, 40, 0x01, b'a', 0x00]
        );
        let mut w = Writer::new(Protocol::Compact);
        w.write_message_begin("emitBatch", 4, 0);
        assert_eq!(
            &w.into_bytes()[..4],
            &[0x82, 0x81, 0x00, 9],
            "protocol id, version 1 | ONEWAY << 5, seq 0, name length"
        );
    }

    #[test]
    fn binary_wire_bytes_match_the_spec() {
        let mut w = Writer::new(Protocol::Binary);
        w.write_message_begin("emitBatch", 4, 7);
        w.field_i32(3, -1);
        let b = w.into_bytes();
        assert_eq!(&b[..4], &[0x80, 0x01, 0x00, 0x04]);
        assert_eq!(&b[4..8], &[0, 0, 0, 9]);
        assert_eq!(&b[17..21], &[0, 0, 0, 7]);
        assert_eq!(&b[21..], &[8, 0, 3, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn lengths_are_checked_against_what_is_left() {
        // A string claiming 1000 bytes with 2 present.
        let mut r = Reader::new(&[0, 0, 0x03, 0xe8, b'a', b'b'], Protocol::Binary);
        assert_eq!(
            r.read_binary().unwrap_err(),
            ThriftError::TooLong {
                what: "string",
                len: 1000,
                offset: 0,
                left: 2
            }
        );
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe], Protocol::Binary);
        assert!(matches!(
            r.read_binary().unwrap_err(),
            ThriftError::Negative { len: -2, .. }
        ));
        // A compact list of 2^31 i64s in 6 bytes.
        let mut r = Reader::new(&[0xf6, 0x80, 0x80, 0x80, 0x80, 0x08], Protocol::Compact);
        assert!(matches!(
            r.read_list_begin().unwrap_err(),
            ThriftError::TooLong { what: "list", .. }
        ));
        // Binary list of i64 needs 8 bytes per element.
        let mut r = Reader::new(&[10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1], Protocol::Binary);
        assert!(r.read_list_begin().is_err());
        // Varint longer than 10 bytes.
        let mut r = Reader::new(&[0xff; 12], Protocol::Compact);
        assert_eq!(r.read_i64().unwrap_err(), ThriftError::BadVarint(0));
    }

    #[test]
    fn nesting_is_bounded() {
        // 100 nested lists of lists in compact: header 0x19 = one element of type list.
        let bytes = vec![0x19u8; 100];
        let mut r = Reader::new(&bytes, Protocol::Compact);
        assert_eq!(r.skip(TType::List).unwrap_err(), ThriftError::TooDeep);
        // Structs nested through a field of type struct.
        let bytes = vec![0x1cu8; 200];
        let mut r = Reader::new(&bytes, Protocol::Compact);
        assert_eq!(r.skip(TType::Struct).unwrap_err(), ThriftError::TooDeep);
    }

    #[test]
    fn skip_walks_every_type() {
        for p in both() {
            let mut w = Writer::new(p);
            w.write_struct_begin();
            w.field_bool(1, false);
            w.write_field_begin(TType::Byte, 2);
            w.write_raw(&[7]);
            w.write_field_begin(TType::I16, 3);
            w.write_i16(5);
            w.field_double(4, 1.5);
            w.write_field_begin(TType::Map, 5);
            w.write_map_begin(TType::Binary, TType::I32, 2);
            w.write_string("k");
            w.write_i32(1);
            w.write_string("l");
            w.write_i32(2);
            w.write_field_begin(TType::Set, 6);
            w.write_list_begin(TType::Bool, 3);
            w.write_bool(true);
            w.write_bool(false);
            w.write_bool(true);
            w.write_field_begin(TType::Uuid, 7);
            w.write_raw(&[9; 16]);
            w.write_field_begin(TType::Map, 8);
            w.write_map_begin(TType::I32, TType::I32, 0);
            w.write_struct_end();
            w.write_raw(&[0xee]);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes, p);
            r.skip(TType::Struct).unwrap();
            assert_eq!(r.remaining(), 1, "{p:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix and a few mutations of a valid struct.
        let mut w = Writer::new(Protocol::Compact);
        w.write_struct_begin();
        w.field_string(1, "svc");
        w.write_field_begin(TType::List, 2);
        w.write_list_begin(TType::Struct, 1);
        w.write_struct_begin();
        w.field_i64(1, 42);
        w.write_struct_end();
        w.write_struct_end();
        let good = w.into_bytes();
        for p in both() {
            for cut in 0..good.len() {
                let _ = Reader::new(&good[..cut], p).skip(TType::Struct);
            }
            for i in 0..good.len() {
                for b in [0u8, 0x0f, 0x7f, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[i] = b;
                    let _ = Reader::new(&bad, p).skip(TType::Struct);
                }
            }
        }
    }
}
