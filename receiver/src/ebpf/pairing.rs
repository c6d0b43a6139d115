//! Pairs the requests and responses of one socket into exchanges, one span each.
//!
//! HTTP/1.x answers requests in order, pipelined or not, so pairing is first-in first-out.
//! Dropped messages stay in the queues as placeholders so one bad message costs one
//! exchange, not the alignment of every later one.

use std::collections::VecDeque;
use std::sync::Arc;

use super::http1::{
    Chunk, Head, Http1Event, Http1Message, Http1Stats, Http1Stream, Method, ParserConfig,
    StreamKind, Tag,
};

/// Unpaired messages kept per direction; beyond this the oldest is given up (counted),
/// so a socket whose other direction is never seen cannot grow without bound.
pub const MAX_PENDING: usize = 256;

/// One request and its response: what a span is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpExchange {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub status: u16,
    pub request_start_ns: u64,
    pub request_end_ns: u64,
    /// Start of the response, of its first 1xx when there was one.
    pub response_start_ns: u64,
    pub response_end_ns: u64,
    /// Request-id and propagation headers of the request, lower-case names.
    pub req_headers_of_interest: Vec<(String, String)>,
    /// The first configured request-id header of the request.
    pub x_request_id: Option<String>,
    /// The first configured request-id header of the response (a gateway answers
    /// with the id it generated and sent upstream).
    pub resp_x_request_id: Option<String>,
    /// TCP sequence of the request's first byte, when known.
    pub req_tcp_seq: Option<u32>,
    /// TCP sequence of the response's first byte (of its first 1xx when there was one).
    pub resp_tcp_seq: Option<u32>,
    /// Syscall facts of the request's first byte.
    pub req_tag: Tag,
    /// Syscall facts of the response's first byte.
    pub resp_tag: Tag,
    /// Some bytes of either message were not captured.
    pub truncated: bool,
    /// Either message lost its framing: headers may be missing and an end is approximate.
    pub framing_lost: bool,
}

/// Counters for the receiver's self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairingStats {
    pub exchanges: u64,
    /// Pairs in which either message was dropped by the parser.
    pub dropped_pairs: u64,
    /// Requests never answered (or given up on).
    pub unmatched_requests: u64,
    /// Responses with no request seen before them.
    pub unmatched_responses: u64,
}

/// FIFO pairing of one socket's messages.
#[derive(Debug, Default)]
pub struct ExchangePairer {
    requests: VecDeque<Http1Message>,
    responses: VecDeque<Http1Message>,
    stats: PairingStats,
}

impl ExchangePairer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> &PairingStats {
        &self.stats
    }

    pub fn push_request(&mut self, msg: Http1Message, out: &mut Vec<HttpExchange>) {
        if self.requests.len() >= MAX_PENDING {
            self.requests.pop_front();
            self.stats.unmatched_requests += 1;
        }
        self.requests.push_back(msg);
        self.pair(out);
    }

    pub fn push_response(&mut self, msg: Http1Message, out: &mut Vec<HttpExchange>) {
        if self.responses.len() >= MAX_PENDING {
            self.responses.pop_front();
            self.stats.unmatched_responses += 1;
        }
        self.responses.push_back(msg);
        self.pair(out);
    }

    /// The socket closed: whatever is left is counted as unmatched.
    pub fn finish(&mut self) {
        self.stats.unmatched_requests += self.requests.len() as u64;
        self.stats.unmatched_responses += self.responses.len() as u64;
        self.requests.clear();
        self.responses.clear();
    }

    fn pair(&mut self, out: &mut Vec<HttpExchange>) {
        // A response that ended before the request began must answer a request sent before
        // capture started; pairing it would shift every later exchange by one.
        while let (Some(req), Some(resp)) = (self.requests.front(), self.responses.front()) {
            if resp.end_ns < req.start_ns {
                self.responses.pop_front();
                self.stats.unmatched_responses += 1;
                continue;
            }
            let (Some(req), Some(resp)) = (self.requests.pop_front(), self.responses.pop_front())
            else {
                break;
            };
            match exchange(req, resp) {
                Some(x) => {
                    self.stats.exchanges += 1;
                    out.push(x);
                }
                None => self.stats.dropped_pairs += 1,
            }
        }
    }
}

