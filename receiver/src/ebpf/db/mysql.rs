//! MySQL and MariaDB's client/server protocol. The handshake (greeting, login, auth
//! switches) makes no span and gives the version (MariaDB or MySQL) and the database; a
//! login that asks for TLS is not followed. In the command phase each command packet is
//! a request: COM_QUERY, COM_STMT_PREPARE (the statement id the server gives is
//! remembered with its text), COM_STMT_EXECUTE (the remembered text), COM_INIT_DB,
//! COM_PING; COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA and COM_QUIT get no answer. An
//! answer is an OK, an ERR, or a result set (column count, column definitions, an
//! optional EOF, rows, a closing EOF/OK), and more result sets while the server says
//! more exist.

use std::collections::{HashMap, VecDeque};

use super::sanitize::{self, Dialect};
use super::{DbParser, DbRequest, DbResponse, Event, Side, Step, TextPolicy};

/// Bytes of a statement read (the rest of a longer one is skipped).
const MAX_QUERY: usize = 16 * 1024;
/// Prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 256;
/// Bytes of a remembered statement's text.
const MAX_REMEMBERED: usize = 4096;
/// A packet payload of this size continues in the next packet.
const MAX_PACKET: usize = 0xFF_FFFF;

const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
const CLIENT_SSL: u32 = 0x0000_0800;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x0020_0000;
const CLIENT_QUERY_ATTRIBUTES: u32 = 0x0800_0000;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_STATISTICS: u8 = 0x09;
const COM_PING: u8 = 0x0e;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1a;
const COM_SET_OPTION: u8 = 0x1b;
const COM_RESET_CONNECTION: u8 = 0x1f;

/// The server's greeting: protocol version 10 in the first packet, sequence 0.
pub fn looks_like_greeting(p: &[u8]) -> bool {
    if p.len() < 6 {
        return false;
    }
    let len = usize::from(p[0]) | usize::from(p[1]) << 8 | usize::from(p[2]) << 16;
    if p[3] != 0 || p[4] != 10 || !(20..=1024).contains(&len) {
        return false;
    }
    // A printable version string ending in NUL.
    let version = &p[5..p.len().min(4 + len)];
    match version.iter().position(|b| *b == 0) {
        Some(n) => n > 0 && version[..n].iter().all(|b| (0x20..0x7f).contains(b)),
        None => false,
    }
}

/// The database a `USE db` query switches to.
fn use_target(operation: &str, q: &[u8]) -> Option<Vec<u8>> {
    if operation != "USE" {
        return None;
    }
    let text = std::str::from_utf8(q).ok()?.trim();
    let rest = text.get(3..)?.trim().trim_end_matches(';').trim();
    let name = rest.trim_matches('`');
    (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.as_bytes().to_vec())
}

