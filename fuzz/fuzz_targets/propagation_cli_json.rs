//! Arbitrary standard input through `weft context extract|inject|convert`:
//! an error or JSON, never a panic; what extract prints, inject accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_propagation::{convert_json, extract_json, inject_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(out) = extract_json(text, None) {
        inject_json(&out, None).expect("extract output is inject input");
    }
    let _ = inject_json(text, None);
    let _ = convert_json(text);
});
