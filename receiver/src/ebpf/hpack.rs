//! HPACK (RFC 7541) decoding for header blocks captured off the wire, one decoder per
//! direction of an HTTP/2 connection.
//!
//! Unlike a decoder inside an HTTP/2 endpoint, this one may start in the middle of a
//! connection (its dynamic table holds entries it never saw) and may miss header blocks
//! (bytes the probe did not capture). It never guesses: a field that refers to an entry
//! it does not know comes out as [`Field::name`] `None` or [`Field::value`] `None`.
//!
//! Why positions stay right: the dynamic table is a queue, newest first, and a
//! reference is a position counted from the newest entry. As long as every insertion
//! is seen, the entries weft holds are the newest ones in the peer's table, at the same
//! positions, whatever the peer evicted behind them; a position beyond them is unknown.
//! A block that is lost or fails to decode may have inserted entries weft did not see:
//! [`Decoder::lose_sync`] then forgets every entry, and positions are unknown until new
//! insertions refill the table.

use std::collections::VecDeque;

/// Largest dynamic table weft keeps per direction, whatever the peer announces: a
/// smaller table than the peer's only turns old references into unknown fields.
pub const MAX_TABLE_BYTES: usize = 64 * 1024;
/// Decoded bytes (names and values) kept per header block; beyond, fields are still
/// decoded (the table must stay in step) but not returned.
pub const MAX_BLOCK_OUTPUT: usize = 32 * 1024;
/// Fields returned per header block.
pub const MAX_BLOCK_FIELDS: usize = 256;
/// Longest string literal decoded (a Huffman string decodes to at most 8/5 of its
/// length; longer literals are skipped, their field unknown).
const MAX_LITERAL: usize = 16 * 1024;

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer in the header block does not fit")]
    IntegerOverflow,
    #[error("a Huffman-coded string is invalid")]
    Huffman,
    #[error("index 0 in the header block")]
    ZeroIndex,
    #[error("a dynamic table size update after the first field")]
    LateSizeUpdate,
}

/// One decoded header field. A part weft cannot know (a reference into table entries
/// it never saw) is `None`; a part kept secret is also `None` (see `redacted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Option<String>,
    pub value: Option<String>,
}

/// What decoding a block told beyond its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockInfo {
    /// Fields whose name is unknown.
    pub unknown_fields: u32,
    /// Fields decoded but not returned (the per-block caps).
    pub dropped_fields: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Option<Box<str>>,
    /// None when unknown or secret.
    value: Option<Box<str>>,
    /// The entry's size as HPACK counts it (RFC 7541 §4.1), a lower bound when part
    /// of it is unknown.
    size: usize,
}

/// The decoding state of one direction of a connection.
#[derive(Debug)]
pub struct Decoder {
    table: VecDeque<Entry>,
    size: usize,
    max: usize,
    /// Reused for Huffman-coded values that are not kept.
    scratch: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
            scratch: Vec::new(),
        }
    }
}

