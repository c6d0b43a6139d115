//! Exact-exchange tests for the HTTP/1.x parser and pairing, including the awkward
//! captures the kernel produces (splits anywhere, truncated payloads, closes mid-message).

use std::sync::Arc;

use proptest::prelude::*;

use super::http1::{Chunk, Method, NonHttpReason, ParserConfig, Tag, MAX_LINE_BYTES};
use super::pairing::{Http1Connection, HttpExchange};

fn conn() -> Http1Connection {
    Http1Connection::new(Arc::new(ParserConfig::default()))
}

fn send_req(c: &mut Http1Connection, bytes: &[u8], ts: u64, seq: u32) -> Vec<HttpExchange> {
    let mut out = Vec::new();
    c.feed_request(&Chunk::full(bytes, ts, seq), &mut out);
    out
}

fn send_resp(c: &mut Http1Connection, bytes: &[u8], ts: u64, seq: u32) -> Vec<HttpExchange> {
    let mut out = Vec::new();
    c.feed_response(&Chunk::full(bytes, ts, seq), &mut out);
    out
}

/// A plain exchange; tests adjust the fields they care about.
fn exchange(method: Method, path: &str, status: u16) -> HttpExchange {
    HttpExchange {
        method,
        path: path.to_string(),
        query: None,
        host: None,
        status,
        request_start_ns: 0,
        request_end_ns: 0,
        response_start_ns: 0,
        response_end_ns: 0,
        req_headers_of_interest: Vec::new(),
        x_request_id: None,
        resp_x_request_id: None,
        req_tcp_seq: Some(0),
        resp_tcp_seq: Some(0),
        req_tag: Tag::default(),
        resp_tag: Tag::default(),
        truncated: false,
        framing_lost: false,
    }
}

fn timed(mut x: HttpExchange, req: (u64, u64, u32), resp: (u64, u64, u32)) -> HttpExchange {
    (x.request_start_ns, x.request_end_ns) = (req.0, req.1);
    x.req_tcp_seq = Some(req.2);
    (x.response_start_ns, x.response_end_ns) = (resp.0, resp.1);
    x.resp_tcp_seq = Some(resp.2);
    x
}

#[test]
fn simple_get_keeps_interesting_headers_and_hides_secrets() {
    let mut c = conn();
    let req = b"GET /users?id=7 HTTP/1.1\r\nHost: svc:8080\r\nX-Request-ID: rid-1\r\n\
        traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
        X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\nUser-Agent: curl/8\r\n\
        Authorization: Bearer s3cret-token\r\nCookie: session=c00kie\r\n\r\n";
    assert!(send_req(&mut c, req, 100, 1000).is_empty());
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: id=setc00kie\r\n\r\nhello";
    let got = send_resp(&mut c, resp, 200, 5000);

    let mut want = timed(
        exchange(Method::Get, "/users", 200),
        (100, 100, 1000),
        (200, 200, 5000),
    );
    want.query = Some("id=7".into());
    want.host = Some("svc:8080".into());
    want.x_request_id = Some("rid-1".into());
    want.req_headers_of_interest = vec![
        (
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ),
        (
            "x-b3-traceid".into(),
            "80f198ee56343ba864fe8b2a57d3eff7".into(),
        ),
    ];
    assert_eq!(got, vec![want]);
    let dump = format!("{got:?}");
    for secret in ["s3cret-token", "c00kie", "setc00kie"] {
        assert!(!dump.contains(secret), "{secret} leaked: {dump}");
    }
    assert_eq!(c.pairing_stats().exchanges, 1);
}

#[test]
fn configured_redaction_wins_over_request_id_list() {
    let config = ParserConfig::new(
        &["X-Correlation-ID", "Authorization"],
        &["X-Correlation-ID"],
    );
    let mut c = Http1Connection::new(Arc::new(config));
    send_req(
        &mut c,
        b"GET / HTTP/1.1\r\nX-Correlation-ID: hidden\r\nAuthorization: Basic eA==\r\n\r\n",
        1,
        0,
    );
    let got = send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        2,
        0,
    );
    assert_eq!(
        got,
        vec![timed(exchange(Method::Get, "/", 200), (1, 1, 0), (2, 2, 0))]
    );
}

