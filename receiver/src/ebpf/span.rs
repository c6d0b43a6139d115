//! One OTLP span per request/response pair: semantic-convention attributes, the
//! correlation facts the stitcher needs (`weft.*`), and a resource per process.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::config::EbpfReceiverConfig;
use super::db::DbExchange;
use super::dns::{self, DnsExchange};
use super::http2::H2Exchange;
use super::pairing::HttpExchange;
use super::record::Role;

/// Instrumentation scope of every span this receiver makes.
pub const SCOPE_NAME: &str = "weft.ebpf";

/// The connection a span was seen on, from the process's point of view.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    pub pid: u32,
    pub sock_id: u64,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// The addresses as text, formatted once per connection.
    pub local_text: String,
    pub remote_text: String,
    pub cgroup_id: u64,
    /// Name of the thread that first used the socket.
    pub comm: String,
    /// The bytes are the plaintext of OpenSSL calls on a TLS connection.
    pub tls: bool,
    /// The TLS version the handshake agreed (`1.2`, `1.3`), when it was seen.
    pub tls_version: Option<&'static str>,
}

/// What a process's resource says.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    pub pid: u32,
    pub executable_name: String,
    pub service_name: String,
    pub container_id: Option<String>,
}

impl ProcessFacts {
    pub fn new(
        pid: u32,
        name: &str,
        container_id: Option<String>,
        service_names: &BTreeMap<String, String>,
    ) -> ProcessFacts {
        let service_name = service_names
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string());
        ProcessFacts {
            pid,
            executable_name: name.to_string(),
            service_name,
            container_id,
        }
    }

    fn resource(&self) -> Resource {
        let mut attributes = vec![
            kv_str("service.name", &self.service_name),
            kv_int("process.pid", i64::from(self.pid)),
            kv_str("process.executable.name", &self.executable_name),
        ];
        // Pids repeat across hosts: the host tells the stitcher whose process it is.
        if let Some(h) = host_name() {
            attributes.push(kv_str("host.name", h));
        }
        if let Some(c) = &self.container_id {
            attributes.push(kv_str("container.id", c));
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }
}

/// This host's name (the kernel's, as `uname -n` prints it), read once.
fn host_name() -> Option<&'static str> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    })
    .as_deref()
}

/// The container id in a `/proc/<pid>/cgroup` text: the 64-hex-digit id that Docker,
/// containerd, CRI-O and Podman put in the cgroup path (`docker-<id>.scope`,
/// `/docker/<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>`).
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.rsplit(':').next().unwrap_or("");
        for segment in path.rsplit('/') {
            let seg = segment.strip_suffix(".scope").unwrap_or(segment);
            let candidate = seg.rsplit(['-', ':']).next().unwrap_or(seg);
            if candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(candidate.to_ascii_lowercase());
            }
        }
    }
    None
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_string()))
}

