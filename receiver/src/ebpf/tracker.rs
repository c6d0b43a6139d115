//! From kernel records to spans: per-socket stream reassembly (ordered by TCP sequence,
//! gaps and overlaps accounted for), the per-thread syscall trace id, HTTP/1.x parsing
//! and pairing, and span building. Pure: no kernel, no clock, no I/O besides the
//! [`ProcessSource`] it is given, so every rule here is unit-tested with synthetic records.

use std::collections::{BTreeMap, HashMap};

/// Maps on the per-record path: keys are kernel-assigned (pids, inode numbers), so a
/// fast seeded hash is enough.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::config::{EbpfReceiverConfig, Protocol};
use super::db::{DbConnection, DbExchange, DbProtocol, DbStats, Side};
use super::dns::{Datagram, DnsExchange, DnsSocket, DnsStats, TcpFramer};
use super::http1::{Chunk, Http1Stats, ParserConfig, Tag};
use super::http2::{self, H2Exchange, Http2Connection, Http2Stats};
use super::pairing::{Http1Connection, HttpExchange, PairingStats};
use super::record::{Direction, Record, Role, FLAG_UDP};
use super::span::{self, ConnFacts, ProcessFacts, SpanBuilder};

/// Looks up what the resource of a process says (name, container).
pub trait ProcessSource: Send {
    fn lookup(&mut self, pid: u32, comm: &str) -> ProcessFacts;
}

/// Counters the tracker keeps; the receiver publishes their growth as self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerStats {
    pub records: u64,
    pub exchanges: u64,
    pub spans: u64,
    pub sequence_gaps: u64,
    pub overlaps: u64,
    pub non_http_streams: u64,
    pub line_too_long: u64,
    pub head_not_captured: u64,
    pub closed_mid_message: u64,
    pub unpaired: u64,
    pub evicted_idle: u64,
    pub evicted_full: u64,
    /// Connections read as each database protocol, in [`DbProtocol::ALL`] order.
    pub db_connections: [u64; 4],
    /// Connections given up because their bytes broke the protocol, per protocol.
    pub db_protocol_errors: [u64; 4],
    /// Connections not followed further (TLS and the like), per protocol.
    pub db_not_followed: [u64; 4],
    /// Times a connection's framing was lost in uncaptured bytes.
    pub db_framing_lost: u64,
    /// DNS datagrams that were not messages weft reads.
    pub dns_bad_messages: u64,
    /// DNS answers two waiting queries could own: none was paired.
    pub dns_ambiguous: u64,
    /// TLS connections whose plaintext came through OpenSSL's calls.
    pub tls_connections: u64,
    /// Connections read as HTTP/2.
    pub http2_connections: u64,
    /// HTTP/2 header blocks not captured whole, too large, or not decodable.
    pub http2_header_blocks_lost: u64,
    /// HTTP/2 header fields that referred to HPACK entries weft never saw.
    pub http2_unknown_fields: u64,
    /// Times an HTTP/2 direction's framing was lost in uncaptured bytes.
    pub http2_framing_lost: u64,
    /// HTTP/2 frames that broke the protocol.
    pub http2_protocol_errors: u64,
}

