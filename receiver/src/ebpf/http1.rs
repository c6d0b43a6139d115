//! Incremental HTTP/1.x parser for one direction of one socket, fed with the byte chunks
//! the kernel captured per syscall.
//!
//! A capture record carries the syscall's full length but only its first `payload_bytes`
//! bytes, so the parser works on [`Chunk`]s of `captured` bytes plus a `total_len`: bytes
//! it only has to skip (bodies, chunk data) are skipped by count even when they were not
//! captured; bytes it has to read (start lines, headers, chunk-size lines) that were not
//! captured make it lose the message framing, and it resynchronises on the next chunk that
//! starts like a message. Anything that is not HTTP/1.x marks the stream non-HTTP for good,
//! so garbage or a binary protocol never produces a span.
//!
//! Only what spans need is kept from a head: method, target, `Host`, status, framing
//! headers, the configured request-id headers and trace-propagation headers. Values of
//! `Authorization`, `Cookie`, `Set-Cookie` and the configured redacted headers are never
//! stored.

use std::collections::VecDeque;
use std::sync::Arc;

/// Longest start, header, chunk-size or trailer line accepted, CRLF not counted.
/// A longer line drops its message (counted), not the stream.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// At most this many headers of interest are kept per message, so a hostile peer cannot
/// make one message hold unbounded memory.
pub const MAX_KEPT_HEADERS: usize = 64;

/// Longest method token treated as HTTP; real methods are far shorter, and a cap lets a
/// binary stream be recognised from its first bytes.
const MAX_METHOD_BYTES: usize = 24;

/// How much of a start line the early binary check looks at.
const PREFIX_CHECK_BYTES: usize = MAX_METHOD_BYTES + 8;

/// Headers whose values never leave the parser, whatever the configuration says.
pub const ALWAYS_REDACTED: [&str; 3] = ["authorization", "cookie", "set-cookie"];

/// Trace-propagation headers kept by exact (case-insensitive) name.
const PROPAGATION_EXACT: [&str; 7] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "uber-trace-id",
    "sw8",
    "x-amzn-trace-id",
];

/// Trace-propagation headers kept by (case-insensitive) name prefix.
const PROPAGATION_PREFIXES: [&str; 3] = ["x-b3-", "ot-tracer-", "x-datadog-"];

/// What the parser keeps and hides; shared by every stream of a receiver.
#[derive(Debug, Clone)]
pub struct ParserConfig {
    /// Lower-case names of request-id headers (`X-Request-ID` style), first match wins.
    x_request_id_headers: Vec<String>,
    /// Lower-case names never stored; always includes [`ALWAYS_REDACTED`].
    redacted: Vec<String>,
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self::new(&["X-Request-ID"], &[])
    }
}

impl ParserConfig {
    /// Builds a configuration; names are matched case-insensitively. A request-id header
    /// that is also redacted stays redacted.
    pub fn new<S: AsRef<str>>(x_request_id_headers: &[S], redact_headers: &[S]) -> Self {
        let mut redacted: Vec<String> = ALWAYS_REDACTED.iter().map(|s| s.to_string()).collect();
        redacted.extend(
            redact_headers
                .iter()
                .map(|s| s.as_ref().to_ascii_lowercase()),
        );
        let x_request_id_headers = x_request_id_headers
            .iter()
            .map(|s| s.as_ref().to_ascii_lowercase())
            .filter(|n| !redacted.contains(n))
            .collect();
        Self {
            x_request_id_headers,
            redacted,
        }
    }

    pub(crate) fn is_redacted(&self, name: &[u8]) -> bool {
        self.redacted
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
    }

    pub(crate) fn is_x_request_id(&self, name: &[u8]) -> bool {
        self.x_request_id_headers
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
    }
}

pub(crate) fn is_propagation_header(name: &[u8]) -> bool {
    PROPAGATION_EXACT
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p.as_bytes()))
        || PROPAGATION_PREFIXES
            .iter()
            .any(|p| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// Which messages a stream carries: requests (server ingress, client egress) or responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Requests,
    Responses,
}

