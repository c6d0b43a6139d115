//! HTTP/2 (RFC 9113) read off one connection's two byte streams: frames, HPACK header
//! blocks per direction, and one exchange per stream, from the request's HEADERS to the
//! end of its response (END_STREAM both ways, or RST_STREAM). gRPC rides on it: the
//! request path names the method, the response trailers carry `grpc-status`, and the
//! length-prefixed messages in DATA frames are counted.
//!
//! The probe copies the first `payload_bytes` of each syscall. Bytes past that are
//! skipped by count: a frame whose header was seen can be skipped whole, but a frame
//! header in the uncaptured part loses the framing of that direction. It is found again
//! at the start of a later syscall whose bytes are exactly a chain of plausible frames,
//! and the direction's HPACK table is forgotten (its references become unknown fields).
//! A header block that was not captured whole makes no fields; its stream makes no
//! span. Nothing is guessed: a stream whose request or response is unknown is counted,
//! not exported.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::hpack::{Decoder, Field};
use super::http1::{is_propagation_header, Chunk, ParserConfig, Tag};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest header block (HEADERS or PUSH_PROMISE plus CONTINUATION frames) kept for
/// decoding; a larger one is skipped and the direction's table forgotten.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Streams open at once per connection; beyond, the oldest is given up (counted).
pub const MAX_STREAMS: usize = 4096;
/// Open streams past which the ones idle for `STREAM_IDLE_NS` are given up.
const SWEEP_STREAMS: usize = 256;
const STREAM_IDLE_NS: u64 = 300_000_000_000;
/// Largest frame accepted when finding the framing again (the protocol's default
/// SETTINGS_MAX_FRAME_SIZE).
const RESYNC_MAX_FRAME: usize = 16_384;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Which way a byte stream goes: client to server (requests) or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Counters for the receiver's self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Http2Stats {
    pub frames: u64,
    pub streams: u64,
    /// Header blocks not captured whole, too large, or not decodable.
    pub header_blocks_lost: u64,
    /// Header blocks that broke HPACK.
    pub hpack_errors: u64,
    /// Header fields that referred to table entries weft never saw.
    pub unknown_fields: u64,
    /// Times a direction's frame boundaries were lost in uncaptured bytes.
    pub framing_lost: u64,
    /// Times they were found again.
    pub framing_found: u64,
    /// Frames that break the protocol (a CONTINUATION out of place, a stream 0 HEADERS).
    pub protocol_errors: u64,
    /// Streams that ended without a known request and response (or never ended).
    pub unmatched: u64,
    /// Streams dropped because too many were open.
    pub streams_dropped: u64,
}

/// The request or response facts read from a header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H2Headers {
    pub method: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    pub authority: Option<String>,
    pub status: Option<u16>,
    pub content_type: Option<String>,
    /// Request-id and propagation headers, lower-case names.
    pub of_interest: Vec<(String, String)>,
    pub x_request_id: Option<String>,
    pub grpc_status: Option<i64>,
    pub grpc_message: Option<String>,
    /// Fields whose name weft cannot know (see [`hpack`]).
    pub unknown_fields: u32,
}

impl H2Headers {
    /// Whether `from_fields` reads the value of a field of this name.
    fn uses(name: &str, config: &ParserConfig) -> bool {
        matches!(
            name,
            ":method"
                | ":path"
                | ":authority"
                | ":status"
                | "host"
                | "content-type"
                | "grpc-status"
                | "grpc-message"
        ) || config.is_x_request_id(name.as_bytes())
            || is_propagation_header(name.as_bytes())
    }

