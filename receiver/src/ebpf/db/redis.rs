//! Redis: RESP2 and RESP3. A request is an array of bulk strings (or an inline command
//! line); a reply is any RESP value. Pipelined replies pair in order; pushes (`>`, and
//! RESP2 pub/sub messages while subscribed) answer nothing; a SUBSCRIBE is answered
//! once per channel; MULTI/QUEUED/EXEC pair like any other command.

use super::{DbParser, DbRequest, DbResponse, Event, Side, Step, TextPolicy};

/// Deepest nesting of aggregates followed.
const MAX_DEPTH: usize = 16;
/// Bytes kept of one argument.
const ARG_CAP: usize = 256;
/// Arguments kept of one command.
const MAX_ARGS: u64 = 64;
/// Longest simple-string or error line, and longest inline command.
const MAX_LINE: usize = 8192;
/// Redis's own limit on one bulk string (proto-max-bulk-len).
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// `*<n>\r\n$<len>\r\n`: the start of a command array.
pub fn looks_like_command(p: &[u8]) -> bool {
    let Some(rest) = p.strip_prefix(b"*") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 6 {
        return false;
    }
    let rest = &rest[digits..];
    let Some(rest) = rest.strip_prefix(b"\r\n$") else {
        return false;
    };
    let d2 = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    d2 > 0 && d2 <= 10 && rest[d2..].starts_with(b"\r\n")
}

#[derive(Debug, Default)]
struct Msg {
    /// Elements still to read, per open aggregate.
    stack: Vec<u64>,
    /// Type byte of the top-level value.
    top: u8,
    /// Index of the next element at depth one.
    index: u64,
    /// Request: the arguments kept; response: the first element of an aggregate.
    args: Vec<Vec<u8>>,
    nargs: u64,
    error: Option<Vec<u8>>,
}

impl Msg {
    fn clear(&mut self) {
        self.stack.clear();
        self.top = 0;
        self.index = 0;
        self.args.clear();
        self.nargs = 0;
        self.error = None;
    }
}

#[derive(Debug)]
pub struct Redis {
    text: TextPolicy,
    req: Msg,
    resp: Msg,
    db: u32,
    /// Subscribe confirmations still owed.
    sub_owed: u64,
    subscribed: bool,
    /// 1: MONITOR's OK is owed; 2: every reply is a monitor line.
    monitor: u8,
}

impl Redis {
    pub fn new(text: TextPolicy) -> Redis {
        Redis {
            text,
            req: Msg::default(),
            resp: Msg::default(),
            db: 0,
            sub_owed: 0,
            subscribed: false,
            monitor: 0,
        }
    }
}

fn find_crlf(p: &[u8], limit: usize) -> Option<usize> {
    let end = p.len().min(limit);
    p[..end].windows(2).position(|w| w == b"\r\n")
}

fn parse_int(p: &[u8]) -> Option<i64> {
    if p.is_empty() || p.len() > 20 {
        return None;
    }
    std::str::from_utf8(p).ok()?.parse().ok()
}

fn is_subscribe_cmd(op: &str) -> bool {
    matches!(
        op,
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "SUNSUBSCRIBE"
    )
}

fn is_confirmation(first: &[u8]) -> bool {
    let f = first.to_ascii_lowercase();
    matches!(
        f.as_slice(),
        b"subscribe"
            | b"psubscribe"
            | b"ssubscribe"
            | b"unsubscribe"
            | b"punsubscribe"
            | b"sunsubscribe"
    )
}

fn is_message(first: &[u8]) -> bool {
    let f = first.to_ascii_lowercase();
    matches!(f.as_slice(), b"message" | b"pmessage" | b"smessage")
}

fn valid_command_name(c: &[u8]) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'|'))
}

impl Redis {
    /// Wanted bytes of a bulk string's body at the current position.
    fn want(&self, side: Side, len: usize, t: u8) -> usize {
        let m = match side {
            Side::Request => &self.req,
            Side::Response => &self.resp,
        };
        let at_depth_one = m.stack.len() == 1;
        match side {
            Side::Request => {
                let keep = m.index < 2 || (!self.text.sanitize && m.index < MAX_ARGS);
                if at_depth_one && keep {
                    len.min(ARG_CAP)
                } else {
                    0
                }
            }
            Side::Response => {
                if m.stack.is_empty() && t == b'!' {
                    len.min(ARG_CAP)
                } else if at_depth_one && m.index == 0 && matches!(m.top, b'*' | b'>') {
                    len.min(32)
                } else {
                    0
                }
            }
        }
    }