/// One syscall's worth of bytes on a stream.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// The first bytes of the payload, as many as the probe copied.
    pub captured: &'a [u8],
    /// The syscall's full byte count; bytes past `captured` exist but were not copied.
    pub total_len: usize,
    /// When the bytes crossed the syscall boundary (egress: entry, ingress: exit).
    pub ts_ns: u64,
    /// TCP sequence number of the chunk's first byte; None when unknown.
    pub tcp_seq: Option<u32>,
    /// Whether the chunk's bytes are consecutive on the wire (clear text), so byte `pos`
    /// has sequence `tcp_seq + pos`. False for the plaintext of a TLS call, whose
    /// sequence is that of its first encrypted byte: known for its first byte only.
    pub seq_linear: bool,
    /// Facts of the syscall that moved the chunk; a message reports those of the chunk
    /// holding its first byte.
    pub tag: Tag,
}

/// What the caller knows of the syscall behind a chunk, carried through to the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tag {
    /// The syscall trace id the chunk's record was given.
    pub syscall_id: u64,
    /// The thread that made the syscall.
    pub tid: u32,
}

impl<'a> Chunk<'a> {
    /// A fully captured chunk.
    pub fn full(bytes: &'a [u8], ts_ns: u64, tcp_seq: u32) -> Self {
        Self {
            captured: bytes,
            total_len: bytes.len(),
            ts_ns,
            tcp_seq: Some(tcp_seq),
            seq_linear: true,
            tag: Tag::default(),
        }
    }

    /// The sequence number of byte `pos` of the chunk, when it is known.
    pub fn seq_at(&self, pos: usize) -> Option<u32> {
        match self.tcp_seq {
            Some(s) if pos == 0 => Some(s),
            // Sequence numbers wrap, and so does this offset on purpose.
            Some(s) if self.seq_linear => Some(s.wrapping_add(pos as u32)),
            _ => None,
        }
    }
}

/// An HTTP request method; the common ones without allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other(Box<str>),
}

impl Method {
    const KNOWN: [(&'static [u8], Method); 9] = [
        (b"GET", Method::Get),
        (b"HEAD", Method::Head),
        (b"POST", Method::Post),
        (b"PUT", Method::Put),
        (b"DELETE", Method::Delete),
        (b"CONNECT", Method::Connect),
        (b"OPTIONS", Method::Options),
        (b"TRACE", Method::Trace),
        (b"PATCH", Method::Patch),
    ];

    fn known(token: &[u8]) -> Option<Method> {
        Self::KNOWN
            .iter()
            .find(|(t, _)| *t == token)
            .map(|(_, m)| m.clone())
    }

    pub(crate) fn from_token(token: &[u8]) -> Method {
        Self::known(token).unwrap_or_else(|| Method::Other(String::from_utf8_lossy(token).into()))
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(s) => s,
        }
    }
}

/// The start line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Request {
        method: Method,
        /// Path of the target (`*` or the authority for the special forms).
        path: String,
        /// Query without the `?`, when the target had one.
        query: Option<String>,
    },
    Response {
        status: u16,
    },
}

/// Why a message was seen but yields no span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("a start, header or trailer line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("the message head lies past the captured bytes; raise payload_bytes to see it")]
    HeadNotCaptured,
}

/// Why a stream was judged not to carry HTTP/1.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonHttpReason {
    #[error("the stream does not start like an HTTP/1.x message")]
    BadStartLine,
    #[error("the stream carries a header line that is not `name: value`")]
    BadHeader,
    #[error("the stream carries conflicting or invalid body framing")]
    BadFraming,
    #[error("the stream carries an invalid chunked body")]
    BadChunk,
}

/// A message as seen on the stream, complete or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http1Message {
    /// The start line; `None` only for a dropped message whose start was never seen.
    pub head: Option<Head>,
    /// `Host` header, or the authority of an absolute-form target.
    pub host: Option<String>,
    /// Trace-propagation headers, lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Value of the first configured request-id header present.
    pub x_request_id: Option<String>,
    /// Whether the connection stays open after this message.
    pub keep_alive: bool,
    /// Timestamp of the chunk holding the first byte (of the first 1xx for a response).
    pub start_ns: u64,
    /// Timestamp of the chunk holding the last byte.
    pub end_ns: u64,
    /// TCP sequence of the first byte (of the first 1xx for a response), when known.
    pub tcp_seq: Option<u32>,
    /// Tag of the chunk holding the first byte (of the first 1xx for a response).
    pub tag: Tag,
    /// Some of its bytes were not captured (their count was still honoured).
    pub truncated: bool,
    /// The head or the chunked framing ran past the captured bytes: the headers may be
    /// incomplete and the end is approximate.
    pub framing_lost: bool,
    /// Set when the message yields no span.
    pub dropped: Option<DropReason>,
}

