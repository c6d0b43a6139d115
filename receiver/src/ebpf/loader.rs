//! Loading the kernel side: checks that say exactly what the machine lacks (privilege,
//! BTF, the socket tracepoints), then the probes loaded with aya, configured (filters
//! compiled into maps), attached to the socket layer's BTF tracepoints, and their ring
//! buffer and counters handed out.

use std::fmt::Write as _;
use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use aya::programs::{BtfTracePoint, UProbe};
use aya::{Btf, Ebpf, EbpfLoader};

use super::config::EbpfReceiverConfig;

/// The compiled probes (see `ebpf-probes/`), built or copied by `build.rs`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/socket_trace.bpf.o"));

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The kernel wakes the reader once this fraction of the ring is unread; below it the
/// reader's poll timer picks records up. One wakeup per record would cost a context
/// switch per syscall.
pub const WAKEUP_FRACTION: u32 = 16;

/// Indexes of the kernel's counters (`enum weft_stat` in the probe).
pub const STAT_RINGBUF_DROPS: usize = 0;
pub const STAT_TRUNCATED: usize = 1;
pub const STAT_PAYLOAD_FAULT: usize = 2;
pub const STAT_SOCKETS_FULL: usize = 3;
pub const STAT_TLS_NO_SOCKET: usize = 4;
pub const STAT_COUNT: usize = 5;

/// Why the probes are not running; each message is one sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load eBPF programs (running as uid {uid} without them)")]
    Privilege { uid: u32 },
    #[error("the kernel has no BTF ({BTF_PATH} is missing): it must be built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed ({0}): run `mount -t tracefs nodev {TRACEFS}`")]
    NoTracefs(String),
    #[error("the kernel refused the probes: {0}")]
    Load(String),
    #[error("the kernel lacks the {0} tracepoint: the ebpf receiver needs Linux 6.3 or later")]
    NoTracepoint(&'static str),
    #[error("cannot attach {program} to the tracepoint {name}: {error}")]
    Attach {
        program: String,
        name: String,
        error: String,
    },
    #[error("the filters do not fit the kernel's filter maps: {0}")]
    Filters(String),
    #[error("the probe object lacks {0}")]
    Missing(&'static str),
}

/// An error and its causes in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// Effective capabilities of this process, from `/proc/self/status`.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

const CAP_SYS_ADMIN: u64 = 21;
const CAP_PERFMON: u64 = 38;
const CAP_BPF: u64 = 39;

/// Where tracefs is, mounting it when it is absent.
fn tracing_dir() -> Result<&'static str, LoadError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(TRACEFS);
    }
    if Path::new(DEBUGFS_TRACING).join("events").is_dir() {
        return Ok(DEBUGFS_TRACING);
    }
    let target =
        std::ffi::CString::new(TRACEFS).map_err(|e| LoadError::NoTracefs(e.to_string()))?;
    let fstype = c"tracefs";
    let source = c"nodev";
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::NoTracefs(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(TRACEFS)
}

/// Everything the receiver needs from the kernel, checked in the order an operator
/// would fix it. tracefs is not needed by the probes (they attach to BTF
/// tracepoints); it is mounted when absent so that the operator's tools find it, and a
/// failure to mount it is only a warning.
pub fn preflight() -> Result<(), LoadError> {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let caps = effective_caps();
    let has = |c: u64| caps & (1 << c) != 0;
    if uid != 0 && !(has(CAP_BPF) && has(CAP_PERFMON)) && !has(CAP_SYS_ADMIN) {
        return Err(LoadError::Privilege { uid });
    }
    if !Path::new(BTF_PATH).exists() {
        return Err(LoadError::NoBtf);
    }
    if let Err(e) = tracing_dir() {
        tracing::warn!("{e} (the probes do not need it)");
    }
    Ok(())
}

/// The BTF tracepoints the probe programs attach to, by program name, and whether the
/// receiver can work without them.
pub const ATTACHMENTS: [(&str, &str, bool); 5] = [
    ("weft_sock_send", "sock_send_length", true),
    ("weft_sock_recv", "sock_recv_length", true),
    ("weft_sock_state", "inet_sock_set_state", true),
    ("weft_sock_destroy", "tcp_destroy_sock", true),
    // Send start times (Linux 6.11); without it a send is timed by its end.
    ("weft_send_start", "tcp_sendmsg_locked", false),
];