fn proto_index(p: DbProtocol) -> usize {
    DbProtocol::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

/// How a connection's bytes are read.
#[derive(Debug)]
enum Mode {
    /// No payload seen yet on a socket whose role is unknown.
    Undecided,
    /// HTTP/1.x; `requests` is the direction carrying requests.
    Http {
        conn: Box<Http1Connection>,
        requests: Direction,
        /// A `101` exchange held until the client's next bytes say whether the
        /// connection became HTTP/2 (h2c by `Upgrade`).
        upgrade: Option<Box<HeldUpgrade>>,
    },
    /// HTTP/2 (and gRPC); `requests` is the direction carrying requests.
    Http2 {
        conn: Box<Http2Connection>,
        requests: Direction,
    },
    /// A database or cache protocol; `requests` is the direction carrying requests.
    Db {
        conn: Box<DbConnection>,
        requests: Direction,
    },
    /// A UDP socket talking DNS: one message per datagram.
    Dns(Box<DnsSocket>),
    /// DNS over TCP: messages framed by their length, per direction (egress, ingress).
    DnsTcp {
        framers: Box<[TcpFramer; 2]>,
        sock: Box<DnsSocket>,
        requests: Direction,
    },
    /// The ciphertext of a TLS connection (its handshake, or every byte when OpenSSL's
    /// calls are not traced): never parsed; the handshake tells the version.
    Tls {
        version: Option<&'static str>,
        /// A handshake record's 5-byte header read on its own (OpenSSL reads the
        /// header, then the body), joined to the next read to find a ServerHello.
        header: Option<[u8; 5]>,
    },
    /// Not HTTP/1.x, or not allowed to make spans: only the syscall ids are kept.
    Ignored,
}

/// Key bit of the plaintext side of a TLS socket: its OpenSSL calls are a stream of
/// their own, next to the socket's ciphertext records under the plain key. (Inode
/// numbers never come near it.)
const TLS_KEY: u64 = 1 << 63;

#[derive(Debug)]
struct Conn {
    mode: Mode,
    role: Role,
    /// Sequence number expected next, per direction (egress, ingress).
    next_seq: [Option<u32>; 2],
    last_dir: Direction,
    last_id: u64,
    last_seen_ns: u64,
    capture_seq: u32,
    facts: ConnFacts,
    /// Stats already folded into the tracker's, to publish only growth.
    seen: Seen,
}

impl Conn {
    /// A connection first seen in record `r`.
    fn new(mode: Mode, role: Role, r: &Record<'_>) -> Conn {
        Conn {
            mode,
            role,
            next_seq: [None, None],
            last_dir: Direction::None,
            last_id: 0,
            last_seen_ns: 0,
            capture_seq: r.capture_seq,
            facts: ConnFacts {
                pid: r.pid,
                sock_id: r.sock_id,
                local: (r.laddr, r.lport),
                remote: (r.raddr, r.rport),
                local_text: r.laddr.to_string(),
                remote_text: r.raddr.to_string(),
                cgroup_id: r.cgroup_id,
                comm: r.comm().to_string(),
                tls: r.is_tls(),
                tls_version: None,
            },
            seen: Seen::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    line_too_long: u64,
    head_not_captured: u64,
    closed_mid_message: u64,
    unpaired: u64,
    non_http: bool,
    db: DbStats,
    dns: DnsStats,
    h2: Http2Stats,
}

#[derive(Debug, Clone, Copy)]
struct ThreadSlot {
    id: Option<u64>,
    last_seen_ns: u64,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        _ => 1,
    }
}

/// Looks like the first bytes of an HTTP/1.x request (a method token, a space).
fn looks_like_request(p: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| p.starts_with(m))
}

/// Starts like the HTTP/2 client preface (at least its first 4 bytes).
fn looks_like_h2_preface(p: &[u8]) -> bool {
    let n = p.len().min(http2::PREFACE.len());
    n >= 4 && p[..n] == http2::PREFACE[..n]
}

fn looks_like_response(p: &[u8]) -> bool {
    p.starts_with(b"HTTP/1.")
}

/// Looks like the first bytes of a TLS record: a handshake or alert record of TLS
/// 1.0 to 1.3 (every version writes 3.1 to 3.3 in the record layer). A read shorter
/// than the record header is judged on the bytes it has: servers that serve TLS and
/// clear text on one port peek at the first byte alone.
fn tls_record(p: &[u8]) -> bool {
    !p.is_empty()
        && matches!(p[0], 0x15 | 0x16)
        && p.get(1).is_none_or(|b| *b == 3)
        && p.get(2).is_none_or(|b| (1..=4).contains(b))
}

/// The version a ServerHello at the start of `p` agrees: its `supported_versions`
/// extension (TLS 1.3), else its legacy version. None for anything else, or when the
/// message is cut short.
pub(crate) fn server_hello_version(p: &[u8]) -> Option<&'static str> {
    fn name(v: u16) -> Option<&'static str> {
        Some(match v {
            0x0301 => "1.0",
            0x0302 => "1.1",
            0x0303 => "1.2",
            0x0304 => "1.3",
            _ => return None,
        })
    }
    // Record header (5), handshake header: type 2 = ServerHello, 3-byte length.
    if !tls_record(p) || p[0] != 0x16 || p.get(5) != Some(&2) {
        return None;
    }
    let body = p.get(9..)?;
    let legacy = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    // legacy_version(2) random(32) session_id(1+n) cipher(2) compression(1)
    let sid_len = usize::from(*body.get(34)?);
    let mut at = 35 + sid_len + 3;
    let ext_len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    at += 2;
    let end = at + ext_len;
    while at + 4 <= end {
        let ty = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*body.get(at + 2)?, *body.get(at + 3)?]));
        at += 4;
        if ty == 0x002b && len == 2 {
            return name(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
        }
        at += len;
    }
    name(legacy)
}

/// The user side of the receiver: feed it records, take spans.
pub struct Tracker {
    config: Arc<EbpfReceiverConfig>,
    parser: Arc<ParserConfig>,
    conns: FastMap<(u32, u64), Conn>,
    threads: FastMap<u32, ThreadSlot>,
    /// Process filter decisions by pid.
    allowed: FastMap<u32, bool>,
    next_id: u64,
    processes: Box<dyn ProcessSource>,
    spans: SpanBuilder,
    out: Outputs,
    stats: TrackerStats,
}

