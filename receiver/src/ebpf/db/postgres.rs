//! PostgreSQL's wire protocol (version 3). The startup message (and an SSL or GSS
//! request the server refuses) is read for the database name and makes no span; a
//! connection the server switches to TLS is not followed. A simple query (`Q`) is one
//! span, answered at ReadyForQuery; in the extended protocol each Execute is one span
//! with the text of the statement its portal was bound to (Parse/Bind remembered per
//! connection), answered at CommandComplete, ErrorResponse or PortalSuspended; Executes
//! the server skips after an error in the same Sync batch make no span. COPY data
//! (`d`/`c`/`f`) is passed over as such.

use std::collections::{HashMap, VecDeque};

use super::sanitize::{self, Dialect};
use super::{DbParser, DbRequest, DbResponse, Event, Side, Step, TextPolicy};

/// Statements and portals remembered per connection.
const MAX_NAMES: usize = 256;
/// Bytes of a remembered statement's text.
const MAX_REMEMBERED: usize = 4096;
/// Bytes of a query read (the rest of a longer one is skipped).
const MAX_QUERY: usize = 16 * 1024;
/// Bytes of an ErrorResponse read.
const MAX_ERROR: usize = 2048;
/// Longest message accepted (the server's own limit for most is 1 GiB).
const MAX_MESSAGE: u32 = 1 << 30;

const PROTOCOL_3: u32 = 0x0003_0000;
const SSL_REQUEST: u32 = 80877103;
const GSS_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;

fn be32(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}