    fn from_fields(fields: &[Field], config: &ParserConfig) -> H2Headers {
        let mut h = H2Headers::default();
        for f in fields {
            let Some(name) = &f.name else {
                h.unknown_fields += 1;
                continue;
            };
            if config.is_redacted(name.as_bytes()) {
                continue;
            }
            let Some(value) = &f.value else {
                continue;
            };
            match name.as_str() {
                ":method" => h.method = Some(value.clone()),
                ":path" => match value.split_once('?') {
                    Some((p, q)) => {
                        h.path = Some(p.to_string());
                        h.query = Some(q.to_string());
                    }
                    None => h.path = Some(value.clone()),
                },
                ":authority" => h.authority = Some(value.clone()),
                ":status" => h.status = value.parse().ok(),
                "host" if h.authority.is_none() => h.authority = Some(value.clone()),
                "content-type" => h.content_type = Some(value.clone()),
                "grpc-status" => h.grpc_status = value.trim().parse().ok(),
                "grpc-message" => h.grpc_message = Some(value.clone()),
                _ => {
                    let n = name.as_bytes();
                    if config.is_x_request_id(n) {
                        if h.x_request_id.is_none() {
                            h.x_request_id = Some(value.clone());
                        }
                        h.of_interest.push((name.clone(), value.clone()));
                    } else if is_propagation_header(n) {
                        h.of_interest.push((name.clone(), value.clone()));
                    }
                }
            }
        }
        h
    }

    /// The request is gRPC (`content-type: application/grpc[+proto|...]`).
    pub fn is_grpc(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/grpc"))
    }
}

/// One stream, request and response: what a span is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Exchange {
    pub stream_id: u32,
    pub request: H2Headers,
    /// The final (non-1xx) response headers.
    pub response: Option<H2Headers>,
    /// Response trailers (gRPC's status), or the response itself when it was
    /// trailers-only.
    pub trailers: Option<H2Headers>,
    pub request_start_ns: u64,
    pub request_end_ns: u64,
    pub response_start_ns: u64,
    pub response_end_ns: u64,
    /// TCP sequence of the first byte of the request's HEADERS frame, when known.
    pub req_tcp_seq: Option<u32>,
    /// TCP sequence of the first byte of the response's HEADERS frame, when known.
    pub resp_tcp_seq: Option<u32>,
    pub req_tag: Tag,
    pub resp_tag: Tag,
    /// Another stream was open on the connection during this one: the syscalls that
    /// carried it carried others too.
    pub multiplexed: bool,
    /// RST_STREAM's error code, when the stream was reset.
    pub reset: Option<u32>,
    /// gRPC messages each way; None when some were not captured.
    pub request_messages: Option<u32>,
    pub response_messages: Option<u32>,
    /// Some bytes of the stream were not captured.
    pub truncated: bool,
}

/// The HTTP/1.1 request that upgraded a connection to HTTP/2 (its stream 1).
#[derive(Debug, Clone)]
pub struct UpgradedRequest {
    pub headers: H2Headers,
    pub start_ns: u64,
    pub end_ns: u64,
    pub tcp_seq: Option<u32>,
    pub tag: Tag,
    pub truncated: bool,
    /// Whether the server's bytes after the `101` are known from their first one.
    pub response_from_start: bool,
}

/// Counts gRPC's length-prefixed messages in a stream's DATA bytes.
#[derive(Debug, Clone, Default)]
struct MessageCounter {
    prefix: [u8; 5],
    have: u8,
    /// Body bytes of the current message still to come.
    body_left: u64,
    count: u32,
    lost: bool,
}

impl MessageCounter {
    fn feed(&mut self, mut p: &[u8]) {
        while !p.is_empty() && !self.lost {
            if self.body_left > 0 {
                let n = (self.body_left.min(p.len() as u64)) as usize;
                self.body_left -= n as u64;
                p = &p[n..];
                continue;
            }
            self.prefix[usize::from(self.have)] = p[0];
            self.have += 1;
            p = &p[1..];
            if self.have == 5 {
                self.have = 0;
                self.count += 1;
                self.body_left = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
            }
        }
    }

    fn dark(&mut self, n: u64) {
        if n <= self.body_left && self.have == 0 {
            self.body_left -= n;
        } else if n > 0 {
            self.lost = true;
        }
    }

    fn lose(&mut self) {
        self.lost = true;
    }

    fn result(&self) -> Option<u32> {
        (!self.lost && self.have == 0 && self.body_left == 0).then_some(self.count)
    }
}

