//! Zipkin v2 proto3 (`application/x-protobuf` at `/api/v2/spans`): the
//! messages of openzipkin's `zipkin.proto` (package `zipkin.proto3`), written
//! out by hand, and their conversion to and from the span model.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use prost::Message;

use crate::model::{Annotation, Endpoint, Kind, Span, TraceId};
use crate::Error;

/// `zipkin.proto3.Span`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoSpan {
    /// 8 or 16 bytes, big-endian.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes, or empty for a root span.
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// `Span.Kind`: 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub name: String,
    /// Epoch microseconds.
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    /// Microseconds.
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<ProtoEndpoint>,
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<ProtoEndpoint>,
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<ProtoAnnotation>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "12")]
    pub debug: bool,
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

/// `zipkin.proto3.Endpoint`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoEndpoint {
    #[prost(string, tag = "1")]
    pub service_name: String,
    /// 4 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub port: i32,
}

/// `zipkin.proto3.Annotation`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoAnnotation {
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `zipkin.proto3.ListOfSpans`, the body of a proto3 POST.
#[derive(Clone, PartialEq, Message)]
pub struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
}

/// Encodes spans as a `ListOfSpans`. Trace ids are always 16 bytes, as the
/// collector writes them (its receiver accepts nothing shorter).
pub fn encode(spans: &[Span]) -> Vec<u8> {
    ListOfSpans {
        spans: spans.iter().map(to_proto).collect(),
    }
    .encode_to_vec()
}

fn to_proto(s: &Span) -> ProtoSpan {
    ProtoSpan {
        trace_id: s.trace_id.to_bytes().to_vec(),
        parent_id: s
            .parent_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        id: s.id.to_be_bytes().to_vec(),
        kind: s.kind.map_or(0, Kind::proto_number),
        name: s.name.clone(),
        timestamp: s.timestamp.unwrap_or(0),
        duration: s.duration.unwrap_or(0),
        local_endpoint: s.local_endpoint.as_ref().and_then(endpoint_to_proto),
        remote_endpoint: s.remote_endpoint.as_ref().and_then(endpoint_to_proto),
        annotations: s
            .annotations
            .iter()
            .map(|a| ProtoAnnotation {
                timestamp: a.timestamp,
                value: a.value.clone(),
            })
            .collect(),
        tags: s.tags.clone(),
        debug: s.debug,
        shared: s.shared,
    }
}

fn endpoint_to_proto(e: &Endpoint) -> Option<ProtoEndpoint> {
    (!e.is_empty()).then(|| ProtoEndpoint {
        service_name: e.service_name.clone(),
        ipv4: e.ipv4.map(|ip| ip.octets().to_vec()).unwrap_or_default(),
        ipv6: e.ipv6.map(|ip| ip.octets().to_vec()).unwrap_or_default(),
        port: i32::from(e.port),
    })
}

/// Decodes a `ListOfSpans` body.
pub fn decode(body: &[u8]) -> Result<Vec<Span>, Error> {
    let list = ListOfSpans::decode(body).map_err(|e| Error::Protobuf(e.to_string()))?;
    list.spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| from_proto(s).map_err(|e| Error::InvalidSpan(format!("span {i}: {e}"))))
        .collect()
}

fn from_proto(s: ProtoSpan) -> Result<Span, String> {
    let trace_id = TraceId::from_bytes(&s.trace_id)
        .ok_or_else(|| format!("trace_id has {} bytes, expected 8 or 16", s.trace_id.len()))?;
    if trace_id.is_zero() {
        return Err("trace_id is zero".into());
    }
    let id = span_id(&s.id, "id")?.ok_or("id is required")?;
    if id == 0 {
        return Err("id is zero".into());
    }
    let parent_id = span_id(&s.parent_id, "parent_id")?.filter(|p| *p != 0);
    Ok(Span {
        trace_id,
        id,
        parent_id,
        name: s.name,
        kind: Kind::from_proto_number(s.kind),
        timestamp: (s.timestamp != 0).then_some(s.timestamp),
        duration: (s.duration != 0).then_some(s.duration),
        local_endpoint: endpoint_from_proto(s.local_endpoint, "local_endpoint")?,
        remote_endpoint: endpoint_from_proto(s.remote_endpoint, "remote_endpoint")?,
        annotations: s
            .annotations
            .into_iter()
            .map(|a| Annotation {
                timestamp: a.timestamp,
                value: a.value,
            })
            .collect(),
        tags: s.tags,
        debug: s.debug,
        shared: s.shared,
    })
}

fn span_id(b: &[u8], field: &str) -> Result<Option<u64>, String> {
    match b.len() {
        0 => Ok(None),
        8 => Ok(b.try_into().ok().map(u64::from_be_bytes)),
        n => Err(format!("{field} has {n} bytes, expected 8")),
    }
}