impl Tracker {
    pub fn new(config: Arc<EbpfReceiverConfig>, processes: Box<dyn ProcessSource>) -> Tracker {
        let parser = Arc::new(ParserConfig::new(
            &config.x_request_id_headers,
            &config.redact_headers,
        ));
        Tracker {
            spans: SpanBuilder::new(config.clone()),
            config,
            parser,
            conns: FastMap::default(),
            threads: FastMap::default(),
            allowed: FastMap::default(),
            // Ids only need to differ within one weft; a random start keeps two weft
            // instances (or restarts) from handing out the same small numbers.
            next_id: (fastrand::u64(..) >> 12) | 1,
            processes,
            out: Outputs::default(),
            stats: TrackerStats::default(),
        }
    }

    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Wall clock minus the kernel's monotonic clock, in ns: applied to record times.
    pub fn set_clock_offset(&mut self, offset_ns: i128) {
        self.spans.set_clock_offset(offset_ns);
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Takes one record. Records of one thread arrive in the order the thread made its
    /// syscalls (the ring buffer is shared by all CPUs and written at syscall exit).
    pub fn push(&mut self, r: &Record<'_>) {
        self.stats.records += 1;
        let comm = r.comm();
        if !self.process_allowed(r.pid, comm) {
            return;
        }
        if r.flags & FLAG_UDP != 0 {
            self.push_datagram(r);
            return;
        }
        let tls = r.is_tls();
        let key = (r.pid, if tls { r.sock_id | TLS_KEY } else { r.sock_id });
        if r.direction == Direction::None {
            if let Some(conn) = self.conns.remove(&key) {
                self.finish(conn);
            }
            if let Some(conn) = self.conns.remove(&(r.pid, r.sock_id | TLS_KEY)) {
                self.finish(conn);
            }
            return;
        }
        // A new connection restarts the kernel's counter; a socket inode number is not
        // reused while the socket lives, but a long-lived map can outlive it.
        let restart = matches!(self.conns.get(&key), Some(c)
            if r.capture_seq < c.capture_seq && r.capture_seq == 0 && r.role != Role::Unknown);
        if restart {
            if let Some(old) = self.conns.remove(&key) {
                self.finish(old);
            }
        }
        if !self.conns.contains_key(&key) {
            if self.conns.len() >= self.config.max_connections {
                self.evict_oldest();
            }
            let allowed = self.config.ports_allowed(r.lport, r.rport);
            let (mode, role) = if !allowed {
                (Mode::Ignored, r.role)
            } else {
                self.pinned_mode(r.role, r.lport, r.rport)
            };
            if let Mode::Db { conn, .. } = &mode {
                self.stats.db_connections[proto_index(conn.protocol())] += 1;
            }
            if let Mode::Http2 { .. } = &mode {
                self.stats.http2_connections += 1;
            }
            let mut conn = Conn::new(mode, role, r);
            if tls {
                self.stats.tls_connections += 1;
                // The version, from the handshake recorded on the socket's own key.
                conn.facts.tls_version = match self.conns.get(&(r.pid, r.sock_id)) {
                    Some(Conn {
                        mode: Mode::Tls { version, .. },
                        ..
                    }) => *version,
                    _ => None,
                };
            }
            self.conns.insert(key, conn);
        }
        let ts = r.ts_ns();
        let id = self.syscall_id(key, r.tid, r.direction, ts);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last_seen_ns = ts;
        conn.capture_seq = r.capture_seq;

        if !tls && matches!(conn.mode, Mode::Undecided) && tls_record(r.payload) {
            conn.mode = Mode::Tls {
                version: None,
                header: None,
            };
        }
        if let Mode::Tls { version, header } = &mut conn.mode {
            if version.is_none() {
                *version = match header.take() {
                    Some(h) => {
                        let mut joined = h.to_vec();
                        joined.extend_from_slice(&r.payload[..r.payload.len().min(512)]);
                        server_hello_version(&joined)
                    }
                    None => server_hello_version(r.payload),
                };
                if let Ok(h) = <[u8; 5]>::try_from(r.payload) {
                    if h[0] == 0x16 {
                        *header = Some(h);
                    }
                }
            }
            return;
        }
        if let Mode::Undecided = conn.mode {
            let protocols = &self.config.protocols;
            let known = match conn.role {
                Role::Server => Some(Direction::Ingress),
                Role::Client => Some(Direction::Egress),
                Role::Unknown => None,
            };
            let opposite = |d: Direction| match d {
                Direction::Egress => Direction::Ingress,
                _ => Direction::Egress,
            };
            // What the first bytes say: (protocol, direction of the requests).
            let seen = if r.payload.is_empty() {
                None
            } else if looks_like_h2_preface(r.payload) {
                Some((Protocol::Http2, r.direction))
            } else if http2::looks_like_server_settings(r.payload) {
                Some((Protocol::Http2, opposite(r.direction)))
            } else if looks_like_request(r.payload) {
                Some((Protocol::Http, r.direction))
            } else if looks_like_response(r.payload) {
                Some((Protocol::Http, opposite(r.direction)))
            } else {
                DbProtocol::sniff(r.payload).map(|(p, is_request)| {
                    let d = if is_request {
                        r.direction
                    } else {
                        opposite(r.direction)
                    };
                    (Protocol::Db(p), d)
                })
            };
            let text = self.config.query_text.policy();
            conn.mode = match (seen, known) {
                // A role the kernel told that the bytes contradict: not followed.
                (Some((_, d)), Some(k)) if d != k => Mode::Ignored,
                (Some((p, d)), _) if protocols.detected(p) => {
                    conn.role = if d == Direction::Ingress {
                        Role::Server
                    } else {
                        Role::Client
                    };
                    match p {
                        Protocol::Http => http_mode(&self.parser, d),
                        Protocol::Http2 => {
                            self.stats.http2_connections += 1;
                            Mode::Http2 {
                                conn: Box::new(Http2Connection::new(self.parser.clone(), true)),
                                requests: d,
                            }
                        }
                        Protocol::Db(db) => {
                            self.stats.db_connections[proto_index(db)] += 1;
                            Mode::Db {
                                conn: Box::new(DbConnection::new(db, text)),
                                requests: d,
                            }
                        }
                    }
                }
                (Some(_), _) => Mode::Ignored,
                // No signature on a socket whose role is known: the HTTP parser has the
                // last word (and counts the stream as not HTTP).
                (None, Some(k)) if protocols.http.enabled => http_mode(&self.parser, k),
                (None, Some(_)) => Mode::Ignored,
                (None, None) if r.payload.is_empty() => return,
                (None, None) => Mode::Ignored,
            };
        }
        let requests = match &conn.mode {
            Mode::Http { requests, .. }
            | Mode::Http2 { requests, .. }
            | Mode::Db { requests, .. }
            | Mode::DnsTcp { requests, .. } => *requests,
            _ => return,
        };

        // Reassembly by TCP sequence: a gap (bytes never seen: a lost record, a call the
        // probe does not capture) is fed as uncaptured bytes so the parser keeps framing;
        // an overlap (MSG_PEEK, two readers) is cut off.
        // The plaintext of TLS calls has no sequence of its own: its records follow
        // one another, each with the seq of its first encrypted byte.
        let di = dir_index(r.direction);
        let mut payload = r.payload;
        let mut total = r.len;
        let mut seq = r.tcp_seq;
        if tls {
            let chunk = Chunk {
                captured: payload,
                total_len: usize::try_from(total).unwrap_or(usize::MAX),
                ts_ns: ts,
                tcp_seq: r.seq(),
                seq_linear: false,
                tag: Tag {
                    syscall_id: id,
                    tid: r.tid,
                },
            };
            if feed(
                &mut conn.mode,
                requests,
                r.direction,
                &chunk,
                &mut self.out,
                &self.parser,
                self.config.protocols.http2.enabled,
            ) {
                self.stats.http2_connections += 1;
            }
            self.drain(key);
            return;
        }
        if let Some(expected) = conn.next_seq[di] {
            let ahead = seq.wrapping_sub(expected);
            if ahead != 0 && ahead < (1 << 31) {
                self.stats.sequence_gaps += 1;
                let gap = Chunk {
                    captured: &[],
                    total_len: ahead as usize,
                    ts_ns: ts,
                    tcp_seq: Some(expected),
                    seq_linear: true,
                    tag: Tag {
                        syscall_id: id,
                        tid: r.tid,
                    },
                };
                if feed(
                    &mut conn.mode,
                    requests,
                    r.direction,
                    &gap,
                    &mut self.out,
                    &self.parser,
                    self.config.protocols.http2.enabled,
                ) {
                    self.stats.http2_connections += 1;
                }
            } else if ahead != 0 {
                let behind = expected.wrapping_sub(seq) as u64;
                self.stats.overlaps += 1;
                if behind >= total {
                    return;
                }
                let cut = (behind as usize).min(payload.len());
                payload = &payload[cut..];
                total -= behind;
                seq = expected;
            }
        }
        conn.next_seq[di] = Some(seq.wrapping_add(total as u32));
        let chunk = Chunk {
            captured: payload,
            total_len: usize::try_from(total).unwrap_or(usize::MAX),
            ts_ns: ts,
            tcp_seq: Some(seq),
            seq_linear: true,
            tag: Tag {
                syscall_id: id,
                tid: r.tid,
            },
        };
        if feed(
            &mut conn.mode,
            requests,
            r.direction,
            &chunk,
            &mut self.out,
            &self.parser,
            self.config.protocols.http2.enabled,
        ) {
            self.stats.http2_connections += 1;
        }
        self.drain(key);
    }

    /// A UDP datagram (the kernel sends only those of sockets talking to a DNS port).
    /// A socket is forgotten once nothing waits on it: clients often use a socket per
    /// lookup, and no close is reported for UDP.
    fn push_datagram(&mut self, r: &Record<'_>) {
        if !self.config.protocols.dns.enabled || r.direction == Direction::None {
            return;
        }
        let key = (r.pid, r.sock_id);
        if !self.conns.contains_key(&key) {
            if self.conns.len() >= self.config.max_connections {
                self.evict_oldest();
            }
            let allowed = self.config.ports_allowed(r.lport, r.rport);
            let mode = if allowed {
                Mode::Dns(Box::default())
            } else {
                Mode::Ignored
            };
            self.conns.insert(key, Conn::new(mode, r.role, r));
        }
        let ts = r.ts_ns();
        let id = self.syscall_id(key, r.tid, r.direction, ts);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last_seen_ns = ts;
        conn.capture_seq = r.capture_seq;
        let Mode::Dns(sock) = &mut conn.mode else {
            return;
        };
        let sent = r.direction == Direction::Egress;
        let d = Datagram {
            payload: r.payload,
            sent,
            ts_ns: ts,
            end_ns: r.ts_exit_ns,
            tag: Tag {
                syscall_id: id,
                tid: r.tid,
            },
            peer: sent.then_some((r.raddr, r.rport)),
        };
        sock.feed(&d, &mut self.out.dns);
        let idle = sock.waiting() == 0;
        fold_stats(conn, &mut self.stats);
        if idle {
            if let Some(conn) = self.conns.remove(&key) {
                self.finish(conn);
            }
        } else {
            self.emit(key, None);
        }
    }

    /// Process filters match the process's name (a thread may have renamed itself), read
    /// once per pid and kept until the next [`Tracker::expire`].
    fn process_allowed(&mut self, pid: u32, comm: &str) -> bool {
        if !self.config.has_process_filters() {
            return true;
        }
        if let Some(allowed) = self.allowed.get(&pid) {
            return *allowed;
        }
        let name = self.processes.lookup(pid, comm).executable_name;
        let allowed = self.config.process_allowed(pid, &name);
        self.allowed.insert(pid, allowed);
        allowed
    }

    /// Autotracing §3: an ingress message opens an id in the thread's slot (a read that
    /// continues the previous ingress on the socket keeps it); the next egress message of
    /// the thread takes the slot's id and clears it (a write continuing an egress keeps
    /// the socket's id).
    fn syscall_id(&mut self, key: (u32, u64), tid: u32, dir: Direction, ts: u64) -> u64 {
        let (last_dir, last_id) = match self.conns.get(&key) {
            Some(c) => (c.last_dir, c.last_id),
            None => (Direction::None, 0),
        };
        let id = match dir {
            Direction::Ingress => {
                let id = if last_dir == Direction::Ingress {
                    last_id
                } else {
                    self.fresh_id()
                };
                self.threads.insert(
                    tid,
                    ThreadSlot {
                        id: Some(id),
                        last_seen_ns: ts,
                    },
                );
                id
            }
            Direction::Egress => {
                if last_dir == Direction::Egress {
                    last_id
                } else {
                    let taken = self.threads.get_mut(&tid).and_then(|s| {
                        s.last_seen_ns = ts;
                        s.id.take()
                    });
                    match taken {
                        Some(id) => id,
                        None => self.fresh_id(),
                    }
                }
            }
            Direction::None => 0,
        };
        if let Some(c) = self.conns.get_mut(&key) {
            c.last_dir = dir;
            c.last_id = id;
        }
        id
    }

    /// Turns the exchanges a feed completed into spans and folds the parser's counters.
    fn drain(&mut self, key: (u32, u64)) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        fold_stats(conn, &mut self.stats);
        self.emit(key, None);
    }