impl Http1Message {
    /// A kept header's value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a stream reports while being fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http1Event {
    /// A request line was read; the response stream needs the method before it can frame
    /// the answer (HEAD, CONNECT), and that may be before the request body has ended.
    RequestStarted(Method),
    /// A message ended (or was dropped) on the stream.
    Message(Http1Message),
}

/// Counters a stream keeps for the receiver's self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Http1Stats {
    /// Messages that ended and can make a span.
    pub messages: u64,
    /// Messages dropped for a line longer than [`MAX_LINE_BYTES`].
    pub line_too_long: u64,
    /// Messages whose head was not captured at all.
    pub head_not_captured: u64,
    /// Messages whose framing ran past the captured bytes.
    pub framing_lost: u64,
    /// Messages with some uncaptured bytes.
    pub truncated: u64,
    /// Messages cut by the connection closing.
    pub closed_mid_message: u64,
    /// Chunks skipped while waiting for a message start after lost framing.
    pub resync_skipped_chunks: u64,
    /// Set once the stream is judged not to be HTTP/1.x.
    pub non_http: Option<NonHttpReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: skipping the blank lines RFC 9112 lets precede a message.
    Idle,
    StartLine,
    Headers,
    /// Discarding the rest of an overlong line; the message is already dropped.
    SkipLongLine {
        in_trailers: bool,
    },
    Body {
        remaining: u64,
    },
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    ChunkDataEnd {
        seen_cr: bool,
    },
    Trailers,
    UntilClose,
    /// Framing lost: waiting for a chunk that starts like a message.
    Resync,
    NonHttp,
    /// After 101 or a successful CONNECT the bytes belong to another protocol.
    Upgraded,
    Closed,
}

/// The message under construction; framing facts live here until the head ends.
#[derive(Debug, Default)]
struct Builder {
    head: Option<Head>,
    host: Option<String>,
    headers: Vec<(String, String)>,
    x_request_id: Option<String>,
    http10: bool,
    connection_close: bool,
    connection_keep_alive: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    start_ns: u64,
    tcp_seq: Option<u32>,
    tag: Tag,
    truncated: bool,
    dropped: Option<DropReason>,
}

/// Outcome of appending bytes to the line buffer.
enum Line {
    /// The line is complete in `line_buf` (CRLF stripped).
    Complete,
    /// More bytes needed.
    Partial,
    /// The line exceeds [`MAX_LINE_BYTES`]; `ended` says whether its LF was consumed.
    TooLong { ended: bool },
}

/// Parser for one direction of one socket.
#[derive(Debug)]
pub struct Http1Stream {
    kind: StreamKind,
    config: Arc<ParserConfig>,
    state: State,
    /// Reused across lines and messages so steady-state parsing does not allocate.
    line_buf: Vec<u8>,
    cur: Builder,
    /// Start of the first 1xx of the response in progress.
    interim_start: Option<(u64, Option<u32>, Tag)>,
    /// Methods of requests still waiting for their final response (response streams).
    expected: VecDeque<Method>,
    last_ts: u64,
    stats: Http1Stats,
}

impl Http1Stream {
    pub fn new(kind: StreamKind, config: Arc<ParserConfig>) -> Self {
        Self {
            kind,
            config,
            state: State::Idle,
            line_buf: Vec::new(),
            cur: Builder::default(),
            interim_start: None,
            expected: VecDeque::new(),
            last_ts: 0,
            stats: Http1Stats::default(),
        }
    }

    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    pub fn stats(&self) -> &Http1Stats {
        &self.stats
    }

    /// False once the stream was judged not to carry HTTP/1.x.
    pub fn is_http(&self) -> bool {
        self.stats.non_http.is_none()
    }

    /// Tells a response stream the method of the next request awaiting an answer, so it
    /// knows a HEAD response has no body and a 2xx to CONNECT starts a tunnel.
    pub fn expect_response(&mut self, method: Method) {
        // A response stream that never answers must not grow without bound.
        if self.expected.len() >= 1024 {
            self.expected.pop_front();
        }
        self.expected.push_back(method);
    }