/// Where a message's first byte was seen.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    ts_ns: u64,
    seq: Option<u32>,
    tag: Tag,
}

#[derive(Debug, Default)]
struct Stream {
    request: Option<H2Headers>,
    req_mark: Mark,
    req_end_ns: Option<u64>,
    response: Option<H2Headers>,
    response_lost: bool,
    resp_mark: Option<Mark>,
    trailers: Option<H2Headers>,
    resp_end_ns: Option<u64>,
    multiplexed: bool,
    messages: [MessageCounter; 2],
    truncated: bool,
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    ty: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(h: &[u8; 9]) -> FrameHead {
        FrameHead {
            len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
            ty: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        }
    }

    /// Could be the header of a real frame (used to find the framing again).
    fn plausible(&self) -> bool {
        let on_stream = self.stream != 0;
        self.len <= RESYNC_MAX_FRAME
            && match self.ty {
                DATA => on_stream && self.flags & !(END_STREAM | PADDED) == 0,
                HEADERS => {
                    on_stream && self.flags & !(END_STREAM | END_HEADERS | PADDED | PRIORITY) == 0
                }
                0x2 => on_stream && self.len == 5 && self.flags == 0,
                RST_STREAM => on_stream && self.len == 4 && self.flags == 0,
                SETTINGS => !on_stream && self.len.is_multiple_of(6) && self.flags & !1 == 0,
                PUSH_PROMISE => on_stream && self.flags & !(END_HEADERS | PADDED) == 0,
                PING => !on_stream && self.len == 8 && self.flags & !1 == 0,
                GOAWAY => !on_stream && self.len >= 8 && self.flags == 0,
                0x8 => self.len == 4 && self.flags == 0,
                CONTINUATION => on_stream && self.flags & !END_HEADERS == 0,
                _ => false,
            }
    }
}

/// Looks like the first frame a server sends: SETTINGS on stream 0, not an ACK.
pub fn looks_like_server_settings(p: &[u8]) -> bool {
    let Some(h) = p.get(..9).and_then(|h| <&[u8; 9]>::try_from(h).ok()) else {
        return false;
    };
    let f = FrameHead::parse(h);
    f.ty == SETTINGS && f.flags == 0 && f.stream == 0 && f.len.is_multiple_of(6) && f.len <= 60
}

/// A header block being gathered from HEADERS/PUSH_PROMISE and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    bytes: Vec<u8>,
    end_stream: bool,
    lost: bool,
    /// PUSH_PROMISE: decoded to keep the table in step, then dropped.
    push: bool,
    mark: Mark,
}

#[derive(Debug)]
enum State {
    /// The client preface: bytes of it matched so far.
    Preface(usize),
    Header,
    Payload {
        head: FrameHead,
        left: usize,
        /// DATA: bytes of padding at the end (None while the pad length is unread).
        pad: Option<usize>,
        /// Whether the frame's bytes are kept (control and header frames).
        keep: bool,
        lost: bool,
    },
    /// Framing lost: waiting for a syscall that starts on a frame boundary.
    Lost,
}

#[derive(Debug)]
struct Direction {
    state: State,
    head: [u8; 9],
    head_len: usize,
    head_mark: Mark,
    payload: Vec<u8>,
    block: Option<Block>,
    hpack: Decoder,
    /// While framing is lost: when the last bytes were dropped unread. Streams that
    /// started before then may have lost frames in them (see `forget_gap`).
    dropped_ns: Option<u64>,
}

impl Direction {
    fn new(preface: bool) -> Direction {
        Direction {
            state: if preface {
                State::Preface(0)
            } else {
                State::Header
            },
            head: [0; 9],
            head_len: 0,
            head_mark: Mark::default(),
            payload: Vec::new(),
            block: None,
            hpack: Decoder::default(),
            dropped_ns: None,
        }
    }
}

/// Whether captured bytes are (the start of) the HTTP/2 client preface.
pub fn starts_preface(captured: &[u8]) -> bool {
    !captured.is_empty() && (captured.starts_with(PREFACE) || PREFACE.starts_with(captured))
}

