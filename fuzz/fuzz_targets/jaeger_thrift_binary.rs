//! Any binary-Thrift body (`POST /api/traces`) or datagram (the agent's
//! binary port) decodes into spans or fails with an error; never a panic.
//! What decodes must translate back to Jaeger and encode into bytes that
//! decode again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_jaeger::thrift::{encode_batch, encode_emit_batch, Protocol};
use weft_receiver::jaeger::{decode_agent_datagram, decode_thrift_http_body};

fuzz_target!(|data: &[u8]| {
    if let Ok(rs) = decode_thrift_http_body(data) {
        for batch in weft_jaeger::from_otlp(&rs) {
            let again = encode_batch(&batch, Protocol::Binary);
            decode_thrift_http_body(&again).expect("re-encoded body decodes");
        }
    }
    if let Ok(rs) = decode_agent_datagram(data, Protocol::Binary) {
        for batch in weft_jaeger::from_otlp(&rs) {
            let again = encode_emit_batch(&batch, Protocol::Binary, 0);
            decode_agent_datagram(&again, Protocol::Binary).expect("re-encoded datagram decodes");
        }
    }
});