    /// Parses one chunk, appending what happened to `out`.
    pub fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Http1Event>) {
        if self.is_done() {
            return;
        }
        let captured = chunk.captured;
        let total = chunk.total_len.max(captured.len());
        if total == 0 {
            return;
        }
        self.last_ts = chunk.ts_ns;
        if self.state == State::Resync {
            if looks_like_message_start(self.kind, captured) {
                self.state = State::Idle;
            } else {
                self.stats.resync_skipped_chunks += 1;
                return;
            }
        }
        let mut pos = 0;
        while pos < total && !self.is_done() && self.state != State::Resync {
            if pos < captured.len() {
                pos += self.step(chunk, pos, out);
            } else {
                pos += self.skip_uncaptured(chunk, pos, total - pos, out);
            }
        }
    }

    /// The connection closed: a body delimited by the close ends here, anything else in
    /// progress is dropped and counted.
    pub fn close(&mut self, out: &mut Vec<Http1Event>) {
        match self.state {
            State::UntilClose => self.finish(self.last_ts, out),
            State::Idle | State::Resync | State::NonHttp | State::Upgraded | State::Closed => {}
            _ => self.stats.closed_mid_message += 1,
        }
        self.state = State::Closed;
    }

    /// True once the connection switched protocols (101, or a 2xx to CONNECT).
    pub fn is_upgraded(&self) -> bool {
        self.state == State::Upgraded
    }

    /// Stops parsing: the peer switched the connection to another protocol.
    pub fn stop_upgraded(&mut self) {
        if !matches!(self.state, State::NonHttp | State::Closed) {
            self.state = State::Upgraded;
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.state, State::NonHttp | State::Upgraded | State::Closed)
    }

    fn mark_non_http(&mut self, reason: NonHttpReason) {
        self.stats.non_http = Some(reason);
        self.state = State::NonHttp;
        self.cur = Builder::default();
        self.line_buf.clear();
    }

    /// Consumes captured bytes from `pos`; returns how many. Returns 0 only together with
    /// a state change, so the feed loop always progresses.
    fn step(&mut self, chunk: &Chunk<'_>, pos: usize, out: &mut Vec<Http1Event>) -> usize {
        let data = &chunk.captured[pos..];
        match self.state {
            State::Idle => {
                let skip = data
                    .iter()
                    .position(|&b| b != b'\r' && b != b'\n')
                    .unwrap_or(data.len());
                if skip < data.len() {
                    self.begin_message(chunk, pos + skip);
                }
                skip
            }
            State::StartLine => {
                if self.line_buf.len() < PREFIX_CHECK_BYTES {
                    if let Err(reason) = self.check_start_prefix(data) {
                        self.mark_non_http(reason);
                        return data.len();
                    }
                }
                let (n, line) = self.take_line(data);
                if has_control_bytes(&data[..n]) {
                    self.mark_non_http(NonHttpReason::BadStartLine);
                    return n;
                }
                match line {
                    Line::Partial => {}
                    Line::Complete => {
                        let line = std::mem::take(&mut self.line_buf);
                        let parsed = self.start_line(&line, out);
                        self.line_buf = line;
                        self.line_buf.clear();
                        match parsed {
                            Ok(()) => self.state = State::Headers,
                            Err(reason) => self.mark_non_http(reason),
                        }
                    }
                    Line::TooLong { ended } => {
                        // The method is still known from the line's prefix; the response
                        // stream needs it to stay aligned.
                        if self.kind == StreamKind::Requests {
                            out.push(Http1Event::RequestStarted(self.method_from_prefix()));
                        }
                        self.line_too_long(ended, false);
                    }
                }
                n
            }
            State::Headers => {
                let (n, line) = self.take_line(data);
                if has_control_bytes(&data[..n]) {
                    self.mark_non_http(NonHttpReason::BadHeader);
                    return n;
                }
                match line {
                    Line::Partial => {}
                    Line::Complete if self.line_buf.is_empty() => {
                        self.end_of_head(chunk, out);
                    }
                    Line::Complete => {
                        let line = std::mem::take(&mut self.line_buf);
                        let parsed = self.header_line(&line);
                        self.line_buf = line;
                        self.line_buf.clear();
                        if let Err(reason) = parsed {
                            self.mark_non_http(reason);
                        }
                    }
                    Line::TooLong { ended } => self.line_too_long(ended, false),
                }
                n
            }
            State::SkipLongLine { in_trailers } => {
                let (n, ended) = match data.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (data.len(), false),
                };
                // Checked here too, so a long binary line is judged the same whichever
                // chunk its bytes arrive in.
                if !in_trailers && has_control_bytes(&data[..n]) {
                    self.mark_non_http(NonHttpReason::BadHeader);
                } else if ended {
                    self.state = if in_trailers {
                        State::Trailers
                    } else {
                        State::Headers
                    };
                }
                n
            }
            State::Body { remaining } => {
                let n = clamp(remaining, data.len());
                self.body_progress(remaining - n as u64, chunk, out, |r| State::Body {
                    remaining: r,
                });
                n
            }
            State::ChunkSize => {
                let (n, line) = self.take_line(data);
                match line {
                    Line::Partial => {}
                    Line::Complete => match parse_chunk_size(&self.line_buf) {
                        Some(0) => {
                            self.line_buf.clear();
                            self.state = State::Trailers;
                        }
                        Some(size) => {
                            self.line_buf.clear();
                            self.state = State::ChunkData { remaining: size };
                        }
                        None => self.mark_non_http(NonHttpReason::BadChunk),
                    },
                    // No sane chunk-size line is this long.
                    Line::TooLong { .. } => self.mark_non_http(NonHttpReason::BadChunk),
                }
                n
            }
            State::ChunkData { remaining } => {
                let n = clamp(remaining, data.len());
                let left = remaining - n as u64;
                self.state = if left == 0 {
                    State::ChunkDataEnd { seen_cr: false }
                } else {
                    State::ChunkData { remaining: left }
                };
                n
            }
            State::ChunkDataEnd { seen_cr } => {
                match data.first() {
                    Some(b'\r') if !seen_cr => {
                        self.state = State::ChunkDataEnd { seen_cr: true };
                    }
                    Some(b'\n') => self.state = State::ChunkSize,
                    _ => self.mark_non_http(NonHttpReason::BadChunk),
                }
                1
            }
            State::Trailers => {
                let (n, line) = self.take_line(data);
                match line {
                    Line::Partial => {}
                    Line::Complete if self.line_buf.is_empty() => {
                        self.finish(chunk.ts_ns, out);
                    }
                    // Trailers carry nothing a span needs.
                    Line::Complete => self.line_buf.clear(),
                    Line::TooLong { ended } => self.line_too_long(ended, true),
                }
                n
            }
            State::UntilClose => data.len(),
            // The feed loop stops before reaching these.
            State::Resync | State::NonHttp | State::Upgraded | State::Closed => data.len(),
        }
    }

    /// Handles `avail` bytes that exist past the captured prefix; returns how many were
    /// consumed (all of them once framing is lost).
    fn skip_uncaptured(
        &mut self,
        chunk: &Chunk<'_>,
        pos: usize,
        avail: usize,
        out: &mut Vec<Http1Event>,
    ) -> usize {
        match self.state {
            State::Body { remaining } => {
                self.cur.truncated = true;
                let n = clamp(remaining, avail);
                self.body_progress(remaining - n as u64, chunk, out, |r| State::Body {
                    remaining: r,
                });
                n
            }
            State::ChunkData { remaining } => {
                self.cur.truncated = true;
                let n = clamp(remaining, avail);
                let left = remaining - n as u64;
                self.state = if left == 0 {
                    State::ChunkDataEnd { seen_cr: false }
                } else {
                    State::ChunkData { remaining: left }
                };
                n
            }
            State::ChunkDataEnd { seen_cr } => {
                // The CRLF after chunk data is fixed, so unseen bytes can stand for it.
                self.cur.truncated = true;
                let need = if seen_cr { 1 } else { 2 };
                let n = need.min(avail);
                self.state = if n == need {
                    State::ChunkSize
                } else {
                    State::ChunkDataEnd { seen_cr: true }
                };
                n
            }
            State::UntilClose => {
                self.cur.truncated = true;
                avail
            }
            State::Idle | State::StartLine => {
                // A message starts in bytes nobody saw. A placeholder (and, for requests,
                // an expectation of an answer) keeps both directions aligned for pairing.
                if self.state == State::Idle {
                    self.begin_message(chunk, pos);
                }
                match self.kind {
                    StreamKind::Requests => {
                        out.push(Http1Event::RequestStarted(self.method_from_prefix()));
                    }
                    StreamKind::Responses => self.consume_expectation(),
                }
                self.drop_current(DropReason::HeadNotCaptured, chunk.ts_ns, out);
                self.state = State::Resync;
                avail
            }
            State::SkipLongLine { .. } => {
                let reason = self.cur.dropped.unwrap_or(DropReason::HeadNotCaptured);
                self.drop_current(reason, chunk.ts_ns, out);
                self.state = State::Resync;
                avail
            }
            State::Headers | State::ChunkSize | State::Trailers => {
                // The start line is known, so the message still makes a span, but where
                // it ends is not: close it here and wait for the next message start.
                if self.state == State::Headers && self.kind == StreamKind::Responses {
                    self.consume_expectation();
                }
                self.cur.truncated = true;
                self.stats.framing_lost += 1;
                self.finish_with(chunk.ts_ns, true, out);
                self.state = State::Resync;
                avail
            }
            State::Resync | State::NonHttp | State::Upgraded | State::Closed => avail,
        }
    }

    /// A response whose head was not fully seen still answers one request.
    fn consume_expectation(&mut self) {
        self.expected.pop_front();
        self.interim_start = None;
    }

    fn begin_message(&mut self, chunk: &Chunk<'_>, pos: usize) {
        self.cur = Builder {
            start_ns: chunk.ts_ns,
            tcp_seq: chunk.seq_at(pos),
            tag: chunk.tag,
            ..Builder::default()
        };
        self.line_buf.clear();
        self.state = State::StartLine;
    }

    /// The method of a request whose start line was never completed; an empty `Other`
    /// when not even that was seen, which frames its answer like any non-HEAD request.
    fn method_from_prefix(&self) -> Method {
        match self.line_buf.iter().position(|&b| b == b' ') {
            Some(sp) => Method::from_token(&self.line_buf[..sp]),
            None => Method::Other("".into()),
        }
    }

    /// Appends bytes up to and including the next LF to the line buffer.
    fn take_line(&mut self, data: &[u8]) -> (usize, Line) {
        let (n, ended) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (data.len(), false),
        };
        let mut len = self.line_buf.len() + n;
        if ended {
            len -= 1;
            let last_is_cr = if n >= 2 {
                data[n - 2] == b'\r'
            } else {
                self.line_buf.last() == Some(&b'\r')
            };
            if last_is_cr {
                len -= 1;
            }
        } else if len > MAX_LINE_BYTES + 1 {
            // +1: a CR may be waiting for its LF in the next chunk.
            return (n, Line::TooLong { ended: false });
        }
        if len > MAX_LINE_BYTES {
            return (n, Line::TooLong { ended });
        }
        if !ended {
            self.line_buf.extend_from_slice(data);
            return (n, Line::Partial);
        }
        self.line_buf.extend_from_slice(&data[..n]);
        self.line_buf.truncate(len);
        (n, Line::Complete)
    }

    fn line_too_long(&mut self, ended: bool, in_trailers: bool) {
        self.line_buf.clear();
        if self.cur.dropped.is_none() {
            self.cur.dropped = Some(DropReason::LineTooLong);
        }
        self.state = match (ended, in_trailers) {
            (false, t) => State::SkipLongLine { in_trailers: t },
            (true, true) => State::Trailers,
            (true, false) => State::Headers,
        };
    }

    /// Rejects a stream from the first bytes of its start line, so binary protocols are
    /// recognised without waiting for a line end that may never come.
    fn check_start_prefix(&self, more: &[u8]) -> Result<(), NonHttpReason> {
        let mut prefix = [0u8; PREFIX_CHECK_BYTES];
        let have = self.line_buf.len().min(PREFIX_CHECK_BYTES);
        prefix[..have].copy_from_slice(&self.line_buf[..have]);
        let extra = more.len().min(PREFIX_CHECK_BYTES - have);
        prefix[have..have + extra].copy_from_slice(&more[..extra]);
        let buf = &prefix[..have + extra];
        match self.kind {
            StreamKind::Responses => {
                let want = b"HTTP/1.";
                let k = buf.len().min(want.len());
                if buf[..k] != want[..k] {
                    return Err(NonHttpReason::BadStartLine);
                }
            }
            StreamKind::Requests => {
                let limit = buf.len().min(MAX_METHOD_BYTES + 1);
                for (i, &b) in buf[..limit].iter().enumerate() {
                    match b {
                        b' ' if i > 0 => return Ok(()),
                        b'A'..=b'Z' => {}
                        b'-' | b'_' if i > 0 => {}
                        _ => return Err(NonHttpReason::BadStartLine),
                    }
                }
                if buf.len() > MAX_METHOD_BYTES {
                    return Err(NonHttpReason::BadStartLine);
                }
            }
        }
        Ok(())
    }

    fn start_line(&mut self, line: &[u8], out: &mut Vec<Http1Event>) -> Result<(), NonHttpReason> {
        match self.kind {
            StreamKind::Requests => {
                let mut parts = line.split(|&b| b == b' ');
                let (Some(method), Some(target), Some(version), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(NonHttpReason::BadStartLine);
                };
                let http10 = parse_version(version).ok_or(NonHttpReason::BadStartLine)?;
                if method.is_empty() || target.is_empty() {
                    return Err(NonHttpReason::BadStartLine);
                }
                let method = Method::from_token(method);
                let (path, query, authority) = split_target(target);
                out.push(Http1Event::RequestStarted(method.clone()));
                self.cur.http10 = http10;
                self.cur.host = authority;
                self.cur.head = Some(Head::Request {
                    method,
                    path,
                    query,
                });
            }
            StreamKind::Responses => {
                let version = line.get(..8).ok_or(NonHttpReason::BadStartLine)?;
                let http10 = parse_version(version).ok_or(NonHttpReason::BadStartLine)?;
                let status = match line.get(8..) {
                    Some([b' ', a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..])
                        if rest.is_empty() || rest[0] == b' ' =>
                    {
                        u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
                    }
                    _ => return Err(NonHttpReason::BadStartLine),
                };
                self.cur.http10 = http10;
                self.cur.head = Some(Head::Response { status });
            }
        }
        Ok(())
    }

    fn header_line(&mut self, line: &[u8]) -> Result<(), NonHttpReason> {
        // obs-fold continuation lines add to a value we do not need verbatim.
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Ok(());
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(NonHttpReason::BadHeader)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(NonHttpReason::BadHeader);
        }
        // A bare CR inside a line (its CRLF is already gone) is invalid (RFC 9112
        // §2.2) and would glue the next header into this value: a redacted header
        // could then leave inside another one's value.
        if line.contains(&b'\r') {
            return Err(NonHttpReason::BadHeader);
        }
        let value = trim_ows(&line[colon + 1..]);
        let cur = &mut self.cur;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(NonHttpReason::BadFraming)?;
            if cur.content_length.is_some_and(|old| old != n) {
                return Err(NonHttpReason::BadFraming);
            }
            cur.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            cur.transfer_encoding = true;
            // Only a final `chunked` coding frames the body as chunks.
            cur.chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    cur.connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    cur.connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            if cur.host.is_none() {
                // A value that is no host[:port] (spaces, control or non-ASCII
                // bytes, another header glued on) is not recorded.
                cur.host = valid_authority(value);
            }
            return Ok(());
        }
        if self.config.is_redacted(name) {
            return Ok(());
        }
        // The request id has its own attribute; `headers` keeps trace-context headers.
        if self.config.is_x_request_id(name) && cur.x_request_id.is_none() {
            cur.x_request_id = Some(String::from_utf8_lossy(value).into_owned());
        }
        if is_propagation_header(name) && cur.headers.len() < MAX_KEPT_HEADERS {
            let value = String::from_utf8_lossy(value).into_owned();
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            cur.headers.push((name, value));
        }
        Ok(())
    }

    fn end_of_head(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Http1Event>) {
        self.line_buf.clear();
        let ts = chunk.ts_ns;
        match self.kind {
            StreamKind::Requests => {
                if self.cur.chunked {
                    self.state = State::ChunkSize;
                } else if self.cur.transfer_encoding {
                    // A request body must be length-delimited (RFC 9112 §6.3).
                    self.mark_non_http(NonHttpReason::BadFraming);
                } else {
                    let len = self.cur.content_length.unwrap_or(0);
                    self.body_progress(len, chunk, out, |r| State::Body { remaining: r });
                }
            }
            StreamKind::Responses => {
                let status = match self.cur.head {
                    Some(Head::Response { status }) => status,
                    _ => 0,
                };
                if (100..200).contains(&status) && status != 101 {
                    // An interim response: the final one follows and inherits its start.
                    self.interim_start.get_or_insert((
                        self.cur.start_ns,
                        self.cur.tcp_seq,
                        self.cur.tag,
                    ));
                    self.cur = Builder::default();
                    self.state = State::Idle;
                    return;
                }
                if let Some((start_ns, seq, tag)) = self.interim_start.take() {
                    self.cur.start_ns = start_ns;
                    self.cur.tcp_seq = seq;
                    self.cur.tag = tag;
                }
                let method = self.expected.pop_front();
                let tunnel = status == 101
                    || (method == Some(Method::Connect) && (200..300).contains(&status));
                if tunnel {
                    self.finish(ts, out);
                    self.state = State::Upgraded;
                } else if method == Some(Method::Head) || status == 204 || status == 304 {
                    self.finish(ts, out);
                } else if self.cur.chunked {
                    self.state = State::ChunkSize;
                } else if let (false, Some(len)) =
                    (self.cur.transfer_encoding, self.cur.content_length)
                {
                    self.body_progress(len, chunk, out, |r| State::Body { remaining: r });
                } else {
                    self.state = State::UntilClose;
                }
            }
        }
    }

    /// Ends the message when no body is left, otherwise enters the state `next` builds.
    fn body_progress(
        &mut self,
        remaining: u64,
        chunk: &Chunk<'_>,
        out: &mut Vec<Http1Event>,
        next: impl FnOnce(u64) -> State,
    ) {
        if remaining == 0 {
            self.finish(chunk.ts_ns, out);
        } else {
            self.state = next(remaining);
        }
    }

    fn finish(&mut self, end_ns: u64, out: &mut Vec<Http1Event>) {
        self.finish_with(end_ns, false, out);
    }

    fn finish_with(&mut self, end_ns: u64, framing_lost: bool, out: &mut Vec<Http1Event>) {
        let b = std::mem::take(&mut self.cur);
        self.state = State::Idle;
        match b.dropped {
            Some(DropReason::LineTooLong) => self.stats.line_too_long += 1,
            Some(DropReason::HeadNotCaptured) => self.stats.head_not_captured += 1,
            None => self.stats.messages += 1,
        }
        if b.truncated {
            self.stats.truncated += 1;
        }
        let keep_alive = !b.connection_close && (!b.http10 || b.connection_keep_alive);
        out.push(Http1Event::Message(Http1Message {
            head: b.head,
            host: b.host,
            headers: b.headers,
            x_request_id: b.x_request_id,
            keep_alive,
            start_ns: b.start_ns,
            end_ns,
            tcp_seq: b.tcp_seq,
            tag: b.tag,
            truncated: b.truncated,
            framing_lost,
            dropped: b.dropped,
        }));
    }

    fn drop_current(&mut self, reason: DropReason, end_ns: u64, out: &mut Vec<Http1Event>) {
        self.cur.dropped = Some(reason);
        self.cur.truncated = true;
        self.finish(end_ns, out);
    }
}

