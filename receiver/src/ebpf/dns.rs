//! DNS over UDP: each datagram is one message. A query and its answer are paired per
//! socket by message id, question name and type; when two queries waiting on one socket
//! share all three, neither is paired (an answer could be either's).

use std::fmt;

use super::http1::Tag;

/// Queries kept waiting per socket; beyond this the oldest is given up.
pub const MAX_WAITING: usize = 256;
/// Longest name (RFC 1035: 255 octets on the wire).
const MAX_NAME: usize = 255;

/// Why a datagram is not a DNS message weft reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("shorter than a DNS header")]
    Short,
    #[error("not exactly one question")]
    Questions,
    #[error("bad name in the question")]
    Name,
    #[error("question cut short")]
    Truncated,
}

/// The parts of a message a span is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    pub rcode: u8,
    /// The question's name, lower-cased, without the final dot (`.` for the root);
    /// empty, with `qtype` 0, for an answer that came back without its question.
    pub name: String,
    pub qtype: u16,
    pub answers: u16,
}

/// Reads the header and the question of a message.
pub fn parse(p: &[u8]) -> Result<DnsMessage, DnsError> {
    if p.len() < 12 {
        return Err(DnsError::Short);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    let qdcount = u16::from_be_bytes([p[4], p[5]]);
    let answers = u16::from_be_bytes([p[6], p[7]]);
    let response = flags & 0x8000 != 0;
    // An error answer may come back without the question (FORMERR, NOTIMP): it is
    // paired by its id alone.
    if qdcount == 0 && response {
        return Ok(DnsMessage {
            id,
            response,
            opcode: ((flags >> 11) & 0xf) as u8,
            rcode: (flags & 0xf) as u8,
            name: String::new(),
            qtype: 0,
            answers,
        });
    }
    if qdcount != 1 {
        return Err(DnsError::Questions);
    }
    let mut at = 12;
    let mut name = String::new();
    // Octets of the name on the wire (the text escapes some, so is longer).
    let mut wire = 1usize;
    loop {
        let Some(&len) = p.get(at) else {
            return Err(DnsError::Truncated);
        };
        at += 1;
        if len == 0 {
            break;
        }
        // A compression pointer cannot point back from the first name, and the
        // extended label types are obsolete.
        if len & 0xc0 != 0 {
            return Err(DnsError::Name);
        }
        let label = p
            .get(at..at + usize::from(len))
            .ok_or(DnsError::Truncated)?;
        at += usize::from(len);
        wire += label.len() + 1;
        if wire > MAX_NAME {
            return Err(DnsError::Name);
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            match b {
                b'.' | b'\\' => {
                    name.push('\\');
                    name.push(char::from(b));
                }
                0x21..=0x7e => name.push(char::from(b.to_ascii_lowercase())),
                _ => name.push_str(&format!("\\{b:03}")),
            }
        }
    }
    if name.is_empty() {
        name.push('.');
    }
    let q = p.get(at..at + 4).ok_or(DnsError::Truncated)?;
    Ok(DnsMessage {
        id,
        response,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: (flags & 0xf) as u8,
        name,
        qtype: u16::from_be_bytes([q[0], q[1]]),
        answers,
    })
}

/// A record type's mnemonic.
pub fn type_name(t: u16) -> String {
    let s = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        46 => "RRSIG",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    s.to_string()
}

/// A response code's mnemonic.
pub fn rcode_name(r: u8) -> String {
    let s = match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{r}"),
    };
    s.to_string()
}

/// One datagram as the socket saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub payload: &'a [u8],
    /// The datagram was sent (egress) rather than received.
    pub sent: bool,
    /// When the send started or the receive ended.
    pub ts_ns: u64,
    /// When the syscall ended.
    pub end_ns: u64,
    pub tag: Tag,
    /// Where a sent datagram went (a received one's source is not known).
    pub peer: Option<(std::net::IpAddr, u16)>,
}

/// A query and its answer: what a span is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsExchange {
    pub query: DnsMessage,
    pub rcode: u8,
    pub answers: u16,
    /// The query was sent by this socket (a client); else received (a server).
    pub client: bool,
    pub req_ts_ns: u64,
    pub req_tag: Tag,
    pub resp_ts_ns: u64,
    pub resp_end_ns: u64,
    pub resp_tag: Tag,
    /// The other end, from whichever of the two datagrams this socket sent.
    pub peer: Option<(std::net::IpAddr, u16)>,
}

#[derive(Debug)]
struct Waiting {
    query: DnsMessage,
    sent: bool,
    ts_ns: u64,
    tag: Tag,
    peer: Option<(std::net::IpAddr, u16)>,
}

