// The body shared by the ebpf_db_* fuzz targets (included, not a target itself).

use weft_receiver::ebpf::db::{DbConnection, DbExchange, DbProtocol, Side, TextPolicy};
use weft_receiver::ebpf::http1::{Chunk, Tag};

/// One syscall's record as the fuzzer describes it.
struct Record<'a> {
    side: Side,
    bytes: &'a [u8],
    /// Bytes that existed past `bytes` but were not captured.
    uncaptured: usize,
}

/// Input layout: one byte picking the capture limit, then records of
/// `[op][len][len bytes]`; op bit 0 = side, bits 1.. = uncaptured length / 512.
fn records(data: &[u8]) -> (usize, Vec<Record<'_>>) {
    let Some((&head, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let cap = 1 + usize::from(head) * 8;
    let mut out = Vec::new();
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        out.push(Record {
            side: if op & 1 == 0 { Side::Request } else { Side::Response },
            bytes: &tail[..n],
            uncaptured: usize::from(op >> 1) * 512,
        });
        rest = &tail[n..];
    }
    (cap, out)
}

fn check(x: &DbExchange) {
    assert!(x.req.ts_ns <= x.req_end_ns, "{x:?}");
    assert!(x.req_end_ns <= x.resp_end_ns, "{x:?}");
    if let Some(r) = x.resp {
        assert!(r.ts_ns <= x.resp_end_ns, "{x:?}");
    }
    assert!(!x.request.operation.is_empty(), "{x:?}");
    if let Some(t) = &x.request.text {
        assert!(t.chars().count() <= TextPolicy::default().max_length + 3, "{x:?}");
    }
}

/// Every record fed whole, then every record cut in two at `at % len`: the same.
fn whole_vs_cut(protocol: DbProtocol, recs: &[Record<'_>], salt: usize) {
    let run = |cut: bool| {
        let mut c = DbConnection::new(protocol, TextPolicy::default());
        let mut out = Vec::new();
        let mut seq = [0u32, 0u32];
        for (i, r) in recs.iter().enumerate() {
            let at = if cut && r.bytes.len() > 1 {
                1 + (salt + i) % (r.bytes.len() - 1)
            } else {
                r.bytes.len()
            };
            for p in [&r.bytes[..at], &r.bytes[at..]] {
                if p.is_empty() {
                    continue;
                }
                let s = &mut seq[usize::from(r.side == Side::Response)];
                let chunk = Chunk::full(p, i as u64, *s);
                *s = s.wrapping_add(p.len() as u32);
                c.feed(r.side, &chunk, &mut out);
            }
        }
        c.close(&mut out);
        (out, c.stats().clone())
    };
    assert_eq!(run(false), run(true));
}

/// Feeds the records to one protocol's reader and checks what comes out.
pub fn run(protocol: DbProtocol, data: &[u8]) {
    let (cap, recs) = records(data);
    let mut c = DbConnection::new(protocol, TextPolicy::default());
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
        c.feed(r.side, &chunk, &mut out);
    }
    c.close(&mut out);
    out.iter().for_each(check);
    whole_vs_cut(protocol, &recs, data.len());
}