/// Whether a chunk can start a message, to pick the stream up again after lost framing.
fn looks_like_message_start(kind: StreamKind, data: &[u8]) -> bool {
    match kind {
        StreamKind::Responses => data.starts_with(b"HTTP/1."),
        StreamKind::Requests => data
            .iter()
            .position(|&b| b == b' ')
            .is_some_and(|sp| Method::known(&data[..sp]).is_some()),
    }
}

fn clamp(remaining: u64, avail: usize) -> usize {
    usize::try_from(remaining).map_or(avail, |r| r.min(avail))
}

/// Control bytes other than CR, LF and TAB never occur in an HTTP head.
fn has_control_bytes(data: &[u8]) -> bool {
    data.iter()
        .any(|&b| (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t') || b == 0x7f)
}

/// `HTTP/1.0` -> Some(true), `HTTP/1.1` (or a later 1.x) -> Some(false).
fn parse_version(v: &[u8]) -> Option<bool> {
    match v {
        b"HTTP/1.0" => Some(true),
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => Some(false),
        _ => None,
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Hex size before any `;extension`; at most 15 digits so the value fits in u64.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = trim_ows(&line[..end]);
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(acc * 16 + u64::from(d))
    })
}

/// Splits a request target into path, query and (for absolute-form) authority.
/// `value` as a host name or address with an optional port (RFC 9110
/// `uri-host [ ":" port ]`: unreserved, percent-encoded and sub-delim
/// characters, `:` and IPv6 brackets), or None.
fn valid_authority(value: &[u8]) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b));
    ok.then(|| String::from_utf8_lossy(value).into_owned())
}

fn split_target(target: &[u8]) -> (String, Option<String>, Option<String>) {
    let mut rest = target;
    let mut authority = None;
    for scheme in [&b"http://"[..], b"https://"] {
        if rest.len() >= scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let after = &rest[scheme.len()..];
            let end = after
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(after.len());
            authority = valid_authority(&after[..end]);
            rest = &after[end..];
            break;
        }
    }
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    let path = if path.is_empty() && authority.is_some() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(path).into_owned()
    };
    (
        path,
        query.map(|q| String::from_utf8_lossy(q).into_owned()),
        authority,
    )
}
