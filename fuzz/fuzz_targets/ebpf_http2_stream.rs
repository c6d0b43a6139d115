//! Arbitrary bytes, cut into arbitrary chunks with arbitrary capture limits, through the
//! eBPF receiver's HTTP/2 framer, HPACK and stream pairing, from a connection's start
//! or its middle: no panic, sane exchanges (a client stream id, times in order, no
//! secret), the open streams within their cap, and a connection whose frames were all
//! captured gives the same exchanges however its bytes are cut.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use weft_receiver::ebpf::http1::{Chunk, ParserConfig, Tag};
use weft_receiver::ebpf::http2::{H2Exchange, Http2Connection, Side, PREFACE};

/// One syscall's record as the fuzzer describes it.
struct Record<'a> {
    side: Side,
    bytes: &'a [u8],
    /// Bytes that existed past `bytes` but were not captured.
    uncaptured: usize,
}

/// Input layout: a flags byte (bit 0: seen from the start, which prepends the client
/// preface; bits 1..: capture limit / 8), then records of `[op][len][len bytes]`;
/// op bit 0 = side, bits 1.. = uncaptured length / 64.
fn records(data: &[u8]) -> Option<(bool, usize, Vec<Record<'_>>)> {
    let (&flags, mut rest) = data.split_first()?;
    let from_start = flags & 1 == 1;
    let cap = 1 + usize::from(flags >> 1) * 8;
    let mut out = Vec::new();
    if from_start {
        out.push(Record {
            side: Side::Request,
            bytes: PREFACE,
            uncaptured: 0,
        });
    }
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        out.push(Record {
            side: if op & 1 == 0 {
                Side::Request
            } else {
                Side::Response
            },
            bytes: &tail[..n],
            uncaptured: usize::from(op >> 1) * 64,
        });
        rest = &tail[n..];
    }
    Some((from_start, cap, out))
}

fn check(x: &H2Exchange) {
    assert!(x.stream_id % 2 == 1, "{x:?}");
    assert!(x.request_start_ns <= x.request_end_ns, "{x:?}");
    assert!(x.response_start_ns <= x.response_end_ns, "{x:?}");
    for h in [Some(&x.request), x.response.as_ref(), x.trailers.as_ref()]
        .into_iter()
        .flatten()
    {
        assert!(
            h.of_interest
                .iter()
                .all(|(n, _)| n != "authorization" && n != "cookie"),
            "{h:?}"
        );
    }
}

/// What must not depend on how the bytes were cut.
fn essence(out: &[H2Exchange]) -> Vec<String> {
    out.iter()
        .map(|x| {
            format!(
                "{} {:?} {:?} {:?} {:?} {:?} {:?}",
                x.stream_id,
                x.request,
                x.response,
                x.trailers,
                x.reset,
                x.request_messages,
                x.response_messages
            )
        })
        .collect()
}

/// Feeds the records in order, each cut into pieces of at most `piece` bytes with at
/// most `cap` of them captured.
fn run(from_start: bool, recs: &[Record<'_>], piece: usize, cap: usize) -> (Vec<H2Exchange>, u64) {
    let mut c = Http2Connection::new(Arc::new(ParserConfig::default()), from_start);
    let mut out = Vec::new();
    let mut seq = [0u32; 2];
    let mut ts = 0u64;
    for (i, r) in recs.iter().enumerate() {
        let si = usize::from(r.side == Side::Response);
        let mut parts: Vec<(&[u8], usize)> = r
            .bytes
            .chunks(piece.max(1))
            .map(|p| (p, p.len()))
            .collect();
        if let Some(last) = parts.last_mut() {
            last.1 += r.uncaptured;
        } else if r.uncaptured > 0 {
            parts.push((&[], r.uncaptured));
        }
        for (bytes, total) in parts {
            ts += 1;
            let chunk = Chunk {
                captured: &bytes[..bytes.len().min(cap)],
                total_len: total,
                ts_ns: ts,
                tcp_seq: Some(seq[si]),
                seq_linear: true,
                tag: Tag {
                    syscall_id: i as u64,
                    tid: 1,
                },
            };
            let before = out.len();
            c.feed(r.side, &chunk, &mut out);
            out[before..].iter().for_each(check);
            seq[si] = seq[si].wrapping_add(total as u32);
        }
    }
    c.close();
    let stats = c.stats();
    assert!(stats.streams_dropped <= stats.streams);
    (out, stats.framing_lost + stats.header_blocks_lost)
}

fuzz_target!(|data: &[u8]| {
    let Some((from_start, cap, recs)) = records(data) else {
        return;
    };
    run(from_start, &recs, usize::MAX, cap);
    // Whole records against the same bytes cut in 7-byte pieces, all captured, for a
    // connection seen from its start (one read from its middle waits for a syscall
    // that starts on a frame boundary, which depends on the cut by design).
    if from_start && recs.iter().all(|r| r.uncaptured == 0) {
        let (whole, lost_whole) = run(from_start, &recs, usize::MAX, usize::MAX);
        let (cut, lost_cut) = run(from_start, &recs, 7, usize::MAX);
        if lost_whole == 0 && lost_cut == 0 {
            assert_eq!(essence(&whole), essence(&cut));
        }
    }
});