/// Bits of `weft_config.filters` (`WEFT_FILTER_*` in the probe).
const FILTER_INCLUDE_PIDS: u32 = 0x1;
const FILTER_EXCLUDE_PIDS: u32 = 0x2;
const FILTER_INCLUDE_PORTS: u32 = 0x4;
const FILTER_EXCLUDE_PORTS: u32 = 0x8;
const FILTER_DNS: u32 = 0x10;
const FILTER_TLS: u32 = 0x20;
/// Values of the pid and port filter maps (`WEFT_LIST_*`).
const LIST_INCLUDE: u32 = 0x1;
const LIST_EXCLUDE: u32 = 0x2;
const LIST_DNS: u32 = 0x4;
/// Entries of each filter map (`max_entries` in the probe).
pub const MAX_FILTER_ENTRIES: usize = 4096;
/// Entries of `weft_own_ports`.
pub const MAX_OWN_PORTS: usize = 256;

/// The TCP ports this process listens on: every socket among its descriptors that
/// accepts connections, and its local port.
pub fn own_listening_ports() -> std::collections::BTreeSet<u16> {
    let mut ports = std::collections::BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return ports;
    };
    for entry in dir.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        if is_socket {
            if let Some(port) = listening_port(fd) {
                ports.insert(port);
            }
        }
    }
    ports
}

/// The local port of a listening TCP socket, or None.
fn listening_port(fd: libc::c_int) -> Option<u16> {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid int and its length; an fd that is not a socket (or was closed
    // meanwhile) makes the call fail, which is handled.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || accepting == 0 {
        return None;
    }
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut alen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a buffer of alen bytes for the address.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut alen,
        )
    };
    if rc != 0 {
        return None;
    }
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET socket.
            let a: &libc::sockaddr_in =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast() };
            Some(u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast() };
            Some(u16::from_be(a.sin6_port))
        }
        _ => None,
    }
}

/// The kernel's share of the receiver's filters: pid and port lists as map contents
/// and the bits saying which lists are in force. Process names stay in user space
/// (the kernel sees thread names, which a process may change).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KernelFilters {
    pub bits: u32,
    pub pids: std::collections::BTreeMap<u32, u32>,
    pub ports: std::collections::BTreeMap<u16, u32>,
}

impl KernelFilters {
    pub fn of(config: &EbpfReceiverConfig) -> KernelFilters {
        let mut f = KernelFilters::default();
        // An include list of names alone cannot be decided in the kernel: pids are
        // then not filtered there either, or a named process would be cut off.
        let names_included = !config.include.process_names.is_empty();
        if !config.include.pids.is_empty() && !names_included {
            f.bits |= FILTER_INCLUDE_PIDS;
            for p in &config.include.pids {
                *f.pids.entry(*p).or_default() |= LIST_INCLUDE;
            }
        }
        if !config.exclude.pids.is_empty() {
            f.bits |= FILTER_EXCLUDE_PIDS;
            for p in &config.exclude.pids {
                *f.pids.entry(*p).or_default() |= LIST_EXCLUDE;
            }
        }
        if !config.include.ports.is_empty() {
            f.bits |= FILTER_INCLUDE_PORTS;
            for p in &config.include.ports {
                *f.ports.entry(*p).or_default() |= LIST_INCLUDE;
            }
        }
        if !config.exclude.ports.is_empty() {
            f.bits |= FILTER_EXCLUDE_PORTS;
            for p in &config.exclude.ports {
                *f.ports.entry(*p).or_default() |= LIST_EXCLUDE;
            }
        }
        // UDP is captured only for sockets that talk to a DNS port.
        if config.protocols.dns.enabled && !config.protocols.dns_ports().is_empty() {
            f.bits |= FILTER_DNS;
            for p in config.protocols.dns_ports() {
                *f.ports.entry(*p).or_default() |= LIST_DNS;
            }
        }
        f
    }
}

/// The OpenSSL entry probes: program, function, whether a library must have it.
const SSL_ENTRIES: [(&str, &str, bool); 4] = [
    ("weft_ssl_write", "SSL_write", true),
    ("weft_ssl_write_ex", "SSL_write_ex", false),
    ("weft_ssl_read", "SSL_read", true),
    ("weft_ssl_read_ex", "SSL_read_ex", false),
];
/// The return probe shared by all the functions.
const SSL_RETURN: &str = "weft_ssl_ret";
/// The entry probe of `SSL_do_handshake`.
const SSL_HANDSHAKE: &str = "weft_ssl_handshake";
/// The entry probe of `SSL_free`.
const SSL_FREE: &str = "weft_ssl_free";

