//! Database and cache protocols (Redis, memcached, PostgreSQL, MySQL/MariaDB): one
//! exchange per command, paired first-in first-out like HTTP/1.x.
//!
//! The kernel copies only a prefix of each syscall's bytes, so the stream of one
//! direction is a run of captured bytes and "dark" bytes (counted, never seen). A
//! protocol parser frames units (a RESP header, a PostgreSQL message, a MySQL packet)
//! at the start of what is captured and says how many bytes after them it does not
//! need; those are skipped by count, dark or not. When a unit's own header falls in the
//! dark the framing of that direction is lost: a lost response completes the one
//! request it answers when the client sends its next request (the client read it all),
//! and a lost request side drops what it cannot pair. Both sides pick up again at the
//! next request that starts a syscall. A wrong pair is never made to save a span.

pub mod memcached;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sanitize;

use std::collections::VecDeque;
use std::fmt;

use super::http1::{Chunk, Tag};

/// Requests kept waiting for their response; beyond this the framing is given up.
pub const MAX_PENDING: usize = 1024;
/// Most bytes buffered for one unit whose end has not arrived yet.
const MAX_UNIT_BUFFER: usize = 64 * 1024;

/// The protocols this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DbProtocol {
    Redis,
    Memcached,
    Postgresql,
    Mysql,
}

impl DbProtocol {
    pub const ALL: [DbProtocol; 4] = [
        DbProtocol::Redis,
        DbProtocol::Memcached,
        DbProtocol::Postgresql,
        DbProtocol::Mysql,
    ];

    /// The name used in configuration and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DbProtocol::Redis => "redis",
            DbProtocol::Memcached => "memcached",
            DbProtocol::Postgresql => "postgresql",
            DbProtocol::Mysql => "mysql",
        }
    }

    /// The port the protocol is read on when none is configured.
    pub const fn default_port(self) -> u16 {
        match self {
            DbProtocol::Redis => 6379,
            DbProtocol::Memcached => 11211,
            DbProtocol::Postgresql => 5432,
            DbProtocol::Mysql => 3306,
        }
    }

    /// Recognises a protocol from the first captured bytes a side sent: `Some((p,
    /// true))` when they are a request, `Some((p, false))` when a response. Only strong
    /// signatures: memcached's text protocol has none and is read by port only.
    pub fn sniff(first: &[u8]) -> Option<(DbProtocol, bool)> {
        if redis::looks_like_command(first) {
            return Some((DbProtocol::Redis, true));
        }
        if postgres::looks_like_startup(first) {
            return Some((DbProtocol::Postgresql, true));
        }
        if mysql::looks_like_greeting(first) {
            return Some((DbProtocol::Mysql, false));
        }
        None
    }
}

impl fmt::Display for DbProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How query text is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPolicy {
    /// Literals replaced by `?` (SQL), arguments past the key replaced by `?` (Redis).
    pub sanitize: bool,
    /// Most characters of `db.query.text`.
    pub max_length: usize,
}

impl Default for TextPolicy {
    fn default() -> Self {
        TextPolicy {
            sanitize: true,
            max_length: 2048,
        }
    }
}

/// Which side of the conversation bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Request => 0,
            Side::Response => 1,
        }
    }
}

/// Where a unit of bytes starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub ts_ns: u64,
    /// Sequence of the unit's first byte, when known.
    pub tcp_seq: Option<u32>,
    /// Whether the bytes after it follow on the wire (see [`Chunk::seq_linear`]).
    pub seq_linear: bool,
    pub tag: Tag,
}

impl Mark {
    /// The mark of the byte `off` bytes further.
    fn at(&self, off: usize) -> Mark {
        Mark {
            tcp_seq: match self.tcp_seq {
                Some(s) if off == 0 => Some(s),
                Some(s) if self.seq_linear => Some(s.wrapping_add(off as u32)),
                _ => None,
            },
            ..*self
        }
    }
}