/// Both directions of one HTTP/2 connection and its open streams.
#[derive(Debug)]
pub struct Http2Connection {
    config: Arc<ParserConfig>,
    dirs: [Direction; 2],
    streams: BTreeMap<u32, Stream>,
    stats: Http2Stats,
}

fn side_index(s: Side) -> usize {
    match s {
        Side::Request => 0,
        Side::Response => 1,
    }
}

impl Http2Connection {
    /// `seen_from_start`: the connection's first bytes are being read (the request
    /// direction starts with the client preface). Otherwise it is read from its middle:
    /// HPACK tables start unknown and framing is found at a syscall boundary.
    pub fn new(config: Arc<ParserConfig>, seen_from_start: bool) -> Http2Connection {
        let mut c = Http2Connection {
            config,
            dirs: [Direction::new(seen_from_start), Direction::new(false)],
            streams: BTreeMap::new(),
            stats: Http2Stats::default(),
        };
        if !seen_from_start {
            c.dirs[0].state = State::Lost;
            c.dirs[1].state = State::Lost;
        }
        c
    }

    /// A connection that an HTTP/1.1 request switched to HTTP/2 (`Upgrade: h2c`,
    /// answered `101`): the client's next bytes are the preface, the server's next
    /// bytes are frames, and the upgrading request is stream 1, answered in HTTP/2
    /// (RFC 9113 §3.2 of RFC 7540).
    pub fn upgraded(config: Arc<ParserConfig>, request: UpgradedRequest) -> Http2Connection {
        let mut c = Http2Connection {
            config,
            dirs: [Direction::new(true), Direction::new(false)],
            streams: BTreeMap::new(),
            stats: Http2Stats::default(),
        };
        if !request.response_from_start {
            c.dirs[1].state = State::Lost;
        }
        c.stats.streams += 1;
        c.streams.insert(
            1,
            Stream {
                request: Some(request.headers),
                req_mark: Mark {
                    ts_ns: request.start_ns,
                    seq: request.tcp_seq,
                    tag: request.tag,
                },
                req_end_ns: Some(request.end_ns),
                // The request's body, if any, was HTTP/1.1: no gRPC messages to count.
                messages: [
                    MessageCounter {
                        lost: true,
                        ..MessageCounter::default()
                    },
                    MessageCounter::default(),
                ],
                truncated: request.truncated,
                ..Stream::default()
            },
        );
        c
    }

    pub fn stats(&self) -> &Http2Stats {
        &self.stats
    }

    /// Feeds one syscall's bytes of one direction.
    pub fn feed(&mut self, side: Side, chunk: &Chunk<'_>, out: &mut Vec<H2Exchange>) {
        let di = side_index(side);
        if matches!(self.dirs[di].state, State::Lost) {
            let state = if side == Side::Request && starts_preface(chunk.captured) {
                // A new connection on a port pinned to HTTP/2: read from its start.
                self.dirs[di].hpack.lose_sync();
                State::Preface(0)
            } else if self.chain_starts_here(chunk) {
                self.stats.framing_found += 1;
                State::Header
            } else {
                self.dirs[di].dropped_ns = Some(chunk.ts_ns);
                return;
            };
            let d = &mut self.dirs[di];
            d.state = state;
            d.head_len = 0;
            d.block = None;
            self.forget_gap(side);
        }
        let mut pos = 0;
        let cap = chunk.captured;
        while pos < cap.len() {
            pos = self.step(side, chunk, pos, out);
        }
        let dark = chunk.total_len.saturating_sub(cap.len());
        if dark > 0 {
            self.dark(side, dark, chunk.ts_ns, out);
        }
        if matches!(self.dirs[di].state, State::Lost) {
            self.dirs[di].dropped_ns = Some(chunk.ts_ns);
        }
    }