/// How a file's OpenSSL functions were probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslAttach {
    /// The two shared functions behind the exported ones (one emulated trap a call).
    Internal,
    /// This many of the exported functions (a single-stepped trap a call).
    Exported(usize),
}

impl std::fmt::Display for SslAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SslAttach::Internal => f.write_str("ssl_read_internal and ssl_write_internal"),
            SslAttach::Exported(n) => write!(f, "{n} exported SSL_read/SSL_write functions"),
        }
    }
}

/// Why a library could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum UprobeError {
    #[error("the TLS probes are not loaded")]
    NotEnabled,
    #[error("{path} has no {symbol}: {error}")]
    Symbol {
        path: String,
        symbol: &'static str,
        error: String,
    },
}

/// The loaded, attached probes. Dropping it detaches them.
pub struct Probes {
    ebpf: Ebpf,
    /// `weft_config[0]` as last written: payload bytes, weft's pid, wakeup bytes, filters.
    kconfig: [u32; 4],
    tls: bool,
}

impl Probes {
    /// Loads, configures and attaches the probes.
    pub fn load(config: &EbpfReceiverConfig) -> Result<Probes, LoadError> {
        preflight()?;
        raise_memlock();
        let filters = KernelFilters::of(config);
        if filters.pids.len() > MAX_FILTER_ENTRIES || filters.ports.len() > MAX_FILTER_ENTRIES {
            return Err(LoadError::Filters(format!(
                "at most {MAX_FILTER_ENTRIES} pids and {MAX_FILTER_ENTRIES} ports"
            )));
        }
        let mut ebpf = EbpfLoader::new()
            // weft_sends is task storage, which aya creates but has no typed API for.
            .allow_unsupported_maps()
            .map_max_entries("weft_events", config.ring_buffer_bytes)
            .load(PROBES)
            .map_err(|e| LoadError::Load(chain(&e)))?;
        let map_err = |e: aya::maps::MapError| LoadError::Load(chain(&e));
        let kwords = [
            config.payload_bytes,
            std::process::id(),
            config.ring_buffer_bytes / WAKEUP_FRACTION,
            filters.bits,
        ];
        {
            let map = ebpf
                .map_mut("weft_config")
                .ok_or(LoadError::Missing("the weft_config map"))?;
            let mut kconfig: Array<&mut MapData, [u32; 4]> =
                Array::try_from(map).map_err(map_err)?;
            kconfig.set(0, kwords, 0).map_err(map_err)?;
        }
        fill_map(&mut ebpf, "weft_pids", &filters.pids)?;
        fill_map(&mut ebpf, "weft_ports", &filters.ports)?;
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::Load(chain(&e)))?;
        let btf_names = std::fs::read(BTF_PATH).unwrap_or_default();
        for (program, tracepoint, required) in ATTACHMENTS {
            if !has_tracepoint(&btf_names, tracepoint) {
                if required {
                    return Err(LoadError::NoTracepoint(tracepoint));
                }
                tracing::warn!(
                    tracepoint,
                    "this kernel lacks the tracepoint: sends are timed by their end, not their start"
                );
                continue;
            }
            let attach_err = |error: String| LoadError::Attach {
                program: program.to_string(),
                name: tracepoint.to_string(),
                error,
            };
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or(LoadError::Missing("a probe program"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(chain(&e)))?;
            prog.load(tracepoint, &btf)
                .map_err(|e| attach_err(chain(&e)))?;
            prog.attach().map_err(|e| attach_err(chain(&e)))?;
        }
        Ok(Probes {
            ebpf,
            kconfig: kwords,
            tls: false,
        })
    }

