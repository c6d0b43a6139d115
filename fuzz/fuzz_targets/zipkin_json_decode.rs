//! Any body posted to the zipkin receiver's JSON endpoints (v2 or v1, with
//! or without `parse_string_tags`, plain or gzip) decodes to traces or fails
//! with a status-mapped error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_receiver::zipkin::{decode_zipkin, ApiVersion};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let version = if selector & 1 == 0 {
        ApiVersion::V2
    } else {
        ApiVersion::V1
    };
    let parse_string_tags = selector & 2 != 0;
    let encoding = (selector & 4 != 0).then_some("gzip");
    match decode_zipkin(
        version,
        "application/json",
        encoding,
        body,
        LIMIT,
        parse_string_tags,
    ) {
        Ok(payload) => assert_eq!(payload.signal(), weft_pipeline::Signal::Traces),
        Err(e) => {
            let status = e.http_status();
            assert!(matches!(status, 400 | 413), "{e}: {status}");
        }
    }
});