/// A startup message, or an SSL or GSS encryption request.
pub fn looks_like_startup(p: &[u8]) -> bool {
    if p.len() < 8 {
        return false;
    }
    let len = be32(p);
    let code = be32(&p[4..]);
    (code == PROTOCOL_3 && (9..=10_000).contains(&len))
        || ((code == SSL_REQUEST || code == GSS_REQUEST) && len == 8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// A simple query: answered at ReadyForQuery.
    Simple,
    /// An Execute: answered at CommandComplete / ErrorResponse / PortalSuspended.
    Execute,
    /// A Sync: its ReadyForQuery ends a batch.
    Sync,
}

#[derive(Debug)]
pub struct Postgres {
    text: TextPolicy,
    /// The first client message has not been seen (it may be a startup message).
    first: bool,
    /// An SSL/GSS request waits for its one-byte answer.
    encryption_asked: bool,
    database: Option<String>,
    statements: HashMap<Vec<u8>, Vec<u8>>,
    portals: HashMap<Vec<u8>, Vec<u8>>,
    owed: VecDeque<Owed>,
    /// The answer a simple query has so far (its first error wins).
    simple: DbResponse,
    /// An error in the current batch: later Executes are skipped by the server.
    batch_failed: bool,
}

impl Postgres {
    pub fn new(text: TextPolicy) -> Postgres {
        Postgres {
            text,
            first: true,
            encryption_asked: false,
            database: None,
            statements: HashMap::new(),
            portals: HashMap::new(),
            owed: VecDeque::new(),
            simple: DbResponse::default(),
            batch_failed: false,
        }
    }

    fn request_of(&self, query: &[u8], truncated: bool) -> DbRequest {
        let _ = truncated;
        DbRequest {
            operation: sanitize::sql_operation(query).unwrap_or_else(|| "postgresql".into()),
            text: Some(sanitize::sql(
                query,
                Dialect::Postgres,
                self.text.sanitize,
                self.text.max_length,
            )),
            namespace: self.database.clone(),
            traceparent: sanitize::sqlcommenter_traceparent(query),
            replies: 1,
        }
    }

    fn remember(map: &mut HashMap<Vec<u8>, Vec<u8>>, k: &[u8], v: Vec<u8>) {
        if map.len() >= MAX_NAMES && !map.contains_key(k) {
            // Unnamed entries are replaced all the time; named ones leak when a client
            // never closes them: start over rather than grow.
            map.clear();
        }
        let mut v = v;
        v.truncate(MAX_REMEMBERED);
        map.insert(k.to_vec(), v);
    }

    fn startup(&mut self, body: &[u8]) {
        // key\0value\0 ... \0
        let mut parts = body.split(|b| *b == 0);
        let mut user = None;
        let mut database = None;
        while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
            if k.is_empty() {
                break;
            }
            match k {
                b"user" => user = Some(String::from_utf8_lossy(v).into_owned()),
                b"database" => database = Some(String::from_utf8_lossy(v).into_owned()),
                _ => {}
            }
        }
        self.database = database.or(user);
    }

    fn request(&mut self, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        if self.first {
            if view.len() < 8 {
                return Step::Need;
            }
            let len = be32(view);
            let code = be32(&view[4..]);
            if code == PROTOCOL_3
                || code == SSL_REQUEST
                || code == GSS_REQUEST
                || code == CANCEL_REQUEST
            {
                if !(8..=10_000).contains(&len) {
                    return Step::Bad("bad startup length");
                }
                let len = len as usize;
                if view.len() < len {
                    return if dark {
                        Step::Bad("startup message not captured")
                    } else {
                        Step::Need
                    };
                }
                match code {
                    PROTOCOL_3 => {
                        self.first = false;
                        self.startup(&view[8..len]);
                    }
                    CANCEL_REQUEST => return Step::Stop("cancel request"),
                    _ => self.encryption_asked = true,
                }
                out.push(Event::Boundary);
                return Step::Take {
                    consumed: len,
                    skip: 0,
                };
            }
            self.first = false;
        }
        if view.len() < 5 {
            return Step::Need;
        }
        let t = view[0];
        let len = be32(&view[1..]);
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Step::Bad("bad message length");
        }
        let total = 1 + len as usize;
        let want = match t {
            b'Q' | b'P' | b'B' | b'E' | b'C' => total.min(5 + MAX_QUERY),
            b'S' | b'H' | b'X' | b'D' | b'd' | b'c' | b'f' | b'F' | b'p' => 5,
            _ => return Step::Bad("not a frontend message type"),
        };
        let taken = if view.len() >= want {
            want
        } else if dark {
            view.len()
        } else {
            return Step::Need;
        };
        let truncated = taken < total;
        let body = &view[5..taken];
        let cstr = |p: &[u8]| -> (Vec<u8>, usize) {
            let n = p.iter().position(|b| *b == 0).unwrap_or(p.len());
            (p[..n].to_vec(), (n + 1).min(p.len()))
        };
        match t {
            b'Q' => {
                let (q, _) = cstr(body);
                self.owed.push_back(Owed::Simple);
                out.push(Event::Request(self.request_of(&q, truncated)));
            }
            b'P' => {
                let (name, n) = cstr(body);
                let (q, _) = cstr(&body[n..]);
                Self::remember(&mut self.statements, &name, q);
            }
            b'B' => {
                let (portal, n) = cstr(body);
                let (stmt, _) = cstr(&body[n..]);
                let q = self.statements.get(&stmt).cloned().unwrap_or_default();
                Self::remember(&mut self.portals, &portal, q);
            }
            b'C' => {
                // Close: 'S' statement or 'P' portal.
                if let Some((&kind, rest)) = body.split_first() {
                    let (name, _) = cstr(rest);
                    if kind == b'S' {
                        self.statements.remove(&name);
                    } else {
                        self.portals.remove(&name);
                    }
                }
            }
            b'E' => {
                let (portal, _) = cstr(body);
                let q = self.portals.get(&portal).cloned().unwrap_or_default();
                self.owed.push_back(Owed::Execute);
                let mut r = self.request_of(&q, truncated);
                if q.is_empty() {
                    r.operation = "EXECUTE".into();
                    r.text = None;
                }
                out.push(Event::Request(r));
            }
            b'S' => {
                self.owed.push_back(Owed::Sync);
                // What follows a Sync is a new batch.
                out.push(Event::Boundary);
            }
            b'H' | b'p' => out.push(Event::Boundary),
            b'F' => {
                self.owed.push_back(Owed::Simple);
                out.push(Event::Request(DbRequest {
                    operation: "FUNCTION CALL".into(),
                    text: None,
                    namespace: self.database.clone(),
                    traceparent: None,
                    replies: 1,
                }));
            }
            _ => {}
        }
        Step::Take {
            consumed: taken,
            skip: (total - taken) as u64,
        }
    }

    fn error_fields(body: &[u8]) -> DbResponse {
        let mut code = None;
        let mut message = None;
        for field in body.split(|b| *b == 0) {
            match field.split_first() {
                Some((b'C', v)) => code = Some(String::from_utf8_lossy(v).into_owned()),
                Some((b'M', v)) => message = Some(String::from_utf8_lossy(v).into_owned()),
                _ => {}
            }
        }
        DbResponse {
            status_code: code,
            error: Some(message.unwrap_or_else(|| "error".into())),
        }
    }

    fn response(&mut self, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        if self.encryption_asked {
            self.encryption_asked = false;
            return match view[0] {
                b'N' => Step::Take {
                    consumed: 1,
                    skip: 0,
                },
                b'S' | b'G' => Step::Stop("encrypted connection"),
                // An error to an old server's unknown request: a regular message.
                b'E' => return self.response(view, dark, out),
                _ => Step::Bad("bad answer to an encryption request"),
            };
        }
        if view.len() < 5 {
            return Step::Need;
        }
        let t = view[0];
        let len = be32(&view[1..]);
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Step::Bad("bad message length");
        }
        let total = 1 + len as usize;
        let want = match t {
            b'E' | b'N' => total.min(5 + MAX_ERROR),
            b'C' => total.min(5 + 64),
            b'Z' => total.min(6),
            b'R' | b'S' | b'K' | b'T' | b'D' | b'I' | b'1' | b'2' | b'3' | b'n' | b't' | b's'
            | b'G' | b'H' | b'W' | b'd' | b'c' | b'A' | b'V' | b'v' => 5,
            _ => return Step::Bad("not a backend message type"),
        };
        let taken = if view.len() >= want {
            want
        } else if dark {
            view.len()
        } else {
            return Step::Need;
        };
        let body = &view[5..taken];
        match t {
            b'C' | b'I' | b's' => match self.owed.front() {
                Some(Owed::Execute) => {
                    self.owed.pop_front();
                    out.push(Event::Response(DbResponse::default()));
                }
                Some(Owed::Simple) | Some(Owed::Sync) | None => {}
            },
            b'E' => {
                let r = Self::error_fields(body);
                match self.owed.front() {
                    Some(Owed::Execute) => {
                        self.owed.pop_front();
                        self.batch_failed = true;
                        out.push(Event::Response(r));
                    }
                    Some(Owed::Simple) => {
                        if self.simple.error.is_none() {
                            self.simple = r;
                        }
                    }
                    Some(Owed::Sync) | None => self.batch_failed = true,
                }
            }
            b'Z' => match self.owed.front() {
                Some(Owed::Simple) => {
                    self.owed.pop_front();
                    out.push(Event::Response(std::mem::take(&mut self.simple)));
                }
                Some(_) => {
                    while let Some(o) = self.owed.pop_front() {
                        match o {
                            Owed::Execute => out.push(Event::Abandon),
                            Owed::Sync => break,
                            Owed::Simple => {
                                self.owed.push_front(Owed::Simple);
                                break;
                            }
                        }
                    }
                    self.batch_failed = false;
                    out.push(Event::Boundary);
                }
                None => out.push(Event::Boundary),
            },
            b'G' if self.owed.front() == Some(&Owed::Execute) => {
                // COPY FROM STDIN through Execute: the server ignores the Sync the
                // client sent before the copy data; only the one after CopyDone is
                // answered.
                if let Some(i) = self.owed.iter().position(|o| *o == Owed::Sync) {
                    self.owed.remove(i);
                }
            }
            b'S' | b'A' | b'N' | b'K' | b'R' if self.owed.is_empty() => {
                // Status reports, notices and notifications between queries.
                out.push(Event::Boundary);
            }
            _ => {}
        }
        Step::Take {
            consumed: taken,
            skip: (total - taken) as u64,
        }
    }
}

impl DbParser for Postgres {
    fn parse(&mut self, side: Side, view: &[u8], dark: bool, out: &mut Vec<Event>) -> Step {
        match side {
            Side::Request => self.request(view, dark, out),
            Side::Response => self.response(view, dark, out),
        }
    }

    fn reset(&mut self) {
        self.owed.clear();
        self.simple = DbResponse::default();
        self.batch_failed = false;
        self.encryption_asked = false;
        self.first = false;
    }

    fn system(&self) -> &'static str {
        "postgresql"
    }
}