/// A request as its parser read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbRequest {
    /// `db.operation.name` (`SELECT`, `GET`, `set`).
    pub operation: String,
    /// `db.query.text`, already sanitised and capped.
    pub text: Option<String>,
    /// `db.namespace` at the time of the request.
    pub namespace: Option<String>,
    /// A W3C `traceparent` found in a SQL comment (sqlcommenter).
    pub traceparent: Option<String>,
    /// Responses that answer it (0: none is sent, as with memcached's `noreply`).
    pub replies: u32,
}

/// How a response ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbResponse {
    /// `db.response.status_code` (SQLSTATE, MySQL error number, Redis error prefix).
    pub status_code: Option<String>,
    /// The error message when the response is an error.
    pub error: Option<String>,
}

/// What a unit meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request; it waits for its response when it expects one.
    Request(DbRequest),
    /// One response to the oldest waiting request.
    Response(DbResponse),
    /// The oldest waiting request will get no response (PostgreSQL: an earlier error
    /// in the same batch made the server skip it).
    Abandon,
    /// Response bytes that answer nothing (a pub/sub push): the next response starts
    /// after them.
    Boundary,
}

/// What a parser made of the bytes at the start of its view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The unit is longer than the view.
    Need,
    /// A unit of `consumed` bytes of the view, followed by `skip` bytes it does not need
    /// (skipped by count; its events apply once they are passed).
    Take { consumed: usize, skip: u64 },
    /// Not this protocol: the connection is given up.
    Bad(&'static str),
    /// A turn the parser does not follow (TLS, a replication stream): the connection
    /// is given up without counting an error.
    Stop(&'static str),
}

/// A protocol's framing and meaning.
pub trait DbParser: Send + fmt::Debug {
    /// Reads one unit at the start of `view`. `dark_after`: the bytes after the view
    /// were not captured, so asking for more means the unit cannot be read whole
    /// (a parser that can make do with a prefix takes it and skips the rest).
    fn parse(&mut self, side: Side, view: &[u8], dark_after: bool, out: &mut Vec<Event>) -> Step;
    /// Framing was lost: forget partial units (the session's facts, such as the
    /// database or prepared statements, stay).
    fn reset(&mut self);
    /// `db.system.name`.
    fn system(&self) -> &'static str;
}

/// One request and its response: what a span is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbExchange {
    pub system: &'static str,
    pub request: DbRequest,
    pub response: DbResponse,
    /// No response is expected (or it was never read whole): the span ends with the
    /// request, or at the last bytes of a response whose end was not seen.
    pub answered: bool,
    pub req: Mark,
    pub req_end_ns: u64,
    /// Where the response starts, when one was seen.
    pub resp: Option<Mark>,
    pub resp_end_ns: u64,
    /// Some bytes of either side were not captured.
    pub truncated: bool,
}

/// Counters for the receiver's self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbStats {
    pub exchanges: u64,
    /// A side lost its framing (a unit header in uncaptured bytes).
    pub framing_lost: u64,
    /// Requests never answered, or given up on.
    pub unmatched_requests: u64,
    /// Responses with no request waiting for them.
    pub unmatched_responses: u64,
    /// The stream was not the protocol it was taken for.
    pub protocol_errors: u64,
    /// The connection turned to something not followed (TLS and the like).
    pub stopped: u64,
}

#[derive(Debug)]
struct Pending {
    request: DbRequest,
    start: Mark,
    end_ns: u64,
    truncated: bool,
    /// Responses still owed (Redis SUBSCRIBE answers once per channel).
    owed: u32,
    /// The first answer that was an error, kept until the last answer.
    response: DbResponse,
}

#[derive(Debug, Default)]
struct SideState {
    /// Captured bytes of a unit whose end has not arrived, and where they start.
    buf: Vec<u8>,
    buf_mark: Mark,
    /// Bytes still to pass by count.
    skip: u64,
    /// Events of the unit being skipped, applied once it is passed.
    deferred: Vec<Event>,
    deferred_mark: Mark,
    /// Start of the message being read (its first unit), if one is open.
    open: Option<Mark>,
    /// The open message has uncaptured bytes.
    truncated: bool,
    lost: bool,
    last_ts: u64,
}