    /// A connection ended (close record, idle, eviction): bodies delimited by the close
    /// end, anything still open is counted.
    fn finish(&mut self, mut conn: Conn) {
        match &mut conn.mode {
            Mode::Http {
                conn: http,
                upgrade,
                ..
            } => {
                if let Some(held) = upgrade.take() {
                    self.out.http.push(held.exchange);
                }
                http.close(&mut self.out.http);
            }
            Mode::Db { conn: db, .. } => db.close(&mut self.out.db),
            Mode::Http2 { conn: h2, .. } => h2.close(),
            Mode::Dns(dns) | Mode::DnsTcp { sock: dns, .. } => dns.close(),
            _ => {}
        }
        fold_stats(&mut conn, &mut self.stats);
        self.emit((conn.facts.pid, conn.facts.sock_id), Some(&conn));
    }

    /// Builds the spans of the pending exchanges of a connection: `ended` when it has
    /// left the table, else looked up by key.
    fn emit(&mut self, key: (u32, u64), ended: Option<&Conn>) {
        if self.out.http.is_empty()
            && self.out.db.is_empty()
            && self.out.dns.is_empty()
            && self.out.h2.is_empty()
        {
            return;
        }
        let Some(conn) = ended.or_else(|| self.conns.get(&key)) else {
            self.out.http.clear();
            self.out.db.clear();
            self.out.dns.clear();
            self.out.h2.clear();
            return;
        };
        let process = self.processes.lookup(conn.facts.pid, &conn.facts.comm);
        for x in self.out.http.drain(..) {
            self.stats.exchanges += 1;
            if self.spans.add(&x, conn.role, &conn.facts, &process) {
                self.stats.spans += 1;
            }
        }
        for x in self.out.h2.drain(..) {
            self.stats.exchanges += 1;
            if self.spans.add_h2(&x, conn.role, &conn.facts, &process) {
                self.stats.spans += 1;
            }
        }
        for x in self.out.db.drain(..) {
            self.stats.exchanges += 1;
            if self.spans.add_db(&x, conn.role, &conn.facts, &process) {
                self.stats.spans += 1;
            }
        }
        let transport = if matches!(conn.mode, Mode::DnsTcp { .. }) {
            "tcp"
        } else {
            "udp"
        };
        for x in self.out.dns.drain(..) {
            self.stats.exchanges += 1;
            self.spans.add_dns(&x, &conn.facts, &process, transport);
            self.stats.spans += 1;
        }
    }

