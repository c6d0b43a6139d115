//! Arbitrary datagrams through the eBPF receiver's DNS parser and per-socket pairing:
//! no panic, every exchange pairs a query with an answer of the same id (and name and
//! type, when the answer repeats its question) travelling the other way, and nothing
//! is left waiting past the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_receiver::ebpf::dns::{self, Datagram, DnsSocket, MAX_WAITING};
use weft_receiver::ebpf::http1::Tag;

/// Input layout: records of `[op][len][len bytes]`; op bit 0 = sent by the socket.
fuzz_target!(|data: &[u8]| {
    let mut s = DnsSocket::default();
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0u64;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let payload = &tail[..n];
        rest = &tail[n..];
        i += 1;
        if let Ok(m) = dns::parse(payload) {
            assert!(m.name.len() <= 4 * 255, "{m:?}");
            assert!(m.rcode < 16 && m.opcode < 16);
        }
        let sent = op & 1 == 1;
        let before = out.len();
        s.feed(
            &Datagram {
                payload,
                sent,
                ts_ns: i,
                end_ns: i,
                tag: Tag::default(),
                peer: None,
            },
            &mut out,
        );
        if let Some(x) = out.get(before) {
            let answer = dns::parse(payload).expect("an exchange ends at a parsed answer");
            assert!(answer.response && !x.query.response);
            assert_eq!(answer.id, x.query.id);
            if !answer.name.is_empty() {
                assert_eq!((answer.qtype, &answer.name), (x.query.qtype, &x.query.name));
            }
            assert_eq!(x.client, !sent);
            assert!(x.req_ts_ns <= x.resp_ts_ns);
        }
        assert!(s.waiting() <= MAX_WAITING);
    }
    s.close();
    assert_eq!(s.waiting(), 0);
});