#[test]
fn keep_alive_three_requests() {
    let mut c = conn();
    let mut got = Vec::new();
    let mut req_seq = 10u32;
    let mut resp_seq = 90u32;
    for i in 0..3u64 {
        let req = format!("GET /item/{i} HTTP/1.1\r\nHost: a\r\n\r\n");
        let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        got.extend(send_req(&mut c, req.as_bytes(), 100 + i * 10, req_seq));
        got.extend(send_resp(&mut c, resp.as_bytes(), 105 + i * 10, resp_seq));
        req_seq += req.len() as u32;
        resp_seq += resp.len() as u32;
    }
    let want: Vec<HttpExchange> = [(0u64, 10u32, 90u32), (1, 43, 130), (2, 76, 170)]
        .into_iter()
        .map(|(i, rs, ps)| {
            let mut x = timed(
                exchange(Method::Get, &format!("/item/{i}"), 200),
                (100 + i * 10, 100 + i * 10, rs),
                (105 + i * 10, 105 + i * 10, ps),
            );
            x.host = Some("a".into());
            x
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn pipelined_three_requests_in_one_chunk() {
    let mut c = conn();
    let r1 = "GET /a HTTP/1.1\r\n\r\n";
    let r2 = "POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nxy";
    let r3 = "GET /c?q=1 HTTP/1.1\r\n\r\n";
    let reqs = format!("{r1}{r2}{r3}");
    assert!(send_req(&mut c, reqs.as_bytes(), 100, 0).is_empty());
    let p1 = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";
    let p2 = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n";
    let p3 = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let resps = format!("{p1}{p2}{p3}");
    let got = send_resp(&mut c, resps.as_bytes(), 200, 1_000_000);

    let s2 = r1.len() as u32;
    let s3 = s2 + r2.len() as u32;
    let t2 = 1_000_000 + p1.len() as u32;
    let t3 = t2 + p2.len() as u32;
    let mut third = timed(
        exchange(Method::Get, "/c", 404),
        (100, 100, s3),
        (200, 200, t3),
    );
    third.query = Some("q=1".into());
    let want = vec![
        timed(
            exchange(Method::Get, "/a", 200),
            (100, 100, 0),
            (200, 200, 1_000_000),
        ),
        timed(
            exchange(Method::Post, "/b", 201),
            (100, 100, s2),
            (200, 200, t2),
        ),
        third,
    ];
    assert_eq!(got, want);
}

#[test]
fn chunked_response_split_at_awkward_places() {
    let mut c = conn();
    send_req(&mut c, b"GET /stream HTTP/1.1\r\n\r\n", 100, 0);
    let body = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n";
    let b = body.as_bytes();
    // Cut inside the size line "1a", inside the CRLF after the first data, inside the
    // "10" size line's CRLF and inside the last CRLF.
    let size_at = body.find("1a;").unwrap_or_default() + 1;
    let crlf_at = body.find("xyz\r\n").unwrap_or_default() + 4;
    let ten_at = body.find("10\r").unwrap_or_default() + 3;
    let last_at = b.len() - 1;
    let cuts = [0, size_at, crlf_at, ten_at, last_at, b.len()];
    let mut got = Vec::new();
    for (i, w) in cuts.windows(2).enumerate() {
        got.extend(send_resp(
            &mut c,
            &b[w[0]..w[1]],
            200 + i as u64,
            w[0] as u32,
        ));
    }
    assert_eq!(
        got,
        vec![timed(
            exchange(Method::Get, "/stream", 200),
            (100, 100, 0),
            (200, 204, 0)
        )]
    );
    // Framing held: the next exchange on the connection pairs correctly.
    send_req(&mut c, b"GET /next HTTP/1.1\r\n\r\n", 300, 24);
    let next = send_resp(
        &mut c,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        310,
        b.len() as u32,
    );
    assert_eq!(
        next,
        vec![timed(
            exchange(Method::Get, "/next", 204),
            (300, 300, 24),
            (310, 310, b.len() as u32)
        )]
    );
}

#[test]
fn hundred_kb_bodies_with_1024_byte_captures() {
    const CAP: usize = 1024;
    const BODY: usize = 100 * 1024;
    let mut c = conn();
    let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {BODY}\r\n\r\n");
    let mut req = head.into_bytes();
    req.resize(req.len() + BODY, b'x');
    let mut got = Vec::new();
    let feed = |c: &mut Http1Connection,
                bytes: &[u8],
                request: bool,
                ts: u64,
                out: &mut Vec<HttpExchange>| {
        // The sender writes 16 KB at a time; the probe copies the first CAP bytes of each.
        for (i, part) in bytes.chunks(16 * 1024).enumerate() {
            let chunk = Chunk {
                captured: &part[..part.len().min(CAP)],
                total_len: part.len(),
                ts_ns: ts + i as u64,
                tcp_seq: Some((i * 16 * 1024) as u32),
                seq_linear: true,
                tag: Tag::default(),
            };
            if request {
                c.feed_request(&chunk, out);
            } else {
                c.feed_response(&chunk, out);
            }
        }
    };
    feed(&mut c, &req, true, 1000, &mut got);
    let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    resp.resize(resp.len() + BODY, b'y');
    feed(&mut c, &resp, false, 2000, &mut got);
    let req_chunks = req.len().div_ceil(16 * 1024) as u64;
    let resp_chunks = resp.len().div_ceil(16 * 1024) as u64;
    let mut want = timed(
        exchange(Method::Post, "/upload", 200),
        (1000, 1000 + req_chunks - 1, 0),
        (2000, 2000 + resp_chunks - 1, 0),
    );
    want.host = Some("h".into());
    want.truncated = true;
    assert_eq!(got, vec![want]);
    assert_eq!(c.request_stats().truncated, 1);

    // The next keep-alive exchange starts exactly where the counted bodies ended.
    let next = send_req(&mut c, b"GET /after HTTP/1.1\r\n\r\n", 3000, 7);
    assert!(next.is_empty());
    let next = send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        3001,
        9,
    );
    assert_eq!(
        next,
        vec![timed(
            exchange(Method::Get, "/after", 200),
            (3000, 3000, 7),
            (3001, 3001, 9)
        )]
    );
}

#[test]
fn head_not_captured_keeps_pairs_aligned() {
    let mut c = conn();
    // Two pipelined requests in one write; only the first is inside the captured prefix.
    let r1 = b"GET /seen HTTP/1.1\r\n\r\n";
    let mut bytes = r1.to_vec();
    bytes.extend_from_slice(b"GET /unseen HTTP/1.1\r\n\r\n");
    let chunk = Chunk {
        captured: &bytes[..r1.len()],
        total_len: bytes.len(),
        ts_ns: 10,
        tcp_seq: Some(0),
        seq_linear: true,
        tag: Tag::default(),
    };
    let mut got = Vec::new();
    c.feed_request(&chunk, &mut got);
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        20,
        0,
    ));
    got.extend(send_req(&mut c, b"GET /third HTTP/1.1\r\n\r\n", 30, 46));
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        40,
        76,
    ));
    assert_eq!(
        got,
        vec![
            timed(
                exchange(Method::Get, "/seen", 200),
                (10, 10, 0),
                (20, 20, 0)
            ),
            timed(
                exchange(Method::Get, "/third", 202),
                (30, 30, 46),
                (40, 40, 76)
            ),
        ]
    );
    assert_eq!(c.request_stats().head_not_captured, 1);
    assert_eq!(c.pairing_stats().dropped_pairs, 1);
}