    /// The mode of a new connection from its ports: a protocol pinned to the server's
    /// port, else undecided until its first bytes. Also the role, when a pinned port
    /// tells which end is the server.
    fn pinned_mode(&self, role: Role, lport: u16, rport: u16) -> (Mode, Role) {
        let protocols = &self.config.protocols;
        let (pinned, role) = match role {
            Role::Server => (protocols.pinned(lport), role),
            Role::Client => (protocols.pinned(rport), role),
            Role::Unknown => match (protocols.pinned(rport), protocols.pinned(lport)) {
                (Some(p), None) => (Some(p), Role::Client),
                (None, Some(p)) => (Some(p), Role::Server),
                _ => (None, role),
            },
        };
        let requests = match role {
            Role::Server => Direction::Ingress,
            Role::Client => Direction::Egress,
            Role::Unknown => return (Mode::Undecided, role),
        };
        // DNS ports carry DNS over TCP too.
        let server_port = if role == Role::Server { lport } else { rport };
        if protocols.dns.enabled && protocols.dns_ports().contains(&server_port) {
            let mode = Mode::DnsTcp {
                framers: Box::default(),
                sock: Box::default(),
                requests,
            };
            return (mode, role);
        }
        let mode = match pinned {
            Some(Protocol::Http) => http_mode(&self.parser, requests),
            // Pinned: the connection may be older than weft, read from its middle
            // until its first bytes show the preface.
            Some(Protocol::Http2) => Mode::Http2 {
                conn: Box::new(Http2Connection::new(self.parser.clone(), false)),
                requests,
            },
            Some(Protocol::Db(p)) => Mode::Db {
                conn: Box::new(DbConnection::new(p, self.config.query_text.policy())),
                requests,
            },
            None => Mode::Undecided,
        };
        (mode, role)
    }

