//! Any `PostSpansRequest` bytes decode into spans or fail with an error;
//! never a panic. What decodes must translate back to Jaeger and encode
//! into a request that decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft_jaeger::proto::{batch_to_proto, PostSpansRequest};
use weft_receiver::jaeger::decode_post_spans;

fuzz_target!(|data: &[u8]| {
    let Ok(rs) = decode_post_spans(data) else {
        return;
    };
    for batch in weft_jaeger::from_otlp(&rs) {
        let again = PostSpansRequest {
            batch: Some(batch_to_proto(&batch)),
        }
        .encode_to_vec();
        decode_post_spans(&again).expect("re-encoded request decodes");
    }
});