#[test]
fn continue_100_then_final_response() {
    let mut c = conn();
    let head = b"POST /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
    assert!(send_req(&mut c, head, 100, 500).is_empty());
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    assert!(send_resp(&mut c, interim, 110, 7000).is_empty());
    assert!(send_req(&mut c, b"data", 120, 500 + head.len() as u32).is_empty());
    let got = send_resp(
        &mut c,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        130,
        7000 + interim.len() as u32,
    );
    assert_eq!(
        got,
        vec![timed(
            exchange(Method::Post, "/up", 201),
            (100, 120, 500),
            (110, 130, 7000)
        )]
    );
}

#[test]
fn head_response_has_no_body() {
    let mut c = conn();
    let mut got = send_req(
        &mut c,
        b"HEAD /f HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n",
        1,
        0,
    );
    let p1 = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    let p2 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    got.extend(send_resp(&mut c, format!("{p1}{p2}").as_bytes(), 2, 0));
    assert_eq!(
        got,
        vec![
            timed(exchange(Method::Head, "/f", 200), (1, 1, 0), (2, 2, 0)),
            timed(
                exchange(Method::Get, "/g", 200),
                (1, 1, 20),
                (2, 2, p1.len() as u32)
            ),
        ]
    );
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let mut c = conn();
    let mut got = send_req(
        &mut c,
        b"DELETE /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\nGET /z HTTP/1.1\r\n\r\n",
        1,
        0,
    );
    let p1 = "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
    let p2 = "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    let p3 = "HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nbad";
    got.extend(send_resp(&mut c, format!("{p1}{p2}{p3}").as_bytes(), 2, 0));
    let statuses: Vec<(String, u16, Option<u32>)> = got
        .iter()
        .map(|x| (x.path.clone(), x.status, x.resp_tcp_seq))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("/x".to_string(), 204, Some(0)),
            ("/y".to_string(), 304, Some(p1.len() as u32)),
            ("/z".to_string(), 500, Some((p1.len() + p2.len()) as u32)),
        ]
    );
}