/// Counters for the receiver's self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsStats {
    pub exchanges: u64,
    /// Datagrams that are not DNS messages weft reads.
    pub bad_messages: u64,
    /// Answers with no query waiting for them.
    pub unmatched_responses: u64,
    /// Queries never answered, or given up on.
    pub unmatched_queries: u64,
    /// Answers that two waiting queries could both own: none was paired.
    pub ambiguous: u64,
}

/// One UDP socket's DNS pairing.
#[derive(Debug, Default)]
pub struct DnsSocket {
    waiting: Vec<Waiting>,
    pub stats: DnsStats,
}

impl fmt::Display for DnsMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} #{}", type_name(self.qtype), self.name, self.id)
    }
}

impl DnsSocket {
    /// Takes one datagram; a completed exchange goes to `out`.
    pub fn feed(&mut self, d: &Datagram<'_>, out: &mut Vec<DnsExchange>) {
        let m = match parse(d.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "not a DNS message");
                self.stats.bad_messages += 1;
                return;
            }
        };
        if !m.response {
            if self.waiting.len() >= MAX_WAITING {
                self.waiting.remove(0);
                self.stats.unmatched_queries += 1;
            }
            self.waiting.push(Waiting {
                query: m,
                sent: d.sent,
                ts_ns: d.ts_ns,
                tag: d.tag,
                peer: d.peer,
            });
            return;
        }
        // An answer travels the other way from its query.
        let questionless = m.qtype == 0 && m.name.is_empty();
        let owns = |w: &Waiting| {
            w.sent != d.sent
                && w.query.id == m.id
                && (questionless || (w.query.qtype == m.qtype && w.query.name == m.name))
        };
        let matching = self.waiting.iter().filter(|w| owns(w)).count();
        match matching {
            0 => self.stats.unmatched_responses += 1,
            1 => {
                if let Some(i) = self.waiting.iter().position(owns) {
                    let w = self.waiting.remove(i);
                    self.stats.exchanges += 1;
                    out.push(DnsExchange {
                        client: w.sent,
                        rcode: m.rcode,
                        answers: m.answers,
                        req_ts_ns: w.ts_ns,
                        req_tag: w.tag,
                        resp_ts_ns: d.ts_ns,
                        resp_end_ns: d.end_ns.max(w.ts_ns),
                        resp_tag: d.tag,
                        peer: if w.sent { w.peer } else { d.peer },
                        query: w.query,
                    });
                }
            }
            n => {
                self.waiting.retain(|w| !owns(w));
                self.stats.ambiguous += 1;
                self.stats.unmatched_queries += n as u64;
            }
        }
    }

    /// Queries still waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The socket is forgotten: what waits is counted.
    pub fn close(&mut self) {
        self.stats.unmatched_queries += self.waiting.len() as u64;
        self.waiting.clear();
    }
}

/// One direction of DNS over TCP: each message is preceded by its 2-byte length.
/// Bytes past the captured prefix are skipped by count (a message's question is at its
/// start); a length that falls in uncaptured bytes loses the framing for good.
#[derive(Debug, Default)]
pub struct TcpFramer {
    buf: Vec<u8>,
    /// When and by which syscall the buffered message's first byte moved.
    first: Option<(u64, Tag)>,
    skip: u64,
    lost: bool,
}

/// A message cut out of a TCP stream: its bytes (maybe only a prefix), when its
/// first byte moved and when its last did.
pub struct Framed {
    pub bytes: Vec<u8>,
    pub ts_ns: u64,
    pub end_ns: u64,
    pub tag: Tag,
}

/// Longest message buffered while waiting for its end (the most a length can say).
const MAX_TCP_MESSAGE: usize = 2 + 65535;