impl SideState {
    fn clear(&mut self) {
        self.buf.clear();
        self.skip = 0;
        self.deferred.clear();
        self.open = None;
        self.truncated = false;
        self.lost = false;
    }
}

/// One connection's reader: framing over captured prefixes and FIFO pairing.
#[derive(Debug)]
pub struct DbConnection {
    protocol: DbProtocol,
    parser: Box<dyn DbParser>,
    sides: [SideState; 2],
    pending: VecDeque<Pending>,
    last_side: Option<Side>,
    /// Given up: the reason.
    stopped: Option<&'static str>,
    /// Resynchronising after a loss: a parse error means "not a unit start", not "not
    /// this protocol".
    resyncing: bool,
    events: Vec<Event>,
    stats: DbStats,
}

impl DbConnection {
    pub fn new(protocol: DbProtocol, text: TextPolicy) -> DbConnection {
        let parser: Box<dyn DbParser> = match protocol {
            DbProtocol::Redis => Box::new(redis::Redis::new(text)),
            DbProtocol::Memcached => Box::new(memcached::Memcached::new(text)),
            DbProtocol::Postgresql => Box::new(postgres::Postgres::new(text)),
            DbProtocol::Mysql => Box::new(mysql::Mysql::new(text)),
        };
        DbConnection {
            protocol,
            parser,
            sides: Default::default(),
            pending: VecDeque::new(),
            last_side: None,
            stopped: None,
            resyncing: false,
            events: Vec::new(),
            stats: DbStats::default(),
        }
    }

    pub fn protocol(&self) -> DbProtocol {
        self.protocol
    }

    pub fn stats(&self) -> &DbStats {
        &self.stats
    }

