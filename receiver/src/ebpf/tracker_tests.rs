//! The tracker on synthetic kernel records: span contents, the syscall trace id, stream
//! reassembly across lost and repeated bytes, filters, and record decoding.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

use super::config::{EbpfReceiverConfig, Selector};
use super::record::{encode, Record, RecordError, HEADER_LEN};
use super::span::{container_id_from_cgroup, ProcessFacts};
use super::tracker::{ProcessSource, Tracker};

struct Fixed;

impl ProcessSource for Fixed {
    fn lookup(&mut self, pid: u32, comm: &str) -> ProcessFacts {
        let mut names = BTreeMap::new();
        names.insert("server".to_string(), "shop".to_string());
        ProcessFacts::new(pid, comm, None, &names)
    }
}

const SERVER: u8 = 2;
const CLIENT: u8 = 1;
const UNKNOWN: u8 = 0;
const EGRESS: u8 = 1;
const INGRESS: u8 = 2;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// One side of a connection as a process sees it.
#[derive(Clone, Copy)]
struct Side {
    pid: u32,
    tid: u32,
    sock: u64,
    role: u8,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    comm: &'static str,
}

struct Sim {
    t: Tracker,
    ts: u64,
    cap: u32,
}

impl Sim {
    fn new(config: EbpfReceiverConfig) -> Sim {
        let mut t = Tracker::new(Arc::new(config), Box::new(Fixed));
        t.set_clock_offset(1_000_000_000_000);
        Sim {
            t,
            ts: 1_000,
            cap: 0,
        }
    }

    /// One syscall moving `bytes` (all captured) at `seq`.
    fn io(&mut self, s: Side, dir: u8, seq: u32, bytes: &[u8]) {
        self.io_part(s, dir, seq, bytes, bytes.len() as u64);
    }

    fn io_part(&mut self, s: Side, dir: u8, seq: u32, captured: &[u8], len: u64) {
        self.ts += 1_000;
        let b = encode(
            s.pid, s.tid, s.sock, s.role, dir, seq, self.cap, self.ts, s.local, s.remote, len,
            captured, s.comm,
        );
        self.cap += 1;
        let r = Record::parse(&b).expect("test record decodes");
        self.t.push(&r);
    }

    /// One UDP datagram (flag 0x8, no TCP sequence).
    fn datagram(&mut self, s: Side, dir: u8, bytes: &[u8]) {
        self.ts += 1_000;
        let mut b = encode(
            s.pid,
            s.tid,
            s.sock,
            s.role,
            dir,
            0,
            self.cap,
            self.ts,
            s.local,
            s.remote,
            bytes.len() as u64,
            bytes,
            s.comm,
        );
        b[69] |= super::record::FLAG_UDP;
        self.cap += 1;
        let r = Record::parse(&b).expect("test record decodes");
        self.t.push(&r);
    }

    fn close(&mut self, s: Side) {
        self.ts += 1_000;
        let b = encode(
            s.pid, s.tid, s.sock, s.role, 0, 0, self.cap, self.ts, s.local, s.remote, 0, b"",
            s.comm,
        );
        let r = Record::parse(&b).expect("test record decodes");
        self.t.push(&r);
    }

    fn spans(&mut self) -> Vec<(u32, Span)> {
        flatten(self.t.take_spans())
    }
}

fn flatten(rs: Vec<ResourceSpans>) -> Vec<(u32, Span)> {
    let mut out = Vec::new();
    for r in rs {
        let pid = r
            .resource
            .as_ref()
            .and_then(|res| res.attributes.iter().find(|kv| kv.key == "process.pid"))
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match v.value {
                Some(Value::IntValue(i)) => Some(i as u32),
                _ => None,
            })
            .unwrap_or(0);
        for ss in r.scope_spans {
            for s in ss.spans {
                out.push((pid, s));
            }
        }
    }
    out
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Value::IntValue(i)) => *i,
        other => panic!("{key}: {other:?}"),
    }
}

fn string(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Value::StringValue(v)) => v.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

fn pair() -> (Side, Side) {
    let server = Side {
        pid: 100,
        tid: 101,
        sock: 11,
        role: SERVER,
        local: (v4(1), 8080),
        remote: (v4(2), 40000),
        comm: "server",
    };
    let client = Side {
        pid: 200,
        tid: 201,
        sock: 22,
        role: CLIENT,
        local: (v4(2), 40000),
        remote: (v4(1), 8080),
        comm: "curl",
    };
    (server, client)
}

const REQ: &[u8] = b"GET /items/7?x=1 HTTP/1.1\r\nHost: shop.local:8080\r\nAuthorization: Bearer s3cret\r\nCookie: id=c00kie\r\nX-Request-ID: rid-1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: s=secret3\r\n\r\nhello";

