//! Any body posted to `/api/v2/spans` as `application/x-protobuf` decodes to
//! traces or fails with a 400; and whatever decodes translates to OTLP that
//! the zipkin exporter can translate back without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_pipeline::Payload;
use weft_receiver::zipkin::{decode_zipkin, ApiVersion};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let parse_string_tags = selector & 1 != 0;
    match decode_zipkin(
        ApiVersion::V2,
        "application/x-protobuf",
        None,
        body,
        LIMIT,
        parse_string_tags,
    ) {
        Ok(Payload::Traces(rs)) => {
            let back = weft_zipkin::from_otlp(&rs, "fuzz");
            assert_eq!(back.invalid, 0, "every received span has valid ids");
            let _ = weft_zipkin::proto::encode(&back.spans);
            let _ = weft_zipkin::json::encode(&back.spans);
        }
        Ok(other) => panic!("not traces: {:?}", other.signal()),
        Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
    }
});
