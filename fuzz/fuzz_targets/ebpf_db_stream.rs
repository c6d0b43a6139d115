//! Arbitrary bytes, cut into arbitrary syscalls with arbitrary capture limits and
//! uncaptured tails, through the eBPF receiver's database framer and each protocol's
//! parser, the first byte picking the protocol: no panic, sane exchanges, and fully
//! captured streams give the same exchanges however each syscall is cut (body in
//! ebpf_db_common.rs; one target per protocol: ebpf_db_redis, _memcached, _postgres,
//! _mysql).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("ebpf_db_common.rs");

fuzz_target!(|data: &[u8]| {
    if let Some((&head, rest)) = data.split_first() {
        run(DbProtocol::ALL[usize::from(head & 3)], rest);
    }
});
