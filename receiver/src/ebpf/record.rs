//! The kernel's wire record (`struct weft_event` in `ebpf-probes/socket_trace.bpf.c`):
//! a fixed 120-byte header and a payload prefix, decoded in place without copying.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Size of the fixed header.
pub const HEADER_LEN: usize = 120;
/// The only layout version this receiver reads.
pub const VERSION: u8 = 1;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Record flag: the payload holds fewer bytes than the syscall moved.
pub const FLAG_TRUNCATED: u8 = 0x1;
/// Record flag: the user buffer could not be read; no payload.
pub const FLAG_PAYLOAD_FAULT: u8 = 0x2;
/// Record flag: the bytes came from a file (sendfile); none were copied.
pub const FLAG_FROM_FILE: u8 = 0x4;
/// A UDP datagram (DNS): `tcp_seq` is 0; the remote end is a send's destination, and
/// for a receive the connected peer (unspecified on an unconnected socket).
pub const FLAG_UDP: u8 = 0x8;

/// Record flag: the plaintext of an OpenSSL call (uprobes on libssl); `tcp_seq` is the
/// seq of the first encrypted byte the call moved on the socket in its direction.
pub const FLAG_TLS: u8 = 0x10;
/// With [`FLAG_TLS`]: the call moved no bytes on the socket (OpenSSL served it from its
/// buffer), so `tcp_seq` is unknown.
pub const FLAG_NO_SEQ: u8 = 0x20;

/// Syscall code of the close record: the socket's last event.
pub const SYSCALL_CLOSE: u8 = 7;
/// Codes of the OpenSSL calls a [`FLAG_TLS`] record comes from.
pub const SYSCALL_SSL_WRITE: u8 = 16;
pub const SYSCALL_SSL_READ: u8 = 17;

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The socket existed before the probes attached.
    Unknown,
    /// The process `connect()`ed: it is the client.
    Client,
    /// The process `accept()`ed: it is the server.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes the process sent.
    Egress,
    /// Bytes the process received.
    Ingress,
    /// No bytes: the record marks the socket's close.
    None,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("record layout version {0}; this weft reads version {VERSION}")]
    Version(u8),
    #[error("record announces {announced} payload bytes but carries {carried}")]
    PayloadLength { announced: u32, carried: usize },
    #[error("record has address family {0}, neither IPv4 nor IPv6")]
    Family(u16),
    #[error("record has direction {0}")]
    Direction(u8),
}

impl RecordError {
    /// Label value for the decode-error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Short(_) => "short",
            RecordError::Version(_) => "version",
            RecordError::PayloadLength { .. } => "payload_length",
            RecordError::Family(_) => "family",
            RecordError::Direction(_) => "direction",
        }
    }
}

