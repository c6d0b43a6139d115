//! Arbitrary header blocks through the eBPF receiver's HPACK decoder, one connection
//! direction's table carried from block to block: no panic, every block within the
//! caps, the table within its bound, secret values never returned, and an error
//! leaves the table empty (positions unknown, nothing guessed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_receiver::ebpf::hpack::{
    Decoder, Field, MAX_BLOCK_FIELDS, MAX_BLOCK_OUTPUT, MAX_TABLE_BYTES,
};

// Input layout: blocks of `[len_hi][len_lo][len bytes]`.
fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::default();
    let secret = |name: &str| name == "authorization" || name == "cookie";
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let n = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let block = &tail[..n];
        rest = &tail[n..];
        let mut out: Vec<Field> = Vec::new();
        match d.decode(block, &secret, &mut out) {
            Ok(info) => {
                assert!(out.len() <= MAX_BLOCK_FIELDS);
                let bytes: usize = out
                    .iter()
                    .map(|f| {
                        f.name.as_ref().map_or(0, String::len)
                            + f.value.as_ref().map_or(0, String::len)
                    })
                    .sum();
                assert!(bytes <= MAX_BLOCK_OUTPUT, "{bytes}");
                // Fields past the caps are counted, not returned.
                let unknown = out.iter().filter(|f| f.name.is_none()).count();
                assert!(unknown <= info.unknown_fields as usize);
                for f in &out {
                    if f.name.as_deref().is_some_and(secret) {
                        assert!(f.value.is_none(), "{f:?}");
                    }
                }
            }
            Err(_) => assert_eq!((d.entries(), d.table_bytes()), (0, 0)),
        }
        assert!(d.table_bytes() <= MAX_TABLE_BYTES);
    }
});
