//! Arbitrary bytes, cut into arbitrary syscalls with arbitrary capture limits and
//! uncaptured tails, through the eBPF receiver's database framer and its Mysql parser
//! (body in ebpf_db_common.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("ebpf_db_common.rs");

fuzz_target!(|data: &[u8]| run(DbProtocol::Mysql, data));
