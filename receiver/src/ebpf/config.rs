//! Configuration of the `ebpf` receiver: what the kernel copies, which processes and
//! ports make spans, and which headers are kept or hidden.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weft_pipeline::{ComponentConfig, ConfigFieldError};

use super::db::{DbProtocol, TextPolicy};

/// Payload bytes copied per syscall when `payload_bytes` is not set.
pub const DEFAULT_PAYLOAD_BYTES: u32 = 1024;
/// The probe's per-record payload limit.
pub const MAX_PAYLOAD_BYTES: u32 = 16384;
/// Ring buffer size when `ring_buffer_bytes` is not set.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 * 1024 * 1024;
/// Largest ring buffer weft asks the kernel for.
pub const MAX_RING_BUFFER_BYTES: u32 = 1 << 30;

/// Which traffic the receiver turns into spans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    /// Process names, as `/proc/<pid>/comm` shows them (at most 15 bytes).
    pub process_names: Vec<String>,
    /// Process ids.
    pub pids: Vec<u32>,
    /// TCP ports; a connection matches when its local or remote port is listed.
    pub ports: Vec<u16>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.process_names.is_empty() && self.pids.is_empty() && self.ports.is_empty()
    }

    /// Whether the process part of the selector matches: any listed name or pid.
    pub fn matches_process(&self, pid: u32, comm: &str) -> bool {
        self.pids.contains(&pid) || self.process_names.iter().any(|n| n == comm)
    }

    pub fn matches_port(&self, local: u16, remote: u16) -> bool {
        self.ports.contains(&local) || self.ports.contains(&remote)
    }
}

/// `protocols: <name>:`: whether a protocol makes spans, and where it is expected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Make spans of this protocol.
    pub enabled: bool,
    /// Connections on these ports (local for a server, remote for a client) are read as
    /// this protocol, whatever their first bytes. Unset: the protocol's usual port (none
    /// for HTTP).
    pub ports: Option<Vec<u16>>,
    /// Also recognise the protocol on other ports from its first bytes.
    pub detect: bool,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            enabled: true,
            ports: None,
            detect: true,
        }
    }
}

/// `protocols:`: one entry per protocol the receiver reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolsConfig {
    /// HTTP/1.x: recognised by its first bytes; `ports` pins it.
    pub http: ProtocolConfig,
    /// HTTP/2 and gRPC: recognised by the client preface or the server's first
    /// SETTINGS frame; `ports` pins it (a connection older than weft is then read from
    /// its middle).
    pub http2: ProtocolConfig,
    pub redis: ProtocolConfig,
    /// memcached's text protocol has no signature: it is read on its ports only.
    pub memcached: ProtocolConfig,
    pub postgresql: ProtocolConfig,
    pub mysql: ProtocolConfig,
    /// DNS: UDP datagrams to and from these ports (default 53) are captured in the
    /// kernel (nothing else of UDP is), and TCP connections to them are read as DNS
    /// over TCP. `detect` does not apply.
    pub dns: ProtocolConfig,
}

/// A protocol a connection is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Http2,
    Db(DbProtocol),
}

impl ProtocolsConfig {
    pub fn get(&self, p: Protocol) -> &ProtocolConfig {
        match p {
            Protocol::Http => &self.http,
            Protocol::Http2 => &self.http2,
            Protocol::Db(DbProtocol::Redis) => &self.redis,
            Protocol::Db(DbProtocol::Memcached) => &self.memcached,
            Protocol::Db(DbProtocol::Postgresql) => &self.postgresql,
            Protocol::Db(DbProtocol::Mysql) => &self.mysql,
        }
    }

    /// The ports a protocol is pinned to.
    pub fn ports(&self, p: Protocol) -> &[u16] {
        const REDIS: [u16; 1] = [DbProtocol::Redis.default_port()];
        const MEMCACHED: [u16; 1] = [DbProtocol::Memcached.default_port()];
        const POSTGRESQL: [u16; 1] = [DbProtocol::Postgresql.default_port()];
        const MYSQL: [u16; 1] = [DbProtocol::Mysql.default_port()];
        match (&self.get(p).ports, p) {
            (Some(list), _) => list,
            (None, Protocol::Http | Protocol::Http2) => &[],
            (None, Protocol::Db(DbProtocol::Redis)) => &REDIS,
            (None, Protocol::Db(DbProtocol::Memcached)) => &MEMCACHED,
            (None, Protocol::Db(DbProtocol::Postgresql)) => &POSTGRESQL,
            (None, Protocol::Db(DbProtocol::Mysql)) => &MYSQL,
        }
    }

    /// The UDP ports DNS is read on.
    pub fn dns_ports(&self) -> &[u16] {
        const DNS: [u16; 1] = [53];
        self.dns.ports.as_deref().unwrap_or(&DNS)
    }

    fn all(&self) -> [(Protocol, &ProtocolConfig); 6] {
        [
            (Protocol::Http, &self.http),
            (Protocol::Http2, &self.http2),
            (Protocol::Db(DbProtocol::Redis), &self.redis),
            (Protocol::Db(DbProtocol::Memcached), &self.memcached),
            (Protocol::Db(DbProtocol::Postgresql), &self.postgresql),
            (Protocol::Db(DbProtocol::Mysql), &self.mysql),
        ]
    }