    /// A value ended (a leaf, or an empty or null aggregate).
    fn leaf(&mut self, side: Side, value: Option<&[u8]>, out: &mut Vec<Event>) {
        let m = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        if m.stack.len() == 1 {
            if let Some(v) = value {
                let keep = match side {
                    Side::Request => (m.args.len() as u64) < MAX_ARGS,
                    Side::Response => m.index == 0,
                };
                if keep {
                    m.args.push(v.to_vec());
                }
            }
            m.index += 1;
            m.nargs += 1;
        }
        // Close the aggregates this value completed.
        loop {
            match m.stack.last_mut() {
                None => break,
                Some(left) => {
                    *left = left.saturating_sub(1);
                    if *left > 0 {
                        return;
                    }
                }
            }
            m.stack.pop();
            if m.stack.len() == 1 {
                // An aggregate at depth one is one element of the top.
                m.index += 1;
                m.nargs += 1;
            }
        }
        self.complete(side, out);
    }

    fn complete(&mut self, side: Side, out: &mut Vec<Event>) {
        match side {
            Side::Request => {
                let ev = self.request();
                self.req.clear();
                if let Some(r) = ev {
                    out.push(Event::Request(r));
                }
            }
            Side::Response => {
                let m = &self.resp;
                let first = m.args.first().map(Vec::as_slice).unwrap_or(b"");
                let ev = if m.top == b'|' {
                    // An attribute map describes the reply that follows it.
                    None
                } else if self.monitor == 2 {
                    Some(Event::Boundary)
                } else if matches!(m.top, b'>' | b'*')
                    && is_confirmation(first)
                    && self.sub_owed > 0
                {
                    self.sub_owed -= 1;
                    self.subscribed = true;
                    Some(Event::Response(DbResponse::default()))
                } else if m.top == b'>'
                    || (m.top == b'*'
                        && self.subscribed
                        && (is_message(first) || is_confirmation(first)))
                {
                    Some(Event::Boundary)
                } else {
                    if m.error.is_some() {
                        // A refused SUBSCRIBE is answered by one error.
                        self.sub_owed = 0;
                    }
                    if self.monitor == 1 {
                        // MONITOR answers +OK, then streams; a refusal leaves the
                        // connection as it was.
                        self.monitor = if m.error.is_none() { 2 } else { 0 };
                    }
                    Some(Event::Response(match &m.error {
                        Some(e) => {
                            let text = String::from_utf8_lossy(e).into_owned();
                            let code = text
                                .split(' ')
                                .next()
                                .filter(|w| {
                                    !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase())
                                })
                                .map(str::to_string);
                            DbResponse {
                                status_code: code,
                                error: Some(text),
                            }
                        }
                        None => DbResponse::default(),
                    }))
                };
                self.resp.clear();
                if let Some(e) = ev {
                    out.push(e);
                }
            }
        }
    }

    fn request(&mut self) -> Option<DbRequest> {
        let args = &self.req.args;
        let name = args.first()?;
        let op = String::from_utf8_lossy(name).to_ascii_uppercase();
        let nargs = self.req.nargs;
        let mut text = op.clone();
        let secret = matches!(op.as_str(), "AUTH" | "HELLO" | "MIGRATE");
        for i in 1..nargs {
            if text.len() >= self.text.max_length {
                break;
            }
            text.push(' ');
            let shown = !secret && (i == 1 || !self.text.sanitize);
            match args.get(i as usize) {
                Some(a) if shown => text.push_str(&String::from_utf8_lossy(a)),
                _ => text.push('?'),
            }
        }
        let text = super::sanitize::cap(text, self.text.max_length);
        let mut replies = 1;
        if is_subscribe_cmd(&op) {
            replies = u32::try_from(nargs.saturating_sub(1))
                .unwrap_or(u32::MAX)
                .max(1);
            self.sub_owed += u64::from(replies);
        }
        if op == "MONITOR" {
            self.monitor = 1;
        }
        let namespace = Some(self.db.to_string());
        if op == "SELECT" {
            if let Some(n) = args.get(1).and_then(|a| parse_int(a)) {
                self.db = u32::try_from(n).unwrap_or(self.db);
            }
        }
        // `*1\r\n$0\r\n\r\n` is valid RESP (the server answers "unknown command"):
        // it still makes a span, under a name that is not empty.
        let operation = if op.is_empty() {
            "UNKNOWN".to_string()
        } else {
            op
        };
        Some(DbRequest {
            operation,
            text: Some(text),
            namespace,
            traceparent: None,
            replies,
        })
    }

    fn inline(&mut self, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        let Some(end) = view.iter().take(MAX_LINE).position(|b| *b == b'\n') else {
            let _ = dark;
            // Binary bytes are refused before the line ends.
            if view
                .iter()
                .take(MAX_LINE)
                .any(|b| *b < 0x20 && !matches!(b, b'\t' | b'\r'))
            {
                return Step::Bad("control bytes in an inline command");
            }
            return if view.len() >= MAX_LINE {
                Step::Bad("inline command too long")
            } else {
                Step::Need
            };
        };
        let line = &view[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().any(|b| *b < 0x20 && *b != b'\t') {
            return Step::Bad("control bytes in an inline command");
        }
        if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
            return Step::Bad("an HTTP request line");
        }
        let mut words = line
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|w| !w.is_empty());
        let Some(cmd) = words.next() else {
            // An empty line is no command, and starts none.
            out.push(Event::Boundary);
            return Step::Take {
                consumed: end + 1,
                skip: 0,
            };
        };
        if !valid_command_name(cmd) {
            return Step::Bad("not a command name");
        }
        self.req.clear();
        self.req.args.push(cmd.to_vec());
        self.req.nargs = 1;
        for w in words {
            if (self.req.args.len() as u64) < MAX_ARGS {
                self.req.args.push(w[..w.len().min(ARG_CAP)].to_vec());
            }
            self.req.nargs += 1;
        }
        if let Some(r) = self.request() {
            out.push(Event::Request(r));
        }
        self.req.clear();
        Step::Take {
            consumed: end + 1,
            skip: 0,
        }
    }
}