    /// Framing is found again after bytes were dropped unread: any stream that had
    /// started by then may have lost frames of this direction in them (a response's
    /// HEADERS, an END_STREAM, gRPC messages). Their message counts are unknown, and a
    /// response not yet seen is lost (its trailers must not pass for it).
    fn forget_gap(&mut self, side: Side) {
        let di = side_index(side);
        let Some(dropped) = self.dirs[di].dropped_ns.take() else {
            return;
        };
        for s in self.streams.values_mut() {
            if s.req_mark.ts_ns > dropped {
                continue;
            }
            s.messages[di].lose();
            s.truncated = true;
            if side == Side::Response && s.response.is_none() {
                s.response_lost = true;
            }
        }
    }

    /// The captured bytes of `chunk` are exactly a chain of plausible frames ending at
    /// the chunk's end (the last one may run past what was captured).
    fn chain_starts_here(&self, chunk: &Chunk<'_>) -> bool {
        let cap = chunk.captured;
        let mut at = 0usize;
        let mut frames = 0;
        while at < chunk.total_len {
            let Some(h) = cap
                .get(at..at + 9)
                .and_then(|h| <&[u8; 9]>::try_from(h).ok())
            else {
                return false;
            };
            let f = FrameHead::parse(h);
            if !f.plausible() {
                return false;
            }
            frames += 1;
            at += 9 + f.len;
        }
        frames > 0 && at == chunk.total_len
    }

    fn mark(chunk: &Chunk<'_>, pos: usize) -> Mark {
        Mark {
            ts_ns: chunk.ts_ns,
            seq: chunk.seq_at(pos),
            tag: chunk.tag,
        }
    }

    /// Consumes captured bytes from `pos`; returns the new position.
    fn step(
        &mut self,
        side: Side,
        chunk: &Chunk<'_>,
        pos: usize,
        out: &mut Vec<H2Exchange>,
    ) -> usize {
        let di = side_index(side);
        let cap = chunk.captured;
        let d = &mut self.dirs[di];
        match &mut d.state {
            State::Lost => cap.len(),
            State::Preface(matched) => {
                let want = &PREFACE[*matched..];
                let n = want.len().min(cap.len() - pos);
                if cap[pos..pos + n] != want[..n] {
                    // Not a preface after all (a connection older than weft, taken
                    // for new): frame boundaries are unknown.
                    self.lose_framing(side);
                    return cap.len();
                }
                *matched += n;
                if *matched == PREFACE.len() {
                    d.state = State::Header;
                }
                pos + n
            }
            State::Header => {
                if d.head_len == 0 {
                    d.head_mark = Self::mark(chunk, pos);
                }
                let n = (9 - d.head_len).min(cap.len() - pos);
                d.head[d.head_len..d.head_len + n].copy_from_slice(&cap[pos..pos + n]);
                d.head_len += n;
                if d.head_len == 9 {
                    d.head_len = 0;
                    let head = FrameHead::parse(&d.head);
                    self.stats.frames += 1;
                    let keep = !matches!(head.ty, DATA);
                    if keep && head.len > MAX_HEADER_BLOCK {
                        self.stats.header_blocks_lost += 1;
                    }
                    d.payload.clear();
                    d.state = State::Payload {
                        head,
                        left: head.len,
                        pad: if head.ty == DATA && head.flags & PADDED != 0 {
                            None
                        } else {
                            Some(0)
                        },
                        keep: keep && head.len <= MAX_HEADER_BLOCK,
                        lost: keep && head.len > MAX_HEADER_BLOCK,
                    };
                    if head.len == 0 {
                        self.end_frame(side, chunk.ts_ns, out);
                    }
                }
                pos + n
            }
            State::Payload {
                head,
                left,
                pad,
                keep,
                ..
            } => {
                let n = (*left).min(cap.len() - pos);
                let bytes = &cap[pos..pos + n];
                if *keep {
                    d.payload.extend_from_slice(bytes);
                } else if head.ty == DATA {
                    let mut data = bytes;
                    if pad.is_none() && !data.is_empty() {
                        *pad = Some(usize::from(data[0]));
                        data = &data[1..];
                    }
                    // The data part: what is left of the frame minus its padding.
                    let start_left = *left - (bytes.len() - data.len());
                    let padding = pad.unwrap_or(0);
                    let data_left = start_left.saturating_sub(padding);
                    let take = data.len().min(data_left);
                    if let Some(s) = self.streams.get_mut(&head.stream) {
                        s.messages[di].feed(&data[..take]);
                    }
                }
                *left -= n;
                if *left == 0 {
                    self.end_frame(side, chunk.ts_ns, out);
                }
                pos + n
            }
        }
    }