    /// Forgets the least recently active tenth of the connections.
    fn evict_oldest(&mut self) {
        let mut ages: Vec<(u64, (u32, u64))> = self
            .conns
            .iter()
            .map(|(k, c)| (c.last_seen_ns, *k))
            .collect();
        ages.sort_unstable();
        let n = (ages.len() / 10).max(1);
        for (_, key) in ages.into_iter().take(n) {
            if let Some(conn) = self.conns.remove(&key) {
                self.stats.evicted_full += 1;
                self.finish(conn);
            }
        }
    }

    /// Forgets connections and threads idle since before `now_ns - idle_timeout`
    /// (kernel monotonic time).
    pub fn expire(&mut self, now_ns: u64) {
        let limit = now_ns.saturating_sub(self.config.idle_timeout.as_nanos() as u64);
        let idle: Vec<(u32, u64)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_seen_ns < limit)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            if let Some(conn) = self.conns.remove(&key) {
                self.stats.evicted_idle += 1;
                self.finish(conn);
            }
        }
        self.threads.retain(|_, t| t.last_seen_ns >= limit);
        // Pids are reused: filter decisions are taken again from time to time.
        self.allowed.clear();
    }

    /// Every span built since the last call, grouped by process.
    pub fn take_spans(&mut self) -> Vec<ResourceSpans> {
        self.spans.take()
    }

    /// Spans waiting in [`Tracker::take_spans`].
    pub fn pending_spans(&self) -> usize {
        self.spans.pending()
    }
}

fn http_mode(parser: &Arc<ParserConfig>, requests: Direction) -> Mode {
    Mode::Http {
        conn: Box::new(Http1Connection::new(parser.clone())),
        requests,
        upgrade: None,
    }
}

/// The most bytes a server may send after its `101` before the client's first bytes
/// arrive and are still replayed into HTTP/2 (its SETTINGS, an early answer).
const MAX_HELD_UPGRADE_BYTES: usize = 64 * 1024;
const MAX_HELD_UPGRADE_CHUNKS: usize = 64;

/// A chunk kept for later (the bytes a server sent after a `101`).
#[derive(Debug)]
struct OwnedChunk {
    captured: Vec<u8>,
    total_len: usize,
    ts_ns: u64,
    tcp_seq: Option<u32>,
    seq_linear: bool,
    tag: Tag,
}

impl OwnedChunk {
    fn of(chunk: &Chunk<'_>, from: usize) -> OwnedChunk {
        OwnedChunk {
            captured: chunk.captured.get(from..).unwrap_or_default().to_vec(),
            total_len: chunk.total_len.saturating_sub(from),
            ts_ns: chunk.ts_ns,
            tcp_seq: chunk.seq_at(from),
            seq_linear: chunk.seq_linear,
            tag: chunk.tag,
        }
    }

    fn chunk(&self) -> Chunk<'_> {
        Chunk {
            captured: &self.captured,
            total_len: self.total_len,
            ts_ns: self.ts_ns,
            tcp_seq: self.tcp_seq,
            seq_linear: self.seq_linear,
            tag: self.tag,
        }
    }
}

/// An HTTP/1.1 exchange answered `101 Switching Protocols`, and what the server sent
/// after it, until the client's next bytes: the HTTP/2 preface turns the exchange into
/// stream 1 of an HTTP/2 connection (RFC 7540 §3.2); anything else (a WebSocket)
/// releases it as the HTTP/1.1 exchange it was.
#[derive(Debug)]
struct HeldUpgrade {
    exchange: HttpExchange,
    response: Vec<OwnedChunk>,
    bytes: usize,
    overflow: bool,
    /// The server's bytes after the `101` are held from their first one (the head's
    /// end was found in the chunk that held it).
    from_start: bool,
}

