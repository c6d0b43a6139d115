//! The DB framer and parsers on synthetic byte streams: exact exchanges, the same
//! exchanges however the bytes are cut into syscalls, skipping over uncaptured bytes,
//! resynchronising after lost framing, and garbage refused.

use super::*;

/// One syscall: its side, captured bytes and uncaptured bytes after them.
struct Rec {
    side: Side,
    bytes: Vec<u8>,
    dark: usize,
}

fn rq(bytes: impl AsRef<[u8]>) -> Rec {
    Rec {
        side: Side::Request,
        bytes: bytes.as_ref().to_vec(),
        dark: 0,
    }
}

fn rs(bytes: impl AsRef<[u8]>) -> Rec {
    Rec {
        side: Side::Response,
        bytes: bytes.as_ref().to_vec(),
        dark: 0,
    }
}

fn dark(mut r: Rec, n: usize) -> Rec {
    r.dark = n;
    r
}

/// Feeds the records (syscall `i` at time `i * 1000`, sequence numbers counted per
/// side) and closes the connection.
fn run(protocol: DbProtocol, recs: &[Rec]) -> (Vec<DbExchange>, DbStats) {
    run_split(protocol, recs, None)
}

/// As `run`, with record `split.0` cut into two syscalls at byte `split.1` (same time).
fn run_split(
    protocol: DbProtocol,
    recs: &[Rec],
    split: Option<(usize, usize)>,
) -> (Vec<DbExchange>, DbStats) {
    let mut c = DbConnection::new(protocol, TextPolicy::default());
    let mut out = Vec::new();
    let mut seq = [1000u32, 5000u32];
    for (i, r) in recs.iter().enumerate() {
        let ts = i as u64 * 1000;
        let pieces: Vec<(&[u8], usize)> = match split {
            Some((j, at)) if j == i && at > 0 && at < r.bytes.len() => {
                vec![(&r.bytes[..at], 0), (&r.bytes[at..], r.dark)]
            }
            _ => vec![(&r.bytes[..], r.dark)],
        };
        for (p, d) in pieces {
            let s = &mut seq[r.side.index()];
            let chunk = Chunk {
                captured: p,
                total_len: p.len() + d,
                ts_ns: ts,
                tcp_seq: Some(*s),
                seq_linear: true,
                tag: Tag::default(),
            };
            *s = s.wrapping_add((p.len() + d) as u32);
            c.feed(r.side, &chunk, &mut out);
        }
    }
    c.close(&mut out);
    (out, c.stats().clone())
}

/// Cutting any fully captured record anywhere changes nothing.
fn assert_split_invariant(protocol: DbProtocol, recs: &[Rec]) {
    let (whole, stats) = run(protocol, recs);
    for (i, r) in recs.iter().enumerate() {
        if r.dark > 0 {
            continue;
        }
        for at in 1..r.bytes.len() {
            let (cut, cut_stats) = run_split(protocol, recs, Some((i, at)));
            assert_eq!(cut, whole, "record {i} cut at {at}");
            assert_eq!(cut_stats, stats, "record {i} cut at {at}");
        }
    }
}

/// What a test checks of an exchange: operation, text, namespace, status code,
/// error?, answered, truncated, request (time, seq), response (time, seq).
type Seen = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    bool,
    bool,
    (u64, Option<u32>),
    Option<(u64, Option<u32>)>,
);