#[test]
fn header_line_over_16k_drops_that_message_only() {
    let mut c = conn();
    // A line of exactly MAX_LINE_BYTES is fine; one byte more is not.
    let ok_value = "v".repeat(MAX_LINE_BYTES - "X-Big: ".len());
    let long_value = "v".repeat(MAX_LINE_BYTES + 1 - "X-Big: ".len());
    let r1 = format!("GET /ok HTTP/1.1\r\nX-Big: {ok_value}\r\n\r\n");
    let r2 = format!("GET /long HTTP/1.1\r\nX-Big: {long_value}\r\nContent-Length: 3\r\n\r\nabc");
    let r3 = "GET /after HTTP/1.1\r\n\r\n";
    let all = format!("{r1}{r2}{r3}");
    let mut got = Vec::new();
    // Feed in 1000-byte pieces so the long line spans many chunks.
    for (i, part) in all.as_bytes().chunks(1000).enumerate() {
        got.extend(send_req(&mut c, part, 1, (i * 1000) as u32));
    }
    let resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    got.extend(send_resp(&mut c, resp.repeat(3).as_bytes(), 2, 0));
    let paths: Vec<&str> = got.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(paths, vec!["/ok", "/after"]);
    assert_eq!(got[1].req_tcp_seq, Some((r1.len() + r2.len()) as u32));
    assert_eq!(got[1].resp_tcp_seq, Some(2 * resp.len() as u32));
    assert_eq!(c.request_stats().line_too_long, 1);
    assert_eq!(c.pairing_stats().dropped_pairs, 1);
    assert!(c.is_http());
}

#[test]
fn garbage_marks_the_stream_non_http() {
    for garbage in [
        &b"\x00\x01\x02\x03binary frame"[..],
        b"hello world\r\n\r\n",
        b"GET / SPDY/3\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut c = conn();
        let mut got = send_req(&mut c, garbage, 1, 0);
        got.extend(send_resp(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
            0,
        ));
        got.extend(send_req(&mut c, b"GET / HTTP/1.1\r\n\r\n", 3, 100));
        got.extend(send_resp(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            4,
            100,
        ));
        assert!(got.is_empty(), "{garbage:?} gave {got:?}");
        assert!(!c.is_http());
        assert_eq!(
            c.request_stats().non_http,
            Some(NonHttpReason::BadStartLine),
            "{garbage:?}"
        );
    }
}

#[test]
fn garbage_header_marks_the_stream_non_http() {
    let mut c = conn();
    let got = send_req(&mut c, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 1, 0);
    assert!(got.is_empty());
    assert_eq!(c.request_stats().non_http, Some(NonHttpReason::BadHeader));
}

/// Found by fuzzing: a bare CR glued `Authorization` into the Host value, so
/// the redacted header left as part of `server.address`.
#[test]
fn a_bare_cr_in_a_header_line_marks_the_stream_non_http() {
    let mut c = conn();
    let req = b"POST /v1/charge HTTP/1.1\r\nHost: billing\r$Authorization: Bearer s3cr3t\r\nContent-Length: 0\r\n\r\n";
    let mut got = send_req(&mut c, req, 1, 0);
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        2,
        0,
    ));
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(c.request_stats().non_http, Some(NonHttpReason::BadHeader));
}