fn kv_int(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

/// The host part of a `Host` header (without the port, brackets of IPv6 removed).
/// `server.address` of an HTTP span: the host the request named, else the server's IP.
fn server_address<'a>(host: Option<&'a str>, ends: &Ends<'a>) -> &'a str {
    match host.map(host_of) {
        Some(h) if !h.is_empty() => h,
        _ => ends.server_text.as_str(),
    }
}

/// The TCP sequences of the request's and the response's first bytes, where known.
fn push_seqs(attributes: &mut Vec<KeyValue>, req: Option<u32>, resp: Option<u32>) {
    if let Some(seq) = req {
        attributes.push(kv_int("weft.tcp.req_seq", i64::from(seq)));
    }
    if let Some(seq) = resp {
        attributes.push(kv_int("weft.tcp.resp_seq", i64::from(seq)));
    }
}

/// The request ids of both messages and the request's captured propagation headers.
fn push_request_ids(
    attributes: &mut Vec<KeyValue>,
    req: Option<&str>,
    resp: Option<&str>,
    headers: &[(String, String)],
) {
    if let Some(id) = req {
        attributes.push(kv_str("weft.x_request_id.req", id));
    }
    if let Some(id) = resp {
        attributes.push(kv_str("weft.x_request_id.resp", id));
    }
    for (name, value) in headers {
        attributes.push(kv_str(&format!("weft.header.{name}"), value));
    }
}

fn host_of(host: &str) -> &str {
    let h = host.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

/// Which end of a connection is the server's, from the process's point of view.
struct Ends<'a> {
    kind: SpanKind,
    server_port: u16,
    client: (IpAddr, u16),
    server_text: &'a String,
    client_text: &'a String,
}

impl<'a> Ends<'a> {
    fn of(role: Role, conn: &'a ConnFacts) -> Option<Ends<'a>> {
        Some(match role {
            Role::Server => Ends {
                kind: SpanKind::Server,
                server_port: conn.local.1,
                client: conn.remote,
                server_text: &conn.local_text,
                client_text: &conn.remote_text,
            },
            Role::Client => Ends {
                kind: SpanKind::Client,
                server_port: conn.remote.1,
                client: conn.local,
                server_text: &conn.remote_text,
                client_text: &conn.local_text,
            },
            Role::Unknown => return None,
        })
    }

    /// The address, network and process attributes every span carries.
    fn push(&self, attributes: &mut Vec<KeyValue>, server_address: &str, conn: &ConnFacts) {
        attributes.push(kv_str("server.address", server_address));
        attributes.push(kv_int("server.port", i64::from(self.server_port)));
        attributes.push(kv_str("client.address", self.client_text));
        attributes.push(kv_int("client.port", i64::from(self.client.1)));
        attributes.push(kv_str("network.peer.address", &conn.remote_text));
        attributes.push(kv_int("network.peer.port", i64::from(conn.remote.1)));
        attributes.push(kv_str("network.local.address", &conn.local_text));
        attributes.push(kv_int("network.local.port", i64::from(conn.local.1)));
        attributes.push(kv_str("network.type", network_type(conn)));
        attributes.push(kv_str("network.transport", "tcp"));
        if conn.tls {
            attributes.push(kv_str("tls.protocol.name", "tls"));
            if let Some(v) = conn.tls_version {
                attributes.push(kv_str("tls.protocol.version", v));
            }
        }
        attributes.push(kv_int("process.pid", i64::from(conn.pid)));
    }
}

/// `network.type` of a connection.
fn network_type(conn: &ConnFacts) -> &'static str {
    if conn.local.0.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// Collects spans per process until taken.
pub struct SpanBuilder {
    config: Arc<EbpfReceiverConfig>,
    clock_offset_ns: i128,
    pending: BTreeMap<u32, (ProcessFacts, Vec<Span>)>,
    count: usize,
}

impl SpanBuilder {
    pub fn new(config: Arc<EbpfReceiverConfig>) -> SpanBuilder {
        SpanBuilder {
            config,
            clock_offset_ns: 0,
            pending: BTreeMap::new(),
            count: 0,
        }
    }

    pub fn set_clock_offset(&mut self, offset_ns: i128) {
        self.clock_offset_ns = offset_ns;
    }

    fn wall(&self, mono_ns: u64) -> u64 {
        let t = i128::from(mono_ns) + self.clock_offset_ns;
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }

    pub fn pending(&self) -> usize {
        self.count
    }

    /// Adds the span of one exchange; false when the role of the socket is unknown.
    pub fn add(
        &mut self,
        x: &HttpExchange,
        role: Role,
        conn: &ConnFacts,
        process: &ProcessFacts,
    ) -> bool {
        let Some(ends) = Ends::of(role, conn) else {
            return false;
        };
        let method = x.method.as_str();
        let mut attributes = Vec::with_capacity(24 + x.req_headers_of_interest.len());
        attributes.push(kv_str("http.request.method", method));
        attributes.push(kv_str("url.path", &x.path));
        if self.config.capture_url_query {
            if let Some(q) = &x.query {
                attributes.push(kv_str("url.query", q));
            }
        }
        attributes.push(kv_int("http.response.status_code", i64::from(x.status)));
        ends.push(
            &mut attributes,
            server_address(x.host.as_deref(), &ends),
            conn,
        );
        attributes.push(kv_int("thread.id", i64::from(x.req_tag.tid)));
        push_seqs(&mut attributes, x.req_tcp_seq, x.resp_tcp_seq);
        attributes.push(kv_int(
            "weft.syscall_trace_id.req",
            x.req_tag.syscall_id as i64,
        ));
        attributes.push(kv_int(
            "weft.syscall_trace_id.resp",
            x.resp_tag.syscall_id as i64,
        ));
        attributes.push(kv_int("weft.socket.id", conn.sock_id as i64));
        push_request_ids(
            &mut attributes,
            x.x_request_id.as_deref(),
            x.resp_x_request_id.as_deref(),
            &x.req_headers_of_interest,
        );
        if x.truncated {
            attributes.push(kv("weft.truncated", Value::BoolValue(true)));
        }
        let error = match ends.kind {
            SpanKind::Server => x.status >= 500,
            _ => x.status >= 400,
        };
        let status = error.then(|| Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        let span = self.span(
            method.to_string(),
            ends.kind,
            x.request_start_ns,
            x.response_end_ns,
            attributes,
            status,
        );
        self.push(conn, process, span);
        true
    }

    /// Adds the span of one database or cache command; false when the role of the
    /// socket is unknown.
    pub fn add_db(
        &mut self,
        x: &DbExchange,
        role: Role,
        conn: &ConnFacts,
        process: &ProcessFacts,
    ) -> bool {
        let Some(ends) = Ends::of(role, conn) else {
            return false;
        };
        let r = &x.request;
        let mut attributes = Vec::with_capacity(26);
        attributes.push(kv_str("db.system.name", x.system));
        attributes.push(kv_str("db.operation.name", &r.operation));
        if let Some(t) = &r.text {
            attributes.push(kv_str("db.query.text", t));
        }
        if let Some(ns) = &r.namespace {
            attributes.push(kv_str("db.namespace", ns));
        }
        if let Some(code) = &x.response.status_code {
            attributes.push(kv_str("db.response.status_code", code));
        }
        ends.push(&mut attributes, ends.server_text, conn);
        attributes.push(kv_int("thread.id", i64::from(x.req.tag.tid)));
        if let Some(seq) = x.req.tcp_seq {
            attributes.push(kv_int("weft.tcp.req_seq", i64::from(seq)));
        }
        attributes.push(kv_int(
            "weft.syscall_trace_id.req",
            x.req.tag.syscall_id as i64,
        ));
        if let Some(resp) = &x.resp {
            if let Some(seq) = resp.tcp_seq {
                attributes.push(kv_int("weft.tcp.resp_seq", i64::from(seq)));
            }
            attributes.push(kv_int(
                "weft.syscall_trace_id.resp",
                resp.tag.syscall_id as i64,
            ));
        }
        attributes.push(kv_int("weft.socket.id", conn.sock_id as i64));
        if let Some(tp) = &r.traceparent {
            attributes.push(kv_str("weft.header.traceparent", tp));
        }
        if x.truncated || (r.replies > 0 && !x.answered) {
            attributes.push(kv("weft.truncated", Value::BoolValue(true)));
        }
        let status = x.response.error.as_ref().map(|m| Status {
            code: StatusCode::Error as i32,
            message: m.clone(),
        });
        let span = self.span(
            r.operation.clone(),
            ends.kind,
            x.req.ts_ns,
            x.resp_end_ns,
            attributes,
            status,
        );
        self.push(conn, process, span);
        true
    }

    /// Adds the span of one DNS query and its answer: CLIENT on the socket that sent
    /// the query, SERVER on the one that received it; `transport` is `udp` or `tcp`.
    pub fn add_dns(
        &mut self,
        x: &DnsExchange,
        conn: &ConnFacts,
        process: &ProcessFacts,
        transport: &str,
    ) {
        let (peer, peer_port) = x.peer.unwrap_or(conn.remote);
        let peer_text = peer.to_string();
        let local_text = &conn.local_text;
        let (kind, server, server_port, client, client_port) = if x.client {
            (
                SpanKind::Client,
                &peer_text,
                peer_port,
                local_text,
                conn.local.1,
            )
        } else {
            (
                SpanKind::Server,
                local_text,
                conn.local.1,
                &peer_text,
                peer_port,
            )
        };
        let qtype = dns::type_name(x.query.qtype);
        let rcode = dns::rcode_name(x.rcode);
        let attributes = vec![
            kv_str("dns.question.name", &x.query.name),
            kv_str("dns.question.type", &qtype),
            kv_str("dns.response_code", &rcode),
            kv_int("dns.answer.count", i64::from(x.answers)),
            kv_str("server.address", server),
            kv_int("server.port", i64::from(server_port)),
            kv_str("client.address", client),
            kv_int("client.port", i64::from(client_port)),
            kv_str("network.peer.address", &peer_text),
            kv_int("network.peer.port", i64::from(peer_port)),
            kv_str("network.local.address", local_text),
            kv_int("network.local.port", i64::from(conn.local.1)),
            kv_str("network.type", network_type(conn)),
            kv_str("network.transport", transport),
            kv_int("process.pid", i64::from(conn.pid)),
            kv_int("thread.id", i64::from(x.req_tag.tid)),
            kv_int("weft.syscall_trace_id.req", x.req_tag.syscall_id as i64),
            kv_int("weft.syscall_trace_id.resp", x.resp_tag.syscall_id as i64),
            kv_int("weft.dns.id", i64::from(x.query.id)),
            kv_int("weft.socket.id", conn.sock_id as i64),
        ];
        // NXDOMAIN and the like are answers; a server that could not answer is not.
        let status = matches!(x.rcode, 1 | 2 | 4 | 5).then(|| Status {
            code: StatusCode::Error as i32,
            message: rcode.clone(),
        });
        let span = self.span(
            format!("DNS {qtype}"),
            kind,
            x.req_ts_ns,
            x.resp_end_ns,
            attributes,
            status,
        );
        self.push(conn, process, span);
    }

    /// Adds the span of one HTTP/2 stream (gRPC when its content type says so); false
    /// when the role of the socket is unknown.
    pub fn add_h2(
        &mut self,
        x: &H2Exchange,
        role: Role,
        conn: &ConnFacts,
        process: &ProcessFacts,
    ) -> bool {
        let Some(ends) = Ends::of(role, conn) else {
            return false;
        };
        let req = &x.request;
        let grpc = req.is_grpc();
        let mut attributes = Vec::with_capacity(32 + req.of_interest.len());
        let method = req.method.as_deref().unwrap_or("_OTHER");
        attributes.push(kv_str("http.request.method", method));
        if let Some(p) = &req.path {
            attributes.push(kv_str("url.path", p));
        }
        if self.config.capture_url_query {
            if let Some(q) = &req.query {
                attributes.push(kv_str("url.query", q));
            }
        }
        let status = x.response.as_ref().and_then(|r| r.status);
        if let Some(code) = status {
            attributes.push(kv_int("http.response.status_code", i64::from(code)));
        }
        attributes.push(kv_str("network.protocol.name", "http"));
        attributes.push(kv_str("network.protocol.version", "2"));
        ends.push(
            &mut attributes,
            server_address(req.authority.as_deref(), &ends),
            conn,
        );
        // gRPC: /package.Service/Method.
        let rpc = req
            .path
            .as_deref()
            .and_then(|p| p.strip_prefix('/'))
            .and_then(|p| p.split_once('/'))
            .filter(|(s, m)| grpc && !s.is_empty() && !m.is_empty() && !m.contains('/'));
        let grpc_status = x
            .trailers
            .as_ref()
            .and_then(|t| t.grpc_status)
            .or_else(|| x.response.as_ref().and_then(|r| r.grpc_status));
        if grpc {
            attributes.push(kv_str("rpc.system", "grpc"));
            if let Some((service, m)) = rpc {
                attributes.push(kv_str("rpc.service", service));
                attributes.push(kv_str("rpc.method", m));
            }
            if let Some(code) = grpc_status {
                attributes.push(kv_int("rpc.grpc.status_code", code));
            }
            if let Some(n) = x.request_messages {
                attributes.push(kv_int("weft.grpc.request_messages", i64::from(n)));
            }
            if let Some(n) = x.response_messages {
                attributes.push(kv_int("weft.grpc.response_messages", i64::from(n)));
            }
        }
        attributes.push(kv_int("thread.id", i64::from(x.req_tag.tid)));
        push_seqs(&mut attributes, x.req_tcp_seq, x.resp_tcp_seq);
        // The syscalls of a stream that shared its connection with others carried
        // those others too: they tie the stream to no thread's work (autotracing T2).
        if !x.multiplexed {
            attributes.push(kv_int(
                "weft.syscall_trace_id.req",
                x.req_tag.syscall_id as i64,
            ));
            if x.resp_tag.syscall_id != 0 {
                attributes.push(kv_int(
                    "weft.syscall_trace_id.resp",
                    x.resp_tag.syscall_id as i64,
                ));
            }
        }
        attributes.push(kv_int("weft.socket.id", conn.sock_id as i64));
        attributes.push(kv_int("weft.http2.stream_id", i64::from(x.stream_id)));
        push_request_ids(
            &mut attributes,
            req.x_request_id.as_deref(),
            x.response.as_ref().and_then(|r| r.x_request_id.as_deref()),
            &req.of_interest,
        );
        let unknown = req.unknown_fields
            + x.response.as_ref().map_or(0, |r| r.unknown_fields)
            + x.trailers.as_ref().map_or(0, |r| r.unknown_fields);
        if unknown > 0 {
            attributes.push(kv_int("weft.http2.unknown_fields", i64::from(unknown)));
        }
        if let Some(code) = x.reset {
            attributes.push(kv_str("weft.http2.rst_stream", h2_error_name(code)));
        }
        if x.truncated {
            attributes.push(kv("weft.truncated", Value::BoolValue(true)));
        }
        let server = ends.kind == SpanKind::Server;
        let error = if grpc && grpc_status.is_some() {
            let code = grpc_status.unwrap_or(0);
            // Server side: only the codes that say the server failed (semantic
            // conventions for gRPC).
            if server {
                matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
            } else {
                code != 0
            }
        } else if let Some(code) = x.reset.filter(|c| *c != 0) {
            // A cancel is the client's own decision, not the server's failure.
            !(server && code == 0x8)
        } else {
            match status {
                Some(s) if server => s >= 500,
                Some(s) => s >= 400,
                None => false,
            }
        };
        let message = x
            .trailers
            .as_ref()
            .and_then(|t| t.grpc_message.clone())
            .filter(|_| grpc)
            .or_else(|| x.reset.map(|c| h2_error_name(c).to_string()))
            .unwrap_or_default();
        let status = error.then_some(Status {
            code: StatusCode::Error as i32,
            message,
        });
        let name = match rpc {
            Some((service, m)) => format!("{service}/{m}"),
            None => req.method.clone().unwrap_or_else(|| "HTTP".to_string()),
        };
        let span = self.span(
            name,
            ends.kind,
            x.request_start_ns,
            x.response_end_ns,
            attributes,
            status,
        );
        self.push(conn, process, span);
        true
    }

    fn span(
        &self,
        name: String,
        kind: SpanKind,
        start_ns: u64,
        end_ns: u64,
        attributes: Vec<KeyValue>,
        status: Option<Status>,
    ) -> Span {
        let mut trace_id = [0u8; 16];
        fastrand::fill(&mut trace_id);
        let mut span_id = [0u8; 8];
        fastrand::fill(&mut span_id);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            name,
            kind: kind as i32,
            start_time_unix_nano: self.wall(start_ns),
            end_time_unix_nano: self.wall(end_ns.max(start_ns)),
            attributes,
            status,
            ..Default::default()
        }
    }

    fn push(&mut self, conn: &ConnFacts, process: &ProcessFacts, span: Span) {
        let entry = self
            .pending
            .entry(conn.pid)
            .or_insert_with(|| (process.clone(), Vec::new()));
        entry.1.push(span);
        self.count += 1;
    }

    /// The spans collected so far, one `ResourceSpans` per process.
    pub fn take(&mut self) -> Vec<ResourceSpans> {
        self.count = 0;
        std::mem::take(&mut self.pending)
            .into_values()
            .map(|(process, spans)| ResourceSpans {
                resource: Some(process.resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect()
    }
}

/// The name of an HTTP/2 error code (RFC 9113 §7).
fn h2_error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "UNKNOWN",
    }
}
