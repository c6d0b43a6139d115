//! W3C Baggage: `baggage: key=value;property, ...`, values percent-encoded.
//! Limits: at most 64 members and 8192 bytes; a header over either limit is
//! dropped whole. A malformed member is skipped, the rest kept. Properties are
//! not kept.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::{is_token, trim_ows};
use crate::context::Baggage;
use crate::headers::Headers;

pub const BAGGAGE: &str = "baggage";
pub const MAX_MEMBERS: usize = 64;
pub const MAX_BYTES: usize = 8192;

/// Everything outside `baggage-octet` (and `%` itself) is encoded.
const VALUE_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%')
    .add(0x7f);

pub fn extract(h: &Headers) -> Baggage {
    let mut out = Baggage::new();
    let mut total = 0usize;
    let mut count = 0usize;
    for value in h.get_all(BAGGAGE) {
        total += value.len();
        if total > MAX_BYTES {
            return Baggage::new();
        }
        for member in value.split(',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_MEMBERS {
                return Baggage::new();
            }
            let kv = member.split(';').next().unwrap_or_default();
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let k = trim_ows(k);
            let v = trim_ows(v);
            if !is_token(k) || !v.bytes().all(is_baggage_octet_or_pct) {
                continue;
            }
            let Ok(v) = percent_decode_str(v).decode_utf8() else {
                continue;
            };
            out.insert(k, v.into_owned());
        }
    }
    out
}

fn is_baggage_octet_or_pct(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Writes `baggage`, skipping keys that are not tokens and stopping before
/// either limit would be crossed.
pub fn inject(b: &Baggage, out: &mut Headers) {
    let encoded = encode(b);
    if encoded.is_empty() {
        out.remove(BAGGAGE);
    } else {
        out.set(BAGGAGE, encoded);
    }
}

/// The `baggage` header value for `b` (empty when nothing fits).
pub fn encode(b: &Baggage) -> String {
    let mut s = String::new();
    let mut n = 0;
    for (k, v) in b.iter() {
        if !is_token(k) || n == MAX_MEMBERS {
            continue;
        }
        let item = format!("{k}={}", utf8_percent_encode(v, VALUE_ENCODE));
        let extra = item.len() + usize::from(!s.is_empty());
        if s.len() + extra > MAX_BYTES {
            continue;
        }
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(&item);
        n += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[&str]) -> Headers {
        v.iter().map(|v| (BAGGAGE, *v)).collect()
    }

    #[test]
    fn parses_and_decodes() {
        let b = extract(&h(&[
            "userId=alice, serverNode = DF%2028 ;prop=1,isProduction=false",
            "x=%E2%9C%93",
        ]));
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [
                ("userId", "alice"),
                ("serverNode", "DF 28"),
                ("isProduction", "false"),
                ("x", "\u{2713}")
            ]
        );
    }

    #[test]
    fn skips_bad_members_and_drops_oversized() {
        let b = extract(&h(&["good=1,bad key=2,novalue,k=\"q\",k2=%ZZ,k3=%FF"]));
        // `%ZZ` is left as-is by percent decoding; `%FF` is not UTF-8.
        assert_eq!(b.iter().collect::<Vec<_>>(), [("good", "1"), ("k2", "%ZZ")]);
        let many = (0..65)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(extract(&h(&[&many])).is_empty());
        let big = format!("k={}", "v".repeat(MAX_BYTES));
        assert!(extract(&h(&[&big])).is_empty());
    }

    #[test]
    fn encodes_reserved_characters() {
        let b: Baggage = [("k", "a b,c;d%\u{e9}"), ("bad key", "x")]
            .into_iter()
            .collect();
        assert_eq!(encode(&b), "k=a%20b%2Cc%3Bd%25%C3%A9");
        assert_eq!(extract(&h(&[&encode(&b)])).get("k"), Some("a b,c;d%\u{e9}"));
    }
}