#[test]
fn tls_client_hello_is_not_http() {
    let mut c = conn();
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x47, 0x45, 0x54, 0x20,
        0x2f, 0x20, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x0d, 0x0a, 0x0d, 0x0a,
    ];
    let chunk = Chunk {
        captured: &hello,
        total_len: 517,
        ts_ns: 1,
        tcp_seq: Some(0),
        seq_linear: true,
        tag: Tag::default(),
    };
    let mut got = Vec::new();
    c.feed_request(&chunk, &mut got);
    got.extend(send_resp(
        &mut c,
        &[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02],
        2,
        0,
    ));
    c.close(&mut got);
    assert!(got.is_empty());
    assert!(!c.is_http());
    assert_eq!(
        c.request_stats().non_http,
        Some(NonHttpReason::BadStartLine)
    );
}

#[test]
fn close_mid_body_drops_the_message() {
    let mut c = conn();
    let mut got = send_req(&mut c, b"GET /big HTTP/1.1\r\n\r\n", 1, 0);
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        2,
        0,
    ));
    c.close(&mut got);
    assert!(got.is_empty());
    assert_eq!(c.response_stats().closed_mid_message, 1);
    assert_eq!(c.pairing_stats().unmatched_requests, 1);
}

#[test]
fn body_until_close_ends_at_close() {
    let mut c = conn();
    let mut got = send_req(&mut c, b"GET /old HTTP/1.0\r\n\r\n", 1, 0);
    got.extend(send_resp(&mut c, b"HTTP/1.0 200 OK\r\n\r\npart one", 2, 0));
    got.extend(send_resp(&mut c, b"part two", 3, 28));
    c.close(&mut got);
    assert_eq!(
        got,
        vec![timed(
            exchange(Method::Get, "/old", 200),
            (1, 1, 0),
            (2, 3, 0)
        )]
    );
}

#[test]
fn response_before_any_request_is_not_paired() {
    let mut c = conn();
    // Capture began while a response was on its way: it must not shift later pairs.
    let mut got = send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        5,
        0,
    );
    got.extend(send_req(&mut c, b"GET /new HTTP/1.1\r\n\r\n", 10, 0));
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        20,
        38,
    ));
    assert_eq!(
        got,
        vec![timed(
            exchange(Method::Get, "/new", 201),
            (10, 10, 0),
            (20, 20, 38)
        )]
    );
    assert_eq!(c.pairing_stats().unmatched_responses, 1);
}

#[test]
fn absolute_form_target_gives_path_and_host() {
    let mut c = conn();
    send_req(
        &mut c,
        b"GET http://example.test:81/p?x=1 HTTP/1.1\r\n\r\n",
        1,
        0,
    );
    let got = send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        2,
        0,
    );
    let mut want = timed(exchange(Method::Get, "/p", 200), (1, 1, 0), (2, 2, 0));
    want.query = Some("x=1".into());
    want.host = Some("example.test:81".into());
    assert_eq!(got, vec![want]);
}

