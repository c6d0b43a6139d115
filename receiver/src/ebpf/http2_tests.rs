//! HTTP/2 parsing: byte streams made by the Python `h2` library (an independent HPACK
//! encoder with Huffman coding and a dynamic table), and synthetic frames for the
//! edge cases.

use std::sync::Arc;

use super::http1::{Chunk, ParserConfig, Tag};
use super::http2::{H2Exchange, Http2Connection, Side};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Client and server bytes of one connection, in the order they were sent (h2 4.x:
/// a GET with request id, trace context and an Authorization header; a second GET
/// whose headers come from the dynamic table; a unary gRPC call; a client-streaming
/// gRPC call answered trailers-only with NOT_FOUND).
const H2_SESSION: [(&str, &str); 10] = [
    ("req", "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00002a04000000000000010000100000020000000100040000ffff000500004000000800000000000300000064000600010000"),
    ("resp", "00002a04000000000000010000100000020000000000040000ffff000500004000000800000000000300000064000600010000000000040100000000"),
    ("req", "0000000401000000000000670105000000018244886272d141ffcf300786418a47722f41c83a2e3c07814089f2b585ed6950958d2784b0d22c1f40884d83216b1d85a93fa7001600e575c6c2f85c248d33248f34d3c58c41091e03217c8b46e8e4723742e3e2032cb215801f1f088aba51d85b14417ad864ff"),
    ("resp", "00001a010400000001884089f2b585ed6950958d2784b0d22c1f5f87497ca58ae819aa0000020001000000016869"),
    ("req", "00001e0105000000038244856272d141ff86c17f0184b0d22c2f1f088aba51d85b14417ad864ff"),
    ("resp", "0000080105000000038d7f0084b0d22c2f"),
    ("req", "00004c010400000005838644956272d141fc1eca245f15852a4b631b87eb1968a0ff418ba0e41d139d09b8d800d87f4082497f864d833505b11f5f8b1d75d0620d263d4c4d656440899acac8b24d494f6a7f826f7700000c00010000000500000000070a05776f726c64"),
    ("resp", "00000e010400000005885f8b1d75d0620d263d4c4d6564000012000000000005000000000d0a0b68656c6c6f20776f726c6400001801050000000540889acac8b21234da8f810740899acac8b5254207317f80"),
    ("req", "00001a010400000007838644926272d141fc1eca245f15852a4b6317a71a7fc2c1c0bf00000700000000000700000000026d3000000700000000000700000000026d3100000700000000000700000000026d32000000000100000007"),
    ("resp", "00001001050000000788c07f00816f7f0087a8e95253db549f"),
];

const REQ_SEQ0: u32 = 1000;
const RESP_SEQ0: u32 = 5000;

fn conn() -> Http2Connection {
    Http2Connection::new(Arc::new(ParserConfig::default()), true)
}

/// Feeds the session, each message cut into pieces of at most `piece` bytes (a piece
/// per syscall), of which only the first `captured` bytes are copied.
fn run(
    steps: &[(&str, Vec<u8>)],
    piece: usize,
    captured: usize,
) -> (Vec<H2Exchange>, Http2Connection) {
    let mut c = conn();
    let mut out = Vec::new();
    let mut seq = [REQ_SEQ0, RESP_SEQ0];
    let mut ts = 1_000u64;
    for (i, (name, bytes)) in steps.iter().enumerate() {
        let side = if *name == "req" {
            Side::Request
        } else {
            Side::Response
        };
        let si = usize::from(side == Side::Response);
        for part in bytes.chunks(piece) {
            ts += 10;
            let chunk = Chunk {
                captured: &part[..part.len().min(captured)],
                total_len: part.len(),
                ts_ns: ts,
                tcp_seq: Some(seq[si]),
                seq_linear: true,
                tag: Tag {
                    syscall_id: i as u64 + 1,
                    tid: 7,
                },
            };
            c.feed(side, &chunk, &mut out);
            seq[si] = seq[si].wrapping_add(part.len() as u32);
        }
    }
    (out, c)
}

fn session() -> Vec<(&'static str, Vec<u8>)> {
    H2_SESSION.iter().map(|(n, h)| (*n, hex(h))).collect()
}

#[test]
fn a_session_from_a_real_encoder_gives_one_exchange_per_stream() {
    let (out, c) = run(&session(), usize::MAX, usize::MAX);
    assert_eq!(out.len(), 4, "{out:#?}");
    let s = c.stats();
    assert_eq!((s.streams, s.unmatched, s.unknown_fields), (4, 0, 0));
    assert_eq!(
        (s.header_blocks_lost, s.hpack_errors, s.framing_lost),
        (0, 0, 0)
    );

    let a = &out[0];
    assert_eq!(a.stream_id, 1);
    assert_eq!(a.request.method.as_deref(), Some("GET"));
    assert_eq!(a.request.path.as_deref(), Some("/hello"));
    assert_eq!(a.request.query.as_deref(), Some("x=1"));
    assert_eq!(a.request.authority.as_deref(), Some("svc.local:8080"));
    assert_eq!(a.request.x_request_id.as_deref(), Some("rid-1"));
    assert_eq!(
        a.request.of_interest,
        vec![
            ("x-request-id".to_string(), "rid-1".to_string()),
            (
                "traceparent".to_string(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()
            ),
        ]
    );
    let resp = a.response.as_ref().unwrap();
    assert_eq!(resp.status, Some(200));
    assert_eq!(resp.x_request_id.as_deref(), Some("rid-1"));
    // The request HEADERS frame follows the preface (24), SETTINGS (9+42) and the
    // SETTINGS ack (9) of the client.
    assert_eq!(a.req_tcp_seq, Some(REQ_SEQ0 + 24 + 51 + 9));
    // The response HEADERS follows the server's SETTINGS (51) and its ack (9).
    assert_eq!(a.resp_tcp_seq, Some(RESP_SEQ0 + 51 + 9));
    assert!(!a.multiplexed);
    assert_eq!((a.request_messages, a.response_messages), (None, None));

    // Stream 3: everything from the dynamic table, a new request id, a 404.
    let b = &out[1];
    assert_eq!(b.stream_id, 3);
    assert_eq!(b.request.path.as_deref(), Some("/hello"));
    assert_eq!(b.request.authority.as_deref(), Some("svc.local:8080"));
    assert_eq!(b.request.x_request_id.as_deref(), Some("rid-2"));
    assert_eq!(b.response.as_ref().unwrap().status, Some(404));

    // gRPC unary: one message each way, status from the trailers.
    let g = &out[2];
    assert_eq!(
        g.request.path.as_deref(),
        Some("/helloworld.Greeter/SayHello")
    );
    assert!(g.request.is_grpc());
    assert_eq!(
        (g.request_messages, g.response_messages),
        (Some(1), Some(1))
    );
    assert_eq!(g.trailers.as_ref().unwrap().grpc_status, Some(0));

    // Client streaming answered trailers-only with NOT_FOUND.
    let t = &out[3];
    assert_eq!(t.request.path.as_deref(), Some("/helloworld.Greeter/Chat"));
    assert_eq!(
        (t.request_messages, t.response_messages),
        (Some(3), Some(0))
    );
    let tr = t.trailers.as_ref().unwrap();
    assert_eq!(tr.grpc_status, Some(5));
    assert_eq!(tr.grpc_message.as_deref(), Some("not found"));
}

#[test]
fn secrets_never_reach_an_exchange() {
    let (out, _) = run(&session(), usize::MAX, usize::MAX);
    let text = format!("{out:?}");
    assert!(!text.contains("sekrit"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("authorization"));
}

#[test]
fn the_same_exchanges_however_the_bytes_are_cut() {
    let (whole, _) = run(&session(), usize::MAX, usize::MAX);
    for piece in [1, 2, 3, 5, 7, 9, 10, 13, 64] {
        let (cut, c) = run(&session(), piece, usize::MAX);
        let strip = |v: &[H2Exchange]| {
            v.iter()
                .map(|x| {
                    let mut x = x.clone();
                    // Times and tags depend on the pieces.
                    x.request_start_ns = 0;
                    x.request_end_ns = 0;
                    x.response_start_ns = 0;
                    x.response_end_ns = 0;
                    x.req_tag = Tag::default();
                    x.resp_tag = Tag::default();
                    x
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&cut), strip(&whole), "piece {piece}");
        assert_eq!(c.stats().unmatched, 0);
    }
}

#[test]
fn uncaptured_data_is_skipped_by_count_and_a_lost_header_block_makes_no_span() {
    // 40 captured bytes per syscall: every HEADERS frame of this session is longer
    // than that except the small ones, so blocks are lost, the tables forgotten, and
    // no exchange may carry a wrong field.
    let (out, c) = run(&session(), usize::MAX, 40);
    for x in &out {
        // What is known is right: compare with the full run.
        let (whole, _) = run(&session(), usize::MAX, usize::MAX);
        let w = whole.iter().find(|w| w.stream_id == x.stream_id).unwrap();
        if let Some(p) = &x.request.path {
            assert_eq!(Some(p), w.request.path.as_ref());
        }
        if let Some(r) = &x.response {
            if let Some(s) = r.status {
                assert_eq!(Some(s), w.response.as_ref().unwrap().status);
            }
        }
    }
    assert!(c.stats().header_blocks_lost > 0);
}

/// A header field as a literal without indexing and a new name (no Huffman).
fn lit(name: &str, value: &str) -> Vec<u8> {
    let mut v = vec![0x00, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.push(value.len() as u8);
    v.extend_from_slice(value.as_bytes());
    v
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut v = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn request_block(path: &str) -> Vec<u8> {
    [
        lit(":method", "GET"),
        lit(":path", path),
        lit(":scheme", "http"),
    ]
    .concat()
}

#[test]
fn a_hundred_concurrent_streams_on_one_connection() {
    let mut req = super::http2::PREFACE.to_vec();
    for i in 0..100u32 {
        req.extend(frame(1, 0x5, 2 * i + 1, &request_block(&format!("/s/{i}"))));
    }
    // Answered in reverse order, each with its own status.
    let mut resp = Vec::new();
    for i in (0..100u32).rev() {
        let status = (200 + i % 3).to_string();
        resp.extend(frame(1, 0x4, 2 * i + 1, &lit(":status", &status)));
        resp.extend(frame(0, 0x1, 2 * i + 1, b"body"));
    }
    let (out, c) = run(&[("req", req), ("resp", resp)], 1000, usize::MAX);
    assert_eq!(out.len(), 100);
    assert_eq!(c.stats().unmatched, 0);
    for x in &out {
        let i = (x.stream_id - 1) / 2;
        assert_eq!(x.request.path.as_deref(), Some(format!("/s/{i}").as_str()));
        assert_eq!(
            x.response.as_ref().unwrap().status,
            Some(200 + (i % 3) as u16)
        );
        assert!(x.multiplexed);
    }
    // Every stream has its own TCP sequence.
    let mut seqs: Vec<u32> = out.iter().filter_map(|x| x.req_tcp_seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 100);
}

#[test]
fn continuation_padding_priority_and_resets() {
    let block = request_block("/cont");
    let (a, b) = block.split_at(10);
    let mut req = super::http2::PREFACE.to_vec();
    // HEADERS padded (3 bytes) with priority, no END_HEADERS, then CONTINUATION.
    let mut p = vec![3u8, 0, 0, 0, 0, 16];
    p.extend_from_slice(a);
    p.extend_from_slice(&[0, 0, 0]);
    req.extend(frame(1, 0x1 | 0x8 | 0x20, 1, &p));
    req.extend(frame(9, 0x4, 1, b));
    // Stream 3 is reset by the client before any answer.
    req.extend(frame(1, 0x5, 3, &request_block("/gone")));
    req.extend(frame(3, 0, 3, &8u32.to_be_bytes()));
    let mut resp = frame(1, 0x4, 1, &lit(":status", "204"));
    // Padded DATA with END_STREAM.
    resp.extend(frame(0, 0x1 | 0x8, 1, &[2, b'o', b'k', 0, 0]));
    let (out, c) = run(&[("req", req), ("resp", resp)], usize::MAX, usize::MAX);
    assert_eq!(out.len(), 2, "{out:#?}");
    let gone = out.iter().find(|x| x.stream_id == 3).unwrap();
    assert_eq!(gone.reset, Some(8));
    assert_eq!(gone.request.path.as_deref(), Some("/gone"));
    assert!(gone.response.is_none());
    let cont = out.iter().find(|x| x.stream_id == 1).unwrap();
    assert_eq!(cont.request.path.as_deref(), Some("/cont"));
    assert_eq!(cont.response.as_ref().unwrap().status, Some(204));
    assert_eq!(c.stats().protocol_errors, 0);
}

#[test]
fn goaway_refuses_streams_above_the_last_one() {
    let mut req = super::http2::PREFACE.to_vec();
    for id in [1u32, 3, 5] {
        req.extend(frame(1, 0x5, id, &request_block("/x")));
    }
    let mut resp = frame(1, 0x5, 1, &lit(":status", "200"));
    let mut goaway = 1u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    resp.extend(frame(7, 0, 0, &goaway));
    let (out, c) = run(&[("req", req), ("resp", resp)], usize::MAX, usize::MAX);
    assert_eq!(out.len(), 1);
    assert_eq!(c.stats().unmatched, 2);
}

#[test]
fn a_connection_read_from_its_middle_waits_for_a_frame_boundary_and_guesses_nothing() {
    let mut c = Http2Connection::new(Arc::new(ParserConfig::default()), false);
    let mut out = Vec::new();
    let feed = |c: &mut Http2Connection, side, bytes: &[u8], seq, out: &mut Vec<H2Exchange>| {
        c.feed(side, &Chunk::full(bytes, 10, seq), out);
    };
    // The middle of a DATA frame: ignored.
    feed(&mut c, Side::Request, b"lo world and more", 1, &mut out);
    // A HEADERS frame whose fields refer to dynamic entries never seen (62, 63), plus
    // a known :path; its response comes from the static table.
    let mut block = vec![0x82, 0xbe, 0xbf];
    block.extend(lit(":path", "/mid"));
    feed(
        &mut c,
        Side::Request,
        &frame(1, 0x5, 41, &block),
        100,
        &mut out,
    );
    feed(
        &mut c,
        Side::Response,
        &frame(1, 0x5, 41, &[0x88]),
        200,
        &mut out,
    );
    assert_eq!(out.len(), 1);
    let x = &out[0];
    assert_eq!(x.request.method.as_deref(), Some("GET"));
    assert_eq!(x.request.path.as_deref(), Some("/mid"));
    assert_eq!(x.request.unknown_fields, 2);
    assert_eq!(x.request.authority, None);
    assert_eq!(x.response.as_ref().unwrap().status, Some(200));
    assert_eq!(c.stats().framing_found, 2);
}

#[test]
fn garbage_makes_no_exchange_and_no_panic() {
    let mut c = conn();
    let mut out = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut bytes = super::http2::PREFACE.to_vec();
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push(state as u8);
    }
    for (i, part) in bytes.chunks(97).enumerate() {
        let side = if i % 2 == 0 {
            Side::Request
        } else {
            Side::Response
        };
        c.feed(side, &Chunk::full(part, i as u64, i as u32 * 97), &mut out);
    }
    c.close();
    // Random bytes may by chance frame a stream; none may carry a path that is not
    // in the input.
    for x in &out {
        assert!(
            x.request.path.is_none() || x.request.path.as_deref().is_some_and(|p| !p.is_empty())
        );
    }
}

#[test]
fn a_huge_header_block_is_skipped_and_the_table_forgotten() {
    let mut req = super::http2::PREFACE.to_vec();
    // An 80 KB block over HEADERS + CONTINUATION frames.
    let big = lit("x-big", &"v".repeat(100));
    let block: Vec<u8> = std::iter::repeat_n(big, 800).flatten().collect();
    let mut chunks = block.chunks(16_000);
    req.extend(frame(1, 0x1, 1, chunks.next().unwrap()));
    let rest: Vec<&[u8]> = chunks.collect();
    for (i, c) in rest.iter().enumerate() {
        let flags = if i + 1 == rest.len() { 0x4 } else { 0 };
        req.extend(frame(9, flags, 1, c));
    }
    req.extend(frame(1, 0x5, 3, &request_block("/after")));
    let mut resp = frame(1, 0x5, 1, &lit(":status", "200"));
    resp.extend(frame(1, 0x5, 3, &lit(":status", "200")));
    let (out, c) = run(&[("req", req), ("resp", resp)], usize::MAX, usize::MAX);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.path.as_deref(), Some("/after"));
    assert_eq!(c.stats().header_blocks_lost, 1);
    assert_eq!(c.stats().unmatched, 1);
}

fn cut(bytes: &[u8], captured: usize, ts_ns: u64, seq: u32) -> Chunk<'_> {
    Chunk {
        captured: &bytes[..captured.min(bytes.len())],
        total_len: bytes.len(),
        ts_ns,
        tcp_seq: Some(seq),
        seq_linear: true,
        tag: Tag::default(),
    }
}

#[test]
fn trailers_after_lost_framing_never_pass_for_the_response() {
    let mut c = conn();
    let mut out = Vec::new();
    let mut req = super::http2::PREFACE.to_vec();
    let grpc = [
        lit(":method", "POST"),
        lit(":path", "/pkg.Svc/Call"),
        lit("content-type", "application/grpc"),
    ]
    .concat();
    req.extend(frame(1, 0x4, 1, &grpc));
    req.extend(frame(1, 0x4, 3, &grpc));
    c.feed(Side::Request, &Chunk::full(&req, 10, 1), &mut out);
    // One write: a large DATA frame of stream 3, then stream 1's response HEADERS,
    // whose frame header falls past the captured bytes: framing is lost.
    let mut resp = frame(0, 0, 3, &[0u8; 3000]);
    resp.extend(frame(1, 0x4, 1, &lit(":status", "200")));
    resp.extend(frame(0, 0, 1, &[0, 0, 0, 0, 1, b'x']));
    c.feed(Side::Response, &cut(&resp, 1024, 20, 5000), &mut out);
    assert_eq!(c.stats().framing_lost, 1);
    // Found again at a write of whole frames: stream 1's trailers, then stream 3's
    // response and trailers.
    let mut again = frame(1, 0x5, 1, &lit("grpc-status", "0"));
    again.extend(frame(1, 0x4, 3, &lit(":status", "200")));
    again.extend(frame(1, 0x5, 3, &lit("grpc-status", "0")));
    let seq = 5000 + resp.len() as u32;
    c.feed(Side::Response, &Chunk::full(&again, 30, seq), &mut out);
    c.feed(
        Side::Request,
        &Chunk::full(&frame(0, 0x1, 1, &[]), 40, 900),
        &mut out,
    );
    c.feed(
        Side::Request,
        &Chunk::full(&frame(0, 0x1, 3, &[]), 41, 909),
        &mut out,
    );
    // Both streams had started when bytes were dropped: their responses may have been
    // in them (stream 1's was). No span rather than trailers taken for a response.
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(c.stats().unmatched, 2);
    // A stream that starts after the gap is read as usual.
    c.feed(
        Side::Request,
        &Chunk::full(&frame(1, 0x5, 5, &grpc), 50, 918),
        &mut out,
    );
    let seq = seq + again.len() as u32;
    let mut answer = frame(1, 0x4, 5, &lit(":status", "200"));
    answer.extend(frame(0, 0, 5, &[0, 0, 0, 0, 1, b'y']));
    answer.extend(frame(1, 0x5, 5, &lit("grpc-status", "0")));
    c.feed(Side::Response, &Chunk::full(&answer, 60, seq), &mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].stream_id, 5);
    assert_eq!(out[0].response.as_ref().and_then(|r| r.status), Some(200));
    assert_eq!(
        out[0].trailers.as_ref().and_then(|t| t.grpc_status),
        Some(0)
    );
    assert_eq!(
        (out[0].request_messages, out[0].response_messages),
        (Some(0), Some(1))
    );
    assert!(!out[0].truncated);
}

#[test]
fn frames_of_a_stream_weft_does_not_follow_mark_the_others_multiplexed() {
    // Read from its middle: stream 1 (a long bidi call) is older than weft.
    let mut c = Http2Connection::new(Arc::new(ParserConfig::default()), false);
    let mut out = Vec::new();
    let open = frame(1, 0x5, 41, &request_block("/unary"));
    c.feed(Side::Request, &Chunk::full(&open, 10, 100), &mut out);
    c.feed(
        Side::Request,
        &Chunk::full(&frame(0, 0, 1, b"hi"), 11, 200),
        &mut out,
    );
    c.feed(
        Side::Response,
        &Chunk::full(&frame(1, 0x5, 41, &[0x88]), 12, 300),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].multiplexed);
}

#[test]
fn a_pinned_connection_that_starts_with_the_preface_is_read_from_its_start() {
    let mut c = Http2Connection::new(Arc::new(ParserConfig::default()), false);
    let mut out = Vec::new();
    let mut req = super::http2::PREFACE.to_vec();
    req.extend(frame(4, 0, 0, &[]));
    // The first request inserts :path into the table; the second refers to it.
    let mut first = vec![0x82, 0x44, 0x02];
    first.extend_from_slice(b"/p");
    req.extend(frame(1, 0x5, 1, &first));
    c.feed(Side::Request, &Chunk::full(&req, 10, 100), &mut out);
    let again = frame(1, 0x5, 3, &[0x82, 0xbe]);
    c.feed(
        Side::Request,
        &Chunk::full(&again, 11, 100 + req.len() as u32),
        &mut out,
    );
    let mut resp = frame(4, 0, 0, &[]);
    resp.extend(frame(1, 0x5, 1, &[0x88]));
    resp.extend(frame(1, 0x5, 3, &[0x88]));
    c.feed(Side::Response, &Chunk::full(&resp, 12, 500), &mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    for x in &out {
        assert_eq!(x.request.path.as_deref(), Some("/p"));
        assert_eq!(x.request.unknown_fields, 0);
    }
}