/// A length-encoded integer: (value, bytes used).
fn lenenc(p: &[u8]) -> Option<(u64, usize)> {
    let first = *p.first()?;
    match first {
        0..=0xfa => Some((u64::from(first), 1)),
        0xfc => Some((u64::from(u16::from_le_bytes([*p.get(1)?, *p.get(2)?])), 3)),
        0xfd => {
            let b = p.get(1..4)?;
            Some((
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16,
                4,
            ))
        }
        0xfe => {
            let b: [u8; 8] = p.get(1..9)?.try_into().ok()?;
            Some((u64::from_le_bytes(b), 9))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    Start,
    /// Greeting seen: login and auth exchanges until the server's OK.
    Handshake,
    Command,
}

/// What the next server packets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// OK, ERR or a result set's column count.
    First,
    /// Column definitions still to come, then maybe an EOF.
    Columns(u64),
    /// After the column definitions: an EOF, or the first row.
    ColumnsDone,
    Rows,
    /// A prepare's OK was seen: parameter and column definitions follow.
    PrepareDefs {
        params: u64,
        columns: u64,
    },
    /// One packet (COM_STATISTICS's text).
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Its answer becomes a span.
    Span,
    /// A prepare: its OK names the statement.
    Prepare,
    /// Answered, but makes no span.
    Silent,
    InitDb,
}

#[derive(Debug)]
struct Owed {
    kind: Kind,
    text: Vec<u8>,
    answer: Answer,
    error: Option<DbResponse>,
}

#[derive(Debug)]
pub struct Mysql {
    text: TextPolicy,
    phase: Phase,
    mariadb: bool,
    capabilities: u32,
    database: Option<String>,
    statements: HashMap<u32, Vec<u8>>,
    owed: VecDeque<Owed>,
    /// The last request packet was full size: the next one continues it.
    continued: [bool; 2],
}

impl Mysql {
    pub fn new(text: TextPolicy) -> Mysql {
        Mysql {
            text,
            phase: Phase::Start,
            mariadb: false,
            capabilities: 0,
            database: None,
            statements: HashMap::new(),
            owed: VecDeque::new(),
            continued: [false; 2],
        }
    }

    fn request_of(&self, operation: Option<&str>, query: &[u8]) -> DbRequest {
        DbRequest {
            operation: match operation {
                Some(o) => o.to_string(),
                None => sanitize::sql_operation(query).unwrap_or_else(|| "QUERY".into()),
            },
            text: (!query.is_empty()).then(|| {
                sanitize::sql(
                    query,
                    Dialect::Mysql,
                    self.text.sanitize,
                    self.text.max_length,
                )
            }),
            namespace: self.database.clone(),
            traceparent: sanitize::sqlcommenter_traceparent(query),
            replies: 1,
        }
    }

    fn greeting(&mut self, body: &[u8]) {
        let n = body.iter().skip(1).position(|b| *b == 0).unwrap_or(0);
        let version = &body[1..1 + n];
        self.mariadb = version
            .windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"mariadb"));
        // version\0, thread id (4), auth data (8), filler (1), capabilities low (2).
        let at = 1 + n + 1 + 4 + 8 + 1;
        if let Some(c) = body.get(at..at + 2) {
            self.capabilities = u32::from(u16::from_le_bytes([c[0], c[1]]));
        }
        if let Some(c) = body.get(at + 5..at + 7) {
            self.capabilities |= u32::from(u16::from_le_bytes([c[0], c[1]])) << 16;
        }
    }

    /// The client's login: its capabilities and database. Returns false when it asks
    /// for TLS.
    fn login(&mut self, body: &[u8]) -> bool {
        let Some(c) = body.get(0..4) else {
            return true;
        };
        let caps = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if caps & CLIENT_PROTOCOL_41 == 0 {
            return true;
        }
        if caps & CLIENT_SSL != 0 && body.len() <= 32 {
            return false;
        }
        self.capabilities &= caps;
        // caps (4), max packet (4), charset (1), filler (23), user\0, auth, [db\0].
        let mut at = 32;
        let Some(user_len) = body.get(at..).and_then(|r| r.iter().position(|b| *b == 0)) else {
            return true;
        };
        at += user_len + 1;
        let auth_len = if caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
            match body.get(at..).and_then(lenenc) {
                Some((v, used)) => {
                    at += used;
                    v as usize
                }
                None => return true,
            }
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            match body.get(at) {
                Some(v) => {
                    at += 1;
                    usize::from(*v)
                }
                None => return true,
            }
        } else {
            body.get(at..)
                .and_then(|r| r.iter().position(|b| *b == 0))
                .map(|n| n + 1)
                .unwrap_or(0)
        };
        at = at.saturating_add(auth_len);
        if caps & CLIENT_CONNECT_WITH_DB != 0 {
            if let Some(rest) = body.get(at..) {
                let n = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                if n > 0 {
                    self.database = Some(String::from_utf8_lossy(&rest[..n]).into_owned());
                }
            }
        }
        true
    }

    fn command(&mut self, body: &[u8], out: &mut Vec<Event>) -> Result<(), Step> {
        let Some((&cmd, rest)) = body.split_first() else {
            return Err(Step::Bad("empty command packet"));
        };
        let owe = |kind, text: Vec<u8>| Owed {
            kind,
            text,
            answer: Answer::First,
            error: None,
        };
        match cmd {
            COM_QUERY => {
                let mut q = rest;
                if self.capabilities & CLIENT_QUERY_ATTRIBUTES != 0 {
                    // parameter count, parameter set count (1); only attribute-free
                    // queries are read.
                    let Some((count, used)) = lenenc(q) else {
                        return Err(Step::Bad("bad query attributes"));
                    };
                    if count != 0 {
                        return Err(Step::Stop("query attributes"));
                    }
                    q = &q[used..];
                    let Some((_, used)) = lenenc(q) else {
                        return Err(Step::Bad("bad query attributes"));
                    };
                    q = &q[used..];
                }
                let r = self.request_of(None, q);
                // `USE db` as a query changes the database like COM_INIT_DB.
                let owed = match use_target(&r.operation, q) {
                    Some(db) => owe(Kind::InitDb, db),
                    None => owe(Kind::Span, Vec::new()),
                };
                out.push(Event::Request(r));
                self.owed.push_back(owed);
            }
            COM_STMT_PREPARE => {
                let mut r = self.request_of(None, rest);
                r.operation = "PREPARE".into();
                out.push(Event::Request(r));
                self.owed.push_back(owe(Kind::Prepare, rest.to_vec()));
            }
            COM_STMT_EXECUTE => {
                let Some(id) = rest.get(0..4) else {
                    return Err(Step::Bad("short COM_STMT_EXECUTE"));
                };
                let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
                let mut r = match self.statements.get(&id) {
                    Some(q) => self.request_of(None, q),
                    None => self.request_of(Some("EXECUTE"), b""),
                };
                if r.text.is_none() {
                    r.operation = "EXECUTE".into();
                }
                out.push(Event::Request(r));
                self.owed.push_back(owe(Kind::Span, Vec::new()));
            }
            COM_INIT_DB => {
                let db = String::from_utf8_lossy(rest).into_owned();
                let mut r = self.request_of(Some("USE"), b"");
                r.namespace = Some(db.clone());
                out.push(Event::Request(r));
                self.owed.push_back(owe(Kind::InitDb, rest.to_vec()));
            }
            COM_PING => {
                out.push(Event::Request(self.request_of(Some("PING"), b"")));
                self.owed.push_back(owe(Kind::Span, Vec::new()));
            }
            COM_STMT_CLOSE => {
                if let Some(id) = rest.get(0..4) {
                    self.statements
                        .remove(&u32::from_le_bytes([id[0], id[1], id[2], id[3]]));
                }
                // No answer: the next command starts at its own bytes.
                out.push(Event::Boundary);
            }
            COM_QUIT | COM_STMT_SEND_LONG_DATA => out.push(Event::Boundary),
            COM_STMT_RESET | COM_RESET_CONNECTION | COM_SET_OPTION => {
                self.owed.push_back(owe(Kind::Silent, Vec::new()));
            }
            COM_STATISTICS => {
                let mut o = owe(Kind::Silent, Vec::new());
                o.answer = Answer::Text;
                self.owed.push_back(o);
            }
            0x00..=0x1f => return Err(Step::Stop("a command weft does not follow")),
            _ => return Err(Step::Bad("not a command")),
        }
        Ok(())
    }

    fn request(&mut self, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        if view.len() < 4 {
            return Step::Need;
        }
        let len = usize::from(view[0]) | usize::from(view[1]) << 8 | usize::from(view[2]) << 16;
        let seq = view[3];
        let total = 4 + len;
        let want = total.min(4 + MAX_QUERY);
        let taken = if view.len() >= want {
            want
        } else if dark {
            view.len()
        } else {
            return Step::Need;
        };
        let body = &view[4..taken];
        if taken < total && body.len() < 16 {
            // The command's own fields were not captured: framing is lost here
            // rather than the packet judged malformed.
            return Step::Need;
        }
        let continued = std::mem::replace(&mut self.continued[0], len == MAX_PACKET);
        let take = Step::Take {
            consumed: taken,
            skip: (total - taken) as u64,
        };
        if continued {
            return take;
        }
        match self.phase {
            Phase::Start | Phase::Command if seq == 0 => {
                if len == 0 {
                    return Step::Bad("empty command packet");
                }
                self.phase = Phase::Command;
                if let Err(s) = self.command(body, out) {
                    return s;
                }
            }
            Phase::Start | Phase::Command => return Step::Bad("a command has sequence 0"),
            Phase::Handshake => {
                if seq == 1 && !self.login(body) {
                    return Step::Stop("TLS");
                }
                out.push(Event::Boundary);
            }
        }
        take
    }

    fn error(body: &[u8]) -> DbResponse {
        let code = body
            .get(1..3)
            .map(|c| u16::from_le_bytes([c[0], c[1]]).to_string());
        let mut msg = body.get(3..).unwrap_or(b"");
        if msg.first() == Some(&b'#') && msg.len() >= 6 {
            msg = &msg[6..];
        }
        DbResponse {
            status_code: code,
            error: Some(String::from_utf8_lossy(msg).into_owned()),
        }
    }

    /// The status flags of an OK packet (`00`/`FE` header) or an EOF packet.
    fn status_flags(body: &[u8]) -> u16 {
        if body.first() == Some(&0xfe) && body.len() < 9 {
            // EOF: header, warnings (2), status (2).
            return body
                .get(3..5)
                .map(|s| u16::from_le_bytes([s[0], s[1]]))
                .unwrap_or(0);
        }
        let mut at = 1;
        for _ in 0..2 {
            match body.get(at..).and_then(lenenc) {
                Some((_, used)) => at += used,
                None => return 0,
            }
        }
        body.get(at..at + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .unwrap_or(0)
    }

    /// The answer to the oldest command ended.
    fn answered(&mut self, ok: Option<DbResponse>, out: &mut Vec<Event>) {
        let Some(o) = self.owed.pop_front() else {
            return;
        };
        let resp = o.error.or(ok).unwrap_or_default();
        match o.kind {
            Kind::Span => out.push(Event::Response(resp)),
            Kind::InitDb => {
                if resp.error.is_none() {
                    self.database = Some(String::from_utf8_lossy(&o.text).into_owned());
                }
                out.push(Event::Response(resp));
            }
            Kind::Prepare => out.push(Event::Response(resp)),
            Kind::Silent => out.push(Event::Boundary),
        }
    }

    fn response(&mut self, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        if view.len() < 4 {
            return Step::Need;
        }
        let len = usize::from(view[0]) | usize::from(view[1]) << 8 | usize::from(view[2]) << 16;
        let seq = view[3];
        let total = 4 + len;
        let want = total.min(4 + 512);
        let taken = if view.len() >= want {
            want
        } else if dark && view.len() > 4 {
            view.len()
        } else {
            return Step::Need;
        };
        let body = &view[4..taken];
        let take = Step::Take {
            consumed: taken,
            skip: (total - taken) as u64,
        };
        let continued = std::mem::replace(&mut self.continued[1], len == MAX_PACKET);
        if continued {
            return take;
        }
        let Some(&head) = body.first() else {
            return Step::Bad("empty packet");
        };
        match self.phase {
            Phase::Start => {
                if seq == 0 && head == 10 {
                    self.greeting(body);
                    self.phase = Phase::Handshake;
                    out.push(Event::Boundary);
                    return take;
                }
                return Step::Bad("a server speaks first with its greeting");
            }
            Phase::Handshake => {
                match head {
                    0x00 => self.phase = Phase::Command,
                    0xff => return Step::Stop("login refused"),
                    _ => {}
                }
                // Handshake packets start no answer.
                out.push(Event::Boundary);
                return take;
            }
            Phase::Command => {}
        }
        let Some(owed) = self.owed.front() else {
            return Step::Bad("an answer with no command");
        };
        let (answer, kind) = (owed.answer, owed.kind);
        // What this packet does to the oldest command's answer: a new state, or its end
        // (with an error).
        let mut next: Result<Answer, Option<DbResponse>> = Ok(answer);
        match answer {
            Answer::First => match head {
                0x00 if kind == Kind::Prepare => {
                    // OK, statement id (4), columns (2), params (2), filler, warnings.
                    let Some(p) = body.get(1..9) else {
                        return Step::Bad("short prepare answer");
                    };
                    let id = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                    let columns = u64::from(u16::from_le_bytes([p[4], p[5]]));
                    let params = u64::from(u16::from_le_bytes([p[6], p[7]]));
                    if self.statements.len() >= MAX_STATEMENTS {
                        self.statements.clear();
                    }
                    let mut text = owed.text.clone();
                    text.truncate(MAX_REMEMBERED);
                    self.statements.insert(id, text);
                    next = if params == 0 && columns == 0 {
                        Err(None)
                    } else {
                        Ok(Answer::PrepareDefs { params, columns })
                    };
                }
                0x00 => {
                    if Self::status_flags(body) & SERVER_MORE_RESULTS_EXISTS == 0 {
                        next = Err(None);
                    }
                }
                // The server stops at the first error, even in a multi-statement query.
                0xff => next = Err(Some(Self::error(body))),
                0xfb => return Step::Stop("LOCAL INFILE"),
                _ if kind == Kind::Silent => next = Err(None),
                _ => match lenenc(body) {
                    Some((n, _)) if n > 0 => next = Ok(Answer::Columns(n)),
                    _ => return Step::Bad("bad column count"),
                },
            },
            Answer::Columns(n) => {
                next = Ok(if n > 1 {
                    Answer::Columns(n - 1)
                } else {
                    Answer::ColumnsDone
                });
            }
            Answer::ColumnsDone | Answer::Rows => {
                let eof = head == 0xfe && len < 9;
                let end = head == 0xfe && len < MAX_PACKET;
                if answer == Answer::ColumnsDone && eof && self.eof_expected() {
                    next = Ok(Answer::Rows);
                } else if end {
                    // The closing EOF, or with CLIENT_DEPRECATE_EOF the OK packet
                    // (header FE) that ends the rows, even when there are none.
                    if Self::status_flags(body) & SERVER_MORE_RESULTS_EXISTS != 0 {
                        next = Ok(Answer::First);
                    } else {
                        next = Err(None);
                    }
                } else if head == 0xff {
                    next = Err(Some(Self::error(body)));
                } else {
                    next = Ok(Answer::Rows);
                }
            }
            Answer::PrepareDefs { params, columns } => {
                let eof = head == 0xfe && len < 9;
                let (params, columns) = if eof {
                    (params, columns)
                } else if params > 0 {
                    (params - 1, columns)
                } else {
                    (0, columns.saturating_sub(1))
                };
                // Without CLIENT_DEPRECATE_EOF an EOF closes each list: after the last
                // definition its EOF still follows.
                next = if params == 0 && columns == 0 && (eof || !self.eof_expected()) {
                    Err(None)
                } else {
                    Ok(Answer::PrepareDefs { params, columns })
                };
            }
            Answer::Text => next = Err(None),
        }
        match next {
            Ok(a) => {
                if let Some(o) = self.owed.front_mut() {
                    o.answer = a;
                }
            }
            Err(e) => {
                if let Some(o) = self.owed.front_mut() {
                    o.error = e;
                }
                self.answered(None, out);
            }
        }
        take
    }

    /// Whether EOF packets close column lists (CLIENT_DEPRECATE_EOF not agreed).
    fn eof_expected(&self) -> bool {
        const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
        self.capabilities & CLIENT_DEPRECATE_EOF == 0
    }
}

impl DbParser for Mysql {
    fn parse(&mut self, side: Side, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        match side {
            Side::Request => self.request(view, dark, out),
            Side::Response => self.response(view, dark, out),
        }
    }

    fn reset(&mut self) {
        self.owed.clear();
        self.continued = [false; 2];
        if self.phase == Phase::Start {
            self.phase = Phase::Command;
        }
    }

    fn system(&self) -> &'static str {
        if self.mariadb {
            "mariadb"
        } else {
            "mysql"
        }
    }
}
