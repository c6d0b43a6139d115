//! Zipkin v2 JSON (`application/json` at `/api/v2/spans`): a list of spans
//! with hex ids and microsecond times, read leniently and written as the
//! collector writes it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::model::{parse_hex_u64, span_id_hex, Annotation, Endpoint, Kind, Span, TraceId};
use crate::Error;

/// Encodes spans as a v2 JSON list. As the collector's encoder does, span
/// names and service names are lower-cased (Zipkin's own store lower-cases
/// them too) and empty fields are left out.
pub fn encode(spans: &[Span]) -> Vec<u8> {
    let out: Vec<OutSpan<'_>> = spans.iter().map(OutSpan::new).collect();
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_vec(&out).unwrap_or_else(|_| b"[]".to_vec())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutSpan<'a> {
    trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_endpoint: Option<OutEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<OutEndpoint>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    annotations: Vec<OutAnnotation<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    debug: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shared: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutEndpoint {
    #[serde(skip_serializing_if = "String::is_empty")]
    service_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    port: u16,
}

fn is_zero(p: &u16) -> bool {
    *p == 0
}

#[derive(Serialize)]
struct OutAnnotation<'a> {
    timestamp: u64,
    value: &'a str,
}

impl<'a> OutSpan<'a> {
    fn new(s: &'a Span) -> OutSpan<'a> {
        OutSpan {
            trace_id: s.trace_id.to_hex(),
            parent_id: s.parent_id.map(span_id_hex),
            id: span_id_hex(s.id),
            kind: s.kind.map(Kind::as_str),
            name: s.name.to_lowercase(),
            timestamp: s.timestamp,
            duration: s.duration.filter(|d| *d > 0),
            local_endpoint: OutEndpoint::new(s.local_endpoint.as_ref()),
            remote_endpoint: OutEndpoint::new(s.remote_endpoint.as_ref()),
            annotations: s
                .annotations
                .iter()
                .map(|a| OutAnnotation {
                    timestamp: a.timestamp,
                    value: &a.value,
                })
                .collect(),
            tags: &s.tags,
            debug: s.debug,
            shared: s.shared,
        }
    }
}

impl OutEndpoint {
    fn new(e: Option<&Endpoint>) -> Option<OutEndpoint> {
        let e = e.filter(|e| !e.is_empty())?;
        Some(OutEndpoint {
            service_name: e.service_name.to_lowercase(),
            ipv4: e.ipv4.map(|ip| ip.to_string()),
            ipv6: e.ipv6.map(|ip| ip.to_string()),
            port: e.port,
        })
    }
}

/// A tag or binary-annotation value. Zipkin says strings; numbers and
/// booleans, which some tracers send, are kept as their JSON text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TagValue {
    String(String),
    Bool(bool),
    Number(serde_json::Number),
    Null(()),
}

impl TagValue {
    pub(crate) fn into_string(self) -> String {
        match self {
            TagValue::String(s) => s,
            TagValue::Bool(b) => b.to_string(),
            TagValue::Number(n) => n.to_string(),
            TagValue::Null(()) => String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    debug: Option<bool>,
    shared: Option<bool>,
    local_endpoint: Option<InEndpoint>,
    remote_endpoint: Option<InEndpoint>,
    annotations: Option<Vec<Option<InAnnotation>>>,
    tags: Option<BTreeMap<String, TagValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InEndpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize)]
struct InAnnotation {
    timestamp: Option<u64>,
    value: Option<String>,
}

/// Decodes a v2 JSON list of spans. Unknown fields are ignored; `null` for
/// the list or one of its spans means none.
pub fn decode(body: &[u8]) -> Result<Vec<Span>, Error> {
    let list: Option<Vec<Option<InSpan>>> =
        serde_json::from_slice(body).map_err(|e| Error::Json(e.to_string()))?;
    list.unwrap_or_default()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| span(s).map_err(|e| Error::InvalidSpan(format!("span {i}: {e}"))))
        .collect()
}