fn endpoint_from_proto(e: Option<ProtoEndpoint>, field: &str) -> Result<Option<Endpoint>, String> {
    let Some(e) = e else { return Ok(None) };
    let mut ipv4 = None;
    let mut ipv6 = None;
    match e.ipv4.len() {
        0 => {}
        4 => ipv4 = <[u8; 4]>::try_from(&e.ipv4[..]).ok().map(Ipv4Addr::from),
        // Some writers put the 16-byte form of an IPv4 address here.
        16 => {
            let ip = <[u8; 16]>::try_from(&e.ipv4[..]).ok().map(Ipv6Addr::from);
            match ip.and_then(|ip| ip.to_ipv4_mapped()) {
                Some(v4) => ipv4 = Some(v4),
                None => ipv6 = ip,
            }
        }
        n => return Err(format!("{field}.ipv4 has {n} bytes, expected 4")),
    }
    match e.ipv6.len() {
        0 => {}
        16 => ipv6 = <[u8; 16]>::try_from(&e.ipv6[..]).ok().map(Ipv6Addr::from),
        n => return Err(format!("{field}.ipv6 has {n} bytes, expected 16")),
    }
    let port =
        u16::try_from(e.port).map_err(|_| format!("{field}.port {} is out of range", e.port))?;
    let endpoint = Endpoint {
        service_name: e.service_name,
        ipv4,
        ipv6,
        port,
    };
    Ok((!endpoint.is_empty()).then_some(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            trace_id: TraceId {
                high: 0,
                low: 0x1234,
            },
            id: 0xfeed,
            parent_id: Some(7),
            name: "Query".into(),
            kind: Some(Kind::Consumer),
            timestamp: Some(1_600_000_000_000_001),
            duration: Some(3),
            local_endpoint: Some(Endpoint {
                service_name: "Billing".into(),
                ipv4: Some(Ipv4Addr::new(192, 168, 1, 2)),
                ipv6: Some("::1".parse().unwrap()),
                port: 443,
            }),
            remote_endpoint: None,
            annotations: vec![Annotation {
                timestamp: 1_600_000_000_000_002,
                value: "retry".into(),
            }],
            tags: [("k".to_string(), "v".to_string())].into(),
            debug: false,
            shared: true,
        }
    }

    #[test]
    fn wire_fields_and_numbers() {
        let bytes = encode(&[span()]);
        let list = ListOfSpans::decode(&bytes[..]).unwrap();
        let p = &list.spans[0];
        // 64-bit trace ids still take 16 bytes, upper half zero.
        assert_eq!(
            p.trace_id,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]
        );
        assert_eq!(p.parent_id, 7u64.to_be_bytes());
        assert_eq!(p.id, 0xfeedu64.to_be_bytes());
        assert_eq!(p.kind, 4);
        assert_eq!(p.name, "Query");
        let local = p.local_endpoint.as_ref().unwrap();
        assert_eq!(local.service_name, "Billing");
        assert_eq!(local.ipv4, [192, 168, 1, 2]);
        assert_eq!(local.ipv6.len(), 16);
        assert_eq!(local.port, 443);
        assert_eq!(p.remote_endpoint, None);
        assert!(p.shared);
        // Round trip, names keep their case in proto.
        assert_eq!(decode(&bytes).unwrap(), vec![span()]);
    }

    #[test]
    fn root_spans_have_no_parent_bytes() {
        let mut s = span();
        s.parent_id = None;
        let list = ListOfSpans::decode(&encode(&[s])[..]).unwrap();
        assert!(list.spans[0].parent_id.is_empty());
    }

    #[test]
    fn accepts_8_byte_trace_ids_and_mapped_ipv4() {
        let p = ProtoSpan {
            trace_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
            id: vec![0, 0, 0, 0, 0, 0, 0, 1],
            parent_id: vec![0; 8],
            local_endpoint: Some(ProtoEndpoint {
                ipv4: Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped().octets().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = ListOfSpans { spans: vec![p] }.encode_to_vec();
        let s = &decode(&body).unwrap()[0];
        assert_eq!(s.trace_id, TraceId { high: 0, low: 9 });
        assert_eq!(s.parent_id, None);
        assert_eq!(
            s.local_endpoint.as_ref().unwrap().ipv4,
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
    }

    #[test]
    fn rejects_bad_ids_and_addresses() {
        let good = || ProtoSpan {
            trace_id: vec![1; 16],
            id: vec![1; 8],
            ..Default::default()
        };
        let cases: Vec<(ProtoSpan, &str)> = vec![
            (
                ProtoSpan {
                    trace_id: vec![1; 5],
                    ..good()
                },
                "trace_id has 5 bytes",
            ),
            (
                ProtoSpan {
                    trace_id: vec![0; 16],
                    ..good()
                },
                "trace_id is zero",
            ),
            (
                ProtoSpan {
                    id: vec![],
                    ..good()
                },
                "id is required",
            ),
            (
                ProtoSpan {
                    id: vec![0; 8],
                    ..good()
                },
                "id is zero",
            ),
            (
                ProtoSpan {
                    id: vec![1; 4],
                    ..good()
                },
                "id has 4 bytes",
            ),
            (
                ProtoSpan {
                    parent_id: vec![1; 9],
                    ..good()
                },
                "parent_id has 9 bytes",
            ),
            (
                ProtoSpan {
                    remote_endpoint: Some(ProtoEndpoint {
                        ipv4: vec![1, 2, 3],
                        ..Default::default()
                    }),
                    ..good()
                },
                "remote_endpoint.ipv4 has 3 bytes",
            ),
            (
                ProtoSpan {
                    local_endpoint: Some(ProtoEndpoint {
                        port: -1,
                        ..Default::default()
                    }),
                    ..good()
                },
                "local_endpoint.port -1 is out of range",
            ),
        ];
        for (span, want) in cases {
            let body = ListOfSpans { spans: vec![span] }.encode_to_vec();
            let err = decode(&body).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = decode(&[0xff; 11]).unwrap_err();
        assert!(matches!(err, Error::Protobuf(_)), "{err:?}");
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }
}