#[test]
fn one_exchange_gives_a_server_and_a_client_span_with_mirrored_facts() {
    let (server, client) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(client, EGRESS, 1000, REQ);
    sim.io(server, INGRESS, 1000, REQ);
    sim.io(server, EGRESS, 7000, RESP);
    sim.io(client, INGRESS, 7000, RESP);
    let spans = sim.spans();
    assert_eq!(spans.len(), 2);
    let (spid, s) = spans
        .iter()
        .find(|(_, s)| s.kind == 2)
        .expect("server span");
    let (cpid, c) = spans
        .iter()
        .find(|(_, s)| s.kind == 3)
        .expect("client span");
    assert_eq!((*spid, *cpid), (100, 200));
    for x in [s, c] {
        assert_eq!(x.name, "GET");
        assert_eq!(string(x, "http.request.method"), "GET");
        assert_eq!(string(x, "url.path"), "/items/7");
        assert!(attr(x, "url.query").is_none(), "query is off by default");
        assert_eq!(int(x, "http.response.status_code"), 200);
        assert_eq!(string(x, "server.address"), "shop.local");
        assert_eq!(int(x, "server.port"), 8080);
        assert_eq!(string(x, "client.address"), "127.0.0.2");
        assert_eq!(int(x, "client.port"), 40000);
        assert_eq!(int(x, "weft.tcp.req_seq"), 1000);
        assert_eq!(int(x, "weft.tcp.resp_seq"), 7000);
        assert_eq!(string(x, "weft.x_request_id.req"), "rid-1");
        assert_eq!(
            string(x, "weft.header.traceparent"),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(string(x, "network.type"), "ipv4");
        assert!(x.status.is_none());
        assert_eq!(x.trace_id.len(), 16);
        assert_eq!(x.span_id.len(), 8);
        assert!(x.parent_span_id.is_empty());
        let text = format!("{x:?}");
        for secret in ["s3cret", "c00kie", "secret3"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    assert_eq!(string(s, "network.peer.address"), "127.0.0.2");
    assert_eq!(int(s, "network.peer.port"), 40000);
    assert_eq!(int(s, "network.local.port"), 8080);
    assert_eq!(int(c, "network.peer.port"), 8080);
    assert_eq!(int(c, "network.local.port"), 40000);
    assert_eq!(int(s, "process.pid"), 100);
    assert_eq!(int(s, "thread.id"), 101);
    assert_eq!(int(c, "thread.id"), 201);
    assert_eq!(int(s, "weft.socket.id"), 11);
    // Server: request read at ts 3000 (exit), response written at 4000 (entry).
    // Client: request written at 2000, response read at 5000.
    let off = 1_000_000_000_000u64;
    assert_eq!(
        (s.start_time_unix_nano, s.end_time_unix_nano),
        (off + 3000, off + 4000)
    );
    assert_eq!(
        (c.start_time_unix_nano, c.end_time_unix_nano),
        (off + 2000, off + 5000)
    );
    assert_ne!(s.trace_id, c.trace_id);
}

#[test]
fn resource_names_the_service_by_mapping_or_process_name() {
    let (server, client) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(client, EGRESS, 1, REQ);
    sim.io(server, INGRESS, 1, REQ);
    sim.io(server, EGRESS, 1, RESP);
    sim.io(client, INGRESS, 1, RESP);
    let rs = sim.t.take_spans();
    let names: Vec<(String, String)> = rs
        .iter()
        .map(|r| {
            let attrs = &r.resource.as_ref().expect("resource").attributes;
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|kv| kv.key == k)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default()
            };
            (get("service.name"), get("process.executable.name"))
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("shop".to_string(), "server".to_string()),
            ("curl".to_string(), "curl".to_string())
        ]
    );
    assert_eq!(
        rs[0].scope_spans[0].scope.as_ref().expect("scope").name,
        "weft.ebpf"
    );
}

#[test]
fn a_downstream_call_in_the_handler_shares_the_servers_syscall_ids() {
    let (server, client) = pair();
    // The server's handler thread calls a downstream service on another socket.
    let down = Side {
        pid: 100,
        tid: 101,
        sock: 33,
        role: CLIENT,
        local: (v4(1), 50000),
        remote: (v4(3), 9090),
        comm: "server",
    };
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(client, EGRESS, 1, REQ);
    sim.io(server, INGRESS, 1, REQ);
    sim.io(down, EGRESS, 500, b"GET /stock HTTP/1.1\r\nHost: b\r\n\r\n");
    // The downstream response arrives in two reads: one message, one id.
    sim.io(
        down,
        INGRESS,
        900,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    );
    sim.io(down, INGRESS, 938, b"ok");
    sim.io(
        server,
        EGRESS,
        7000,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    );
    sim.io(server, EGRESS, 7038, b"hello");
    sim.io(client, INGRESS, 7000, RESP);
    let spans = sim.spans();
    let server_span = &spans
        .iter()
        .find(|(_, s)| s.kind == 2)
        .expect("server span")
        .1;
    let down_span = &spans
        .iter()
        .find(|(p, s)| *p == 100 && s.kind == 3)
        .expect("downstream span")
        .1;
    assert_eq!(string(down_span, "url.path"), "/stock");
    let sreq = int(server_span, "weft.syscall_trace_id.req");
    let sresp = int(server_span, "weft.syscall_trace_id.resp");
    assert_eq!(int(down_span, "weft.syscall_trace_id.req"), sreq);
    assert_eq!(int(down_span, "weft.syscall_trace_id.resp"), sresp);
    assert_ne!(sreq, sresp);
    assert_eq!(sim.t.stats().exchanges, 3);
}

#[test]
fn sibling_calls_chain_response_id_to_next_request_id() {
    let (server, _) = pair();
    let a = Side {
        sock: 41,
        role: CLIENT,
        local: (v4(1), 50001),
        remote: (v4(3), 9090),
        ..server
    };
    let b = Side {
        sock: 42,
        local: (v4(1), 50002),
        ..a
    };
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(server, INGRESS, 1, REQ);
    sim.io(a, EGRESS, 1, b"GET /a HTTP/1.1\r\n\r\n");
    sim.io(a, INGRESS, 1, b"HTTP/1.1 204 No Content\r\n\r\n");
    sim.io(b, EGRESS, 1, b"GET /b HTTP/1.1\r\n\r\n");
    sim.io(b, INGRESS, 1, b"HTTP/1.1 204 No Content\r\n\r\n");
    sim.io(server, EGRESS, 1, RESP);
    let spans = sim.spans();
    let by_path = |p: &str| {
        spans
            .iter()
            .find(|(_, s)| string(s, "url.path") == p)
            .map(|(_, s)| s.clone())
            .expect("span")
    };
    let (sa, sb, srv) = (by_path("/a"), by_path("/b"), by_path("/items/7"));
    assert_eq!(
        int(&sa, "weft.syscall_trace_id.req"),
        int(&srv, "weft.syscall_trace_id.req")
    );
    assert_eq!(
        int(&sa, "weft.syscall_trace_id.resp"),
        int(&sb, "weft.syscall_trace_id.req")
    );
    assert_eq!(
        int(&sb, "weft.syscall_trace_id.resp"),
        int(&srv, "weft.syscall_trace_id.resp")
    );
}

#[test]
fn a_lost_record_is_a_gap_and_the_next_exchange_still_parses() {
    let (server, _) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    let head = b"POST /upload HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
    sim.io(server, INGRESS, 100, head);
    // The 10 body bytes were read by a call whose record was lost.
    let after = 100 + head.len() as u32 + 10;
    sim.io(
        server,
        EGRESS,
        5000,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    sim.io(server, INGRESS, after, b"GET /next HTTP/1.1\r\n\r\n");
    sim.io(
        server,
        EGRESS,
        5043,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let spans = sim.spans();
    let got: Vec<(String, i64, i64)> = spans
        .iter()
        .map(|(_, s)| {
            (
                string(s, "url.path"),
                int(s, "http.response.status_code"),
                int(s, "weft.tcp.req_seq"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/upload".to_string(), 201, 100),
            ("/next".to_string(), 200, i64::from(after))
        ]
    );
    assert_eq!(sim.t.stats().sequence_gaps, 1);
}

#[test]
fn peeked_bytes_read_again_are_not_parsed_twice() {
    let (server, _) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    let req = b"GET /peek HTTP/1.1\r\n\r\n";
    sim.io(server, INGRESS, 10, &req[..4]);
    sim.io(server, INGRESS, 10, req);
    sim.io(server, EGRESS, 99, b"HTTP/1.1 204 No Content\r\n\r\n");
    let spans = sim.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(string(&spans[0].1, "url.path"), "/peek");
    assert_eq!(int(&spans[0].1, "weft.tcp.req_seq"), 10);
    assert_eq!(sim.t.stats().overlaps, 1);
}

#[test]
fn sockets_opened_before_attach_get_their_role_from_the_first_message() {
    let (mut server, mut client) = pair();
    server.role = UNKNOWN;
    client.role = UNKNOWN;
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(client, EGRESS, 1, REQ);
    sim.io(server, INGRESS, 1, REQ);
    sim.io(server, EGRESS, 1, RESP);
    sim.io(client, INGRESS, 1, RESP);
    let mut kinds: Vec<(u32, i32)> = sim.spans().iter().map(|(p, s)| (*p, s.kind)).collect();
    kinds.sort();
    assert_eq!(kinds, vec![(100, 2), (200, 3)]);
}

#[test]
fn a_body_delimited_by_close_ends_at_the_close_record() {
    let (server, _) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(server, INGRESS, 1, b"GET /old HTTP/1.0\r\n\r\n");
    sim.io(
        server,
        EGRESS,
        1,
        b"HTTP/1.0 200 OK\r\n\r\nbody until close",
    );
    assert!(sim.spans().is_empty(), "the response has not ended yet");
    sim.close(server);
    let spans = sim.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(string(&spans[0].1, "url.path"), "/old");
    assert_eq!(sim.t.connections(), 0);
}

#[test]
fn port_filter_hides_spans_but_ids_keep_flowing() {
    let (server, _) = pair();
    let redis = Side {
        sock: 55,
        role: CLIENT,
        local: (v4(1), 50010),
        remote: (v4(4), 6379),
        ..server
    };
    let config = EbpfReceiverConfig {
        include: Selector {
            ports: vec![8080],
            ..Selector::default()
        },
        ..EbpfReceiverConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.io(server, INGRESS, 1, REQ);
    sim.io(redis, EGRESS, 1, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    sim.io(redis, INGRESS, 1, b"$1\r\nv\r\n");
    sim.io(server, EGRESS, 1, RESP);
    let spans = sim.spans();
    assert_eq!(spans.len(), 1);
    let s = &spans[0].1;
    // The response id was opened by the Redis reply, not by the request.
    assert_ne!(
        int(s, "weft.syscall_trace_id.req"),
        int(s, "weft.syscall_trace_id.resp")
    );
}

#[test]
fn excluded_processes_make_no_spans() {
    let (server, client) = pair();
    let config = EbpfReceiverConfig {
        exclude: Selector {
            process_names: vec!["curl".to_string()],
            ..Selector::default()
        },
        ..EbpfReceiverConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.io(client, EGRESS, 1, REQ);
    sim.io(server, INGRESS, 1, REQ);
    sim.io(server, EGRESS, 1, RESP);
    sim.io(client, INGRESS, 1, RESP);
    let pids: Vec<u32> = sim.spans().iter().map(|(p, _)| *p).collect();
    assert_eq!(pids, vec![100]);
}

#[test]
fn status_codes_set_error_by_side() {
    for (code, server_err, client_err) in
        [(200, false, false), (404, false, true), (503, true, true)]
    {
        let (server, client) = pair();
        let mut sim = Sim::new(EbpfReceiverConfig::default());
        let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
        sim.io(client, EGRESS, 1, REQ);
        sim.io(server, INGRESS, 1, REQ);
        sim.io(server, EGRESS, 1, resp.as_bytes());
        sim.io(client, INGRESS, 1, resp.as_bytes());
        for (_, s) in sim.spans() {
            let is_err = s.status.as_ref().map(|st| st.code) == Some(2);
            let want = if s.kind == 2 { server_err } else { client_err };
            assert_eq!(is_err, want, "status {code}, kind {}", s.kind);
        }
    }
}

#[test]
fn url_query_only_when_asked() {
    let (server, _) = pair();
    let config = EbpfReceiverConfig {
        capture_url_query: true,
        ..EbpfReceiverConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.io(server, INGRESS, 1, REQ);
    sim.io(server, EGRESS, 1, RESP);
    let spans = sim.spans();
    assert_eq!(string(&spans[0].1, "url.query"), "x=1");
}

#[test]
fn garbage_on_a_connection_makes_no_span_and_is_counted() {
    let (server, _) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(server, INGRESS, 1, b"GET /ok HTTP/1.1\r\n\r\n");
    sim.io(server, EGRESS, 1, b"HTTP/1.1 204 No Content\r\n\r\n");
    sim.io(
        server,
        INGRESS,
        21,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage",
    );
    sim.io(server, EGRESS, 29, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let spans = sim.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(string(&spans[0].1, "url.path"), "/ok");
    assert_eq!(sim.t.stats().non_http_streams, 1);
}

#[test]
fn idle_connections_are_forgotten_and_their_open_requests_counted() {
    let (server, _) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(server, INGRESS, 1, b"GET /slow HTTP/1.1\r\n\r\n");
    sim.t.expire(sim.ts + 1_000);
    assert_eq!(sim.t.connections(), 1);
    sim.t.expire(sim.ts + 301 * 1_000_000_000);
    assert_eq!(sim.t.connections(), 0);
    assert_eq!(sim.t.stats().evicted_idle, 1);
    assert_eq!(sim.t.stats().unpaired, 1);
    assert!(sim.spans().is_empty());
}

#[test]
fn ipv6_addresses_print_compressed() {
    let server = Side {
        pid: 1,
        tid: 1,
        sock: 1,
        role: SERVER,
        local: (IpAddr::V6(Ipv6Addr::LOCALHOST), 8080),
        remote: (IpAddr::V6(Ipv6Addr::LOCALHOST), 40000),
        comm: "server",
    };
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(server, INGRESS, 1, b"GET / HTTP/1.1\r\n\r\n");
    sim.io(server, EGRESS, 1, b"HTTP/1.1 204 No Content\r\n\r\n");
    let spans = sim.spans();
    assert_eq!(string(&spans[0].1, "network.peer.address"), "::1");
    assert_eq!(string(&spans[0].1, "server.address"), "::1");
    assert_eq!(string(&spans[0].1, "network.type"), "ipv6");
}

#[test]
fn records_are_checked_field_by_field() {
    let (server, _) = pair();
    let good = encode(
        1,
        1,
        1,
        SERVER,
        INGRESS,
        1,
        0,
        1,
        server.local,
        server.remote,
        3,
        b"abc",
        "x",
    );
    assert!(Record::parse(&good).is_ok());
    assert_eq!(
        Record::parse(&good[..HEADER_LEN - 1]).err(),
        Some(RecordError::Short(HEADER_LEN - 1))
    );
    let mut bad = good.clone();
    bad[70] = 9;
    assert_eq!(Record::parse(&bad).err(), Some(RecordError::Version(9)));
    assert_eq!(
        Record::parse(&good[..HEADER_LEN + 1]).err(),
        Some(RecordError::PayloadLength {
            announced: 3,
            carried: 1
        })
    );
    let mut bad = good.clone();
    bad[60] = 1;
    assert_eq!(Record::parse(&bad).err(), Some(RecordError::Family(1)));
    let mut bad = good;
    bad[67] = 7;
    assert_eq!(Record::parse(&bad).err(), Some(RecordError::Direction(7)));
}

#[test]
fn container_ids_come_from_the_cgroup_path() {
    let id = "4f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    for text in [
        format!("0::/system.slice/docker-{id}.scope\n"),
        format!("12:pids:/docker/{id}\n"),
        format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope\n"),
        format!("0::/kubepods/besteffort/pod1/crio-{id}.scope\n"),
        format!("0::/machine.slice/libpod-{id}.scope/container\n"),
    ] {
        assert_eq!(
            container_id_from_cgroup(&text).as_deref(),
            Some(id),
            "{text}"
        );
    }
    assert_eq!(
        container_id_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
        None
    );
}

/// Names a process differently from its threads, as a program that renames its
/// threads looks.
struct Renamed;

impl ProcessSource for Renamed {
    fn lookup(&mut self, pid: u32, _comm: &str) -> ProcessFacts {
        let name = if pid == 100 { "java" } else { "curl" };
        ProcessFacts::new(pid, name, None, &BTreeMap::new())
    }
}

#[test]
fn process_filters_match_the_process_name_not_the_thread_name() {
    let (server, client) = pair();
    let config = EbpfReceiverConfig {
        include: Selector {
            process_names: vec!["java".to_string()],
            ..Selector::default()
        },
        ..EbpfReceiverConfig::default()
    };
    let mut t = Tracker::new(Arc::new(config), Box::new(Renamed));
    for (i, (side, dir, bytes)) in [
        (client, EGRESS, REQ),
        (server, INGRESS, REQ),
        (server, EGRESS, RESP),
        (client, INGRESS, RESP),
    ]
    .into_iter()
    .enumerate()
    {
        let b = encode(
            side.pid,
            side.tid,
            side.sock,
            side.role,
            dir,
            1,
            i as u32,
            1000 * i as u64,
            side.local,
            side.remote,
            bytes.len() as u64,
            bytes,
            "http-worker-1",
        );
        t.push(&Record::parse(&b).expect("test record decodes"));
    }
    let pids: Vec<u32> = flatten(t.take_spans()).iter().map(|(p, _)| *p).collect();
    assert_eq!(pids, vec![100]);
}

#[test]
fn request_ids_are_recorded_with_the_side_they_came_from() {
    let (server, client) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    // A gateway's answer: no id in the request, the generated one in the response.
    let req = b"GET /g HTTP/1.1\r\nHost: gw\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: gen-7\r\n\r\n";
    sim.io(client, EGRESS, 1000, req);
    sim.io(server, INGRESS, 1000, req);
    sim.io(server, EGRESS, 7000, resp);
    sim.io(client, INGRESS, 7000, resp);
    let spans = sim.spans();
    assert_eq!(spans.len(), 2);
    for (_, x) in &spans {
        assert!(attr(x, "weft.x_request_id.req").is_none());
        assert_eq!(string(x, "weft.x_request_id.resp"), "gen-7");
    }
}

/// A DNS message with one question (`flags`: 0x0100 a query, 0x8180 an answer).
fn dns_message(id: u16, flags: u16, name: &str, answers: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&[0, 1]);
    v.extend_from_slice(&answers.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    for label in name.split('.') {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.extend_from_slice(&[0, 0, 1, 0, 1]);
    v
}

#[test]
fn a_lookup_inside_a_handler_is_a_client_span_on_the_handler_chain() {
    let (server, client) = pair();
    // The handler's thread looks a name up on an unconnected UDP socket; the DNS
    // server answers on its own socket.
    let resolver = Side {
        pid: 100,
        tid: 101,
        sock: 33,
        role: CLIENT,
        local: (v4(1), 50000),
        remote: (v4(53), 53),
        comm: "server",
    };
    let dns_server = Side {
        pid: 300,
        tid: 301,
        sock: 44,
        role: SERVER,
        local: (v4(53), 53),
        remote: (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        comm: "dnsmasq",
    };
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    sim.io(client, EGRESS, 1000, REQ);
    sim.io(server, INGRESS, 1000, REQ);
    let query = dns_message(0x1234, 0x0100, "db.internal", 0);
    let answer = dns_message(0x1234, 0x8183, "db.internal", 0);
    sim.datagram(resolver, EGRESS, &query);
    sim.datagram(dns_server, INGRESS, &query);
    // A send carries its destination.
    let reply = Side {
        remote: (v4(1), 50000),
        ..dns_server
    };
    sim.datagram(reply, EGRESS, &answer);
    sim.datagram(resolver, INGRESS, &answer);
    sim.io(server, EGRESS, 7000, RESP);
    sim.io(client, INGRESS, 7000, RESP);
    let spans = sim.spans();
    let dns: Vec<_> = spans.iter().filter(|(_, s)| s.name == "DNS A").collect();
    assert_eq!(dns.len(), 2, "{spans:?}");
    let (_, c) = dns
        .iter()
        .find(|(pid, _)| *pid == 100)
        .expect("client span");
    let (_, d) = dns
        .iter()
        .find(|(pid, _)| *pid == 300)
        .expect("server span");
    assert_eq!((c.kind, d.kind), (3, 2));
    for x in [c, d] {
        assert_eq!(string(x, "dns.question.name"), "db.internal");
        assert_eq!(string(x, "dns.question.type"), "A");
        assert_eq!(string(x, "dns.response_code"), "NXDOMAIN");
        assert_eq!(int(x, "dns.answer.count"), 0);
        assert_eq!(int(x, "weft.dns.id"), 0x1234);
        assert_eq!(string(x, "network.transport"), "udp");
        assert_eq!(int(x, "server.port"), 53);
        assert!(attr(x, "weft.tcp.req_seq").is_none());
        assert!(x.status.is_none(), "NXDOMAIN is an answer");
    }
    assert_eq!(
        (int(c, "client.port"), int(c, "network.peer.port")),
        (50000, 53)
    );
    assert_eq!(string(c, "network.peer.address"), "127.0.0.53");
    // The server learns the client's address from the answer it sends.
    assert_eq!(
        (string(d, "client.address"), int(d, "client.port")),
        ("127.0.0.1".into(), 50000)
    );
    // The lookup took the id the handler's read opened: the chain T2 follows.
    let (_, h) = spans
        .iter()
        .find(|(pid, s)| *pid == 100 && s.kind == 2)
        .expect("handler span");
    assert_eq!(
        int(c, "weft.syscall_trace_id.req"),
        int(h, "weft.syscall_trace_id.req")
    );
    assert_eq!(
        int(c, "weft.syscall_trace_id.resp"),
        int(h, "weft.syscall_trace_id.resp")
    );
    // Nothing waits: both UDP sockets are forgotten (the TCP ones stay).
    assert_eq!(sim.t.connections(), 2);
}

// --- TLS ---------------------------------------------------------------------------

/// A TLS 1.3 ServerHello record: legacy version 1.2, `supported_versions` = 1.3.
fn server_hello(supported: Option<[u8; 2]>) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]); // random
    body.push(32);
    body.extend([9u8; 32]); // session id
    body.extend([0x13, 0x01, 0x00]); // cipher, compression
    let mut ext = vec![0x00, 0x0b, 0x00, 0x01, 0x00]; // an unrelated extension first
    if let Some(v) = supported {
        ext.extend([0x00, 0x2b, 0x00, 0x02, v[0], v[1]]);
    }
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x02];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x03];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

#[test]
fn server_hello_gives_the_agreed_version() {
    use super::tracker::server_hello_version;
    assert_eq!(
        server_hello_version(&server_hello(Some([3, 4]))),
        Some("1.3")
    );
    assert_eq!(server_hello_version(&server_hello(None)), Some("1.2"));
    let hello = server_hello(Some([3, 4]));
    // Cut anywhere: no answer, no panic.
    for n in 0..hello.len() - 6 {
        assert_eq!(server_hello_version(&hello[..n]), None, "cut at {n}");
    }
    // A ClientHello (handshake type 1) is not a ServerHello.
    let mut client = hello.clone();
    client[5] = 1;
    assert_eq!(server_hello_version(&client), None);
    assert_eq!(server_hello_version(b"GET / HTTP/1.1\r\n\r\n"), None);
}

impl Sim {
    /// One OpenSSL call's plaintext; `seq` is the TCP sequence of the encrypted bytes
    /// the call moved, when the kernel tied it to a socket syscall.
    fn tls(&mut self, s: Side, dir: u8, seq: Option<u32>, bytes: &[u8]) {
        self.ts += 1_000;
        let mut b = encode(
            s.pid,
            s.tid,
            s.sock,
            s.role,
            dir,
            seq.unwrap_or(0),
            self.cap,
            self.ts,
            s.local,
            s.remote,
            bytes.len() as u64,
            bytes,
            s.comm,
        );
        super::record::mark_tls(&mut b, seq.is_some());
        self.cap += 1;
        let r = Record::parse(&b).expect("test record decodes");
        self.t.push(&r);
    }
}

#[test]
fn tls_plaintext_makes_spans_with_the_ciphertext_sequence() {
    let (server, client) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    // The handshake crosses the sockets in clear (outside any SSL call): the tracker
    // learns the version from it and makes no span of the ciphertext.
    // nginx peeks at one byte to tell TLS from clear text; OpenSSL reads a record's
    // 5-byte header, then its body.
    let hello = server_hello(Some([3, 4]));
    sim.io(client, EGRESS, 300, &[0x16, 0x03, 0x01, 0x00, 0x10]);
    sim.io(server, INGRESS, 300, &[0x16]);
    sim.io(server, EGRESS, 500, &hello);
    sim.io(client, INGRESS, 500, &hello[..5]);
    sim.io(client, INGRESS, 505, &hello[5..]);
    // Encrypted request bytes start at 1000 on the wire, the response's at 7000.
    sim.tls(client, EGRESS, Some(1000), REQ);
    sim.tls(server, INGRESS, Some(1000), REQ);
    sim.tls(server, EGRESS, Some(7000), RESP);
    sim.tls(client, INGRESS, Some(7000), RESP);
    let spans = sim.spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    for (_, x) in &spans {
        assert_eq!(string(x, "url.path"), "/items/7");
        assert_eq!(int(x, "http.response.status_code"), 200);
        assert_eq!(string(x, "tls.protocol.name"), "tls");
        assert_eq!(string(x, "tls.protocol.version"), "1.3");
        assert_eq!(int(x, "weft.tcp.req_seq"), 1000);
        assert_eq!(int(x, "weft.tcp.resp_seq"), 7000);
        assert_eq!(string(x, "weft.x_request_id.req"), "rid-1");
        let text = format!("{x:?}");
        assert!(!text.contains("s3cret") && !text.contains("c00kie"));
    }
    let kinds: Vec<i32> = spans.iter().map(|(_, s)| s.kind).collect();
    assert!(kinds.contains(&2) && kinds.contains(&3));
    assert_eq!(sim.t.stats().tls_connections, 2);
}

#[test]
fn tls_calls_without_a_socket_sequence_make_spans_without_seq() {
    let (server, client) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    // Two calls of one request, the second without a tied syscall (its bytes were
    // already read into OpenSSL's buffer): the message still parses, and the span's
    // sequence is that of its first call.
    let (head, tail) = REQ.split_at(40);
    sim.tls(server, INGRESS, Some(1000), head);
    sim.tls(server, INGRESS, None, tail);
    sim.tls(server, EGRESS, None, RESP);
    // The client saw nothing tied to a socket at all.
    sim.tls(client, EGRESS, None, REQ);
    sim.tls(client, INGRESS, None, RESP);
    let spans = sim.spans();
    assert_eq!(spans.len(), 2);
    let (_, s) = spans
        .iter()
        .find(|(_, s)| s.kind == 2)
        .expect("server span");
    let (_, c) = spans
        .iter()
        .find(|(_, s)| s.kind == 3)
        .expect("client span");
    assert_eq!(int(s, "weft.tcp.req_seq"), 1000);
    assert!(attr(s, "weft.tcp.resp_seq").is_none());
    assert!(attr(c, "weft.tcp.req_seq").is_none());
    assert!(attr(c, "weft.tcp.resp_seq").is_none());
    for x in [s, c] {
        assert_eq!(string(x, "tls.protocol.name"), "tls");
        assert!(
            attr(x, "tls.protocol.version").is_none(),
            "no handshake seen"
        );
        assert_eq!(int(x, "http.response.status_code"), 200);
    }
}

#[test]
fn ciphertext_alone_makes_no_span() {
    // TLS capture off (or a library not probed): the socket carries only records.
    let (server, client) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    let hello = server_hello(Some([3, 4]));
    sim.io(server, EGRESS, 500, &hello);
    sim.io(client, INGRESS, 500, &hello);
    let app = [0x17, 0x03, 0x03, 0x00, 0x20]
        .iter()
        .copied()
        .chain([0xab; 32])
        .collect::<Vec<u8>>();
    for _ in 0..3 {
        sim.io(client, EGRESS, 1000, &app);
        sim.io(server, INGRESS, 1000, &app);
    }
    assert!(sim.spans().is_empty());
    assert_eq!(
        sim.t.stats().non_http_streams,
        0,
        "known as TLS, not as garbage"
    );
}

/// An HTTP/2 frame.
fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn an_upgrade_to_h2c_makes_the_upgrading_request_stream_one() {
    let (server, _) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    let req = b"GET /up HTTP/1.1\r\nHost: shop.local\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Request-ID: up-1\r\n\r\n";
    sim.io(server, INGRESS, 1000, req);
    // The 101 and the server's SETTINGS in one write, then stream 1's answer
    // (`:status 200`, static index 8) before the client's preface is read.
    let mut switch =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    let settings = h2_frame(0x4, 0, 0, &[]);
    switch.extend_from_slice(&settings);
    sim.io(server, EGRESS, 7000, &switch);
    let answer = [h2_frame(0x1, 0x4, 1, &[0x88]), h2_frame(0x0, 0x1, 1, b"ok")].concat();
    let answer_seq = 7000 + switch.len() as u32;
    sim.io(server, EGRESS, answer_seq, &answer);
    assert!(
        sim.spans().is_empty(),
        "the 101 waits for the client's next bytes"
    );
    let mut preface = super::http2::PREFACE.to_vec();
    preface.extend_from_slice(&h2_frame(0x4, 0, 0, &[]));
    sim.io(server, INGRESS, 1000 + req.len() as u32, &preface);
    let spans = sim.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0].1;
    assert_eq!(s.kind, 2);
    assert_eq!(s.name, "GET");
    assert_eq!(string(s, "url.path"), "/up");
    assert_eq!(string(s, "network.protocol.version"), "2");
    assert_eq!(int(s, "http.response.status_code"), 200);
    assert_eq!(int(s, "weft.http2.stream_id"), 1);
    assert_eq!(int(s, "weft.tcp.req_seq"), 1000);
    assert_eq!(int(s, "weft.tcp.resp_seq"), i64::from(answer_seq));
    assert_eq!(string(s, "weft.x_request_id.req"), "up-1");
    // The connection goes on as HTTP/2: stream 3 is a span of its own.
    let block = [
        0x82, 0x84, 0x41, 0x8a, 0x08, 0x9d, 0x5c, 0x0b, 0x81, 0x70, 0xdc, 0x78, 0x0f, 0x03,
    ];
    let get = h2_frame(0x1, 0x5, 3, &block);
    sim.io(
        server,
        INGRESS,
        1000 + (req.len() + preface.len()) as u32,
        &get,
    );
    let resp = h2_frame(0x1, 0x5, 3, &[0x88]);
    sim.io(server, EGRESS, answer_seq + answer.len() as u32, &resp);
    let spans = sim.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(int(&spans[0].1, "weft.http2.stream_id"), 3);
    assert_eq!(string(&spans[0].1, "url.path"), "/");
}

#[test]
fn a_switch_to_anything_but_h2c_is_the_http1_exchange_it_was() {
    let (server, _) = pair();
    let mut sim = Sim::new(EbpfReceiverConfig::default());
    let req = b"GET /ws HTTP/1.1\r\nHost: shop.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    sim.io(server, INGRESS, 1000, req);
    sim.io(
        server,
        EGRESS,
        7000,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    );
    sim.io(
        server,
        INGRESS,
        1000 + req.len() as u32,
        b"\x81\x85abcd\x09\x07\x0f\x08\x0e",
    );
    let spans = sim.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0].1;
    assert_eq!(int(s, "http.response.status_code"), 101);
    assert_eq!(string(s, "url.path"), "/ws");
    assert!(attr(s, "weft.http2.stream_id").is_none());
}