    /// `n` bytes of the direction were not captured.
    fn dark(&mut self, side: Side, n: usize, ts_ns: u64, out: &mut Vec<H2Exchange>) {
        let di = side_index(side);
        let mut n = n;
        while n > 0 {
            let d = &mut self.dirs[di];
            match &mut d.state {
                State::Payload {
                    head,
                    left,
                    pad,
                    keep,
                    lost,
                } => {
                    let k = (*left).min(n);
                    let before = *left;
                    *left -= k;
                    n -= k;
                    if *keep {
                        *keep = false;
                        *lost = true;
                        self.stats.header_blocks_lost += 1;
                    }
                    if head.ty == DATA {
                        if let Some(s) = self.streams.get_mut(&head.stream) {
                            s.truncated = true;
                            match pad {
                                // Dark data, not padding: skipped by count.
                                Some(p) => {
                                    let data = k.min(before.saturating_sub(*p));
                                    s.messages[di].dark(data as u64);
                                }
                                // The pad length itself was not captured.
                                None => s.messages[di].lose(),
                            }
                        }
                    }
                    if *left == 0 {
                        self.end_frame(side, ts_ns, out);
                    }
                }
                State::Lost => return,
                _ => {
                    self.lose_framing(side);
                    return;
                }
            }
        }
    }

    fn lose_framing(&mut self, side: Side) {
        let d = &mut self.dirs[side_index(side)];
        d.state = State::Lost;
        d.head_len = 0;
        d.payload.clear();
        d.block = None;
        d.hpack.lose_sync();
        self.stats.framing_lost += 1;
    }