fn span(s: InSpan) -> Result<Span, String> {
    let trace_id = match s.trace_id.as_deref() {
        None | Some("") => return Err("traceId is required".into()),
        Some(t) => TraceId::parse_hex(t)?,
    };
    if trace_id.is_zero() {
        return Err("traceId is zero".into());
    }
    let id = match s.id.as_deref() {
        None | Some("") => return Err("id is required".into()),
        Some(t) => parse_hex_u64(t).map_err(|e| format!("id {e}"))?,
    };
    if id == 0 {
        return Err("id is zero".into());
    }
    let parent_id = match s.parent_id.as_deref() {
        None | Some("") => None,
        Some(t) => Some(parse_hex_u64(t).map_err(|e| format!("parentId {e}"))?),
    };
    let mut annotations = Vec::new();
    for a in s.annotations.unwrap_or_default().into_iter().flatten() {
        let timestamp = a.timestamp.unwrap_or(0);
        if timestamp == 0 {
            return Err("an annotation has no timestamp".into());
        }
        annotations.push(Annotation {
            timestamp,
            value: a.value.unwrap_or_default(),
        });
    }
    Ok(Span {
        trace_id,
        id,
        parent_id: parent_id.filter(|p| *p != 0),
        name: s.name.unwrap_or_default(),
        kind: s.kind.as_deref().and_then(Kind::parse),
        timestamp: s.timestamp.filter(|t| *t != 0),
        duration: s.duration.filter(|d| *d != 0),
        local_endpoint: endpoint(s.local_endpoint, "localEndpoint")?,
        remote_endpoint: endpoint(s.remote_endpoint, "remoteEndpoint")?,
        annotations,
        tags: s
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_string()))
            .collect(),
        debug: s.debug.unwrap_or(false),
        shared: s.shared.unwrap_or(false),
    })
}

