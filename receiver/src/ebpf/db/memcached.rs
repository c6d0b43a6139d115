//! memcached's text protocol: a command line (storage commands and `ms` carry a data
//! block of a stated size), answered by one line, or by VALUE/STAT lines (with their data
//! blocks) closed by END. `noreply` commands get no answer. The binary protocol and meta
//! commands in quiet mode (whose misses are never answered) are not followed.

use super::{DbParser, DbRequest, DbResponse, Event, Side, Step, TextPolicy};

/// Longest line read (memcached's own key limit is 250 bytes).
const MAX_LINE: usize = 4096;
/// memcached's largest item (its -I limit can be raised to 1 GiB).
const MAX_DATA: u64 = 1 << 30;

#[derive(Debug)]
pub struct Memcached {
    text: TextPolicy,
}

impl Memcached {
    pub fn new(text: TextPolicy) -> Memcached {
        Memcached { text }
    }
}

fn line(view: &[u8]) -> Option<(&[u8], usize)> {
    let end = view.iter().take(MAX_LINE).position(|b| *b == b'\n')?;
    let l = &view[..end];
    Some((l.strip_suffix(b"\r").unwrap_or(l), end + 1))
}

fn number(w: Option<&&[u8]>) -> Option<u64> {
    let w = w?;
    if w.is_empty() || w.len() > 19 || !w.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(w).ok()?.parse().ok()
}

/// Commands of the text protocol, with the index of their data-size word when they carry
/// a data block.
fn command(name: &[u8]) -> Option<Option<usize>> {
    Some(match name {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => Some(4),
        b"ms" => Some(2),
        b"get" | b"gets" | b"gat" | b"gats" | b"delete" | b"incr" | b"decr" | b"touch"
        | b"stats" | b"version" | b"flush_all" | b"verbosity" | b"quit" | b"shutdown"
        | b"cache_memlimit" | b"slabs" | b"lru" | b"lru_crawler" | b"watch" | b"misbehave"
        | b"mg" | b"md" | b"ma" | b"mn" | b"me" | b"verify_key" => None,
        _ => return None,
    })
}

impl DbParser for Memcached {
    fn parse(&mut self, side: Side, view: &[u8], _dark: bool, out: &mut Vec<Event>) -> Step {
        if view[0] == 0x80 || view[0] == 0x81 {
            return Step::Stop("memcached binary protocol");
        }
        let Some((l, consumed)) = line(view) else {
            // A long line (a multi-get of many keys) is waited for, and lost when
            // its end was not captured; binary bytes are refused at once.
            return if view
                .iter()
                .take(MAX_LINE)
                .any(|b| *b < 0x20 && !matches!(b, b'\t' | b'\r'))
            {
                Step::Bad("control bytes in a memcached line")
            } else {
                Step::Need
            };
        };
        if l.iter().any(|b| *b < 0x20 && *b != b'\t') {
            return Step::Bad("control bytes in a memcached line");
        }
        let words: Vec<&[u8]> = l.split(|b| *b == b' ').filter(|w| !w.is_empty()).collect();
        let Some(first) = words.first().copied() else {
            return Step::Bad("empty memcached line");
        };
        match side {
            Side::Request => {
                let Some(data_word) = command(first) else {
                    return Step::Bad("not a memcached command");
                };
                let mut skip = 0;
                if let Some(i) = data_word {
                    let Some(n) = number(words.get(i)).filter(|n| *n <= MAX_DATA) else {
                        return Step::Bad("bad memcached data length");
                    };
                    skip = n + 2;
                }
                let meta = first.len() == 2 && first[0] == b'm';
                if meta && words.iter().skip(2).any(|w| *w == b"q") {
                    return Step::Stop("memcached meta commands in quiet mode");
                }
                let noreply = !meta && words.last().is_some_and(|w| *w == b"noreply");
                if first == b"quit" {
                    out.push(Event::Boundary);
                    return Step::Take { consumed, skip: 0 };
                }
                let second = words.get(1).copied().unwrap_or(b"");
                if first == b"watch"
                    || (first == b"stats"
                        && second == b"detail"
                        && words.get(2) == Some(&&b"dump"[..]))
                    || (first == b"lru_crawler" && matches!(second, b"metadump" | b"mgdump"))
                {
                    return Step::Stop("a memcached command whose answer is a stream");
                }
                let op = String::from_utf8_lossy(first).into_owned();
                // The line holds keys and numbers, never the stored value.
                let text = super::sanitize::cap(
                    String::from_utf8_lossy(l).into_owned(),
                    self.text.max_length,
                );
                out.push(Event::Request(DbRequest {
                    operation: op,
                    text: Some(text),
                    namespace: None,
                    traceparent: None,
                    replies: u32::from(!noreply),
                }));
                Step::Take { consumed, skip }
            }
            Side::Response => {
                match first {
                    b"VALUE" => {
                        let Some(n) = number(words.get(3)).filter(|n| *n <= MAX_DATA) else {
                            return Step::Bad("bad VALUE line");
                        };
                        Step::Take {
                            consumed,
                            skip: n + 2,
                        }
                    }
                    b"STAT" | b"ITEM" | b"CONFIG" => Step::Take { consumed, skip: 0 },
                    b"VA" => {
                        // A meta get hit: the value follows, then nothing else.
                        let Some(n) = number(words.get(1)).filter(|n| *n <= MAX_DATA) else {
                            return Step::Bad("bad VA line");
                        };
                        out.push(Event::Response(DbResponse::default()));
                        Step::Take {
                            consumed,
                            skip: n + 2,
                        }
                    }
                    b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => {
                        let code = String::from_utf8_lossy(first).into_owned();
                        let message = String::from_utf8_lossy(l).into_owned();
                        out.push(Event::Response(DbResponse {
                            status_code: Some(code),
                            error: Some(message),
                        }));
                        Step::Take { consumed, skip: 0 }
                    }
                    w if w.iter().all(|b| b.is_ascii_uppercase() || *b == b'_')
                        || number(Some(&w)).is_some() =>
                    {
                        out.push(Event::Response(DbResponse::default()));
                        Step::Take { consumed, skip: 0 }
                    }
                    _ => Step::Bad("not a memcached reply"),
                }
            }
        }
    }

    fn reset(&mut self) {}

    fn system(&self) -> &'static str {
        "memcached"
    }
}