/// Found by fuzzing: a Host line with non-ASCII bytes and another header glued
/// on without a line break ("billin\xa2\xf2$Authorization: Bearer s3cr3t") was
/// recorded whole as the host. A Host value that is no host[:port] is dropped;
/// the exchange is kept.
#[test]
fn a_host_value_that_is_no_authority_is_not_recorded() {
    for host in [
        &b"billin\xa2\xf2$Authorization: Bearer s3cr3t"[..],
        b"a b",
        b"user@host",
        b"",
    ] {
        let mut c = conn();
        let mut req = b"GET /p HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(host);
        req.extend_from_slice(b"\r\n\r\n");
        send_req(&mut c, &req, 1, 0);
        let got = send_resp(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
            0,
        );
        assert_eq!(
            got,
            vec![timed(
                exchange(Method::Get, "/p", 200),
                (1, 1, 0),
                (2, 2, 0)
            )]
        );
    }
    for host in [
        "h.example:8080",
        "[::1]:80",
        "10.0.0.1",
        "xn--bcher-kva.example",
    ] {
        let mut c = conn();
        send_req(
            &mut c,
            format!("GET /p HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            1,
            0,
        );
        let got = send_resp(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
            0,
        );
        assert_eq!(got[0].host.as_deref(), Some(host));
    }
}

/// One request/response pair of the generated streams.
#[derive(Debug, Clone)]
struct Gen {
    method: &'static str,
    path: String,
    req_body: Vec<u8>,
    req_chunked: bool,
    status: u16,
    resp_body: Vec<u8>,
    resp_chunked: bool,
}

fn gen_pair() -> impl Strategy<Value = Gen> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        "/[a-z0-9]{0,12}",
        prop::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 302, 404, 500]),
        prop::collection::vec(any::<u8>(), 0..60),
        any::<bool>(),
    )
        .prop_map(
            |(method, path, req_body, req_chunked, status, resp_body, resp_chunked)| Gen {
                method,
                path,
                req_body,
                req_chunked,
                status,
                resp_body,
                resp_chunked,
            },
        )
}

fn encode_body(out: &mut Vec<u8>, body: &[u8], chunked: bool) {
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        // Uneven pieces so chunk boundaries vary.
        for piece in body.chunks(7) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
}

fn encode(pairs: &[Gen]) -> (Vec<u8>, Vec<u8>) {
    let (mut reqs, mut resps) = (Vec::new(), Vec::new());
    for p in pairs {
        reqs.extend_from_slice(
            format!("{} {} HTTP/1.1\r\nHost: h\r\n", p.method, p.path).as_bytes(),
        );
        encode_body(&mut reqs, &p.req_body, p.req_chunked);
        resps.extend_from_slice(format!("HTTP/1.1 {} X\r\n", p.status).as_bytes());
        if p.status == 204 {
            resps.extend_from_slice(b"\r\n");
        } else {
            encode_body(&mut resps, &p.resp_body, p.resp_chunked);
        }
    }
    (reqs, resps)
}

/// Feeds both streams cut at the given points (sorted, deduplicated by the caller).
fn run(reqs: &[u8], resps: &[u8], req_cuts: &[usize], resp_cuts: &[usize]) -> Vec<HttpExchange> {
    let mut c = conn();
    let mut out = Vec::new();
    let mut feed = |bytes: &[u8], cuts: &[usize], request: bool, out: &mut Vec<HttpExchange>| {
        let mut points: Vec<usize> = cuts.iter().map(|&x| x % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            let chunk = Chunk::full(&bytes[w[0]..w[1]], if request { 1 } else { 2 }, w[0] as u32);
            if request {
                c.feed_request(&chunk, out);
            } else {
                c.feed_response(&chunk, out);
            }
        }
    };
    feed(reqs, req_cuts, true, &mut out);
    feed(resps, resp_cuts, false, &mut out);
    out
}

proptest! {
    #[test]
    fn splitting_a_valid_stream_anywhere_gives_the_same_exchanges(
        pairs in prop::collection::vec(gen_pair(), 1..6),
        req_cuts in prop::collection::vec(any::<usize>(), 0..20),
        resp_cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let (reqs, resps) = encode(&pairs);
        let whole = run(&reqs, &resps, &[], &[]);
        let want: Vec<(String, String, u16)> = pairs
            .iter()
            .map(|p| (p.method.to_string(), p.path.clone(), p.status))
            .collect();
        let seen: Vec<(String, String, u16)> = whole
            .iter()
            .map(|x| (x.method.as_str().to_string(), x.path.clone(), x.status))
            .collect();
        prop_assert_eq!(seen, want);
        let split = run(&reqs, &resps, &req_cuts, &resp_cuts);
        prop_assert_eq!(split, whole);
    }
}

#[test]
fn switching_protocols_ends_http_parsing() {
    let mut c = conn();
    let mut got = send_req(
        &mut c,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        1,
        0,
    );
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        2,
        0,
    ));
    // WebSocket frames in both directions are neither requests nor garbage.
    got.extend(send_req(&mut c, b"\x81\x85\x00\x00\x00\x00hello", 3, 64));
    got.extend(send_resp(&mut c, b"\x81\x02ok", 4, 70));
    c.close(&mut got);
    assert_eq!(
        got,
        vec![timed(
            exchange(Method::Get, "/ws", 101),
            (1, 1, 0),
            (2, 2, 0)
        )]
    );
    assert!(c.is_http());
    assert_eq!(c.pairing_stats().unmatched_requests, 0);
}

