//! Any OTLP/HTTP body, under any content type and encoding the receiver
//! accepts, decodes or fails with a status-mapped error; never a panic, and
//! never more than the size limit after decompression.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_pipeline::Signal;
use weft_receiver::otlp::decode_request;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let signal = [Signal::Traces, Signal::Metrics, Signal::Logs][(selector % 3) as usize];
    let content_type = if selector & 0x04 == 0 { "application/x-protobuf" } else { "application/json" };
    let encoding = match (selector >> 3) % 4 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("zstd"),
        _ => Some("deflate"),
    };
    match decode_request(signal, content_type, encoding, body, LIMIT) {
        Ok(payload) => assert_eq!(payload.signal(), signal),
        Err(e) => {
            let status = e.http_status();
            assert!(matches!(status, 400 | 413 | 415), "{e}: {status}");
        }
    }
});