impl DbParser for Redis {
    fn parse(&mut self, side: Side, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        let at_top = match side {
            Side::Request => self.req.stack.is_empty(),
            Side::Response => self.resp.stack.is_empty(),
        };
        if side == Side::Request && at_top && view[0] != b'*' {
            return self.inline(view, dark, out);
        }
        let t = view[0];
        let limit = if matches!(t, b'+' | b'-' | b',' | b'(') {
            MAX_LINE
        } else {
            24
        };
        let Some(nl) = find_crlf(&view[1..], limit) else {
            return if view.len() > limit + 2 {
                Step::Bad("RESP header line too long")
            } else {
                Step::Need
            };
        };
        let line = &view[1..1 + nl];
        let header = nl + 3;
        if side == Side::Request && !at_top && t != b'$' {
            return Step::Bad("a command is an array of bulk strings");
        }
        match t {
            b'*' | b'>' | b'~' | b'%' | b'|' => {
                let Some(n) = parse_int(line) else {
                    return Step::Bad("bad aggregate length");
                };
                let m = match side {
                    Side::Request => &mut self.req,
                    Side::Response => &mut self.resp,
                };
                if at_top {
                    m.clear();
                    m.top = t;
                }
                if n < -1 || n > u32::MAX as i64 {
                    return Step::Bad("bad aggregate length");
                }
                let count = if matches!(t, b'%' | b'|') { n * 2 } else { n };
                if count <= 0 {
                    self.leaf(side, None, out);
                } else {
                    if m.stack.len() >= MAX_DEPTH {
                        return Step::Bad("RESP nesting too deep");
                    }
                    m.stack.push(count as u64);
                }
                Step::Take {
                    consumed: header,
                    skip: 0,
                }
            }
            b'$' | b'!' | b'=' => {
                let Some(len) = parse_int(line) else {
                    return Step::Bad("bad bulk length");
                };
                if len == -1 {
                    if at_top && side == Side::Response {
                        self.resp.clear();
                        self.resp.top = t;
                    }
                    self.leaf(side, None, out);
                    return Step::Take {
                        consumed: header,
                        skip: 0,
                    };
                }
                if !(0..=MAX_BULK).contains(&len) {
                    return Step::Bad("bad bulk length");
                }
                let len = len as usize;
                let want = self.want(side, len, t);
                let avail = view.len() - header;
                let taken = if avail >= want {
                    want
                } else if dark {
                    avail
                } else {
                    return Step::Need;
                };
                let body = &view[header..header + taken];
                if at_top && side == Side::Response {
                    self.resp.clear();
                    self.resp.top = t;
                    if t == b'!' {
                        self.resp.error = Some(body.to_vec());
                    }
                }
                let body = body.to_vec();
                self.leaf(side, Some(&body), out);
                Step::Take {
                    consumed: header + taken,
                    skip: (len + 2 - taken) as u64,
                }
            }
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                if at_top {
                    self.resp.clear();
                    self.resp.top = t;
                    if t == b'-' {
                        self.resp.error = Some(line[..line.len().min(ARG_CAP)].to_vec());
                    }
                }
                let v = line[..line.len().min(32)].to_vec();
                self.leaf(side, Some(&v), out);
                Step::Take {
                    consumed: header,
                    skip: 0,
                }
            }
            _ => Step::Bad("not a RESP type byte"),
        }
    }

    fn reset(&mut self) {
        self.req.clear();
        self.resp.clear();
    }

    fn system(&self) -> &'static str {
        "redis"
    }
}