#[test]
fn messages_before_garbage_in_the_same_chunk_still_pair() {
    // Found by fuzzing: a sound HEAD response followed by garbage in one chunk.
    let mut c = conn();
    let mut got = send_req(&mut c, b"HEAD / HTTP/1.1\r\n\r\n", 1, 0);
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHTTP.0 h: 9No\r\n\r\n",
        2,
        0,
    ));
    assert_eq!(
        got,
        vec![timed(
            exchange(Method::Head, "/", 200),
            (1, 1, 0),
            (2, 2, 0)
        )]
    );
    assert!(!c.is_http());
    assert_eq!(
        c.response_stats().non_http,
        Some(NonHttpReason::BadStartLine)
    );
}

#[test]
fn truncated_head_keeps_start_line_and_resyncs() {
    let mut c = conn();
    // Headers longer than the captured prefix: the span keeps method and path, and the
    // next request written in its own syscall is parsed again.
    let mut req = b"GET /long-head HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
    req.resize(req.len() + 3000, b'p');
    req.extend_from_slice(b"\r\n\r\n");
    let chunk = Chunk {
        captured: &req[..1024],
        total_len: req.len(),
        ts_ns: 10,
        tcp_seq: Some(0),
        seq_linear: true,
        tag: Tag::default(),
    };
    let mut got = Vec::new();
    c.feed_request(&chunk, &mut got);
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        20,
        0,
    ));
    got.extend(send_req(
        &mut c,
        b"GET /next HTTP/1.1\r\n\r\n",
        30,
        req.len() as u32,
    ));
    got.extend(send_resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        40,
        38,
    ));
    let mut first = timed(
        exchange(Method::Get, "/long-head", 200),
        (10, 10, 0),
        (20, 20, 0),
    );
    first.host = Some("h".into());
    first.truncated = true;
    first.framing_lost = true;
    assert_eq!(
        got,
        vec![
            first,
            timed(
                exchange(Method::Get, "/next", 200),
                (30, 30, req.len() as u32),
                (40, 40, 38)
            ),
        ]
    );
    assert_eq!(c.request_stats().framing_lost, 1);
}

/// Writes one direction the way a typical sender does: the head in one syscall, a
/// content-length body in another, each chunk of a chunked body in its own. Each write
/// comes with the fewest bytes a capture must hold for framing to survive.
fn writes(pairs: &[Gen], requests: bool) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    for p in pairs {
        let (mut head, body, chunked) = if requests {
            (
                format!("{} {} HTTP/1.1\r\nHost: h\r\n", p.method, p.path).into_bytes(),
                &p.req_body,
                p.req_chunked,
            )
        } else {
            (
                format!("HTTP/1.1 {} X\r\n", p.status).into_bytes(),
                &p.resp_body,
                p.resp_chunked,
            )
        };
        if !requests && p.status == 204 {
            head.extend_from_slice(b"\r\n");
            let n = head.len();
            out.push((head, n));
            continue;
        }
        if chunked {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let n = head.len();
            out.push((head, n));
            for piece in body.chunks(7) {
                let size_line = format!("{:x}\r\n", piece.len()).into_bytes();
                let need = size_line.len();
                let mut w = size_line;
                w.extend_from_slice(piece);
                w.extend_from_slice(b"\r\n");
                out.push((w, need));
            }
            out.push((b"0\r\n\r\n".to_vec(), 5));
        } else {
            head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            let n = head.len();
            out.push((head, n));
            if !body.is_empty() {
                out.push((body.clone(), 0));
            }
        }
    }
    out
}