impl HeldUpgrade {
    /// Keeps what the server sent after its `101`; false when that is not HTTP/2
    /// (a server switching to h2c sends SETTINGS first): the exchange is released.
    fn hold(&mut self, chunk: OwnedChunk) -> bool {
        if chunk.total_len == 0 || self.overflow {
            return true;
        }
        if self.response.is_empty()
            && self.from_start
            && !http2::looks_like_server_settings(&chunk.captured)
        {
            return false;
        }
        self.bytes += chunk.captured.len();
        if self.bytes > MAX_HELD_UPGRADE_BYTES || self.response.len() >= MAX_HELD_UPGRADE_CHUNKS {
            self.overflow = true;
            self.response.clear();
        } else {
            self.response.push(chunk);
        }
        true
    }

    fn request(&self) -> http2::UpgradedRequest {
        let x = &self.exchange;
        http2::UpgradedRequest {
            headers: http2::H2Headers {
                method: Some(x.method.as_str().to_string()),
                path: Some(x.path.clone()),
                query: x.query.clone(),
                authority: x.host.clone(),
                of_interest: x.req_headers_of_interest.clone(),
                x_request_id: x.x_request_id.clone(),
                ..http2::H2Headers::default()
            },
            start_ns: x.request_start_ns,
            end_ns: x.request_end_ns,
            tcp_seq: x.req_tcp_seq,
            tag: x.req_tag,
            truncated: x.truncated,
            response_from_start: self.from_start,
        }
    }
}

/// Where the bytes after a `101` response's head start in the chunk that holds it.
fn after_switching_head(captured: &[u8]) -> Option<usize> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(captured, b"HTTP/1.1 101").or_else(|| find(captured, b"HTTP/1.0 101"))?;
    let end = find(&captured[start..], b"\r\n\r\n")?;
    Some(start + end + 4)
}

/// What the parsers produced since the last drain, one list per protocol family.
#[derive(Default)]
struct Outputs {
    http: Vec<HttpExchange>,
    db: Vec<DbExchange>,
    dns: Vec<DnsExchange>,
    h2: Vec<H2Exchange>,
}

fn feed(
    mode: &mut Mode,
    requests: Direction,
    dir: Direction,
    chunk: &Chunk<'_>,
    outs: &mut Outputs,
    parser: &Arc<ParserConfig>,
    h2_upgrade: bool,
) -> bool {
    let Outputs {
        http: out,
        db: db_out,
        dns: dns_out,
        h2: h2_out,
    } = outs;
    let mut switched = None;
    match mode {
        Mode::Http2 { conn: h2, .. } => {
            let side = if dir == requests {
                http2::Side::Request
            } else {
                http2::Side::Response
            };
            h2.feed(side, chunk, h2_out);
        }
        Mode::Http {
            conn: http,
            upgrade,
            ..
        } => {
            if dir == requests {
                if let Some(held) = upgrade.take() {
                    if !held.overflow && http2::starts_preface(chunk.captured) {
                        let mut h2 = Http2Connection::upgraded(parser.clone(), held.request());
                        for c in &held.response {
                            h2.feed(http2::Side::Response, &c.chunk(), h2_out);
                        }
                        h2.feed(http2::Side::Request, chunk, h2_out);
                        switched = Some(h2);
                    } else {
                        out.push(held.exchange);
                    }
                }
                if switched.is_none() {
                    http.feed_request(chunk, out);
                }
            } else if let Some(held) = upgrade {
                if !held.hold(OwnedChunk::of(chunk, 0)) {
                    if let Some(held) = upgrade.take() {
                        out.push(held.exchange);
                    }
                }
            } else {
                let before = out.len();
                http.feed_response(chunk, out);
                if h2_upgrade && http.is_upgraded() {
                    if let Some(i) = out[before..].iter().rposition(|x| x.status == 101) {
                        let exchange = out.remove(before + i);
                        let at = after_switching_head(chunk.captured);
                        let mut held = HeldUpgrade {
                            exchange,
                            response: Vec::new(),
                            bytes: 0,
                            overflow: false,
                            from_start: at.is_some(),
                        };
                        let h2 = match at {
                            Some(at) => held.hold(OwnedChunk::of(chunk, at)),
                            None => true,
                        };
                        if h2 {
                            *upgrade = Some(Box::new(held));
                        } else {
                            out.push(held.exchange);
                        }
                    }
                }
            }
        }
        Mode::Db { conn: db, .. } => {
            let side = if dir == requests {
                Side::Request
            } else {
                Side::Response
            };
            db.feed(side, chunk, db_out);
        }
        Mode::DnsTcp { framers, sock, .. } => {
            let sent = dir == Direction::Egress;
            let framer = &mut framers[usize::from(!sent)];
            let dark = (chunk.total_len as u64).saturating_sub(chunk.captured.len() as u64);
            let mut messages = Vec::new();
            framer.push(chunk.captured, dark, chunk.ts_ns, chunk.tag, &mut messages);
            for m in messages {
                sock.feed(
                    &Datagram {
                        payload: &m.bytes,
                        sent,
                        ts_ns: m.ts_ns,
                        end_ns: m.end_ns,
                        tag: m.tag,
                        peer: None,
                    },
                    dns_out,
                );
            }
        }
        _ => {}
    }
    match switched {
        Some(h2) => {
            *mode = Mode::Http2 {
                conn: Box::new(h2),
                requests,
            };
            true
        }
        None => false,
    }
}