    /// The names of the enabled protocols, for the startup line.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .all()
            .into_iter()
            .filter(|(_, c)| c.enabled)
            .map(|(p, _)| match p {
                Protocol::Http => "HTTP/1.x",
                Protocol::Http2 => "HTTP/2 and gRPC",
                Protocol::Db(DbProtocol::Redis) => "Redis",
                Protocol::Db(DbProtocol::Memcached) => "memcached",
                Protocol::Db(DbProtocol::Postgresql) => "PostgreSQL",
                Protocol::Db(DbProtocol::Mysql) => "MySQL",
            })
            .collect();
        if self.dns.enabled {
            names.push("DNS");
        }
        names
    }

    /// The enabled protocol pinned to a port.
    pub fn pinned(&self, port: u16) -> Option<Protocol> {
        self.all()
            .into_iter()
            .find(|(p, c)| c.enabled && self.ports(*p).contains(&port))
            .map(|(p, _)| p)
    }

    /// Whether a protocol recognised by its first bytes makes spans.
    pub fn detected(&self, p: Protocol) -> bool {
        let c = self.get(p);
        c.enabled && c.detect
    }
}

/// `query_text:`: how `db.query.text` is exported.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryTextConfig {
    /// Replace literals with `?` (SQL) and arguments after the key with `?` (Redis).
    pub sanitize: bool,
    /// Longest text exported, in bytes.
    pub max_length: usize,
}

impl Default for QueryTextConfig {
    fn default() -> Self {
        let d = TextPolicy::default();
        QueryTextConfig {
            sanitize: d.sanitize,
            max_length: d.max_length,
        }
    }
}

impl QueryTextConfig {
    pub fn policy(&self) -> TextPolicy {
        TextPolicy {
            sanitize: self.sanitize,
            max_length: self.max_length,
        }
    }
}

/// `tls:`: plaintext of TLS connections, read where the application hands it to its
/// TLS library.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Uprobes on OpenSSL's `SSL_write`, `SSL_write_ex`, `SSL_read` and `SSL_read_ex`
    /// in every `libssl.so.*` the host's processes map.
    pub openssl: bool,
    /// More files that hold OpenSSL's functions: absolute paths of libraries or
    /// executables that link OpenSSL statically, or file names matched against what
    /// processes map (`libssl.so.1.1`, `node`).
    pub libraries: Vec<String>,
    /// Probe the two functions `SSL_read*` and `SSL_write*` share where a library is
    /// laid out as known (OpenSSL 1.1.1 to 3.1 on x86-64): one cheap trap per call.
    /// `false` probes the four exported functions everywhere (a trap that is
    /// single-stepped: several times the cost per call).
    pub shared_functions: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            openssl: true,
            libraries: Vec::new(),
            shared_functions: true,
        }
    }
}

/// `receivers: ebpf:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfReceiverConfig {
    /// Payload bytes the kernel copies per syscall (1..=16384). Larger sees bigger
    /// request heads; the ring buffer fills faster.
    pub payload_bytes: u32,
    /// Size of the kernel ring buffer: a power of two, a multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// When set, only traffic matching it makes spans: a listed process (name or pid),
    /// and a listed port when ports are given.
    pub include: Selector,
    /// Traffic never turned into spans: a listed process, or a connection on a listed port.
    pub exclude: Selector,
    /// Request-id headers: the first one present in a request becomes
    /// `weft.x_request_id.req`, in a response `weft.x_request_id.resp`.
    pub x_request_id_headers: Vec<String>,
    /// Headers never exported, on top of Authorization, Cookie and Set-Cookie.
    pub redact_headers: Vec<String>,
    /// `service.name` by process name; unmapped processes use their process name.
    pub service_names: BTreeMap<String, String>,
    /// Export `url.query` (off by default: queries often carry tokens).
    pub capture_url_query: bool,
    /// When the probes cannot load (not root, no BTF, no tracepoints), log a warning
    /// and start the rest of the pipeline instead of failing.
    pub optional: bool,
    /// How often finished spans are handed to the pipeline.
    #[serde(with = "weft_pipeline::config::duration")]
    pub flush_interval: Duration,
    /// A connection with no traffic for this long is forgotten (its open message is
    /// counted as cut).
    #[serde(with = "weft_pipeline::config::duration")]
    pub idle_timeout: Duration,
    /// Most connections tracked at once; the least recently active is forgotten first.
    pub max_connections: usize,
    /// Which protocols make spans, on which ports.
    pub protocols: ProtocolsConfig,
    /// How database query text is exported.
    pub query_text: QueryTextConfig,
    /// TLS plaintext capture.
    pub tls: TlsConfig,
}