/// Feeds writes whose captures are cut to `keep[i]` bytes past the framing minimum.
fn run_writes(
    reqs: &[(Vec<u8>, usize)],
    resps: &[(Vec<u8>, usize)],
    keep: &[usize],
) -> Vec<HttpExchange> {
    let mut c = conn();
    let mut out = Vec::new();
    let mut k = keep.iter().cycle();
    for (request, ws) in [(true, reqs), (false, resps)] {
        let mut seq = 0u32;
        for (bytes, need) in ws {
            let extra = k.next().copied().unwrap_or(usize::MAX);
            let cap = need.saturating_add(extra).min(bytes.len());
            let chunk = Chunk {
                captured: &bytes[..cap],
                total_len: bytes.len(),
                ts_ns: if request { 1 } else { 2 },
                tcp_seq: Some(seq),
                seq_linear: true,
                tag: Tag::default(),
            };
            seq = seq.wrapping_add(bytes.len() as u32);
            if request {
                c.feed_request(&chunk, &mut out);
            } else {
                c.feed_response(&chunk, &mut out);
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn uncaptured_body_bytes_do_not_change_exchanges(
        pairs in prop::collection::vec(gen_pair(), 1..6),
        keep in prop::collection::vec(0usize..80, 1..30),
    ) {
        let reqs = writes(&pairs, true);
        let resps = writes(&pairs, false);
        let full = run_writes(&reqs, &resps, &[usize::MAX]);
        prop_assert_eq!(full.len(), pairs.len());
        prop_assert!(full.iter().all(|x| !x.truncated));
        let cut: Vec<HttpExchange> = run_writes(&reqs, &resps, &keep)
            .into_iter()
            .map(|x| HttpExchange { truncated: false, ..x })
            .collect();
        prop_assert_eq!(cut, full);
    }
}

/// The receiver's filters as the kernel gets them: pid and port lists with the bits
/// saying which are in force; an include list with process names keeps pids in user
/// space (a named process must not be cut off by a pid include list).
#[test]
fn kernel_filters_from_the_config() {
    use super::config::{EbpfReceiverConfig, Selector};
    use super::loader::KernelFilters;

    // By default only DNS's port is marked (0x4) and UDP capture is on (0x10).
    let dns_only = KernelFilters::of(&EbpfReceiverConfig::default());
    assert_eq!(dns_only.bits, 0x10);
    assert_eq!(
        dns_only.ports.into_iter().collect::<Vec<_>>(),
        vec![(53, 0x4)]
    );
    let mut no_dns = EbpfReceiverConfig::default();
    no_dns.protocols.dns.enabled = false;
    assert_eq!(KernelFilters::of(&no_dns), KernelFilters::default());

    let cfg = EbpfReceiverConfig {
        include: Selector {
            pids: vec![10, 11],
            ports: vec![80, 443],
            ..Selector::default()
        },
        exclude: Selector {
            pids: vec![11],
            ports: vec![443, 9000],
            ..Selector::default()
        },
        ..EbpfReceiverConfig::default()
    };
    let f = KernelFilters::of(&cfg);
    assert_eq!(f.bits, 0x1 | 0x2 | 0x4 | 0x8 | 0x10);
    assert_eq!(
        f.pids.into_iter().collect::<Vec<_>>(),
        vec![(10, 0x1), (11, 0x1 | 0x2)]
    );
    assert_eq!(
        f.ports.into_iter().collect::<Vec<_>>(),
        vec![(53, 0x4), (80, 0x1), (443, 0x1 | 0x2), (9000, 0x2)]
    );

    let named = EbpfReceiverConfig {
        include: Selector {
            pids: vec![10],
            process_names: vec!["nginx".into()],
            ..Selector::default()
        },
        ..EbpfReceiverConfig::default()
    };
    let f = KernelFilters::of(&named);
    assert_eq!(f.bits, 0x10);
    assert!(f.pids.is_empty());
}

/// Tracepoints are found by their BTF typedef name, whole names only.
#[test]
fn tracepoints_are_found_in_btf_names() {
    use super::loader::has_tracepoint;

    let btf = b"\0task_struct\0btf_trace_sock_send_length\0btf_trace_sock_recv_length_x\0";
    assert!(has_tracepoint(btf, "sock_send_length"));
    assert!(!has_tracepoint(btf, "sock_recv_length"));
    assert!(!has_tracepoint(btf, "sock_send"));
    assert!(!has_tracepoint(b"", "sock_send_length"));
}