impl TcpFramer {
    /// Whether the framing was lost.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Takes one chunk (captured bytes, then `dark` bytes not seen).
    pub fn push(
        &mut self,
        captured: &[u8],
        dark: u64,
        ts_ns: u64,
        tag: Tag,
        out: &mut Vec<Framed>,
    ) {
        if self.lost {
            return;
        }
        let mut data = captured;
        let mut dark = dark;
        if self.skip > 0 {
            let n = (self.skip.min(data.len() as u64)) as usize;
            data = &data[n..];
            self.skip -= n as u64;
            let m = self.skip.min(dark);
            self.skip -= m;
            dark -= m;
            if self.skip > 0 {
                return;
            }
        }
        if self.buf.is_empty() && !data.is_empty() {
            self.first = Some((ts_ns, tag));
        }
        self.buf.extend_from_slice(data);
        loop {
            if self.buf.len() < 2 {
                if dark > 0 {
                    self.lost = true;
                }
                return;
            }
            let need = 2 + usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            let (ts, tg) = self.first.unwrap_or((ts_ns, tag));
            if self.buf.len() >= need {
                out.push(Framed {
                    bytes: self.buf[2..need].to_vec(),
                    ts_ns: ts,
                    end_ns: ts_ns,
                    tag: tg,
                });
                self.buf.drain(..need);
                self.first = (!self.buf.is_empty()).then_some((ts_ns, tag));
                continue;
            }
            if dark > 0 {
                // The rest of this message was not captured: its start is enough.
                let missing = (need - self.buf.len()) as u64;
                out.push(Framed {
                    bytes: self.buf[2..].to_vec(),
                    ts_ns: ts,
                    end_ns: ts_ns,
                    tag: tg,
                });
                self.buf.clear();
                self.first = None;
                let m = missing.min(dark);
                self.skip = missing - m;
                if dark > m {
                    // The next length is in bytes nobody saw.
                    self.lost = true;
                }
                return;
            }
            if self.buf.len() > MAX_TCP_MESSAGE {
                self.lost = true;
                self.buf.clear();
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with one question.
    pub fn message(id: u16, flags: u16, name: &str, qtype: u16, answers: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&answers.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            v.push(label.len() as u8);
            v.extend_from_slice(label.as_bytes());
        }
        v.push(0);
        v.extend_from_slice(&qtype.to_be_bytes());
        v.extend_from_slice(&1u16.to_be_bytes());
        v
    }

    fn dgram(payload: &[u8], sent: bool, ts: u64) -> Datagram<'_> {
        Datagram {
            payload,
            sent,
            ts_ns: ts,
            end_ns: ts + 10,
            tag: Tag {
                syscall_id: ts,
                tid: 7,
            },
            peer: sent.then(|| ("127.0.0.1".parse().unwrap(), 53)),
        }
    }

    #[test]
    fn parses_header_and_question() {
        let m = parse(&message(0xbeef, 0x8183, "Www.Example.COM", 28, 0)).unwrap();
        assert_eq!(
            m,
            DnsMessage {
                id: 0xbeef,
                response: true,
                opcode: 0,
                rcode: 3,
                name: "www.example.com".into(),
                qtype: 28,
                answers: 0,
            }
        );
        assert_eq!(parse(&message(1, 0, "", 2, 0)).unwrap().name, ".");
        assert_eq!(
            (type_name(28), rcode_name(3)),
            ("AAAA".into(), "NXDOMAIN".into())
        );
    }

    #[test]
    fn refuses_what_is_not_one_question() {
        assert_eq!(parse(b"short"), Err(DnsError::Short));
        let mut two = message(1, 0, "a.b", 1, 0);
        two[5] = 2;
        assert_eq!(parse(&two), Err(DnsError::Questions));
        let mut pointer = message(1, 0, "a.b", 1, 0);
        pointer[12] = 0xc0;
        assert_eq!(parse(&pointer), Err(DnsError::Name));
        let cut = message(1, 0, "abc.example", 1, 0);
        for n in 12..cut.len() {
            assert_eq!(parse(&cut[..n]), Err(DnsError::Truncated), "{n}");
        }
        let long = format!(
            "{}.{}.{}.{}.{}",
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(60),
            "e".repeat(60)
        );
        assert_eq!(parse(&message(1, 0, &long, 1, 0)), Err(DnsError::Name));
    }

    #[test]
    fn pairs_by_id_name_and_type_and_refuses_twins() {
        let mut s = DnsSocket::default();
        let mut out = Vec::new();
        // A client: A and AAAA queries with one id, answered in the other order.
        let qa = message(9, 0x0100, "svc.local", 1, 0);
        let qaaaa = message(9, 0x0100, "svc.local", 28, 0);
        s.feed(&dgram(&qa, true, 100), &mut out);
        s.feed(&dgram(&qaaaa, true, 110), &mut out);
        s.feed(
            &dgram(&message(9, 0x8180, "svc.local", 28, 1), false, 200),
            &mut out,
        );
        s.feed(
            &dgram(&message(9, 0x8180, "svc.local", 1, 2), false, 210),
            &mut out,
        );
        let got: Vec<_> = out
            .iter()
            .map(|x| {
                (
                    x.query.qtype,
                    x.req_ts_ns,
                    x.resp_ts_ns,
                    x.answers,
                    x.client,
                )
            })
            .collect();
        assert_eq!(got, vec![(28, 110, 200, 1, true), (1, 100, 210, 2, true)]);
        assert_eq!(out[0].peer, Some(("127.0.0.1".parse().unwrap(), 53)));
        // Twins: the same id, name and type waiting twice: the answer is nobody's.
        out.clear();
        s.feed(&dgram(&qa, true, 300), &mut out);
        s.feed(&dgram(&qa, true, 310), &mut out);
        s.feed(
            &dgram(&message(9, 0x8180, "svc.local", 1, 1), false, 400),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!((s.stats.ambiguous, s.stats.unmatched_queries), (1, 2));
        // An answer nobody asked for, and garbage.
        s.feed(&dgram(&message(5, 0x8180, "x", 1, 1), false, 500), &mut out);
        s.feed(&dgram(b"\x00\x01", false, 510), &mut out);
        assert_eq!((s.stats.unmatched_responses, s.stats.bad_messages), (1, 1));
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn a_server_receives_queries_and_sends_answers() {
        let mut s = DnsSocket::default();
        let mut out = Vec::new();
        s.feed(
            &dgram(&message(3, 0x0100, "a.test", 1, 0), false, 10),
            &mut out,
        );
        // An answer it receives (not sends) is not the answer to its own query.
        s.feed(
            &dgram(&message(3, 0x8180, "a.test", 1, 1), false, 15),
            &mut out,
        );
        assert!(out.is_empty());
        s.feed(
            &dgram(&message(3, 0x8182, "a.test", 1, 0), true, 20),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert!(!out[0].client);
        assert_eq!(
            (out[0].rcode, out[0].req_ts_ns, out[0].resp_end_ns),
            (2, 10, 30)
        );
        assert_eq!(out[0].peer, Some(("127.0.0.1".parse().unwrap(), 53)));
    }

    #[test]
    fn tcp_framing_any_cut_and_dark_bodies() {
        let q = message(1, 0x0100, "a.test", 1, 0);
        let r = message(1, 0x8180, "a.test", 1, 1);
        let mut stream = Vec::new();
        for m in [&q, &r] {
            stream.extend_from_slice(&(m.len() as u16).to_be_bytes());
            stream.extend_from_slice(m);
        }
        for cut in 0..=stream.len() {
            let mut f = TcpFramer::default();
            let mut out = Vec::new();
            f.push(&stream[..cut], 0, 1, Tag::default(), &mut out);
            f.push(&stream[cut..], 0, 2, Tag::default(), &mut out);
            let got: Vec<_> = out.iter().map(|m| (m.bytes.clone(), m.ts_ns)).collect();
            let first_ts = if cut == 0 { 2 } else { 1 };
            let second_ts = if cut <= q.len() + 2 { 2 } else { 1 };
            assert_eq!(
                got,
                vec![(q.clone(), first_ts), (r.clone(), second_ts)],
                "cut {cut}"
            );
        }
        // A long answer whose tail was not captured: its start is read, the tail
        // skipped, and the next message framed.
        let mut big = r.clone();
        big.extend(std::iter::repeat_n(0u8, 3000));
        let mut f = TcpFramer::default();
        let mut out = Vec::new();
        let mut head = (big.len() as u16).to_be_bytes().to_vec();
        head.extend_from_slice(&big[..100]);
        f.push(&head, (big.len() - 100) as u64, 5, Tag::default(), &mut out);
        let mut next = (q.len() as u16).to_be_bytes().to_vec();
        next.extend_from_slice(&q);
        f.push(&next, 0, 6, Tag::default(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(parse(&out[0].bytes).unwrap().answers, 1);
        assert_eq!(out[1].bytes, q);
        assert!(!f.lost());
        // A length in bytes nobody saw: lost for good.
        f.push(&[0], 5, 7, Tag::default(), &mut out);
        assert!(f.lost());
    }

    #[test]
    fn an_error_answer_without_its_question_pairs_by_id() {
        let mut s = DnsSocket::default();
        let mut out = Vec::new();
        s.feed(
            &dgram(&message(7, 0x0100, "x.test", 16, 0), true, 10),
            &mut out,
        );
        let mut formerr = message(7, 0x8181, "x.test", 16, 0);
        formerr.truncate(12);
        formerr[5] = 0; // no question
        s.feed(&dgram(&formerr, false, 20), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].query.name.as_str(), out[0].query.qtype, out[0].rcode),
            ("x.test", 16, 1)
        );
        // A question-less query is still refused.
        let mut q = message(8, 0x0100, "x.test", 1, 0);
        q.truncate(12);
        q[5] = 0;
        assert_eq!(parse(&q), Err(DnsError::Questions));
    }

    #[test]
    fn names_are_measured_on_the_wire_not_in_their_escaped_text() {
        // 60 bytes that each print as a 4-character escape: 240 characters of text,
        // 61 octets on the wire.
        let mut p = message(1, 0, "a", 1, 0);
        let label = vec![0x01u8; 60];
        let mut name = vec![60u8];
        name.extend(&label);
        p.splice(12..12, name);
        let m = parse(&p).unwrap();
        assert_eq!(m.name.len(), 60 * 4 + 2);
    }
}