fn endpoint(e: Option<InEndpoint>, field: &str) -> Result<Option<Endpoint>, String> {
    let Some(e) = e else { return Ok(None) };
    let ipv4 = match e.ipv4.as_deref() {
        None | Some("") => None,
        Some(ip) => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| format!("{field}.ipv4 {ip:?} is not an IPv4 address"))?,
        ),
    };
    let ipv6 = match e.ipv6.as_deref() {
        None | Some("") => None,
        Some(ip) => Some(
            ip.parse::<Ipv6Addr>()
                .map_err(|_| format!("{field}.ipv6 {ip:?} is not an IPv6 address"))?,
        ),
    };
    let endpoint = Endpoint {
        service_name: e.service_name.unwrap_or_default(),
        ipv4,
        ipv6,
        port: e.port.unwrap_or(0),
    };
    Ok((!endpoint.is_empty()).then_some(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_span() -> Span {
        Span {
            trace_id: TraceId {
                high: 0x0af7_6519_16cd_43dd,
                low: 0x8448_eb21_1c80_319c,
            },
            id: 0xb7ad_6b71_6920_3331,
            parent_id: Some(0x00f0_67aa_0ba9_02b7),
            name: "GET /Cart".into(),
            kind: Some(Kind::Server),
            timestamp: Some(1_700_000_000_123_456),
            duration: Some(250_000),
            local_endpoint: Some(Endpoint {
                service_name: "Checkout".into(),
                ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
                ipv6: None,
                port: 8080,
            }),
            remote_endpoint: Some(Endpoint {
                service_name: String::new(),
                ipv4: None,
                ipv6: Some("2001:db8::1".parse().unwrap()),
                port: 0,
            }),
            annotations: vec![Annotation {
                timestamp: 1_700_000_000_200_000,
                value: "cache miss".into(),
            }],
            tags: [("http.method".to_string(), "GET".to_string())].into(),
            debug: true,
            shared: true,
        }
    }

    #[test]
    fn encodes_every_field() {
        let text = String::from_utf8(encode(&[full_span()])).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"[{"traceId":"0af7651916cd43dd8448eb211c80319c","parentId":"00f067aa0ba902b7","#,
                r#""id":"b7ad6b7169203331","kind":"SERVER","name":"get /cart","#,
                r#""timestamp":1700000000123456,"duration":250000,"#,
                r#""localEndpoint":{"serviceName":"checkout","ipv4":"10.0.0.1","port":8080},"#,
                r#""remoteEndpoint":{"ipv6":"2001:db8::1"},"#,
                r#""annotations":[{"timestamp":1700000000200000,"value":"cache miss"}],"#,
                r#""tags":{"http.method":"GET"},"debug":true,"shared":true}]"#
            )
        );
        let minimal = Span {
            trace_id: TraceId { high: 0, low: 1 },
            id: 2,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(encode(&[minimal])).unwrap(),
            r#"[{"traceId":"0000000000000001","id":"0000000000000002"}]"#
        );
        assert_eq!(encode(&[]), b"[]");
    }

    #[test]
    fn decodes_what_it_encodes_except_case() {
        let mut want = full_span();
        let got = decode(&encode(&[want.clone()])).unwrap();
        want.name = "get /cart".into();
        want.local_endpoint.as_mut().unwrap().service_name = "checkout".into();
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn lenient_where_tracers_differ() {
        let body = br#"[
            {"traceId":"ABC","id":"1","parentId":"","kind":null,"name":null,
             "tags":{"n":12,"b":false,"z":null,"s":"x"},"extra":{"ignored":[1]},
             "localEndpoint":{"serviceName":"svc","ipv4":""},"remoteEndpoint":{}},
            null
        ]"#;
        let spans = decode(body).unwrap();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(
            s.trace_id,
            TraceId {
                high: 0,
                low: 0xabc
            }
        );
        assert_eq!(s.id, 1);
        assert_eq!(s.parent_id, None);
        assert_eq!(s.kind, None);
        assert_eq!(s.remote_endpoint, None);
        assert_eq!(s.local_endpoint.as_ref().unwrap().service_name, "svc");
        assert_eq!(
            s.tags,
            [("b", "false"), ("n", "12"), ("s", "x"), ("z", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into()
        );
        assert_eq!(decode(b"null").unwrap(), vec![]);
        assert_eq!(decode(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn rejects_what_zipkin_rejects() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "cannot decode the Zipkin JSON body"),
            (b"{}", "cannot decode the Zipkin JSON body"),
            (br#"[{"id":"1"}]"#, "span 0: traceId is required"),
            (br#"[{"traceId":"1"}]"#, "span 0: id is required"),
            (br#"[{"traceId":"0","id":"1"}]"#, "span 0: traceId is zero"),
            (br#"[{"traceId":"1","id":"0"}]"#, "span 0: id is zero"),
            (
                br#"[{"traceId":"xyz","id":"1"}]"#,
                "span 0: \"xyz\" is not a hex id",
            ),
            (
                br#"[{"traceId":"1","id":"11111111111111111"}]"#,
                "span 0: id \"11111111111111111\"",
            ),
            (
                br#"[{"traceId":"1","id":"1","parentId":"q"}]"#,
                "span 0: parentId",
            ),
            (
                br#"[{"traceId":"1","id":"1","timestamp":-5}]"#,
                "cannot decode the Zipkin JSON body",
            ),
            (
                br#"[{"traceId":"1","id":"1","timestamp":1.5}]"#,
                "cannot decode the Zipkin JSON body",
            ),
            (
                br#"[{"traceId":"1","id":"1","annotations":[{"value":"x"}]}]"#,
                "span 0: an annotation has no timestamp",
            ),
            (
                br#"[{"traceId":"1","id":"1","localEndpoint":{"ipv4":"1.2.3"}}]"#,
                "span 0: localEndpoint.ipv4 \"1.2.3\" is not an IPv4 address",
            ),
            (
                br#"[{"traceId":"1","id":"1","remoteEndpoint":{"port":70000}}]"#,
                "cannot decode the Zipkin JSON body",
            ),
            (
                br#"[{"traceId":"1","id":"1","tags":{"a":{"b":1}}}]"#,
                "cannot decode the Zipkin JSON body",
            ),
        ];
        for (body, want) in cases {
            let err = decode(body).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