impl Default for EbpfReceiverConfig {
    fn default() -> Self {
        Self {
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            include: Selector::default(),
            exclude: Selector::default(),
            x_request_id_headers: vec!["X-Request-ID".to_string()],
            redact_headers: Vec::new(),
            service_names: BTreeMap::new(),
            capture_url_query: false,
            optional: false,
            flush_interval: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(300),
            max_connections: 65536,
            protocols: ProtocolsConfig::default(),
            query_text: QueryTextConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions; a failure returns -1, handled below.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl ComponentConfig for EbpfReceiverConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.payload_bytes == 0 || self.payload_bytes > MAX_PAYLOAD_BYTES {
            return Err(ConfigFieldError::at(
                &["payload_bytes"],
                format!(
                    "must be between 1 and {MAX_PAYLOAD_BYTES}, got {}",
                    self.payload_bytes
                ),
            ));
        }
        let page = page_size();
        let rb = self.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < page || rb > MAX_RING_BUFFER_BYTES {
            return Err(ConfigFieldError::at(
                &["ring_buffer_bytes"],
                format!(
                    "must be a power of two between the page size ({page}) and {MAX_RING_BUFFER_BYTES}, got {rb}"
                ),
            ));
        }
        for (key, list) in [
            ("x_request_id_headers", &self.x_request_id_headers),
            ("redact_headers", &self.redact_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if !valid_header_name(h) {
                    return Err(ConfigFieldError::at(
                        &[key, &i.to_string()],
                        format!("{h:?} is not a valid HTTP header name"),
                    ));
                }
            }
        }
        for (section, sel) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, n) in sel.process_names.iter().enumerate() {
                if n.is_empty() || n.len() > 15 {
                    return Err(ConfigFieldError::at(
                        &[section, "process_names", &i.to_string()],
                        format!(
                            "{n:?}: a process name is 1 to 15 bytes, as /proc/<pid>/comm shows it"
                        ),
                    ));
                }
            }
            if let Some(i) = sel.ports.iter().position(|p| *p == 0) {
                return Err(ConfigFieldError::at(
                    &[section, "ports", &i.to_string()],
                    "port 0 never carries traffic",
                ));
            }
        }
        for (comm, name) in &self.service_names {
            if name.is_empty() {
                return Err(ConfigFieldError::at(
                    &["service_names", comm],
                    "an empty service name",
                ));
            }
        }
        if self.flush_interval.is_zero() {
            return Err(ConfigFieldError::at(
                &["flush_interval"],
                "must be greater than zero",
            ));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigFieldError::at(
                &["idle_timeout"],
                "must be at least 1s",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigFieldError::at(
                &["max_connections"],
                "must be greater than zero",
            ));
        }
        let mut owner: BTreeMap<u16, &str> = BTreeMap::new();
        for (p, _) in self.protocols.all() {
            let name = match p {
                Protocol::Http => "http",
                Protocol::Http2 => "http2",
                Protocol::Db(d) => d.name(),
            };
            for (i, port) in self.protocols.ports(p).iter().enumerate() {
                if *port == 0 {
                    return Err(ConfigFieldError::at(
                        &["protocols", name, "ports", &i.to_string()],
                        "port 0 never carries traffic",
                    ));
                }
                if let Some(other) = owner.insert(*port, name) {
                    if other != name {
                        return Err(ConfigFieldError::at(
                            &["protocols", name, "ports", &i.to_string()],
                            format!("port {port} is already pinned to {other}"),
                        ));
                    }
                }
            }
        }
        for (i, port) in self.protocols.dns_ports().iter().enumerate() {
            if *port == 0 {
                return Err(ConfigFieldError::at(
                    &["protocols", "dns", "ports", &i.to_string()],
                    "port 0 never carries traffic",
                ));
            }
        }
        for (i, lib) in self.tls.libraries.iter().enumerate() {
            let path = std::path::Path::new(lib);
            let bare = path.file_name().is_some_and(|f| f == path.as_os_str());
            if lib.is_empty() || !(bare || path.is_absolute()) {
                return Err(ConfigFieldError::at(
                    &["tls", "libraries", &i.to_string()],
                    format!("{lib:?}: give an absolute path or a bare file name"),
                ));
            }
        }
        if !(16..=65536).contains(&self.query_text.max_length) {
            return Err(ConfigFieldError::at(
                &["query_text", "max_length"],
                format!(
                    "must be between 16 and 65536, got {}",
                    self.query_text.max_length
                ),
            ));
        }
        Ok(())
    }
}

impl EbpfReceiverConfig {
    /// Whether any filter names processes (by name or pid).
    pub fn has_process_filters(&self) -> bool {
        !(self.include.process_names.is_empty()
            && self.include.pids.is_empty()
            && self.exclude.process_names.is_empty()
            && self.exclude.pids.is_empty())
    }

    /// Whether a process may yield spans at all.
    pub fn process_allowed(&self, pid: u32, comm: &str) -> bool {
        if self.exclude.matches_process(pid, comm) {
            return false;
        }
        let inc = &self.include;
        if inc.process_names.is_empty() && inc.pids.is_empty() {
            return true;
        }
        inc.matches_process(pid, comm)
    }

    /// Whether a connection of an allowed process may yield spans.
    pub fn ports_allowed(&self, local: u16, remote: u16) -> bool {
        if self.exclude.matches_port(local, remote) {
            return false;
        }
        self.include.ports.is_empty() || self.include.matches_port(local, remote)
    }
}