/// Reads an HPACK integer with an `n`-bit prefix at `p[*at]`.
fn integer(p: &[u8], at: &mut usize, n: u8) -> Result<usize, HpackError> {
    let first = *p.get(*at).ok_or(HpackError::Truncated)?;
    *at += 1;
    let mask = (1u16 << n) as u8 - 1;
    let mut v = usize::from(first & mask);
    if v < usize::from(mask) {
        return Ok(v);
    }
    let mut shift = 0u32;
    loop {
        let b = *p.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
        v = v
            .checked_add(usize::from(b & 0x7f) << shift)
            .ok_or(HpackError::IntegerOverflow)?;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// Reads a string literal: its text when `keep` (None when longer than weft decodes),
/// and its decoded length when `sized` (a table entry's size must be exact). A value
/// that is not kept is Huffman-decoded into `scratch` for its length only, and not
/// at all when its length is not needed (the length returned is then the coded one).
fn string(
    p: &[u8],
    at: &mut usize,
    keep: bool,
    sized: bool,
    scratch: &mut Vec<u8>,
) -> Result<(Option<String>, usize), HpackError> {
    let huffman = p.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(p, at, 7)?;
    let end = at.checked_add(len).ok_or(HpackError::IntegerOverflow)?;
    let raw = p.get(*at..end).ok_or(HpackError::Truncated)?;
    *at = end;
    if len > MAX_LITERAL {
        // Its coded length stands for the decoded one in the table's accounting.
        // Positions count from the newest entry, so a size off either way only
        // changes how many old entries survive: the encoder never refers past its
        // own table, and a reference past ours is unknown.
        return Ok((None, len));
    }
    if !huffman || !(keep || sized) {
        let text = keep.then(|| String::from_utf8_lossy(raw).into_owned());
        return Ok((text, len));
    }
    scratch.clear();
    httlib_huffman::decode(raw, scratch, httlib_huffman::DecoderSpeed::FiveBits)
        .map_err(|_| HpackError::Huffman)?;
    let n = scratch.len();
    let text = keep.then(|| String::from_utf8_lossy(scratch).into_owned());
    if !keep {
        // It may be a secret: not left in memory.
        scratch.fill(0);
    }
    Ok((text, n))
}

impl Decoder {
    /// Forgets every dynamic entry: a block was lost, so positions are unknown.
    pub fn lose_sync(&mut self) {
        self.table.clear();
        self.size = 0;
    }

    /// Dynamic entries held.
    pub fn entries(&self) -> usize {
        self.table.len()
    }

    /// The dynamic table's size as HPACK counts it (a lower bound where entries are
    /// partly unknown).
    pub fn table_bytes(&self) -> usize {
        self.size
    }

    fn get(&self, index: usize) -> Result<(Option<&str>, Option<&str>), HpackError> {
        match index {
            0 => Err(HpackError::ZeroIndex),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((Some(n), Some(v)))
            }
            _ => Ok(match self.table.get(index - 62) {
                Some(e) => (e.name.as_deref(), e.value.as_deref()),
                None => (None, None),
            }),
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max = max.min(MAX_TABLE_BYTES);
        self.evict(0);
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.table.pop_back() {
                Some(e) => self.size -= e.size,
                None => break,
            }
        }
    }

    fn insert(
        &mut self,
        name: Option<&str>,
        name_len: usize,
        value: Option<String>,
        value_len: usize,
    ) {
        let size = name_len + value_len + 32;
        self.evict(size);
        if size > self.max {
            // Larger than the table: it empties the table (RFC 7541 §4.4).
            return;
        }
        self.size += size;
        self.table.push_front(Entry {
            name: name.map(Into::into),
            value: value.map(Into::into),
            size,
        });
    }

    /// Decodes one complete header block into `out`. `secret(name)` says which values
    /// are never kept (not even in the table): secrets, and values the caller has no
    /// use for (skipping them saves decoding work; their sizes are still counted). On an error the table may be out of
    /// step with the peer's: it is forgotten ([`Decoder::lose_sync`]).
    pub fn decode(
        &mut self,
        block: &[u8],
        secret: &dyn Fn(&str) -> bool,
        out: &mut Vec<Field>,
    ) -> Result<BlockInfo, HpackError> {
        let r = self.decode_inner(block, secret, out);
        if r.is_err() {
            self.lose_sync();
        }
        r
    }

    fn decode_inner(
        &mut self,
        p: &[u8],
        secret: &dyn Fn(&str) -> bool,
        out: &mut Vec<Field>,
    ) -> Result<BlockInfo, HpackError> {
        let mut info = BlockInfo::default();
        let mut at = 0;
        let mut output = 0usize;
        let mut first = true;
        while at < p.len() {
            let b = p[at];
            let field = if b & 0x80 != 0 {
                let index = integer(p, &mut at, 7)?;
                let (n, v) = self.get(index)?;
                Field {
                    name: n.map(str::to_string),
                    value: v.map(str::to_string),
                }
            } else if b & 0xe0 == 0x20 {
                if !first {
                    return Err(HpackError::LateSizeUpdate);
                }
                let max = integer(p, &mut at, 5)?;
                self.set_max(max);
                continue;
            } else {
                let indexing = b & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let index = integer(p, &mut at, prefix)?;
                let (name, name_len) = if index == 0 {
                    let (n, len) = string(p, &mut at, true, true, &mut self.scratch)?;
                    (n.map(|n| n.to_ascii_lowercase()), len)
                } else {
                    let (n, _) = self.get(index)?;
                    // An unknown name counts as one byte: a lower bound (see `insert`).
                    let len = n.map_or(1, str::len);
                    (n.map(str::to_string), len)
                };
                let keep = name.as_deref().is_some_and(|n| !secret(n));
                let (value, value_len) = string(p, &mut at, keep, indexing, &mut self.scratch)?;
                if indexing {
                    self.insert(name.as_deref(), name_len, value.clone(), value_len);
                }
                Field { name, value }
            };
            first = false;
            if field.name.is_none() {
                info.unknown_fields += 1;
            }
            let cost = field.name.as_ref().map_or(0, String::len)
                + field.value.as_ref().map_or(0, String::len);
            if out.len() >= MAX_BLOCK_FIELDS || output + cost > MAX_BLOCK_OUTPUT {
                info.dropped_fields += 1;
                continue;
            }
            output += cost;
            out.push(match &field.name {
                Some(n) if secret(n) => Field {
                    name: field.name,
                    value: None,
                },
                _ => field,
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn none(_: &str) -> bool {
        false
    }

    fn pairs(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                (
                    f.name.clone().unwrap_or_else(|| "?".into()),
                    f.value.clone().unwrap_or_else(|| "?".into()),
                )
            })
            .collect()
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        d.decode(block, &none, &mut out).unwrap();
        pairs(&out)
    }

    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    // RFC 7541 C.4: requests with Huffman coding, one decoder for the three blocks.
    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let mut d = Decoder::default();
        let b1 = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        assert_eq!(
            decode(&mut d, &b1),
            owned(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let b2 = hex("8286 84be 5886 a8eb 1064 9cbf");
        assert_eq!(
            decode(&mut d, &b2),
            owned(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let b3 = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
        assert_eq!(
            decode(&mut d, &b3),
            owned(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.entries(), 3);
        assert_eq!(d.size, 164);
    }

    // RFC 7541 C.5: responses without Huffman, a 256-byte table that evicts.
    #[test]
    fn rfc7541_c5_responses_with_eviction() {
        let mut d = Decoder::default();
        d.set_max(256);
        let b1 = hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230
             3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65
             7861 6d70 6c65 2e63 6f6d",
        );
        assert_eq!(
            decode(&mut d, &b1),
            owned(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.size, 222);
        let b2 = hex("4803 3330 37c1 c0bf");
        assert_eq!(
            decode(&mut d, &b2),
            owned(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.size, 222);
        assert_eq!(d.entries(), 4);
    }

    #[test]
    fn a_decoder_started_mid_connection_marks_unknown_references() {
        let mut d = Decoder::default();
        // Indexed 62 (never seen), then literal with indexing, name ref 63 (unknown).
        let block = [0xbe, 0x7f, 0x00, 0x01, b'x'];
        let mut out = Vec::new();
        let info = d.decode(&block, &none, &mut out).unwrap();
        assert_eq!(info.unknown_fields, 2);
        assert_eq!(
            out[0],
            Field {
                name: None,
                value: None
            }
        );
        // A value whose name is unknown is of no use: not kept.
        assert_eq!(
            out[1],
            Field {
                name: None,
                value: None
            }
        );
        // The insertion takes position 62 from now on (an entry of its own, so the
        // positions after it stay right), still of unknown name.
        assert_eq!(d.entries(), 1);
        let mut out = Vec::new();
        d.decode(&[0xbe], &none, &mut out).unwrap();
        assert_eq!(
            out[0],
            Field {
                name: None,
                value: None
            }
        );
    }

    #[test]
    fn lost_sync_turns_dynamic_references_unknown() {
        let mut d = Decoder::default();
        // literal with indexing, new name "a" = "b"
        assert_eq!(
            decode(&mut d, &[0x40, 1, b'a', 1, b'b']),
            owned(&[("a", "b")])
        );
        assert_eq!(decode(&mut d, &[0xbe]), owned(&[("a", "b")]));
        d.lose_sync();
        assert_eq!(decode(&mut d, &[0xbe]), owned(&[("?", "?")]));
    }

    #[test]
    fn secrets_are_not_kept_even_in_the_table() {
        let mut d = Decoder::default();
        let secret = |n: &str| n == "authorization";
        let mut out = Vec::new();
        // literal with indexing, static name 23 (authorization), value "Bearer x"
        let mut block = vec![0x57, 8];
        block.extend_from_slice(b"Bearer x");
        d.decode(&block, &secret, &mut out).unwrap();
        assert_eq!(out[0].value, None);
        assert!(d.table.iter().all(|e| e.value.is_none()));
        let mut out = Vec::new();
        d.decode(&[0xbe], &secret, &mut out).unwrap();
        assert_eq!(out[0].name.as_deref(), Some("authorization"));
        assert_eq!(out[0].value, None);
    }

    #[test]
    fn a_bomb_of_references_is_capped() {
        let mut d = Decoder::default();
        // One 4000-byte entry, then a block of 10,000 references to it.
        let mut block = vec![0x40, 1, b'a', 0x7f];
        let mut n = 4000 - 127;
        while n >= 128 {
            block.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        block.push(n as u8);
        block.extend(std::iter::repeat_n(b'v', 4000));
        let mut out = Vec::new();
        d.decode(&block, &none, &mut out).unwrap();
        let refs = vec![0xbe; 10_000];
        let mut out = Vec::new();
        let info = d.decode(&refs, &none, &mut out).unwrap();
        assert!(out.len() <= 8);
        assert_eq!(info.dropped_fields as usize + out.len(), 10_000);
    }

    #[test]
    fn malformed_blocks_are_errors_and_forget_the_table() {
        let mut d = Decoder::default();
        decode(&mut d, &[0x40, 1, b'a', 1, b'b']);
        let mut out = Vec::new();
        assert_eq!(
            d.decode(&[0x80], &none, &mut out),
            Err(HpackError::ZeroIndex)
        );
        assert_eq!(d.entries(), 0);
        assert_eq!(
            d.decode(&[0x40, 5, b'a'], &none, &mut out),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &none, &mut out),
            Err(HpackError::IntegerOverflow)
        );
        assert_eq!(
            d.decode(&[0x82, 0x3f, 0x00], &none, &mut out),
            Err(HpackError::LateSizeUpdate)
        );
        // A Huffman string of 0xff bytes longer than 7 bits of padding: invalid.
        assert_eq!(
            d.decode(&[0x40, 0x81, 0xff, 0x00], &none, &mut out).err(),
            Some(HpackError::Huffman)
        );
    }
}