fn seen(x: &[DbExchange]) -> Vec<Seen> {
    x.iter()
        .map(|e| {
            (
                e.request.operation.clone(),
                e.request.text.clone(),
                e.request.namespace.clone(),
                e.response.status_code.clone(),
                e.response.error.is_some(),
                e.answered,
                e.truncated,
                (e.req.ts_ns, e.req.tcp_seq),
                e.resp.map(|m| (m.ts_ns, m.tcp_seq)),
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn want(
    op: &str,
    text: Option<&str>,
    ns: Option<&str>,
    code: Option<&str>,
    error: bool,
    answered: bool,
    truncated: bool,
    req: (u64, u32),
    resp: Option<(u64, u32)>,
) -> Seen {
    (
        op.into(),
        text.map(Into::into),
        ns.map(Into::into),
        code.map(Into::into),
        error,
        answered,
        truncated,
        (req.0, Some(req.1)),
        resp.map(|(t, s)| (t, Some(s))),
    )
}

// --- Redis -----------------------------------------------------------------------

fn resp_cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    v
}

#[test]
fn redis_pipeline_pairs_in_order_with_errors_and_exact_marks() {
    let set = resp_cmd(&["SET", "user:1", "alice"]);
    let get = resp_cmd(&["GET", "user:1"]);
    let lpush = resp_cmd(&["LPUSH", "user:1", "x"]);
    let mut req = set.clone();
    req.extend(&get);
    req.extend(&lpush);
    let ok = b"+OK\r\n".to_vec();
    let val = b"$5\r\nalice\r\n".to_vec();
    let err = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    let mut resp = ok.clone();
    resp.extend(&val);
    resp.extend(err);
    let recs = [rq(&req), rs(&resp)];
    let (x, stats) = run(DbProtocol::Redis, &recs);
    let (s1, s2) = (
        1000 + set.len() as u32,
        1000 + (set.len() + get.len()) as u32,
    );
    let (r1, r2) = (5000 + ok.len() as u32, 5000 + (ok.len() + val.len()) as u32);
    assert_eq!(
        seen(&x),
        vec![
            want(
                "SET",
                Some("SET user:1 ?"),
                Some("0"),
                None,
                false,
                true,
                false,
                (0, 1000),
                Some((1000, 5000))
            ),
            want(
                "GET",
                Some("GET user:1"),
                Some("0"),
                None,
                false,
                true,
                false,
                (0, s1),
                Some((1000, r1))
            ),
            want(
                "LPUSH",
                Some("LPUSH user:1 ?"),
                Some("0"),
                Some("WRONGTYPE"),
                true,
                true,
                false,
                (0, s2),
                Some((1000, r2))
            ),
        ]
    );
    assert_eq!(x[2].system, "redis");
    assert_eq!(stats.exchanges, 3);
    assert_eq!(stats.unmatched_requests + stats.unmatched_responses, 0);
    assert_split_invariant(DbProtocol::Redis, &recs);
}

#[test]
fn redis_select_sets_the_namespace_and_auth_is_masked() {
    let recs = [
        rq(resp_cmd(&["AUTH", "admin", "s3cret"])),
        rs(b"+OK\r\n"),
        rq(resp_cmd(&["SELECT", "3"])),
        rs(b"+OK\r\n"),
        rq(resp_cmd(&["GET", "k"])),
        rs(b"$-1\r\n"),
    ];
    let (x, _) = run(DbProtocol::Redis, &recs);
    let texts: Vec<_> = x
        .iter()
        .map(|e| (e.request.text.clone(), e.request.namespace.clone()))
        .collect();
    assert!(!format!("{x:?}").contains("s3cret"));
    assert_eq!(texts[2], (Some("GET k".into()), Some("3".into())));
    assert_eq!(x.len(), 3);
}

/// Found by fuzzing: an empty command name made a span with an empty name.
#[test]
fn redis_empty_command_is_named_unknown() {
    let recs = [rq(b"*1\r\n$0\r\n\r\n"), rs(b"-ERR unknown command ''\r\n")];
    let (x, _) = run(DbProtocol::Redis, &recs);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].request.operation, "UNKNOWN");
    assert!(x[0].response.error.is_some());
}

#[test]
fn redis_value_in_uncaptured_bytes_is_skipped_by_count() {
    // A 100000-byte value: 64 bytes of it captured, the rest dark; the next exchange
    // is read normally.
    let mut big = b"$100000\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'v', 64));
    let recs = [
        rq(resp_cmd(&["GET", "big"])),
        dark(rs(&big), 100_000 + 2 - 64),
        rq(resp_cmd(&["GET", "k"])),
        rs(b"$1\r\nv\r\n"),
    ];
    let (x, stats) = run(DbProtocol::Redis, &recs);
    let next_req = 1000 + resp_cmd(&["GET", "big"]).len() as u32;
    let next_resp = 5000 + 9 + 100_002;
    assert_eq!(
        seen(&x),
        vec![
            want(
                "GET",
                Some("GET big"),
                Some("0"),
                None,
                false,
                true,
                true,
                (0, 1000),
                Some((1000, 5000))
            ),
            want(
                "GET",
                Some("GET k"),
                Some("0"),
                None,
                false,
                true,
                false,
                (2000, next_req),
                Some((3000, next_resp))
            ),
        ]
    );
    assert_eq!(stats.framing_lost, 0);
}

#[test]
fn redis_lost_framing_completes_the_one_waiting_request_and_resyncs() {
    // An array reply whose second element's header fell in uncaptured bytes: framing
    // is lost; the client's next request completes LRANGE (truncated, unanswered) and
    // both sides start afresh.
    let mut arr = b"*2\r\n$10\r\n0123456789\r\n$70000\r\n".to_vec();
    arr.truncate(24);
    let recs = [
        rq(resp_cmd(&["LRANGE", "l", "0", "-1"])),
        dark(rs(&arr), 70_000 + 20),
        rq(resp_cmd(&["PING"])),
        rs(b"+PONG\r\n"),
    ];
    let (x, stats) = run(DbProtocol::Redis, &recs);
    let ping_seq = 1000 + resp_cmd(&["LRANGE", "l", "0", "-1"]).len() as u32;
    let pong_seq = 5000 + 24 + 70_020;
    assert_eq!(
        seen(&x),
        vec![
            want(
                "LRANGE",
                Some("LRANGE l ? ?"),
                Some("0"),
                None,
                false,
                false,
                true,
                (0, 1000),
                Some((1000, 5000))
            ),
            want(
                "PING",
                Some("PING"),
                Some("0"),
                None,
                false,
                true,
                false,
                (2000, ping_seq),
                Some((3000, pong_seq))
            ),
        ]
    );
    assert_eq!(stats.framing_lost, 1);
    assert_eq!(stats.unmatched_requests, 0);
}

#[test]
fn redis_pubsub_pushes_answer_nothing() {
    let push = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n";
    let recs = [
        rq(resp_cmd(&["SUBSCRIBE", "news", "sports"])),
        rs(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$6\r\nsports\r\n:2\r\n"),
        rs(push),
        rs(push),
        rq(resp_cmd(&["UNSUBSCRIBE", "news"])),
        rs(b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n"),
    ];
    let (x, stats) = run(DbProtocol::Redis, &recs);
    let ops: Vec<_> = x
        .iter()
        .map(|e| {
            (
                e.request.operation.as_str(),
                e.answered,
                e.resp.map(|m| m.ts_ns),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("SUBSCRIBE", true, Some(1000)),
            ("UNSUBSCRIBE", true, Some(5000))
        ]
    );
    assert_eq!(stats.unmatched_responses, 0);
    assert_split_invariant(DbProtocol::Redis, &recs);
}

#[test]
fn redis_refuses_garbage_and_http() {
    for bytes in [
        &b"\x00\x01\x02binary"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"*1\r\n:12\r\n",
    ] {
        let (x, stats) = run(DbProtocol::Redis, &[rq(bytes), rs(b"-ERR\r\n")]);
        assert!(x.is_empty(), "{bytes:?}: {x:?}");
        assert_eq!(stats.protocol_errors, 1, "{bytes:?}");
    }
}

// --- memcached -------------------------------------------------------------------

#[test]
fn memcached_values_stores_noreply_and_errors() {
    let recs = [
        rq(b"set a 0 0 1\r\n1\r\n"),
        rs(b"STORED\r\n"),
        rq(b"get a missing\r\n"),
        rs(b"VALUE a 0 1\r\n1\r\nEND\r\n"),
        rq(b"set q 0 0 1 noreply\r\n1\r\nget q\r\n"),
        rs(b"VALUE q 0 1\r\n1\r\nEND\r\n"),
        rq(b"incr a x\r\n"),
        rs(b"CLIENT_ERROR invalid numeric delta argument\r\n"),
        rq(b"delete a\r\n"),
        rs(b"NOT_FOUND\r\n"),
    ];
    let (x, stats) = run(DbProtocol::Memcached, &recs);
    let q_get = 1000 + 16 + 15 + 24;
    assert_eq!(
        seen(&x),
        vec![
            want(
                "set",
                Some("set a 0 0 1"),
                None,
                None,
                false,
                true,
                false,
                (0, 1000),
                Some((1000, 5000))
            ),
            want(
                "get",
                Some("get a missing"),
                None,
                None,
                false,
                true,
                false,
                (2000, 1016),
                Some((3000, 5008))
            ),
            want(
                "set",
                Some("set q 0 0 1 noreply"),
                None,
                None,
                false,
                false,
                false,
                (4000, 1031),
                None
            ),
            want(
                "get",
                Some("get q"),
                None,
                None,
                false,
                true,
                false,
                (4000, q_get),
                Some((5000, 5029))
            ),
            want(
                "incr",
                Some("incr a x"),
                None,
                Some("CLIENT_ERROR"),
                true,
                true,
                false,
                (6000, q_get + 7),
                Some((7000, 5050))
            ),
            want(
                "delete",
                Some("delete a"),
                None,
                None,
                false,
                true,
                false,
                (8000, q_get + 17),
                Some((9000, 5095))
            ),
        ]
    );
    assert_eq!(stats.protocol_errors, 0);
    assert_split_invariant(DbProtocol::Memcached, &recs);
}

// --- PostgreSQL ------------------------------------------------------------------

fn pg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn pg_startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 0x0003_0000u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut v = (body.len() as u32 + 4).to_be_bytes().to_vec();
    v.extend(body);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn pg_extended(stmt: &str, query: &str) -> Vec<u8> {
    let mut parse = stmt.as_bytes().to_vec();
    parse.push(0);
    parse.extend_from_slice(query.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut bind = vec![0];
    bind.extend_from_slice(stmt.as_bytes());
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    cat(&[
        pg(b'P', &parse),
        pg(b'B', &bind),
        pg(b'D', b"P\0"),
        pg(b'E', &[0, 0, 0, 0, 0]),
    ])
}

fn pg_error(code: &str, msg: &str) -> Vec<u8> {
    pg(b'E', format!("SERROR\0C{code}\0M{msg}\0\0").as_bytes())
}

#[test]
fn postgres_simple_extended_and_a_failed_batch() {
    let ready = pg(b'Z', b"I");
    let sync = pg(b'S', b"");
    let extended = cat(&[pg_extended("", "SELECT $1::int + 1"), sync.clone()]);
    let batch = cat(&[
        pg_extended("", "INSERT INTO t VALUES ($1)"),
        pg_extended("", "SELECT 2"),
        sync.clone(),
    ]);
    let recs = [
        rq(pg_startup(&[("user", "app"), ("database", "shop")])),
        rs(cat(&[
            pg(b'R', &[0, 0, 0, 0]),
            pg(b'S', b"server_version\x0015.8\x00"),
            pg(b'K', &[0; 8]),
            ready.clone(),
        ])),
        rq(pg(b'Q', b"SELECT 'a' -- note\0")),
        rs(cat(&[
            pg(b'T', &[0, 0]),
            pg(b'D', &[0, 0]),
            pg(b'C', b"SELECT 1\0"),
            ready.clone(),
        ])),
        rq(&extended),
        rs(cat(&[
            pg(b'1', b""),
            pg(b'2', b""),
            pg(b'T', &[0, 0]),
            pg(b'D', &[0, 0]),
            pg(b'C', b"SELECT 1\0"),
            ready.clone(),
        ])),
        rq(&batch),
        rs(cat(&[
            pg(b'1', b""),
            pg(b'2', b""),
            pg_error("23505", "duplicate key"),
            ready.clone(),
        ])),
    ];
    let (x, stats) = run(DbProtocol::Postgresql, &recs);
    let startup_len = pg_startup(&[("user", "app"), ("database", "shop")]).len() as u32;
    let q_len = pg(b'Q', b"SELECT 'a' -- note\0").len() as u32;
    let ext_at = 1000 + startup_len + q_len;
    let batch_at = ext_at + extended.len() as u32;
    let hello = 9 + 25 + 13 + 6;
    let simple_resp = 7 + 7 + 14 + 6;
    let ext_resp = 5000 + hello + simple_resp;
    let batch_resp = ext_resp + 5 + 5 + 7 + 7 + 14 + 6;
    assert_eq!(
        seen(&x),
        vec![
            want(
                "SELECT",
                Some("SELECT ?"),
                Some("shop"),
                None,
                false,
                true,
                false,
                (2000, 1000 + startup_len),
                Some((3000, 5000 + hello))
            ),
            // The request starts at its Parse, the response at ParseComplete.
            want(
                "SELECT",
                Some("SELECT $1::int + ?"),
                Some("shop"),
                None,
                false,
                true,
                false,
                (4000, ext_at),
                Some((5000, ext_resp))
            ),
            want(
                "INSERT",
                Some("INSERT INTO t VALUES ($1)"),
                Some("shop"),
                Some("23505"),
                true,
                true,
                false,
                (6000, batch_at),
                Some((7000, batch_resp))
            ),
        ]
    );
    // The SELECT after the failed INSERT was skipped by the server: no span.
    assert_eq!(stats.unmatched_requests, 1);
    assert_eq!(stats.protocol_errors, 0);
    assert_split_invariant(DbProtocol::Postgresql, &recs);
}

#[test]
fn postgres_request_after_a_sync_starts_at_its_own_bytes() {
    // Parse/Bind/Execute, then Sync on its own: the next query's start is its own
    // first message, not the Sync read before the server answered.
    let recs = [
        rq(pg_startup(&[("user", "u")])),
        rs(pg(b'Z', b"I")),
        rq(pg_extended("", "SELECT 1")),
        rq(pg(b'S', b"")),
        rs(cat(&[
            pg(b'1', b""),
            pg(b'2', b""),
            pg(b'C', b"SELECT 1\0"),
            pg(b'Z', b"I"),
        ])),
        rq(pg(b'Q', b"SELECT 2\0")),
        rs(cat(&[pg(b'C', b"SELECT 1\0"), pg(b'Z', b"I")])),
    ];
    let (x, _) = run(DbProtocol::Postgresql, &recs);
    let starts: Vec<_> = x
        .iter()
        .map(|e| (e.req.ts_ns, e.request.namespace.clone()))
        .collect();
    assert_eq!(
        starts,
        vec![(2000, Some("u".into())), (5000, Some("u".into()))]
    );
}

#[test]
fn postgres_tls_is_not_followed_and_garbage_is_refused() {
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let (x, stats) = run(
        DbProtocol::Postgresql,
        &[rq(ssl), rs(b"S"), rq([0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5])],
    );
    assert!(x.is_empty());
    assert_eq!((stats.stopped, stats.protocol_errors), (1, 0));
    let (x, stats) = run(DbProtocol::Postgresql, &[rq(b"GET / HTTP/1.1\r\n\r\n")]);
    assert!(x.is_empty());
    assert_eq!(stats.protocol_errors, 1);
}

// --- MySQL / MariaDB -------------------------------------------------------------

fn my(seq: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len();
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(body);
    v
}

fn my_greeting(version: &str) -> Vec<u8> {
    let mut b = vec![10];
    b.extend_from_slice(version.as_bytes());
    b.push(0);
    b.extend_from_slice(&[1, 0, 0, 0]); // thread id
    b.extend_from_slice(b"abcdefgh"); // auth data
    b.push(0);
    b.extend_from_slice(&0x8208u16.to_le_bytes()); // PROTOCOL_41 | SECURE | WITH_DB
    b.push(33);
    b.extend_from_slice(&[2, 0]);
    b.extend_from_slice(&[0, 0]); // capabilities, high half
    b.push(21);
    b.extend_from_slice(&[0; 10]);
    b.extend_from_slice(b"ijklmnopqrst\0");
    b.extend_from_slice(b"mysql_native_password\0");
    my(0, &b)
}

fn my_login(db: &str) -> Vec<u8> {
    let mut b = 0x8208u32.to_le_bytes().to_vec();
    b.extend_from_slice(&(1u32 << 24).to_le_bytes());
    b.push(33);
    b.extend_from_slice(&[0; 23]);
    b.extend_from_slice(b"root\0");
    b.push(0); // no auth data
    b.extend_from_slice(db.as_bytes());
    b.push(0);
    my(1, &b)
}

fn my_query(q: &str) -> Vec<u8> {
    let mut b = vec![0x03];
    b.extend_from_slice(q.as_bytes());
    my(0, &b)
}

const MY_OK: [u8; 7] = [0, 0, 0, 2, 0, 0, 0];
const MY_EOF: [u8; 5] = [0xfe, 0, 0, 2, 0];

#[test]
fn mariadb_login_queries_result_sets_errors_and_use() {
    let result_set = cat(&[
        my(1, &[1]),
        my(2, b"\x03def\x00\x00\x00\x011\x00\x0c\x3f\x00"),
        my(3, &MY_EOF),
        my(4, b"\x011"),
        my(5, &MY_EOF),
    ]);
    let mut err = vec![0xff, 0x7a, 0x04];
    err.extend_from_slice(b"#42S02Table 'shop.missing' doesn't exist");
    let mut init_db = vec![0x02];
    init_db.extend_from_slice(b"shop");
    let recs = [
        rs(my_greeting("5.5.5-10.11.6-MariaDB-0+deb12u1")),
        rq(my_login("mysql")),
        rs(my(2, &MY_OK)),
        rq(my_query("SELECT 1")),
        rs(&result_set),
        rq(my(0, &init_db)),
        rs(my(1, &MY_OK)),
        rq(my_query("SELECT * FROM missing")),
        rs(my(1, &err)),
    ];
    let (x, stats) = run(DbProtocol::Mysql, &recs);
    let q1 = 1000 + my_login("mysql").len() as u32;
    let q2 = q1 + my_query("SELECT 1").len() as u32;
    let q3 = q2 + my(0, &init_db).len() as u32;
    let r1 = 5000 + (my_greeting("5.5.5-10.11.6-MariaDB-0+deb12u1").len() + 11) as u32;
    let r2 = r1 + result_set.len() as u32;
    let r3 = r2 + 11;
    assert_eq!(
        seen(&x),
        vec![
            want(
                "SELECT",
                Some("SELECT ?"),
                Some("mysql"),
                None,
                false,
                true,
                false,
                (3000, q1),
                Some((4000, r1))
            ),
            want(
                "USE",
                None,
                Some("shop"),
                None,
                false,
                true,
                false,
                (5000, q2),
                Some((6000, r2))
            ),
            want(
                "SELECT",
                Some("SELECT * FROM missing"),
                Some("shop"),
                Some("1146"),
                true,
                true,
                false,
                (7000, q3),
                Some((8000, r3))
            ),
        ]
    );
    assert!(x.iter().all(|e| e.system == "mariadb"));
    assert_eq!(stats.protocol_errors, 0);
    assert_split_invariant(DbProtocol::Mysql, &recs);
}

#[test]
fn mysql_prepared_statements_keep_their_text() {
    let mut prepare = vec![0x16];
    prepare.extend_from_slice(b"SELECT ? + 1");
    // OK: id 7, 1 column, 1 parameter; then the parameter and column definitions,
    // each list closed by an EOF.
    let prepared = cat(&[
        my(1, &[0, 7, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]),
        my(2, b"\x03def\x00\x00\x00\x01?\x00"),
        my(3, &MY_EOF),
        my(4, b"\x03def\x00\x00\x00\x01c\x00"),
        my(5, &MY_EOF),
    ]);
    let execute = my(
        0,
        &[
            0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    let rows = cat(&[
        my(1, &[1]),
        my(2, b"\x03def\x00\x00\x00\x01c\x00"),
        my(3, &MY_EOF),
        my(4, &[0, 0, 3, 0, 0, 0, 0, 0, 0, 0]),
        my(5, &MY_EOF),
    ]);
    let close = my(0, &[0x19, 7, 0, 0, 0]);
    let recs = [
        rs(my_greeting("8.0.36")),
        rq(my_login("app")),
        rs(my(2, &MY_OK)),
        rq(my(0, &prepare)),
        rs(&prepared),
        rq(&execute),
        rs(&rows),
        rq(cat(&[close, my_query("SELECT 5")])),
        rs(my(1, &MY_OK)),
    ];
    let (x, stats) = run(DbProtocol::Mysql, &recs);
    let ops: Vec<_> = x
        .iter()
        .map(|e| {
            (
                e.system,
                e.request.operation.as_str(),
                e.request.text.as_deref(),
                e.req.ts_ns,
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("mysql", "PREPARE", Some("SELECT ? + ?"), 3000),
            ("mysql", "SELECT", Some("SELECT ? + ?"), 5000),
            ("mysql", "SELECT", Some("SELECT ?"), 7000),
        ]
    );
    assert_eq!(stats.unmatched_requests + stats.unmatched_responses, 0);
    assert_split_invariant(DbProtocol::Mysql, &recs);
}

#[test]
fn mysql_tls_login_is_not_followed() {
    let mut ssl = 0x8a08u32.to_le_bytes().to_vec();
    ssl.extend_from_slice(&[0; 28]);
    let (x, stats) = run(
        DbProtocol::Mysql,
        &[
            rs(my_greeting("8.0.36")),
            rq(my(1, &ssl)),
            rq([0x16, 3, 1, 0, 1]),
        ],
    );
    assert!(x.is_empty());
    assert_eq!((stats.stopped, stats.protocol_errors), (1, 0));
}

// --- Recognition -----------------------------------------------------------------

#[test]
fn sniffing_knows_strong_signatures_only() {
    assert_eq!(
        DbProtocol::sniff(&resp_cmd(&["PING"])),
        Some((DbProtocol::Redis, true))
    );
    assert_eq!(
        DbProtocol::sniff(&pg_startup(&[("user", "u")])),
        Some((DbProtocol::Postgresql, true))
    );
    assert_eq!(
        DbProtocol::sniff(&my_greeting("10.11.6-MariaDB")),
        Some((DbProtocol::Mysql, false))
    );
    for other in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"get a\r\n",
        b"\x16\x03\x01\x00",
        b"",
    ] {
        assert_eq!(DbProtocol::sniff(other), None, "{other:?}");
    }
}

// --- Answers that are easy to mispair ----------------------------------------------

#[test]
fn mysql_deprecate_eof_empty_result_set_ends_at_its_ok() {
    // CLIENT_DEPRECATE_EOF agreed: no EOF after the column definitions, and an OK
    // packet with header FE ends the rows, here with no row at all.
    let mut greeting = my_greeting("8.0.36");
    let caps_high = greeting.len() - (1 + 10 + 13 + 22 + 2);
    greeting[caps_high..caps_high + 2].copy_from_slice(&0x0100u16.to_le_bytes());
    let mut login = my_login("app");
    login[4..8].copy_from_slice(&(0x8208u32 | 0x0100_0000).to_le_bytes());
    let ok_fe = [0xfe, 0, 0, 2, 0, 0, 0];
    let recs = [
        rs(greeting),
        rq(login),
        rs(my(2, &MY_OK)),
        rq(my_query("SELECT c FROM t WHERE 1 = 0")),
        rs(cat(&[
            my(1, &[1]),
            my(2, b"\x03def\x00\x00\x00\x01c\x00"),
            my(3, &ok_fe),
        ])),
        rq(my_query("SELECT 2")),
        rs(cat(&[
            my(1, &[1]),
            my(2, b"\x03def\x00\x00\x00\x01c\x00"),
            my(3, b"\x012"),
            my(4, &ok_fe),
        ])),
    ];
    let (x, stats) = run(DbProtocol::Mysql, &recs);
    let got: Vec<_> = x
        .iter()
        .map(|e| {
            (
                e.request.text.as_deref(),
                e.req.ts_ns,
                e.resp.map(|m| m.ts_ns),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("SELECT c FROM t WHERE ? = ?"), 3000, Some(4000)),
            (Some("SELECT ?"), 5000, Some(6000)),
        ]
    );
    assert_eq!(stats.unmatched_requests + stats.unmatched_responses, 0);
}

#[test]
fn mysql_use_query_and_unanswered_close_keep_namespace_and_start() {
    let recs = [
        rs(my_greeting("8.0.36")),
        rq(my_login("app")),
        rs(my(2, &MY_OK)),
        rq(my_query("USE `shop`")),
        rs(my(1, &MY_OK)),
        // A statement close gets no answer; the next query comes later, alone.
        rq(my(0, &[0x19, 7, 0, 0, 0])),
        rq(my_query("COMMIT")),
        rs(my(1, &MY_OK)),
    ];
    let (x, _) = run(DbProtocol::Mysql, &recs);
    let got: Vec<_> = x
        .iter()
        .map(|e| {
            (
                e.request.operation.as_str(),
                e.request.namespace.as_deref(),
                e.req.ts_ns,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("USE", Some("app"), 3000), ("COMMIT", Some("shop"), 6000)]
    );
}

#[test]
fn redis_refused_subscribe_and_monitor_leave_pairing_intact() {
    let recs = [
        rq(resp_cmd(&["SUBSCRIBE", "a", "b"])),
        rs(b"-NOPERM User has no permissions to access the 'a' channel\r\n"),
        rq(resp_cmd(&["MONITOR"])),
        rs(b"-NOPERM this user has no permissions to run the 'monitor' command\r\n"),
        rq(resp_cmd(&["GET", "k"])),
        rs(b"$1\r\nv\r\n"),
        rq(resp_cmd(&["ZSCORE", "z", "m"])),
        rs(b",-1.0000000000000001e-05\r\n"),
    ];
    let (x, stats) = run(DbProtocol::Redis, &recs);
    let got: Vec<_> = x
        .iter()
        .map(|e| {
            (
                e.request.operation.as_str(),
                e.response.status_code.as_deref(),
                e.resp.map(|m| m.ts_ns),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("SUBSCRIBE", Some("NOPERM"), Some(1000)),
            ("MONITOR", Some("NOPERM"), Some(3000)),
            ("GET", None, Some(5000)),
            ("ZSCORE", None, Some(7000)),
        ]
    );
    assert_eq!(
        stats.protocol_errors + stats.unmatched_requests + stats.unmatched_responses,
        0
    );
}

#[test]
fn postgres_copy_through_execute_answers_the_later_sync() {
    let ready = pg(b'Z', b"I");
    let recs = [
        rq(pg_startup(&[("user", "u")])),
        rs(ready.clone()),
        rq(cat(&[pg_extended("", "COPY t FROM STDIN"), pg(b'S', b"")])),
        rs(cat(&[pg(b'1', b""), pg(b'2', b""), pg(b'G', &[0, 0, 0])])),
        rq(cat(&[pg(b'd', b"1\n"), pg(b'c', b""), pg(b'S', b"")])),
        rs(cat(&[pg(b'C', b"COPY 1\0"), ready.clone()])),
        rq(pg(b'Q', b"SELECT 1\0")),
        rs(cat(&[pg(b'C', b"SELECT 1\0"), ready.clone()])),
    ];
    let (x, stats) = run(DbProtocol::Postgresql, &recs);
    let got: Vec<_> = x
        .iter()
        .map(|e| {
            (
                e.request.operation.as_str(),
                e.req.ts_ns,
                e.resp.map(|m| m.ts_ns),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("COPY", 2000, Some(3000)), ("SELECT", 6000, Some(7000))]
    );
    assert_eq!(stats.unmatched_requests + stats.unmatched_responses, 0);
}

#[test]
fn too_many_waiting_requests_give_up_framing_instead_of_mispairing() {
    // More pipelined commands than are kept waiting: none of them is paired (the
    // answers could not be told apart), and the next turn is read normally.
    let n = MAX_PENDING + 10;
    let mut req = Vec::new();
    let mut resp = Vec::new();
    for i in 0..n {
        req.extend(resp_cmd(&["GET", &format!("k{i}")]));
        resp.extend(format!("${}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes());
    }
    let recs = [
        rq(&req),
        rs(&resp),
        rq(resp_cmd(&["GET", "after"])),
        rs(b"$1\r\nx\r\n"),
    ];
    let (x, stats) = run(DbProtocol::Redis, &recs);
    let got: Vec<_> = x.iter().map(|e| e.request.text.as_deref()).collect();
    assert_eq!(got, vec![Some("GET after")]);
    assert_eq!(stats.unmatched_requests, MAX_PENDING as u64 + 1);
}
