//! Kernel records into the eBPF receiver's tracker: raw records must decode or be
//! refused, and any sequence of well-formed records (any payload, role, direction,
//! sequence jumps, closes, TLS plaintext with or without a sequence, TLS handshake
//! bytes) must never panic the reassembly, pairing or span building.

#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use weft_receiver::ebpf::config::EbpfReceiverConfig;
use weft_receiver::ebpf::record::{encode, mark_tls, Record};
use weft_receiver::ebpf::span::ProcessFacts;
use weft_receiver::ebpf::tracker::{ProcessSource, Tracker};

struct Fixed;

impl ProcessSource for Fixed {
    fn lookup(&mut self, pid: u32, comm: &str) -> ProcessFacts {
        ProcessFacts::new(pid, comm, None, &BTreeMap::new())
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw decoder sees the input as one record.
    let _ = Record::parse(data);

    let mut t = Tracker::new(Arc::new(EbpfReceiverConfig::default()), Box::new(Fixed));
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut seqs = [0u32; 8];
    let mut rest = data;
    let mut ts = 0u64;
    // Each record: 4 control bytes, then a payload of the length the third one gives.
    while rest.len() >= 4 {
        let (ctl, tail) = rest.split_at(4);
        let n = (ctl[2] as usize).min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        let side = (ctl[0] & 3) as u64;
        let direction = match ctl[0] >> 6 {
            0 => 0,
            1 | 2 => 1 + ((ctl[0] >> 6) & 1),
            _ => 2,
        };
        let role = (ctl[0] >> 2) & 3;
        let slot = (side as usize) * 2 + usize::from(direction == 2);
        // Mostly contiguous, sometimes a jump forward or back.
        let seq = match ctl[1] & 7 {
            0 => seqs[slot].wrapping_add(u32::from(ctl[3])),
            1 => seqs[slot].wrapping_sub(u32::from(ctl[3])),
            _ => seqs[slot],
        };
        let extra = if ctl[1] & 8 != 0 { u64::from(ctl[3]) * 64 } else { 0 };
        let len = if direction == 0 { 0 } else { n as u64 + extra };
        seqs[slot] = seq.wrapping_add(len as u32);
        ts += u64::from(ctl[1] >> 4);
        let mut b = encode(
            1 + (side as u32 & 1),
            7,
            side,
            role,
            direction,
            seq,
            u32::from(ctl[1] >> 5),
            ts,
            (ip, 8080 + side as u16),
            (ip, 40000),
            len,
            if direction == 0 { &[] } else { payload },
            "fuzz",
        );
        // Bits 4 and 5 of the first control byte: OpenSSL plaintext, with or without
        // the ciphertext's sequence.
        if direction != 0 && ctl[0] & 0x10 != 0 {
            mark_tls(&mut b, ctl[0] & 0x20 == 0);
        }
        if let Ok(r) = Record::parse(&b) {
            t.push(&r);
        }
    }
    t.expire(u64::MAX);
    let _ = t.take_spans();
});