fn fold_stats(conn: &mut Conn, stats: &mut TrackerStats) {
    if let Mode::Http2 { conn: h2, .. } = &conn.mode {
        let now = h2.stats();
        let seen = &mut conn.seen.h2;
        let d = |a: u64, b: u64| a.saturating_sub(b);
        stats.http2_header_blocks_lost += d(now.header_blocks_lost, seen.header_blocks_lost);
        stats.http2_unknown_fields += d(now.unknown_fields, seen.unknown_fields);
        stats.http2_framing_lost += d(now.framing_lost, seen.framing_lost);
        stats.http2_protocol_errors += d(now.protocol_errors, seen.protocol_errors);
        stats.unpaired += d(
            now.unmatched + now.streams_dropped,
            seen.unmatched + seen.streams_dropped,
        );
        *seen = now.clone();
        return;
    }
    if let Mode::Dns(dns) | Mode::DnsTcp { sock: dns, .. } = &conn.mode {
        let now = &dns.stats;
        let seen = &mut conn.seen.dns;
        stats.dns_bad_messages += now.bad_messages.saturating_sub(seen.bad_messages);
        stats.dns_ambiguous += now.ambiguous.saturating_sub(seen.ambiguous);
        let unpaired = now.unmatched_queries + now.unmatched_responses;
        stats.unpaired +=
            unpaired.saturating_sub(seen.unmatched_queries + seen.unmatched_responses);
        *seen = now.clone();
        return;
    }
    if let Mode::Db { conn: db, .. } = &conn.mode {
        let now = db.stats();
        let seen = &mut conn.seen.db;
        let i = proto_index(db.protocol());
        stats.db_framing_lost += now.framing_lost.saturating_sub(seen.framing_lost);
        stats.db_protocol_errors[i] += now.protocol_errors.saturating_sub(seen.protocol_errors);
        stats.db_not_followed[i] += now.stopped.saturating_sub(seen.stopped);
        let unpaired = now.unmatched_requests + now.unmatched_responses;
        let before = seen.unmatched_requests + seen.unmatched_responses;
        stats.unpaired += unpaired.saturating_sub(before);
        *seen = now.clone();
        return;
    }
    let Mode::Http { conn: http, .. } = &conn.mode else {
        return;
    };
    let sum = |f: fn(&Http1Stats) -> u64| f(http.request_stats()) + f(http.response_stats());
    let line = sum(|s| s.line_too_long);
    let head = sum(|s| s.head_not_captured);
    let cut = sum(|s| s.closed_mid_message);
    let p: &PairingStats = http.pairing_stats();
    let unpaired = p.unmatched_requests + p.unmatched_responses + p.dropped_pairs;
    let seen = &mut conn.seen;
    stats.line_too_long += line.saturating_sub(seen.line_too_long);
    stats.head_not_captured += head.saturating_sub(seen.head_not_captured);
    stats.closed_mid_message += cut.saturating_sub(seen.closed_mid_message);
    stats.unpaired += unpaired.saturating_sub(seen.unpaired);
    seen.line_too_long = line;
    seen.head_not_captured = head;
    seen.closed_mid_message = cut;
    seen.unpaired = unpaired;
    if !http.is_http() && !seen.non_http {
        seen.non_http = true;
        stats.non_http_streams += 1;
    }
}

/// How long facts read from `/proc` are trusted: pids are reused.
const PROCESS_FACTS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Facts of one process, from `/proc` when it is still there.
pub struct ProcFs {
    cache: FastMap<u32, (ProcessFacts, std::time::Instant)>,
    service_names: BTreeMap<String, String>,
}

impl ProcFs {
    pub fn new(service_names: BTreeMap<String, String>) -> ProcFs {
        ProcFs {
            cache: FastMap::default(),
            service_names,
        }
    }
}

impl ProcessSource for ProcFs {
    fn lookup(&mut self, pid: u32, comm: &str) -> ProcessFacts {
        if let Some((f, at)) = self.cache.get(&pid) {
            if at.elapsed() < PROCESS_FACTS_TTL {
                return f.clone();
            }
        }
        // The process comm, not the thread's: threads may be renamed.
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| comm.to_string());
        let container_id = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|s| span::container_id_from_cgroup(&s));
        let facts = ProcessFacts::new(pid, &name, container_id, &self.service_names);
        if self.cache.len() > 65536 {
            self.cache
                .retain(|_, (_, at)| at.elapsed() < PROCESS_FACTS_TTL);
        }
        self.cache
            .insert(pid, (facts.clone(), std::time::Instant::now()));
        facts
    }
}
