//! Durations parse or fail cleanly, and what parses formats and parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_pipeline::config::duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = duration::parse(text) {
        let again = duration::parse(&duration::format(d)).expect("formatted duration parses");
        assert!(again.as_nanos().abs_diff(d.as_nanos()) <= 1, "{text:?}: {d:?} vs {again:?}");
    }
});