/// One decoded record, borrowing its payload from the ring buffer.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    pub cgroup_id: u64,
    pub sock_id: u64,
    pub pid: u32,
    pub tid: u32,
    /// Bytes the syscall moved.
    pub len: u64,
    pub tcp_seq: u32,
    pub capture_seq: u32,
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    pub role: Role,
    pub direction: Direction,
    pub syscall: u8,
    pub flags: u8,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    comm: [u8; 16],
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn addr(family: u16, b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    if family == AF_INET {
        let v4 = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
        IpAddr::V4(v4)
    } else {
        let v6 = Ipv6Addr::from(a);
        // A dual-stack socket talking IPv4 keeps v4-mapped addresses.
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

impl<'a> Record<'a> {
    /// Decodes one record; every field is checked, nothing is trusted.
    pub fn parse(b: &'a [u8]) -> Result<Record<'a>, RecordError> {
        if b.len() < HEADER_LEN {
            return Err(RecordError::Short(b.len()));
        }
        let version = b[70];
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let payload_len = u32_at(b, 56);
        let carried = b.len() - HEADER_LEN;
        if payload_len as usize > carried {
            return Err(RecordError::PayloadLength {
                announced: payload_len,
                carried,
            });
        }
        let family = u16_at(b, 60);
        if family != AF_INET && family != AF_INET6 {
            return Err(RecordError::Family(family));
        }
        let syscall = b[68];
        let direction = match b[67] {
            1 => Direction::Egress,
            2 => Direction::Ingress,
            0 if syscall == SYSCALL_CLOSE => Direction::None,
            d => return Err(RecordError::Direction(d)),
        };
        let role = match b[66] {
            1 => Role::Client,
            2 => Role::Server,
            _ => Role::Unknown,
        };
        let ret = u64_at(b, 40) as i64;
        let mut comm = [0u8; 16];
        comm.copy_from_slice(&b[104..120]);
        Ok(Record {
            ts_enter_ns: u64_at(b, 0),
            ts_exit_ns: u64_at(b, 8),
            cgroup_id: u64_at(b, 16),
            sock_id: u64_at(b, 24),
            pid: u32_at(b, 32),
            tid: u32_at(b, 36),
            len: ret.max(0) as u64,
            tcp_seq: u32_at(b, 48),
            capture_seq: u32_at(b, 52),
            family,
            lport: u16_at(b, 62),
            rport: u16_at(b, 64),
            role,
            direction,
            syscall,
            flags: b[69],
            laddr: addr(family, &b[72..88]),
            raddr: addr(family, &b[88..104]),
            comm,
            payload: &b[HEADER_LEN..HEADER_LEN + payload_len as usize],
        })
    }

    /// The thread's name as the kernel keeps it (up to 15 bytes).
    pub fn comm(&self) -> &str {
        let end = self.comm.iter().position(|c| *c == 0).unwrap_or(16);
        std::str::from_utf8(&self.comm[..end]).unwrap_or("")
    }

    /// When the bytes crossed the syscall boundary: sends at entry, receives at exit.
    pub fn ts_ns(&self) -> u64 {
        match self.direction {
            Direction::Egress => self.ts_enter_ns,
            _ => self.ts_exit_ns,
        }
    }

    /// The plaintext of an OpenSSL call, not bytes of a syscall.
    pub fn is_tls(&self) -> bool {
        self.flags & FLAG_TLS != 0
    }

    /// The TCP sequence number of the first byte, when the record has one.
    pub fn seq(&self) -> Option<u32> {
        (self.flags & (FLAG_TLS | FLAG_NO_SEQ) != FLAG_TLS | FLAG_NO_SEQ).then_some(self.tcp_seq)
    }

    /// Bytes moved but not in the payload.
    pub fn uncaptured(&self) -> u64 {
        self.len.saturating_sub(self.payload.len() as u64)
    }
}

/// Builds a record's bytes; the inverse of [`Record::parse`], for tests and fuzzing.
#[allow(clippy::too_many_arguments)]
#[doc(hidden)]
pub fn encode(
    pid: u32,
    tid: u32,
    sock_id: u64,
    role: u8,
    direction: u8,
    tcp_seq: u32,
    capture_seq: u32,
    ts_ns: u64,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    len: u64,
    payload: &[u8],
    comm: &str,
) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&ts_ns.to_le_bytes());
    b[8..16].copy_from_slice(&ts_ns.to_le_bytes());
    b[24..32].copy_from_slice(&sock_id.to_le_bytes());
    b[32..36].copy_from_slice(&pid.to_le_bytes());
    b[36..40].copy_from_slice(&tid.to_le_bytes());
    b[40..48].copy_from_slice(&len.to_le_bytes());
    b[48..52].copy_from_slice(&tcp_seq.to_le_bytes());
    b[52..56].copy_from_slice(&capture_seq.to_le_bytes());
    b[56..60].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let family = if local.0.is_ipv4() { AF_INET } else { AF_INET6 };
    b[60..62].copy_from_slice(&family.to_le_bytes());
    b[62..64].copy_from_slice(&local.1.to_le_bytes());
    b[64..66].copy_from_slice(&remote.1.to_le_bytes());
    b[66] = role;
    b[67] = direction;
    b[68] = if direction == 0 { SYSCALL_CLOSE } else { 1 };
    if (payload.len() as u64) < len {
        b[69] = FLAG_TRUNCATED;
    }
    b[70] = VERSION;
    for (ip, off) in [(local.0, 72), (remote.0, 88)] {
        match ip {
            IpAddr::V4(v4) => b[off..off + 4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b[off..off + 16].copy_from_slice(&v6.octets()),
        }
    }
    let c = comm.as_bytes();
    let n = c.len().min(15);
    b[104..104 + n].copy_from_slice(&c[..n]);
    b.extend_from_slice(payload);
    b
}

/// Marks an encoded record as the plaintext of an OpenSSL call (for tests and fuzzing);
/// `seq` false: the call moved no bytes on the socket.
#[doc(hidden)]
pub fn mark_tls(b: &mut [u8], seq: bool) {
    if b.len() >= HEADER_LEN {
        b[69] |= FLAG_TLS | if seq { 0 } else { FLAG_NO_SEQ };
        b[68] = if b[67] == 1 {
            SYSCALL_SSL_WRITE
        } else {
            SYSCALL_SSL_READ
        };
    }
}