    /// Loads the OpenSSL uprobes and tells the socket probes to take TLS sockets'
    /// bytes from them. Libraries are then attached one by one with `attach_ssl`.
    pub fn enable_tls(&mut self) -> Result<(), LoadError> {
        let names =
            SSL_ENTRIES
                .iter()
                .map(|(p, _, _)| *p)
                .chain([SSL_RETURN, SSL_HANDSHAKE, SSL_FREE]);
        for name in names {
            let prog: &mut UProbe = self
                .ebpf
                .program_mut(name)
                .ok_or(LoadError::Missing("an OpenSSL probe program"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| LoadError::Load(chain(&e)))?;
            prog.load().map_err(|e| LoadError::Load(chain(&e)))?;
        }
        let mut words = self.kconfig;
        words[3] |= FILTER_TLS;
        let map = self
            .ebpf
            .map_mut("weft_config")
            .ok_or(LoadError::Missing("the weft_config map"))?;
        let mut kconfig: Array<&mut MapData, [u32; 4]> =
            Array::try_from(map).map_err(|e| LoadError::Load(chain(&e)))?;
        kconfig
            .set(0, words, 0)
            .map_err(|e| LoadError::Load(chain(&e)))?;
        self.kconfig = words;
        self.tls = true;
        Ok(())
    }

    /// Attaches the OpenSSL probes to one file (a `libssl.so.*`, or an executable
    /// with OpenSSL linked in), for every process that maps it, now or later: at the
    /// shared read and write functions behind `SSL_read*`/`SSL_write*` where the file
    /// is laid out as known (see [`super::tls::openssl_internals`]), else at the four
    /// exported functions. Says which; on an error nothing stays attached.
    pub fn attach_ssl(&mut self, path: &Path, shared: bool) -> Result<SslAttach, UprobeError> {
        if !self.tls {
            return Err(UprobeError::NotEnabled);
        }
        let internals = std::fs::read(path)
            .ok()
            .filter(|_| shared)
            .and_then(|data| super::tls::openssl_internals(&data));
        if let Some(at) = internals {
            let mut links: Vec<(&'static str, UProbeLinkId)> = Vec::new();
            let mut ok = true;
            // The _ex entry programs read (ssl, buf, num, &count): the internal
            // functions take the same arguments.
            for (entry, offset) in [
                ("weft_ssl_read_ex", at.read),
                ("weft_ssl_write_ex", at.write),
            ] {
                // The return probe first: an entry seen without its return
                // would leave the thread's call open.
                for program in [SSL_RETURN, entry] {
                    match self.attach_at(program, offset, path) {
                        Ok(l) => links.push((program, l)),
                        Err(_) => ok = false,
                    }
                }
            }
            if ok {
                self.attach_handshake(path);
                return Ok(SslAttach::Internal);
            }
            for (p, l) in links {
                self.detach(p, l);
            }
        }
        let n = self.attach_exported(path)?;
        self.attach_handshake(path);
        Ok(SslAttach::Exported(n))
    }

    /// `SSL_do_handshake` (which `SSL_connect` and `SSL_accept` call) ties an SSL
    /// object to its socket before any data call: a server that reads ahead may
    /// buffer the first request during the handshake, and that request's `SSL_read`
    /// then makes no socket call of its own. Once per connection, so the probe's cost
    /// does not matter; without it (a file lacking the function) such reads are
    /// counted as having no socket.
    /// `SSL_free` forgets the SSL object's socket: the next object may get its address.
    fn attach_handshake(&mut self, path: &Path) {
        let _ = self.attach_one(SSL_FREE, "SSL_free", path);
        let Ok(ret) = self.attach_one(SSL_RETURN, "SSL_do_handshake", path) else {
            return;
        };
        if self
            .attach_one(SSL_HANDSHAKE, "SSL_do_handshake", path)
            .is_err()
        {
            self.detach(SSL_RETURN, ret);
        }
    }

    fn attach_exported(&mut self, path: &Path) -> Result<usize, UprobeError> {
        let mut links: Vec<(&'static str, UProbeLinkId)> = Vec::new();
        let mut result = Ok(());
        for (entry, symbol, required) in SSL_ENTRIES {
            // The return probe first: an entry seen without its return would
            // leave the thread's call open.
            let attached = self
                .attach_one(SSL_RETURN, symbol, path)
                .and_then(|l| {
                    links.push((SSL_RETURN, l));
                    self.attach_one(entry, symbol, path)
                })
                .map(|l| links.push((entry, l)));
            if let Err(error) = attached {
                if required {
                    result = Err(UprobeError::Symbol {
                        path: path.display().to_string(),
                        symbol,
                        error,
                    });
                    break;
                }
                // An optional function missing: its return probe, attached
                // first, goes too.
                if let Some((p, l)) = links.pop_if(|(p, _)| *p == SSL_RETURN) {
                    self.detach(p, l);
                }
            }
        }
        match result {
            Ok(()) => Ok(links.len() / 2),
            Err(e) => {
                for (p, l) in links {
                    self.detach(p, l);
                }
                Err(e)
            }
        }
    }

    fn uprobe(&mut self, program: &str) -> Result<&mut UProbe, String> {
        self.ebpf
            .program_mut(program)
            .ok_or_else(|| format!("the probe object lacks {program}"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))
    }

    fn attach_one(
        &mut self,
        program: &'static str,
        symbol: &str,
        path: &Path,
    ) -> Result<UProbeLinkId, String> {
        self.uprobe(program)?
            .attach(symbol, path, UProbeScope::AllProcesses)
            .map_err(|e| chain(&e))
    }

    fn attach_at(
        &mut self,
        program: &'static str,
        offset: u64,
        path: &Path,
    ) -> Result<UProbeLinkId, String> {
        self.uprobe(program)?
            .attach(
                aya::programs::uprobe::UProbeAttachLocation::AbsoluteOffset(offset),
                path,
                UProbeScope::AllProcesses,
            )
            .map_err(|e| chain(&e))
    }

    fn detach(&mut self, program: &str, link: UProbeLinkId) {
        if let Ok(p) = self.uprobe(program) {
            let _ = p.detach(link);
        }
    }

    /// Makes the kernel leave out loopback connections to these ports (weft's own
    /// listening sockets: applications sending telemetry to weft), in place of the
    /// previous set. Connections already seen keep their verdict.
    pub fn set_own_ports(
        &mut self,
        ports: &std::collections::BTreeSet<u16>,
    ) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut("weft_own_ports")
            .ok_or(LoadError::Missing("weft_own_ports"))?;
        let mut hash: HashMap<&mut MapData, u16, u8> =
            HashMap::try_from(map).map_err(|e| LoadError::Load(chain(&e)))?;
        let old: Vec<u16> = hash.keys().filter_map(Result::ok).collect();
        for port in old.iter().filter(|p| !ports.contains(p)) {
            let _ = hash.remove(port);
        }
        for port in ports.iter().take(MAX_OWN_PORTS) {
            hash.insert(port, 1, 0)
                .map_err(|e| LoadError::Load(chain(&e)))?;
        }
        Ok(())
    }

    /// The ring buffer the records arrive in.
    pub fn ring_buffer(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map("weft_events")
            .ok_or(LoadError::Missing("the weft_events ring buffer"))?;
        RingBuf::try_from(map).map_err(|e| LoadError::Load(chain(&e)))
    }

    /// The kernel's counters, summed over CPUs.
    pub fn stats(&self) -> [u64; STAT_COUNT] {
        let mut out = [0u64; STAT_COUNT];
        let Some(map) = self.ebpf.map("weft_stats") else {
            return out;
        };
        let Ok(arr) = PerCpuArray::<&MapData, u64>::try_from(map) else {
            return out;
        };
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = arr.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }
}

/// Puts the entries into the hash map `name` of the probes.
fn fill_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    entries: &std::collections::BTreeMap<K, V>,
) -> Result<(), LoadError> {
    let map = ebpf.map_mut(name).ok_or(LoadError::Missing(name))?;
    let mut hash: HashMap<&mut MapData, K, V> =
        HashMap::try_from(map).map_err(|e| LoadError::Load(chain(&e)))?;
    for (k, v) in entries {
        hash.insert(k, v, 0)
            .map_err(|e| LoadError::Load(chain(&e)))?;
    }
    Ok(())
}

/// Whether the kernel's BTF (its raw bytes) names the tracepoint: each BTF tracepoint
/// has a `btf_trace_<name>` typedef, and BTF keeps names NUL-terminated.
pub fn has_tracepoint(btf: &[u8], tracepoint: &str) -> bool {
    let needle = format!("\0btf_trace_{tracepoint}\0");
    btf.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit pointer; failure only matters on old kernels, where the
    // load error then says what happened.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// Kernel monotonic time now (the clock `bpf_ktime_get_ns` reads), in ns.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC).max(0) as u64
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Wall clock minus monotonic clock, from the closest of a few paired readings.
pub fn clock_offset_ns() -> i128 {
    let mut best: Option<(i128, i128)> = None;
    for _ in 0..3 {
        let m1 = clock_ns(libc::CLOCK_MONOTONIC);
        let w = clock_ns(libc::CLOCK_REALTIME);
        let m2 = clock_ns(libc::CLOCK_MONOTONIC);
        let spread = m2 - m1;
        let offset = w - (m1 + spread / 2);
        if best.is_none_or(|(s, _)| spread < s) {
            best = Some((spread, offset));
        }
    }
    best.map(|(_, o)| o).unwrap_or(0)
}
