//! Any datagram on the agent's compact-Thrift port decodes into spans or
//! fails with an error; never a panic. What decodes must translate back to
//! Jaeger and encode into a datagram that decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_jaeger::thrift::{encode_emit_batch, Protocol};
use weft_receiver::jaeger::decode_agent_datagram;

fuzz_target!(|data: &[u8]| {
    let Ok(rs) = decode_agent_datagram(data, Protocol::Compact) else {
        return;
    };
    for batch in weft_jaeger::from_otlp(&rs) {
        let again = encode_emit_batch(&batch, Protocol::Compact, 0);
        decode_agent_datagram(&again, Protocol::Compact).expect("re-encoded datagram decodes");
    }
});
