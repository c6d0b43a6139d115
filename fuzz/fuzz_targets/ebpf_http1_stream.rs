//! Arbitrary bytes, cut into arbitrary chunks with arbitrary capture limits, through the
//! eBPF receiver's HTTP/1.x parser and pairing: no panic, sane exchanges, and fully
//! captured streams give the same exchanges however they are cut.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use weft_receiver::ebpf::http1::{Chunk, ParserConfig, Tag};
use weft_receiver::ebpf::pairing::{Http1Connection, HttpExchange};

/// One syscall's record as the fuzzer describes it.
struct Record<'a> {
    request: bool,
    bytes: &'a [u8],
    /// Bytes that existed past `bytes` but were not captured.
    uncaptured: usize,
}

/// Input layout: one byte picking the capture limit, then records of
/// `[op][len][len bytes]`; op bit 0 = direction, bits 1.. = uncaptured length / 4 KiB.
fn records(data: &[u8]) -> (usize, Vec<Record<'_>>) {
    let Some((&cap, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let cap = 1 + usize::from(cap) * 4;
    let mut out = Vec::new();
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        out.push(Record {
            request: op & 1 == 0,
            bytes: &tail[..n],
            uncaptured: usize::from(op >> 1) * 4096,
        });
        rest = &tail[n..];
    }
    (cap, out)
}

fn check(x: &HttpExchange) {
    assert!((100..=599).contains(&x.status), "{x:?}");
    assert!(x.request_start_ns <= x.request_end_ns, "{x:?}");
    assert!(x.response_start_ns <= x.response_end_ns, "{x:?}");
    let dump = format!("{x:?}");
    assert!(!dump.contains("Authorization") && !dump.contains("authorization"));
}

/// Feeds all request chunks, then all response chunks, fully captured.
fn whole_vs_cut(recs: &[Record<'_>]) {
    let run = |cut: bool| {
        let mut c = Http1Connection::new(Arc::new(ParserConfig::default()));
        let mut out = Vec::new();
        for request in [true, false] {
            let stream: Vec<u8> = recs
                .iter()
                .filter(|r| r.request == request)
                .flat_map(|r| r.bytes.iter().copied())
                .collect();
            let mut pieces: Vec<&[u8]> = Vec::new();
            if cut {
                let mut at = 0;
                for r in recs.iter().filter(|r| r.request == request) {
                    pieces.push(&stream[at..at + r.bytes.len()]);
                    at += r.bytes.len();
                }
            } else {
                pieces.push(&stream);
            }
            let mut seq = 0u32;
            for p in pieces {
                let chunk = Chunk::full(p, if request { 1 } else { 2 }, seq);
                seq = seq.wrapping_add(p.len() as u32);
                if request {
                    c.feed_request(&chunk, &mut out);
                } else {
                    c.feed_response(&chunk, &mut out);
                }
            }
        }
        c.close(&mut out);
        out
    };
    let whole = run(false);
    let cut = run(true);
    assert_eq!(whole, cut);
}

fuzz_target!(|data: &[u8]| {
    let (cap, recs) = records(data);
    let mut c = Http1Connection::new(Arc::new(ParserConfig::default()));
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let chunk = Chunk {
            captured: &r.bytes[..r.bytes.len().min(cap)],
            total_len: r.bytes.len() + r.uncaptured,
            ts_ns: i as u64,
            tcp_seq: Some((i as u32).wrapping_mul(7919)),
            seq_linear: true,
            tag: Tag::default(),
        };
        if r.request {
            c.feed_request(&chunk, &mut out);
        } else {
            c.feed_response(&chunk, &mut out);
        }
    }
    c.close(&mut out);
    out.iter().for_each(check);
    whole_vs_cut(&recs);
});