fn exchange(req: Http1Message, resp: Http1Message) -> Option<HttpExchange> {
    if req.dropped.is_some() || resp.dropped.is_some() {
        return None;
    }
    let (
        Some(Head::Request {
            method,
            path,
            query,
        }),
        Some(Head::Response { status }),
    ) = (req.head, resp.head)
    else {
        return None;
    };
    Some(HttpExchange {
        method,
        path,
        query,
        host: req.host,
        status,
        request_start_ns: req.start_ns,
        request_end_ns: req.end_ns,
        response_start_ns: resp.start_ns,
        response_end_ns: resp.end_ns,
        req_headers_of_interest: req.headers,
        x_request_id: req.x_request_id,
        resp_x_request_id: resp.x_request_id,
        req_tcp_seq: req.tcp_seq,
        resp_tcp_seq: resp.tcp_seq,
        req_tag: req.tag,
        resp_tag: resp.tag,
        truncated: req.truncated || resp.truncated,
        framing_lost: req.framing_lost || resp.framing_lost,
    })
}

/// Both directions of one socket plus their pairing.
///
/// The caller maps capture direction to message direction: on an accepted socket ingress
/// carries requests, on a connected socket egress does.
#[derive(Debug)]
pub struct Http1Connection {
    requests: Http1Stream,
    responses: Http1Stream,
    pairer: ExchangePairer,
    /// Reused per feed so parsing a chunk does not allocate an event list.
    events: Vec<Http1Event>,
}

impl Http1Connection {
    pub fn new(config: Arc<ParserConfig>) -> Self {
        Self {
            requests: Http1Stream::new(StreamKind::Requests, config.clone()),
            responses: Http1Stream::new(StreamKind::Responses, config),
            pairer: ExchangePairer::new(),
            events: Vec::new(),
        }
    }

    /// False once either direction was judged not to be HTTP/1.x; the socket is then
    /// ignored, so it can never yield a wrong span.
    pub fn is_http(&self) -> bool {
        self.requests.is_http() && self.responses.is_http()
    }

    /// The server switched protocols (`101`, or a `2xx` to `CONNECT`): the bytes that
    /// follow are not HTTP/1.x.
    pub fn is_upgraded(&self) -> bool {
        self.responses.is_upgraded()
    }

    pub fn request_stats(&self) -> &Http1Stats {
        self.requests.stats()
    }

    pub fn response_stats(&self) -> &Http1Stats {
        self.responses.stats()
    }

    pub fn pairing_stats(&self) -> &PairingStats {
        self.pairer.stats()
    }

    pub fn feed_request(&mut self, chunk: &Chunk<'_>, out: &mut Vec<HttpExchange>) {
        if !self.is_http() {
            return;
        }
        self.requests.feed(chunk, &mut self.events);
        self.dispatch(StreamKind::Requests, out);
    }

    pub fn feed_response(&mut self, chunk: &Chunk<'_>, out: &mut Vec<HttpExchange>) {
        if !self.is_http() {
            return;
        }
        self.responses.feed(chunk, &mut self.events);
        self.dispatch(StreamKind::Responses, out);
        if self.responses.is_upgraded() {
            // What the client sends from now on is the new protocol, not requests.
            self.requests.stop_upgraded();
        }
    }

    /// The socket closed: bodies delimited by the close end, the rest is counted.
    pub fn close(&mut self, out: &mut Vec<HttpExchange>) {
        if self.is_http() {
            self.requests.close(&mut self.events);
            self.dispatch(StreamKind::Requests, out);
            self.responses.close(&mut self.events);
            self.dispatch(StreamKind::Responses, out);
        }
        self.pairer.finish();
    }

    fn dispatch(&mut self, kind: StreamKind, out: &mut Vec<HttpExchange>) {
        // Messages that ended before garbage showed up in the same chunk are still
        // sound, so they are paired before the socket is given up.
        for event in self.events.drain(..) {
            match event {
                Http1Event::RequestStarted(method) => self.responses.expect_response(method),
                Http1Event::Message(msg) => match kind {
                    StreamKind::Requests => self.pairer.push_request(msg, out),
                    StreamKind::Responses => self.pairer.push_response(msg, out),
                },
            }
        }
        if !self.is_http() {
            self.pairer.finish();
        }
    }
}