    /// Why the connection was given up, if it was.
    pub fn stopped(&self) -> Option<&'static str> {
        self.stopped
    }

    /// Takes the bytes of one syscall of one side; completed exchanges go to `out`.
    pub fn feed(&mut self, side: Side, chunk: &Chunk<'_>, out: &mut Vec<DbExchange>) {
        if self.stopped.is_some() {
            return;
        }
        let turn = self.last_side != Some(side);
        self.last_side = Some(side);
        let st = &mut self.sides[side.index()];
        st.last_ts = chunk.ts_ns;
        if turn && side == Side::Request && st.buf.is_empty() && st.skip == 0 {
            // A client's request is written before it waits for the answer: units read
            // before the server last spoke that made no request (a login, a Sync, a
            // statement close) do not start the next one.
            st.open = None;
            st.truncated = false;
        }
        if self.sides.iter().any(|s| s.lost) {
            if side == Side::Request && turn && !chunk.captured.is_empty() {
                self.resync(chunk.ts_ns, out);
            } else {
                return;
            }
        }
        self.read(side, chunk, out);
    }

    /// After a loss, at a request that starts a turn: the client has read everything
    /// it waited for, so a lost response completes the single request it answered;
    /// anything else waiting is given up, and both sides start afresh.
    fn resync(&mut self, _now: u64, out: &mut Vec<DbExchange>) {
        let resp = &self.sides[Side::Response.index()];
        if resp.lost && !self.sides[Side::Request.index()].lost && self.pending.len() == 1 {
            if let Some(p) = self.pending.pop_front() {
                let resp_mark = resp.open;
                let end = resp.last_ts;
                out.push(DbExchange {
                    system: self.parser.system(),
                    request: p.request,
                    response: p.response,
                    answered: false,
                    req: p.start,
                    req_end_ns: p.end_ns,
                    resp: resp_mark,
                    resp_end_ns: end.max(p.end_ns),
                    truncated: true,
                });
                self.stats.exchanges += 1;
            }
        }
        self.stats.unmatched_requests += self.pending.len() as u64;
        self.pending.clear();
        for s in &mut self.sides {
            s.clear();
        }
        self.parser.reset();
        self.resyncing = true;
    }

    fn lose(&mut self, side: Side) {
        let st = &mut self.sides[side.index()];
        if !st.lost {
            self.stats.framing_lost += 1;
        }
        let open = st.open;
        let truncated = st.truncated;
        st.clear();
        st.lost = true;
        // The response's start stays known for the exchange a resync completes.
        if side == Side::Response {
            st.open = open;
            st.truncated = truncated;
        }
    }

    fn read(&mut self, side: Side, chunk: &Chunk<'_>, out: &mut Vec<DbExchange>) {
        let si = side.index();
        let captured = chunk.captured;
        let total = chunk.total_len.max(captured.len()) as u64;
        let mut dark = total - captured.len() as u64;
        let mut pos = 0usize;
        let chunk_mark = |offset: usize| Mark {
            ts_ns: chunk.ts_ns,
            tcp_seq: chunk.seq_at(offset),
            seq_linear: chunk.seq_linear,
            tag: chunk.tag,
        };

        // Bytes owed by the previous unit.
        {
            let st = &mut self.sides[si];
            if st.skip > 0 {
                let n = st.skip.min(captured.len() as u64);
                pos += n as usize;
                st.skip -= n;
                if st.skip > 0 {
                    let m = st.skip.min(dark);
                    dark -= m;
                    st.skip -= m;
                    st.truncated |= m > 0;
                }
                if st.skip > 0 {
                    return;
                }
                let events = std::mem::take(&mut st.deferred);
                let mark = st.deferred_mark;
                self.apply(side, events, mark, chunk.ts_ns, out);
            }
        }

        // Units. A unit begun in an earlier chunk is completed from a buffer.
        let mut buf = std::mem::take(&mut self.sides[si].buf);
        let buffered = !buf.is_empty();
        let split = buf.len();
        let buf_mark = self.sides[si].buf_mark;
        if buffered {
            buf.extend_from_slice(&captured[pos..]);
        }
        let view_all: &[u8] = if buffered { &buf } else { &captured[pos..] };
        let mark_at = |u: usize| -> Mark {
            if buffered {
                if u < split {
                    buf_mark.at(u)
                } else {
                    chunk_mark(pos + (u - split))
                }
            } else {
                chunk_mark(pos + u)
            }
        };
        let mut at = 0usize;
        let mut keep_from: Option<usize> = None;
        let mut events = std::mem::take(&mut self.events);
        loop {
            let view = &view_all[at..];
            if view.is_empty() {
                if dark > 0 {
                    // The next unit starts in bytes nobody saw.
                    self.lose(side);
                }
                break;
            }
            events.clear();
            let step = self.parser.parse(side, view, dark > 0, &mut events);
            match step {
                Step::Need => {
                    if dark > 0 || view.len() >= MAX_UNIT_BUFFER {
                        self.lose(side);
                    } else {
                        keep_from = Some(at);
                    }
                    break;
                }
                Step::Bad(why) => {
                    tracing::debug!(protocol = %self.protocol, why, "not this protocol");
                    if self.resyncing {
                        self.lose(side);
                    } else {
                        self.stats.protocol_errors += 1;
                        self.stop(why);
                    }
                    break;
                }
                Step::Stop(why) => {
                    tracing::debug!(protocol = %self.protocol, why, "connection not followed");
                    self.stats.stopped += 1;
                    self.stop(why);
                    break;
                }
                Step::Take { consumed, skip } => {
                    self.resyncing = false;
                    let consumed = consumed.clamp(1, view.len());
                    let mark = mark_at(at);
                    at += consumed;
                    let mut skip = skip;
                    let here = skip.min((view_all.len() - at) as u64);
                    at += here as usize;
                    skip -= here;
                    if skip > 0 {
                        let m = skip.min(dark);
                        dark -= m;
                        skip -= m;
                        if m > 0 {
                            self.sides[si].truncated = true;
                        }
                    }
                    if self.sides[si].open.is_none() {
                        self.sides[si].open = Some(mark);
                    }
                    if skip > 0 {
                        let st = &mut self.sides[si];
                        st.skip = skip;
                        st.deferred = std::mem::take(&mut events);
                        st.deferred_mark = mark;
                        break;
                    }
                    let evs = std::mem::take(&mut events);
                    self.apply(side, evs, mark, chunk.ts_ns, out);
                    if self.stopped.is_some() || self.sides[si].lost {
                        break;
                    }
                }
            }
        }
        self.events = events;
        if let Some(from) = keep_from {
            let mark = mark_at(from);
            let st = &mut self.sides[si];
            st.buf.clear();
            st.buf.extend_from_slice(&view_all[from..]);
            st.buf_mark = mark;
        }
        if self.stopped.is_some() {
            self.pending.clear();
        }
    }

    fn stop(&mut self, why: &'static str) {
        self.stopped = Some(why);
        self.stats.unmatched_requests += self.pending.len() as u64;
        self.pending.clear();
        for s in &mut self.sides {
            s.clear();
        }
    }

    fn apply(
        &mut self,
        side: Side,
        events: Vec<Event>,
        mark: Mark,
        end_ns: u64,
        out: &mut Vec<DbExchange>,
    ) {
        let si = side.index();
        for ev in events {
            match ev {
                Event::Request(request) => {
                    let st = &mut self.sides[si];
                    let start = st.open.take().unwrap_or(mark);
                    let truncated = std::mem::take(&mut st.truncated);
                    if request.replies == 0 {
                        self.stats.exchanges += 1;
                        out.push(DbExchange {
                            system: self.parser.system(),
                            request,
                            response: DbResponse::default(),
                            answered: false,
                            req: start,
                            req_end_ns: end_ns,
                            resp: None,
                            resp_end_ns: end_ns,
                            truncated,
                        });
                        continue;
                    }
                    if self.pending.len() >= MAX_PENDING {
                        // Dropping the oldest would pair its answer with the next
                        // request: the framing is given up instead, until the client
                        // next speaks after the server.
                        self.stats.unmatched_requests += self.pending.len() as u64 + 1;
                        self.pending.clear();
                        self.lose(side);
                        return;
                    }
                    let owed = request.replies;
                    self.pending.push_back(Pending {
                        request,
                        start,
                        end_ns,
                        truncated,
                        owed,
                        response: DbResponse::default(),
                    });
                }
                Event::Response(response) => {
                    let st = &mut self.sides[si];
                    let start = st.open.take().unwrap_or(mark);
                    let truncated = std::mem::take(&mut st.truncated);
                    let Some(head) = self.pending.front_mut() else {
                        self.stats.unmatched_responses += 1;
                        continue;
                    };
                    // An error is the whole answer (a refused SUBSCRIBE to N channels
                    // is one error line).
                    head.owed = if response.error.is_some() {
                        0
                    } else {
                        head.owed.saturating_sub(1)
                    };
                    if head.response.error.is_none() {
                        head.response = response;
                    }
                    head.truncated |= truncated;
                    if head.owed > 0 {
                        // Later answers of the same request keep the first's start.
                        self.sides[si].open = Some(start);
                        continue;
                    }
                    if let Some(p) = self.pending.pop_front() {
                        self.stats.exchanges += 1;
                        out.push(DbExchange {
                            system: self.parser.system(),
                            request: p.request,
                            response: p.response,
                            answered: true,
                            req: p.start,
                            req_end_ns: p.end_ns,
                            resp: Some(start),
                            resp_end_ns: end_ns.max(p.end_ns),
                            truncated: p.truncated,
                        });
                    }
                }
                Event::Abandon => {
                    if self.pending.pop_front().is_some() {
                        self.stats.unmatched_requests += 1;
                    }
                }
                Event::Boundary => {
                    let st = &mut self.sides[si];
                    st.open = None;
                    st.truncated = false;
                }
            }
        }
    }

    /// The connection ended: a lost response completes a single waiting request; the
    /// rest is counted.
    pub fn close(&mut self, out: &mut Vec<DbExchange>) {
        if self.stopped.is_none() && self.sides[Side::Response.index()].lost {
            let now = self.sides[Side::Response.index()].last_ts;
            self.resync(now, out);
        } else {
            self.stats.unmatched_requests += self.pending.len() as u64;
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests;
