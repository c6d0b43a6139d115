//! Counting spans in an encoded `ExportTraceServiceRequest` without decoding
//! it: a walk over the protobuf fields `resource_spans` (1) → `scope_spans`
//! (2) → `spans` (2), skipping everything else.

/// Why an encoded message could not be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(Malformed)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Malformed)
}

/// Calls `f(field, bytes)` for every length-delimited field of `buf` and
/// skips the others.
fn for_each_len(
    buf: &[u8],
    mut f: impl FnMut(u64, &[u8]) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos = pos.checked_add(8).ok_or(Malformed)?,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| Malformed)?;
                let end = pos.checked_add(len).ok_or(Malformed)?;
                let body = buf.get(pos..end).ok_or(Malformed)?;
                f(key >> 3, body)?;
                pos = end;
            }
            5 => pos = pos.checked_add(4).ok_or(Malformed)?,
            _ => return Err(Malformed),
        }
        if pos > buf.len() {
            return Err(Malformed);
        }
    }
    Ok(())
}

/// The number of spans in an encoded `ExportTraceServiceRequest`.
pub fn count_spans(request: &[u8]) -> Result<u64, Malformed> {
    let mut n = 0u64;
    for_each_len(request, |field, rs| {
        if field != 1 {
            return Ok(());
        }
        for_each_len(rs, |field, ss| {
            if field != 2 {
                return Ok(());
            }
            for_each_len(ss, |field, _| {
                if field == 2 {
                    n += 1;
                }
                Ok(())
            })
        })
    })?;
    Ok(n)
}

/// The number of spans in an OTLP/JSON `ExportTraceServiceRequest`.
pub fn count_spans_json(request: &[u8]) -> Result<u64, Malformed> {
    let v: serde_json::Value = serde_json::from_slice(request).map_err(|_| Malformed)?;
    let mut n = 0u64;
    let list = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_array()).cloned();
    for rs in list(&v, "resourceSpans").unwrap_or_default() {
        for ss in list(&rs, "scopeSpans").unwrap_or_default() {
            n += list(&ss, "spans").map_or(0, |s| s.len() as u64);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Shape, Templates};
    use prost::Message;

    #[test]
    fn counts_what_prost_encodes() {
        let shape = Shape {
            spans_per_request: 37,
            attributes: 3,
            attribute_size: 10,
        };
        let t = Templates::new(&shape, 2);
        for req in &t.otlp {
            let body = req.encode_to_vec();
            assert_eq!(count_spans(&body), Ok(37));
        }
        let json = t.bodies(crate::payload::Format::OtlpJson);
        assert_eq!(count_spans_json(&json[0]), Ok(37));
    }

    #[test]
    fn refuses_truncated_input() {
        let t = Templates::new(
            &Shape {
                spans_per_request: 5,
                attributes: 1,
                attribute_size: 4,
            },
            1,
        );
        let body = t.otlp[0].encode_to_vec();
        for cut in 1..body.len() {
            // A cut inside a span either fails or counts fewer spans.
            if let Ok(n) = count_spans(&body[..cut]) {
                assert!(n < 5, "cut at {cut} counted {n}");
            }
        }
        assert_eq!(count_spans(&[0x0f]), Err(Malformed));
        assert_eq!(count_spans(&[]), Ok(0));
    }
}