    /// A frame's payload is complete (`ts_ns` 0: its end was not captured).
    fn end_frame(&mut self, side: Side, ts_ns: u64, out: &mut Vec<H2Exchange>) {
        let di = side_index(side);
        let d = &mut self.dirs[di];
        let State::Payload {
            head, keep, lost, ..
        } = std::mem::replace(&mut d.state, State::Header)
        else {
            return;
        };
        let payload = std::mem::take(&mut d.payload);
        let mark = d.head_mark;
        let end_ns = if ts_ns == 0 { mark.ts_ns } else { ts_ns };
        // Frames of a stream weft does not follow (opened before weft, lost in a gap,
        // dropped) share syscalls with the streams it does: none of those has the
        // thread's syscalls to itself.
        let opens = head.ty == HEADERS && side == Side::Request;
        if head.stream != 0 && !opens && !self.streams.contains_key(&head.stream) {
            for s in self.streams.values_mut() {
                s.multiplexed = true;
            }
        }
        let d = &mut self.dirs[di];
        // A header block must continue with CONTINUATION frames of its stream.
        if d.block.is_some() && head.ty != CONTINUATION {
            self.stats.protocol_errors += 1;
            d.block = None;
            d.hpack.lose_sync();
        }
        match head.ty {
            DATA if head.flags & END_STREAM != 0 => {
                self.end_stream(side, head.stream, end_ns, out);
            }
            HEADERS | PUSH_PROMISE => {
                if head.stream == 0 {
                    self.stats.protocol_errors += 1;
                    self.lose_framing(side);
                    return;
                }
                let fragment = if keep && !lost {
                    header_fragment(&head, &payload)
                } else {
                    None
                };
                let block = Block {
                    stream: head.stream,
                    bytes: fragment.map(<[u8]>::to_vec).unwrap_or_default(),
                    end_stream: head.ty == HEADERS && head.flags & END_STREAM != 0,
                    lost: fragment.is_none(),
                    push: head.ty == PUSH_PROMISE,
                    mark,
                };
                if head.flags & END_HEADERS != 0 {
                    self.end_block(side, block, end_ns, out);
                } else {
                    self.dirs[di].block = Some(block);
                }
            }
            CONTINUATION => {
                let Some(mut block) = d.block.take() else {
                    self.stats.protocol_errors += 1;
                    d.hpack.lose_sync();
                    return;
                };
                if block.stream != head.stream {
                    self.stats.protocol_errors += 1;
                    d.hpack.lose_sync();
                    return;
                }
                if !keep || lost || block.bytes.len() + payload.len() > MAX_HEADER_BLOCK {
                    if !block.lost {
                        block.lost = true;
                        self.stats.header_blocks_lost += 1;
                    }
                    block.bytes.clear();
                } else if !block.lost {
                    block.bytes.extend_from_slice(&payload);
                }
                if head.flags & END_HEADERS != 0 {
                    self.end_block(side, block, end_ns, out);
                } else {
                    self.dirs[di].block = Some(block);
                }
            }
            RST_STREAM if keep && !lost && payload.len() == 4 => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                self.reset(head.stream, code, end_ns, out);
            }
            GOAWAY if keep && !lost && payload.len() >= 8 && side == Side::Response => {
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                // Streams above the last one the server processed never were.
                let refused: Vec<u32> = self.streams.range(last + 1..).map(|(id, _)| *id).collect();
                for id in refused {
                    self.streams.remove(&id);
                    self.stats.unmatched += 1;
                }
            }
            _ => {}
        }
    }

    /// A complete header block: decoded (to keep the table in step) and applied.
    fn end_block(&mut self, side: Side, block: Block, end_ns: u64, out: &mut Vec<H2Exchange>) {
        let di = side_index(side);
        let headers = if block.lost {
            self.dirs[di].hpack.lose_sync();
            None
        } else {
            let mut fields = Vec::new();
            let config = &self.config;
            // Values are kept only where a span uses them: never secrets.
            let secret = |n: &str| config.is_redacted(n.as_bytes()) || !H2Headers::uses(n, config);
            match self.dirs[di]
                .hpack
                .decode(&block.bytes, &secret, &mut fields)
            {
                Ok(info) => {
                    self.stats.unknown_fields += u64::from(info.unknown_fields);
                    Some(H2Headers::from_fields(&fields, &self.config))
                }
                Err(_) => {
                    self.stats.hpack_errors += 1;
                    self.stats.header_blocks_lost += 1;
                    None
                }
            }
        };
        if block.push {
            return;
        }
        let id = block.stream;
        match side {
            Side::Request => {
                if !self.streams.contains_key(&id) {
                    // A client opens odd streams; trailers of a forgotten stream are
                    // not a new one.
                    if id.is_multiple_of(2) || self.streams.range(id..).next().is_some() {
                        return;
                    }
                    if self.streams.len() >= SWEEP_STREAMS {
                        // Streams whose end fell in lost bytes never end: after
                        // STREAM_IDLE_NS they are given up.
                        let now = block.mark.ts_ns;
                        let before = self.streams.len();
                        self.streams
                            .retain(|_, s| s.req_mark.ts_ns.saturating_add(STREAM_IDLE_NS) > now);
                        self.stats.unmatched += (before - self.streams.len()) as u64;
                    }
                    if self.streams.len() >= MAX_STREAMS {
                        if let Some((&old, _)) = self.streams.iter().next() {
                            self.streams.remove(&old);
                            self.stats.streams_dropped += 1;
                        }
                    }
                    let others = !self.streams.is_empty();
                    if others {
                        for s in self.streams.values_mut() {
                            s.multiplexed = true;
                        }
                    }
                    self.stats.streams += 1;
                    self.streams.insert(
                        id,
                        Stream {
                            request: headers,
                            req_mark: block.mark,
                            multiplexed: others,
                            ..Stream::default()
                        },
                    );
                }
                // Request trailers add nothing but the end.
            }
            Side::Response => {
                let Some(s) = self.streams.get_mut(&id) else {
                    return;
                };
                if s.resp_mark.is_none() {
                    s.resp_mark = Some(block.mark);
                }
                if s.response.is_none() && !s.response_lost {
                    match headers {
                        // An informational response: the final one follows.
                        Some(h)
                            if h.status.is_some_and(|c| (100..200).contains(&c))
                                && !block.end_stream => {}
                        Some(h) => {
                            if block.end_stream && h.grpc_status.is_some() {
                                s.trailers = Some(h.clone());
                            }
                            s.response = Some(h);
                        }
                        None => s.response_lost = true,
                    }
                } else {
                    match headers {
                        Some(h) => s.trailers = Some(h),
                        None => s.truncated = true,
                    }
                }
            }
        }
        if block.end_stream {
            self.end_stream(side, id, end_ns, out);
        }
    }

    fn end_stream(&mut self, side: Side, id: u32, end_ns: u64, out: &mut Vec<H2Exchange>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        match side {
            Side::Request => s.req_end_ns = Some(end_ns),
            Side::Response => s.resp_end_ns = Some(end_ns),
        }
        if s.req_end_ns.is_some() && s.resp_end_ns.is_some() {
            if let Some(s) = self.streams.remove(&id) {
                self.complete(id, s, None, out);
            }
        }
    }

    fn reset(&mut self, id: u32, code: u32, end_ns: u64, out: &mut Vec<H2Exchange>) {
        if let Some(mut s) = self.streams.remove(&id) {
            s.req_end_ns.get_or_insert(end_ns);
            s.resp_end_ns = Some(end_ns);
            self.complete(id, s, Some(code), out);
        }
    }

    fn complete(&mut self, id: u32, s: Stream, reset: Option<u32>, out: &mut Vec<H2Exchange>) {
        let Some(request) = s.request else {
            self.stats.unmatched += 1;
            return;
        };
        // A reset stream is a span even before any response (a cancelled call);
        // otherwise the response must be known.
        let answered = s.response.is_some() && !s.response_lost;
        let resp_mark = match s.resp_mark {
            Some(m) if answered || reset.is_some() => m,
            None if reset.is_some() => Mark {
                ts_ns: s.resp_end_ns.unwrap_or(s.req_mark.ts_ns),
                seq: None,
                tag: Tag::default(),
            },
            _ => {
                self.stats.unmatched += 1;
                return;
            }
        };
        let counts = |i: usize| {
            if request.is_grpc() {
                s.messages[i].result()
            } else {
                None
            }
        };
        out.push(H2Exchange {
            stream_id: id,
            request_messages: counts(0),
            response_messages: counts(1),
            request,
            response: s.response,
            trailers: s.trailers,
            request_start_ns: s.req_mark.ts_ns,
            request_end_ns: s.req_end_ns.unwrap_or(s.req_mark.ts_ns),
            response_start_ns: resp_mark.ts_ns,
            response_end_ns: s.resp_end_ns.unwrap_or(resp_mark.ts_ns),
            req_tcp_seq: s.req_mark.seq,
            resp_tcp_seq: resp_mark.seq,
            req_tag: s.req_mark.tag,
            resp_tag: resp_mark.tag,
            multiplexed: s.multiplexed,
            reset,
            truncated: s.truncated || s.response_lost,
        });
    }

    /// The connection ended: streams still open are counted.
    pub fn close(&mut self) {
        self.stats.unmatched += self.streams.len() as u64;
        self.streams.clear();
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload (padding, priority
/// and the promised stream id removed); None when the lengths do not add up.
fn header_fragment<'a>(head: &FrameHead, p: &'a [u8]) -> Option<&'a [u8]> {
    let mut start = 0;
    let mut end = p.len();
    if head.flags & PADDED != 0 {
        let pad = usize::from(*p.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if head.ty == HEADERS && head.flags & PRIORITY != 0 {
        start += 5;
    }
    if head.ty == PUSH_PROMISE {
        start += 4;
    }
    p.get(start..end)
}
