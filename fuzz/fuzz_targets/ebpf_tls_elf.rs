//! Files the eBPF receiver reads to place its OpenSSL uprobes: any bytes (a truncated,
//! corrupt or hostile ELF file mapped by some process) must give an answer or None,
//! never a panic or an offset outside the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_receiver::ebpf::tls::openssl_internals;

fuzz_target!(|data: &[u8]| {
    if let Some(at) = openssl_internals(data) {
        assert!((at.read as usize) < data.len() && (at.write as usize) < data.len());
    }
});
