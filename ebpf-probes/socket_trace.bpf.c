// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Socket capture for the weft ebpf receiver: one fixed-layout record per
 * send or receive on a TCP socket, with the correlation facts the stitcher
 * needs (tcp seq, role, 5-tuple, per-socket counter) and a prefix of the
 * payload, plus a close record when a connection ends; and one per datagram
 * on a UDP socket that talks to a DNS port (WEFT_FLAG_UDP).
 *
 * BTF tracepoints of the socket layer, not of syscalls: sock_send_length and
 * sock_recv_length fire once per send/receive on a socket (whatever the
 * syscall: write, send*, writev, sendfile, read, recv*, readv),
 * tcp_sendmsg_locked marks when a send starts, inet_sock_set_state tells a
 * connection's role and tcp_destroy_sock its end. Syscall tracepoints would
 * put every syscall of every process on the kernel's slow path (about 8 % of
 * nginx's throughput on their own); these cost nothing to a process that does
 * no TCP I/O, and little to one that does:
 * - the process filter (weft itself, pid include/exclude) runs first;
 * - a socket's facts (5-tuple, inode number, role, record counter, the port
 *   filter's verdict) are read once and kept per socket, so an untraced
 *   connection costs a lookup;
 * - kernel structures are read directly through BTF pointers, and the
 *   syscall's arguments (the user buffer) from its saved registers.
 * No kprobes, no tracefs. Needs Linux 6.3 (sock_*_length); sendfile goes
 * through the socket layer from 6.5, send start times need 6.11
 * (tcp_sendmsg_locked, optional: without it a send is timed at its end).
 */
#include "include/weft_kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define WEFT_EVENT_VERSION 1
#define WEFT_MAX_PAYLOAD 16384
#define WEFT_DEFAULT_PAYLOAD 1024
#define WEFT_COMM_LEN 16

/* The syscall that moved the bytes, from the caller's saved registers. */
enum weft_syscall {
	WEFT_SYS_READ = 1,
	WEFT_SYS_WRITE = 2,
	WEFT_SYS_RECVFROM = 3,
	WEFT_SYS_SENDTO = 4,
	WEFT_SYS_CONNECT = 5,
	WEFT_SYS_ACCEPT = 6,
	WEFT_SYS_CLOSE = 7,          /* the close record: the connection ended */
	WEFT_SYS_READV = 8,
	WEFT_SYS_WRITEV = 9,
	WEFT_SYS_RECVMSG = 10,
	WEFT_SYS_SENDMSG = 11,
	WEFT_SYS_RECVMMSG = 12,
	WEFT_SYS_SENDMMSG = 13,
	WEFT_SYS_SENDFILE = 14,
	WEFT_SYS_OTHER = 15,         /* io_uring, splice, a kernel caller: no payload */
	WEFT_SYS_SSL_WRITE = 16,     /* plaintext of SSL_write / SSL_write_ex (WEFT_FLAG_TLS) */
	WEFT_SYS_SSL_READ = 17,      /* plaintext of SSL_read / SSL_read_ex (WEFT_FLAG_TLS) */
};

/* iovec entries copied per record (IOV_MAX is 1024; gRPC writes a message in a
 * few dozen); bytes in later entries are counted as truncated. */
#define WEFT_MAX_IOV 256

enum weft_role { WEFT_ROLE_UNKNOWN = 0, WEFT_ROLE_CLIENT = 1, WEFT_ROLE_SERVER = 2 };
enum weft_direction { WEFT_DIR_EGRESS = 1, WEFT_DIR_INGRESS = 2 };
/* The "direction" of an OpenSSL call that moves no application data. */
#define WEFT_SSL_HANDSHAKE 0

/* Counters in the stats per-CPU array; user space sums over CPUs. */
enum weft_stat {
	WEFT_STAT_RINGBUF_DROPS = 0,  /* record lost: ring buffer full */
	WEFT_STAT_TRUNCATED = 1,      /* payload longer than the captured prefix */
	WEFT_STAT_PAYLOAD_FAULT = 2,  /* user buffer unreadable; record sent without payload */
	WEFT_STAT_SOCKETS_FULL = 3,   /* no room to remember one more socket */
	WEFT_STAT_TLS_NO_SOCKET = 4,  /* an OpenSSL call whose socket is not known: no record */
	WEFT_STAT_MAX = 5,
};

/* Record flags. */
#define WEFT_FLAG_TRUNCATED 0x1
#define WEFT_FLAG_PAYLOAD_FAULT 0x2
/* The bytes are not in a user buffer the probe can read (sendfile: from a
 * file; io_uring, splice, recvmmsg/sendmmsg): payload_len is 0, ret counts
 * them; always set together with WEFT_FLAG_TRUNCATED. */
#define WEFT_FLAG_FROM_FILE 0x4
/* A UDP datagram (DNS): tcp_seq is 0; rport/raddr are a send's destination,
 * and for a receive the connected peer (0 on an unconnected socket: the
 * source of a datagram is not known yet when it is read). */
#define WEFT_FLAG_UDP 0x8
/* The plaintext an OpenSSL call took or gave (uprobes on libssl): tcp_seq is
 * the seq of the first encrypted byte the call moved on the socket in its own
 * direction. */
#define WEFT_FLAG_TLS 0x10
/* With WEFT_FLAG_TLS: the call moved no bytes on the socket (OpenSSL served
 * it from its buffer, or wrote later), so tcp_seq is unknown (0). */
#define WEFT_FLAG_NO_SEQ 0x20

/*
 * Wire record. Header is 120 bytes, then payload_len bytes of payload.
 * Little-endian host order except the addresses, which are network order as
 * the kernel keeps them; ports are host order.
 */
struct weft_event {
	__u64 ts_enter_ns;   /* CLOCK_MONOTONIC: a send's start (its end when unknown); a receive's end */
	__u64 ts_exit_ns;    /* CLOCK_MONOTONIC at the end of the send or receive */
	__u64 cgroup_id;
	__u64 sock_id;       /* socket inode number: unique while the socket lives */
	__u32 pid;           /* tgid */
	__u32 tid;
	__s64 ret;           /* bytes moved */
	__u32 tcp_seq;       /* seq of the first byte: write_seq (egress) / copied_seq (ingress) less ret */
	__u32 capture_seq;   /* per-socket record counter, from 0 */
	__u32 payload_len;   /* bytes of payload following the header */
	__u16 family;        /* AF_INET or AF_INET6 */
	__u16 lport;
	__u16 rport;
	__u8 role;           /* enum weft_role */
	__u8 direction;      /* enum weft_direction */
	__u8 syscall;        /* enum weft_syscall: the call that moved the bytes */
	__u8 flags;          /* WEFT_FLAG_* */
	__u8 version;        /* WEFT_EVENT_VERSION */
	__u8 _pad;
	__u8 laddr[16];      /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	char comm[WEFT_COMM_LEN];
	__u8 payload[];
};

/* weft_config.filters bits: which filter maps hold entries. */
#define WEFT_FILTER_INCLUDE_PIDS 0x1
#define WEFT_FILTER_EXCLUDE_PIDS 0x2
#define WEFT_FILTER_INCLUDE_PORTS 0x4
#define WEFT_FILTER_EXCLUDE_PORTS 0x8
/* UDP sockets talking to a port marked WEFT_LIST_DNS are captured. */
#define WEFT_FILTER_DNS 0x10
/* The OpenSSL uprobes are attached: sends and receives inside an SSL call
 * are the call's, not records of their own. */
#define WEFT_FILTER_TLS 0x20

struct weft_config {
	__u32 payload_bytes; /* 0 = default; capped at WEFT_MAX_PAYLOAD */
	__u32 exclude_tgid;  /* weft's own process, never traced */
	__u32 wakeup_bytes;  /* wake the reader once this much is unread; 0 = every record */
	__u32 filters;       /* WEFT_FILTER_* */
};

/* Values of the weft_pids and weft_ports filter maps. */
#define WEFT_LIST_INCLUDE 0x1
#define WEFT_LIST_EXCLUDE 0x2
#define WEFT_LIST_DNS 0x4

/* Ring buffer flags and query (UAPI enum values). */
#define WEFT_RB_NO_WAKEUP 1
#define WEFT_RB_FORCE_WAKEUP 2
#define WEFT_RB_AVAIL_DATA 0

/* weft_sock.traced */
#define WEFT_TRACED_UNDECIDED 0  /* role known, 5-tuple not read yet */
#define WEFT_TRACED_YES 1
#define WEFT_TRACED_NO 2         /* not inet TCP, or the port filter says no */
#define WEFT_TRACED_WATCH 3      /* unconnected UDP: traced once it sends to a DNS port */

/* What is known of one socket, by its struct sock address. Created at the
 * connection's start (with its role) or at its first traffic, removed when
 * it closes; an LRU, so sockets whose end went unseen age out. */
struct weft_sock {
	__u64 sock_id;        /* inode number */
	__u32 capture_seq;    /* records of this socket so far */
	__u64 cgroup_id;      /* of the thread that last moved bytes on it */
	__u32 tgid;           /* the process that last moved bytes on it */
	__u32 tid;
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u8 role;
	__u8 traced;
	__u8 tls;             /* an OpenSSL call moved bytes on it: its own records are ciphertext */
	__u8 laddr[16];
	__u8 raddr[16];
	char comm[WEFT_COMM_LEN];
};

/* The OpenSSL call in flight on this task (uprobe at entry to uretprobe), in
 * its storage. */
struct weft_ssl_call {
	__u64 ssl;            /* the SSL object */
	__u64 buf;            /* the caller's plaintext buffer */
	__u64 len_ptr;        /* _ex calls: where the byte count is written; 0 otherwise */
	__u64 ts_enter_ns;
	__u64 sk;             /* the first socket the call moved bytes on, in its direction */
	__u64 sock_id;
	__u32 tcp_seq;        /* seq of that first byte */
	__u8 direction;
	__u8 active;
	__u8 has_seq;
	__u8 _pad;
};

/* The socket an SSL object last moved bytes on, for calls that move none. */
struct weft_ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

struct weft_ssl_sock {
	__u64 sk;
	__u64 sock_id;
};

/* The start of the send in flight on this task, in its storage. */
struct weft_send {
	__u64 sk;
	__u64 ts_ns;
};

/* Per-CPU staging area for one record: header + largest payload. Too big for
 * the 512-byte BPF stack, and a fixed-size ring reservation of this size
 * would waste the ring on short messages. */
/* The largest per-CPU map value the kernel accepts (PCPU_MIN_UNIT_SIZE). */
#define WEFT_SCRATCH_SIZE 32768
/* A gathered (iovec) copy writes chunk bytes at offset off, and the verifier
 * bounds off and chunk separately: off may not exceed this, so that
 * header + off + WEFT_MAX_PAYLOAD still fits the scratch buffer. */
#define WEFT_MAX_IOV_OFFSET (WEFT_SCRATCH_SIZE - sizeof(struct weft_event) - WEFT_MAX_PAYLOAD)

struct weft_scratch {
	__u8 buf[WEFT_SCRATCH_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_config);
} weft_config SEC(".maps");

/* Process filter: tgid -> WEFT_LIST_* bits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} weft_pids SEC(".maps");

/* Port filter: port -> WEFT_LIST_* bits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u16);
	__type(value, __u32);
} weft_ports SEC(".maps");

/* weft's own listening ports (kept current by user space): a loopback
 * connection to one of them is an application sending telemetry to weft, not
 * traffic to trace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} weft_own_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* struct sock address */
	__type(value, struct weft_sock);
} weft_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct weft_send);
} weft_sends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct weft_ssl_call);
} weft_ssl_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct weft_ssl_key);
	__type(value, struct weft_ssl_sock);
} weft_ssl_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_scratch);
} weft_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEFT_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} weft_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} weft_events SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&weft_stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct weft_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&weft_config, &zero);
}

/* Waking the reader for every record costs a context switch per record; the
 * reader also polls on a short timer, so a wakeup is forced only once
 * wakeup_bytes are waiting. */
static __always_inline __u64 wakeup_flags(struct weft_config *c)
{
	if (!c || !c->wakeup_bytes)
		return 0;
	if (bpf_ringbuf_query(&weft_events, WEFT_RB_AVAIL_DATA) >= c->wakeup_bytes)
		return WEFT_RB_FORCE_WAKEUP;
	return WEFT_RB_NO_WAKEUP;
}

/* The x86-64 syscalls whose user buffers the probes read, as enum
 * weft_syscall; WEFT_SYS_OTHER for any other path to the socket layer. */
static __always_inline __u8 syscall_code(long nr)
{
	switch (nr) {
	case 0: return WEFT_SYS_READ;
	case 1: return WEFT_SYS_WRITE;
	case 19: return WEFT_SYS_READV;
	case 20: return WEFT_SYS_WRITEV;
	case 40: return WEFT_SYS_SENDFILE;
	case 44: return WEFT_SYS_SENDTO;
	case 45: return WEFT_SYS_RECVFROM;
	case 46: return WEFT_SYS_SENDMSG;
	case 47: return WEFT_SYS_RECVMSG;
	case 299: return WEFT_SYS_RECVMMSG;
	case 307: return WEFT_SYS_SENDMMSG;
	default: return WEFT_SYS_OTHER;
	}
}

/* Whether the process may be traced at all: never weft itself, then the pid
 * lists. */
static __always_inline bool process_traced(struct weft_config *c, __u32 tgid)
{
	if (!c)
		return true;
	if (c->exclude_tgid && c->exclude_tgid == tgid)
		return false;
	if (!(c->filters & (WEFT_FILTER_INCLUDE_PIDS | WEFT_FILTER_EXCLUDE_PIDS)))
		return true;
	__u32 *v = bpf_map_lookup_elem(&weft_pids, &tgid);
	__u32 bits = v ? *v : 0;
	if (bits & WEFT_LIST_EXCLUDE)
		return false;
	if ((c->filters & WEFT_FILTER_INCLUDE_PIDS) && !(bits & WEFT_LIST_INCLUDE))
		return false;
	return true;
}

static __always_inline __u32 port_bits(__u16 port)
{
	__u32 *v = bpf_map_lookup_elem(&weft_ports, &port);
	return v ? *v : 0;
}

/* The port filter's verdict on a connection: a listed local or remote port. */
static __always_inline bool ports_traced(struct weft_config *c, __u16 lport, __u16 rport)
{
	if (!c || !(c->filters & (WEFT_FILTER_INCLUDE_PORTS | WEFT_FILTER_EXCLUDE_PORTS)))
		return true;
	__u32 bits = port_bits(lport) | port_bits(rport);
	if (bits & WEFT_LIST_EXCLUDE)
		return false;
	if ((c->filters & WEFT_FILTER_INCLUDE_PORTS) && !(bits & WEFT_LIST_INCLUDE))
		return false;
	return true;
}

/* Whether the peer is this host's loopback: 127.0.0.0/8, ::1, or ::ffff:127.x. */
static __always_inline bool loopback_peer(struct weft_sock *e)
{
	if (e->family == AF_INET)
		return e->raddr[0] == 127;
	bool zero10 = true;
	for (int i = 0; i < 10; i++)
		if (e->raddr[i])
			zero10 = false;
	if (!zero10)
		return false;
	if (e->raddr[10] == 0xff && e->raddr[11] == 0xff)
		return e->raddr[12] == 127;
	return !e->raddr[10] && !e->raddr[11] && !e->raddr[12] && !e->raddr[13] &&
	       !e->raddr[14] && e->raddr[15] == 1;
}

/* Whether sk is an inet TCP stream socket. */
static __always_inline bool tcp_socket(struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	return (family == AF_INET || family == AF_INET6) && sk->sk_type == SOCK_STREAM &&
	       sk->sk_protocol == IPPROTO_TCP;
}

/* The socket's inode number: unique while it lives. */
static __always_inline __u64 sock_ino(struct sock *sk)
{
	struct socket *sock = sk->sk_socket;
	if (!sock)
		return 0;
	struct file *file = sock->file;
	if (!file)
		return 0;
	struct inode *inode = file->f_inode;
	return inode ? inode->i_ino : 0;
}

/* Reads the 5-tuple, inode number and the port filter's verdict into e. */
static __always_inline void read_facts(struct weft_config *c, struct weft_sock *e, struct sock *sk)
{
	e->family = sk->__sk_common.skc_family;
	e->lport = sk->__sk_common.skc_num;
	e->rport = __builtin_bswap16(sk->__sk_common.skc_dport);
	if (e->family == AF_INET) {
		__be32 l = sk->__sk_common.skc_rcv_saddr;
		__be32 r = sk->__sk_common.skc_daddr;
		__builtin_memcpy(e->laddr, &l, 4);
		__builtin_memcpy(e->raddr, &r, 4);
	} else {
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr);
	}
	e->sock_id = sock_ino(sk);
	e->traced = ports_traced(c, e->lport, e->rport) ? WEFT_TRACED_YES : WEFT_TRACED_NO;
	if (e->traced == WEFT_TRACED_YES && bpf_map_lookup_elem(&weft_own_ports, &e->rport) &&
	    loopback_peer(e))
		e->traced = WEFT_TRACED_NO;
}

/* The entry of a socket that moves bytes now, created or completed on first
 * use. NULL when it is not traced. */
static __always_inline struct weft_sock *sock_entry(struct weft_config *c, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct weft_sock *e = bpf_map_lookup_elem(&weft_socks, &key);
	if (!e) {
		if (!tcp_socket(sk))
			return NULL;
		struct weft_sock fresh = {};
		read_facts(c, &fresh, sk);
		if (bpf_map_update_elem(&weft_socks, &key, &fresh, BPF_ANY)) {
			stat_inc(WEFT_STAT_SOCKETS_FULL);
			return NULL;
		}
		e = bpf_map_lookup_elem(&weft_socks, &key);
		if (!e)
			return NULL;
	} else if (e->traced == WEFT_TRACED_UNDECIDED) {
		/* Created at connect, before the local port was bound. */
		read_facts(c, e, sk);
	}
	return e->traced == WEFT_TRACED_YES ? e : NULL;
}

/* One step of gather_iov, run by bpf_loop so that the verifier checks the body
 * once however many entries an array has (gRPC writes a message in 20 or more). */
struct weft_gather {
	__u64 iov_ptr;
	__u64 iovcnt;
	__u32 want;
	__u32 off;
	__u32 fault;
};

static long gather_one(__u32 i, void *ctx)
{
	struct weft_gather *g = ctx;
	if (i >= g->iovcnt || g->off >= g->want)
		return 1;
	__u32 zero = 0;
	struct weft_scratch *s = bpf_map_lookup_elem(&weft_scratch, &zero);
	if (!s)
		return 1;
	struct weft_iovec iov = {};
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(g->iov_ptr + (__u64)i * sizeof(iov)))) {
		g->fault = 1;
		return 1;
	}
	__u32 off = g->off;
	__u32 chunk = g->want - off;
	if (iov.iov_len < chunk)
		chunk = iov.iov_len;
	if (off > WEFT_MAX_IOV_OFFSET || chunk > WEFT_MAX_PAYLOAD)
		return 1;
	if (bpf_probe_read_user(s->buf + sizeof(struct weft_event) + off, chunk,
				(void *)iov.iov_base)) {
		g->fault = 1;
		return 1;
	}
	g->off = off + chunk;
	return 0;
}

/* Copy up to want bytes from a user iovec array into the record's payload;
 * returns the bytes copied. */
static __always_inline __u32 gather_iov(__u64 iov_ptr, __u64 iovcnt, __u32 want,
					struct weft_event *e)
{
	struct weft_gather g = { .iov_ptr = iov_ptr, .iovcnt = iovcnt, .want = want };
	bpf_loop(WEFT_MAX_IOV, gather_one, &g, 0);
	if (g.fault) {
		e->flags |= WEFT_FLAG_PAYLOAD_FAULT;
		stat_inc(WEFT_STAT_PAYLOAD_FAULT);
	}
	__u32 off = g.off;
	/* The callback kept off <= want; the verifier needs to see a bound here. */
	if (off > want)
		off = want;
	if (off > WEFT_MAX_PAYLOAD)
		off = WEFT_MAX_PAYLOAD;
	if (off < want && !(e->flags & WEFT_FLAG_TRUNCATED)) {
		e->flags |= WEFT_FLAG_TRUNCATED;
		stat_inc(WEFT_STAT_TRUNCATED);
	}
	return off;
}

/* The record header fields every record shares. */
static __always_inline void fill_common(struct weft_event *e, struct weft_sock *f)
{
	e->cgroup_id = f->cgroup_id;
	e->sock_id = f->sock_id;
	e->pid = f->tgid;
	e->tid = f->tid;
	e->family = f->family;
	e->lport = f->lport;
	e->rport = f->rport;
	e->role = f->role;
	e->version = WEFT_EVENT_VERSION;
	e->_pad = 0;
	__builtin_memcpy(e->laddr, f->laddr, sizeof(e->laddr));
	__builtin_memcpy(e->raddr, f->raddr, sizeof(e->raddr));
	__builtin_memcpy(e->comm, f->comm, sizeof(e->comm));
}

/* One record being made, before it has a place in the ring. */
struct weft_call {
	__u64 ts_enter_ns;
	__u64 ts_exit_ns;
	__s64 ret;
	__u64 buf;     /* user buffer, or iovec array when iovcnt > 0 */
	__u64 iovcnt;
	__u32 tcp_seq;
	__u32 capture_seq;
	__u8 direction;
	__u8 syscall;
	__u8 flags;
	__u8 has_peer; /* a datagram's own destination, over the socket's remote end */
	__u16 rport;
	__u8 raddr[16];
};

static __always_inline void fill_record(struct weft_event *e, struct weft_sock *f,
					struct weft_call *call)
{
	fill_common(e, f);
	e->ts_enter_ns = call->ts_enter_ns;
	e->ts_exit_ns = call->ts_exit_ns;
	e->ret = call->ret;
	e->tcp_seq = call->tcp_seq;
	e->capture_seq = call->capture_seq;
	e->direction = call->direction;
	e->syscall = call->syscall;
	e->flags = call->flags;
	if (call->has_peer) {
		e->rport = call->rport;
		__builtin_memcpy(e->raddr, call->raddr, sizeof(e->raddr));
	}
}

/* n bytes of a plain user buffer, read straight into a ring reservation with
 * room for `room` payload bytes. */
static __always_inline void emit_direct(struct weft_config *c, struct weft_sock *f,
					struct weft_call *call, __u32 n, const __u32 room)
{
	struct weft_event *e = bpf_ringbuf_reserve(&weft_events, sizeof(*e) + room, 0);
	if (!e) {
		stat_inc(WEFT_STAT_RINGBUF_DROPS);
		return;
	}
	fill_record(e, f, call);
	/* The callers already bound n, so clang would drop this check; the
	 * barrier keeps it where the verifier sees it, next to the copy. */
	barrier_var(n);
	if (n > room)
		n = room;
	if (n > 0 && bpf_probe_read_user(e->payload, n, (void *)call->buf)) {
		e->flags |= WEFT_FLAG_PAYLOAD_FAULT;
		stat_inc(WEFT_STAT_PAYLOAD_FAULT);
		n = 0;
	}
	e->payload_len = n;
	bpf_ringbuf_submit(e, wakeup_flags(c));
}

/* Up to n bytes of an iovec array, gathered in the scratch buffer, then sent
 * with their exact size. */
static __always_inline void emit_gathered(struct weft_config *c, struct weft_sock *f,
					  struct weft_call *call, __u32 n)
{
	__u32 zero = 0;
	struct weft_scratch *s = bpf_map_lookup_elem(&weft_scratch, &zero);
	if (!s)
		return;
	struct weft_event *e = (struct weft_event *)s->buf;
	fill_record(e, f, call);
	if (n > WEFT_MAX_PAYLOAD)
		n = WEFT_MAX_PAYLOAD;
	if (n > 0)
		n = gather_iov(call->buf, call->iovcnt, n, e);
	e->payload_len = n;
	if (bpf_ringbuf_output(&weft_events, s, sizeof(struct weft_event) + n, wakeup_flags(c)))
		stat_inc(WEFT_STAT_RINGBUF_DROPS);
}


/* Whether the fd the syscall names (its first argument) holds sk's own file:
 * the registers are the current syscall's, which is not always the one moving
 * these bytes (io_uring work run on the way out of another syscall, a kernel
 * socket used inside a write to a network file system). */
static __always_inline bool fd_holds(struct task_struct *task, __u64 fd, struct sock *sk)
{
	struct socket *sock = sk->sk_socket;
	if (!sock)
		return false;
	struct file *own = sock->file;
	struct files_struct *files = task->files;
	if (!own || !files)
		return false;
	struct fdtable *fdt = files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return false;
	struct file **fds = fdt->fd;
	__u64 file = 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return false;
	return file == (__u64)own;
}

/* What the syscall moving the bytes was given, from its saved registers. */
struct weft_args {
	__u64 buf;      /* user buffer, or iovec array when iovcnt > 0 */
	__u64 iovcnt;
	__u64 name;     /* sendto/sendmsg: the destination address, 0 if none */
	__u64 vlen;     /* sendmmsg: messages in the vector */
	__u32 namelen;
	__u8 syscall;   /* enum weft_syscall */
	bool no_payload;
};

/* sendmmsg messages looked at for the one being sent. */
#define WEFT_MAX_MMSG 8

static __always_inline void call_args(struct task_struct *task, struct sock *sk, int msg_flags,
				      __u8 direction, bool dgram, struct weft_args *a)
{
	/* A 32-bit task's numbers mean other calls, and an io_uring worker's
	 * registers are its creator's. */
	a->syscall = WEFT_SYS_OTHER;
	if (!(task->thread_info.status & WEFT_TS_COMPAT) && !(task->flags & WEFT_PF_IO_WORKER)) {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
		if (regs && fd_holds(task, regs->di, sk)) {
			a->syscall = syscall_code(regs->orig_ax);
			a->buf = regs->si;
			if (a->syscall == WEFT_SYS_READV || a->syscall == WEFT_SYS_WRITEV)
				a->iovcnt = regs->dx;
			if (a->syscall == WEFT_SYS_SENDMMSG)
				a->vlen = regs->dx;
			if (a->syscall == WEFT_SYS_SENDTO) {
				a->name = regs->r8;
				a->namelen = regs->r9;
			}
		}
	}
	bool egress_call = a->syscall == WEFT_SYS_WRITE || a->syscall == WEFT_SYS_SENDTO ||
			   a->syscall == WEFT_SYS_WRITEV || a->syscall == WEFT_SYS_SENDMSG ||
			   a->syscall == WEFT_SYS_SENDMMSG || a->syscall == WEFT_SYS_SENDFILE;
	/* A send inside a receive call (or the reverse) is not the caller's
	 * buffer: TCP does not do that, but a layered protocol might. */
	if (a->syscall != WEFT_SYS_OTHER && egress_call != (direction == WEFT_DIR_EGRESS)) {
		a->syscall = WEFT_SYS_OTHER;
		a->name = 0;
	}
	/* A datagram of a sendmmsg: the kernel sends the vector's messages in
	 * order and writes each one's msg_len after it is sent, so the one being
	 * sent is the first whose msg_len is still 0 (glibc's resolver, sending
	 * A and AAAA at once, starts them at 0). Every message's buffer was
	 * filled before the call, so a vector reused without clearing msg_len
	 * gives another message of this same call, never stale bytes. Not for
	 * recvmmsg: there the buffers after the current one hold old data. */
	bool mmsg = false;
	if (dgram && a->syscall == WEFT_SYS_SENDMMSG && a->buf) {
		for (int i = 0; i < WEFT_MAX_MMSG; i++) {
			if (i >= a->vlen)
				break;
			__u32 len = 1;
			__u64 entry = a->buf + i * sizeof(struct weft_user_mmsghdr);
			if (bpf_probe_read_user(&len, sizeof(len),
						(void *)(entry + offsetof(struct weft_user_mmsghdr, msg_len))))
				break;
			if (len == 0) {
				a->buf = entry;
				a->syscall = WEFT_SYS_SENDMSG;
				mmsg = true;
				break;
			}
		}
	}
	if (a->syscall == WEFT_SYS_RECVMSG || a->syscall == WEFT_SYS_SENDMSG) {
		struct weft_user_msghdr m = {};
		if (bpf_probe_read_user(&m, sizeof(m), (void *)a->buf)) {
			a->buf = 0;
		} else {
			a->buf = m.msg_iov;
			a->iovcnt = m.msg_iovlen;
			if (a->syscall == WEFT_SYS_SENDMSG) {
				a->name = m.msg_name;
				a->namelen = m.msg_namelen;
			}
		}
	}
	/* Which message of a recvmmsg/sendmmsg this is cannot be told here; with
	 * MSG_TRUNC the bytes were dropped, not copied to the buffer. */
	if (mmsg)
		a->syscall = WEFT_SYS_SENDMMSG;
	a->no_payload = (a->syscall == WEFT_SYS_SENDMMSG && !mmsg) ||
			a->syscall == WEFT_SYS_SENDFILE || a->syscall == WEFT_SYS_OTHER ||
			a->syscall == WEFT_SYS_RECVMMSG || !a->buf || (msg_flags & MSG_TRUNC);
}

/* The thread's name and cgroup are read when another thread takes the
 * socket over, not per record. */
static __always_inline void take_over(struct weft_sock *f, __u64 pid_tgid)
{
	if (f->tid != (__u32)pid_tgid || !f->tgid) {
		f->tgid = pid_tgid >> 32;
		f->tid = (__u32)pid_tgid;
		f->cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(f->comm, sizeof(f->comm));
	}
}

/* Copies the payload prefix and writes the record. */
static __always_inline void emit(struct weft_config *c, struct weft_sock *f, struct weft_call *call,
				 bool no_payload)
{
	__u32 cap = WEFT_DEFAULT_PAYLOAD;
	if (c && c->payload_bytes)
		cap = c->payload_bytes;
	if (cap > WEFT_MAX_PAYLOAD)
		cap = WEFT_MAX_PAYLOAD;
	if (no_payload)
		cap = 0;
	__s64 ret = call->ret;
	__u32 n = ret < (__s64)cap ? (__u32)ret : cap;
	if ((__u64)ret > n) {
		call->flags |= WEFT_FLAG_TRUNCATED;
		stat_inc(WEFT_STAT_TRUNCATED);
	}
	/* A plain buffer is copied straight into a ring reservation of the
	 * smallest size class that holds it (the reservation size must be a
	 * constant); a gathered one is assembled in the per-CPU scratch first. */
	if (call->iovcnt)
		emit_gathered(c, f, call, n);
	else if (n <= 256)
		emit_direct(c, f, call, n, 256);
	else if (n <= 1024)
		emit_direct(c, f, call, n, 1024);
	else if (n <= 4096)
		emit_direct(c, f, call, n, 4096);
	else
		emit_direct(c, f, call, n, WEFT_MAX_PAYLOAD);
}

static __always_inline bool dns_port(__u16 port)
{
	return port && (port_bits(port) & WEFT_LIST_DNS);
}

/* The destination a sendto/sendmsg names: port (host order) and address into
 * f. False when there is none or it cannot be read. */
static __always_inline bool read_dest(struct weft_args *a, __u16 family, __u16 *port,
				      __u8 addr[16])
{
	if (!a->name || a->namelen < 16)
		return false;
	struct {
		__u16 family;
		__be16 port;
		__u32 v4;     /* sockaddr_in: the address; sockaddr_in6: flowinfo */
		__u8 rest[8];
	} sa = {};
	if (bpf_probe_read_user(&sa, sizeof(sa), (void *)a->name))
		return false;
	*port = __builtin_bswap16(sa.port);
	if (sa.family == AF_INET) {
		__builtin_memset(addr, 0, 16);
		if (family == AF_INET6) {
			/* An IPv4 destination of a dual-stack socket: v4-mapped. */
			addr[10] = 0xff;
			addr[11] = 0xff;
			__builtin_memcpy(addr + 12, &sa.v4, 4);
		} else {
			__builtin_memcpy(addr, &sa.v4, 4);
		}
		return true;
	}
	if (sa.family != AF_INET6 || a->namelen < 24)
		return false;
	return !bpf_probe_read_user(addr, 16, (void *)(a->name + 8));
}

/*
 * A datagram on a UDP socket: captured only when the socket talks to a DNS
 * port. A socket bound to one is a server; a socket connected to one, or
 * whose first datagram is sent to one, a client. Any other socket costs one
 * map lookup per datagram once decided (an unconnected one is decided at its
 * first datagram, reading the destination of a send).
 */
static __always_inline void on_udp(struct weft_config *c, struct task_struct *task,
				   __u64 pid_tgid, struct sock *sk, __s64 ret, int msg_flags,
				   __u8 direction, __u64 ts_start)
{
	if (!c || !(c->filters & WEFT_FILTER_DNS))
		return;
	__u64 key = (__u64)sk;
	struct weft_sock *f = bpf_map_lookup_elem(&weft_socks, &key);
	/* No tracepoint tells a UDP socket's end: an entry whose inode number or
	 * local port is not the socket's is a dead socket's, at a reused address. */
	__u16 dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	if (f && (f->sock_id != sock_ino(sk) || f->lport != sk->__sk_common.skc_num ||
		  (dport && dport != f->rport)))
		f = NULL;
	if (!f) {
		__u16 family = sk->__sk_common.skc_family;
		if ((family != AF_INET && family != AF_INET6) || sk->sk_type != SOCK_DGRAM ||
		    sk->sk_protocol != IPPROTO_UDP)
			return;
		struct weft_sock fresh = {};
		read_facts(c, &fresh, sk);
		if (dns_port(fresh.lport)) {
			fresh.role = WEFT_ROLE_SERVER;
		} else if (dns_port(fresh.rport)) {
			fresh.role = WEFT_ROLE_CLIENT;
		} else if (!fresh.rport) {
			fresh.role = WEFT_ROLE_CLIENT;
			fresh.traced = WEFT_TRACED_WATCH;
		} else {
			fresh.traced = WEFT_TRACED_NO;
		}
		if (bpf_map_update_elem(&weft_socks, &key, &fresh, BPF_ANY)) {
			stat_inc(WEFT_STAT_SOCKETS_FULL);
			return;
		}
		f = bpf_map_lookup_elem(&weft_socks, &key);
		if (!f)
			return;
	}
	if (f->traced == WEFT_TRACED_NO)
		return;
	/* A peek is read again for real (and with MSG_TRUNC copies nothing). */
	if (msg_flags & MSG_PEEK)
		return;
	/* A watched socket is decided once: a client asks first, so a datagram
	 * received before any was sent (a server of some other protocol) or a
	 * first send elsewhere than a DNS port leaves it alone for good. */
	if (f->traced == WEFT_TRACED_WATCH && direction == WEFT_DIR_INGRESS) {
		f->traced = WEFT_TRACED_NO;
		return;
	}
	struct weft_args a = {};
	call_args(task, sk, msg_flags, direction, true, &a);
	struct weft_call call = {};
	if (direction == WEFT_DIR_EGRESS && a.name &&
	    read_dest(&a, f->family, &call.rport, call.raddr)) {
		if (f->traced == WEFT_TRACED_WATCH)
			f->traced = dns_port(call.rport) && ports_traced(c, f->lport, call.rport) ?
					    WEFT_TRACED_YES :
					    WEFT_TRACED_NO;
		/* The datagram's own destination goes into its record (threads
		 * sharing a socket must not write each other's peers). */
		call.has_peer = 1;
	}
	if (f->traced != WEFT_TRACED_YES)
		return;
	take_over(f, pid_tgid);
	__u64 now = bpf_ktime_get_ns();
	call.ts_enter_ns = ts_start ? ts_start : now;
	call.ts_exit_ns = now;
	call.ret = ret;
	call.buf = a.buf;
	call.iovcnt = a.iovcnt;
	call.tcp_seq = 0;
	call.capture_seq = __sync_fetch_and_add(&f->capture_seq, 1);
	call.direction = direction;
	call.syscall = a.syscall;
	call.flags = WEFT_FLAG_UDP | (a.no_payload ? WEFT_FLAG_FROM_FILE : 0);
	emit(c, f, &call, a.no_payload);
}

/*
 * One send or receive of ret > 0 bytes on sk, from the task's own context (at
 * the end of the socket layer's sendmsg/recvmsg). The user buffer is found
 * from the syscall's saved registers; the seq of the first byte is the
 * socket's seq now less the bytes moved (for a peek, the seq now plus the
 * peek offset). ts_start: when the send started, 0 when unknown.
 */
static __always_inline void on_data(struct sock *sk, __s64 ret, int msg_flags, __u8 direction,
				    __u64 ts_start)
{
	/* Out-of-band bytes and the error queue are not stream bytes. */
	if (msg_flags & (MSG_OOB | MSG_ERRQUEUE))
		return;
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->flags & WEFT_PF_KTHREAD)
		return;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct weft_config *c = config();
	if (!process_traced(c, pid_tgid >> 32))
		return;
	/* kTLS and sockmap sockets: ret counts bytes that are not the ones the
	 * TCP sequence counts (and UDP encapsulation sockets are the kernel's). */
	if (sk->sk_user_data)
		return;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp) {
		on_udp(c, task, pid_tgid, sk, ret, msg_flags, direction, ts_start);
		return;
	}
	if (tp->inet_conn.icsk_ulp_ops)
		return;
	struct weft_sock *f = sock_entry(c, sk);
	if (!f)
		return;

	__u64 now = bpf_ktime_get_ns();
	if (!ts_start)
		ts_start = now;

	__u32 tcp_seq;
	if (direction == WEFT_DIR_EGRESS) {
		tcp_seq = tp->write_seq - (__u32)ret;
	} else if (msg_flags & MSG_PEEK) {
		int off = sk->sk_peek_off;
		tcp_seq = tp->copied_seq + (off >= 0 ? (__u32)off - (__u32)ret : 0);
	} else {
		tcp_seq = tp->copied_seq - (__u32)ret;
		/* A receive that reached the peer's FIN consumed its sequence
		 * number too: copied_seq then equals rcv_nxt, which counts the FIN
		 * (SOCK_DONE: a FIN arrived, not a reset or a local shutdown). */
		if ((sk->__sk_common.skc_flags & (1UL << WEFT_SOCK_DONE)) && tp->copied_seq == tp->rcv_nxt)
			tcp_seq -= 1;
	}

	/* Inside an OpenSSL call the bytes are ciphertext: the call's record
	 * carries its plaintext and the seq of its first encrypted byte here.
	 * Outside one, a socket OpenSSL has used moves only TLS records
	 * (alerts, tickets) that no parser reads. The handshake before the
	 * first call is recorded: user space reads the TLS version from it. */
	if (c && (c->filters & WEFT_FILTER_TLS)) {
		struct weft_ssl_call *s = bpf_task_storage_get(&weft_ssl_calls, task, 0, 0);
		if (s && s->active && s->direction == WEFT_SSL_HANDSHAKE) {
			/* SSL_do_handshake: the SSL object's socket is this one (a
			 * server reading ahead may buffer the first request here, so
			 * its SSL_read makes no socket call). The handshake's bytes
			 * are recorded as usual. */
			if (!s->has_seq) {
				s->sk = (__u64)sk;
				s->sock_id = f->sock_id;
				s->has_seq = 1;
			}
		} else {
			if (s && s->active) {
				if (!s->has_seq && s->direction == direction) {
					s->sk = (__u64)sk;
					s->sock_id = f->sock_id;
					s->tcp_seq = tcp_seq;
					s->has_seq = 1;
				} else if (s->has_seq && s->direction == WEFT_DIR_INGRESS &&
					   direction == WEFT_DIR_INGRESS && ret == 5 &&
					   s->sk == (__u64)sk) {
					/* Without read-ahead OpenSSL reads a record's
					 * 5-byte header, then its body: the last header
					 * read in a call starts the record whose plaintext
					 * the call returns (records before it were TLS 1.3
					 * session tickets or key updates). */
					s->tcp_seq = tcp_seq;
				}
				/* Only the call's own socket is ciphertext: another
				 * socket the thread touches meanwhile (a BIO callback,
				 * a call whose return was never seen) is left alone. */
				if (s->has_seq && s->sk == (__u64)sk) {
					f->tls = 1;
					return;
				}
			}
			if (f->tls)
				return;
		}
	}

	struct weft_args a = {};
	call_args(task, sk, msg_flags, direction, false, &a);
	take_over(f, pid_tgid);

	struct weft_call call = {
		.ts_enter_ns = ts_start,
		.ts_exit_ns = now,
		.ret = ret,
		.buf = a.buf,
		.iovcnt = a.iovcnt,
		.tcp_seq = tcp_seq,
		.capture_seq = __sync_fetch_and_add(&f->capture_seq, 1),
		.direction = direction,
		.syscall = a.syscall,
		.flags = a.no_payload ? WEFT_FLAG_FROM_FILE : 0,
	};
	emit(c, f, &call, a.no_payload);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(weft_sock_send, struct sock *sk, int ret, int flags)
{
	/* The start kept by weft_send_start is taken and cleared first, whatever
	 * happens next: a start left behind could be taken by a later send on a
	 * socket that reuses this address. */
	__u64 ts_start = 0;
	struct weft_send *start =
		bpf_task_storage_get(&weft_sends, bpf_get_current_task_btf(), 0, 0);
	if (start) {
		if (start->sk == (__u64)sk)
			ts_start = start->ts_ns;
		start->sk = 0;
	}
	if (ret <= 0)
		return 0;
	on_data(sk, ret, flags, WEFT_DIR_EGRESS, ts_start);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(weft_sock_recv, struct sock *sk, int ret, int flags)
{
	/* A failed receive (EAGAIN on a non-blocking socket, most often) costs
	 * nothing more. */
	if (ret <= 0)
		return 0;
	on_data(sk, ret, flags, WEFT_DIR_INGRESS, 0);
	return 0;
}

/* A send starts (fires again for every segment-sized chunk of the same call:
 * only the first sets the start). */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(weft_send_start, struct sock *sk)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct weft_config *c = config();
	if (!process_traced(c, bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct weft_send *start =
		bpf_task_storage_get(&weft_sends, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!start || start->sk == (__u64)sk)
		return 0;
	start->sk = (__u64)sk;
	start->ts_ns = bpf_ktime_get_ns();
	return 0;
}

/* A connection starts: its role. SYN_SENT is a connecting socket; LISTEN ->
 * SYN_RECV is a child socket cloned from a listener (every accepted one,
 * syncookie and Fast Open included), before any of its bytes move. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(weft_sock_state, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u8 role;
	if (newstate == WEFT_TCP_SYN_SENT)
		role = WEFT_ROLE_CLIENT;
	else if (oldstate == WEFT_TCP_LISTEN && newstate == WEFT_TCP_SYN_RECV)
		role = WEFT_ROLE_SERVER;
	else
		return 0;
	/* A new connection: a fresh entry, even if the address is reused. The
	 * 5-tuple is read at its first bytes (a connecting socket has no local
	 * port yet). */
	__u64 key = (__u64)sk;
	struct weft_sock fresh = {};
	fresh.role = role;
	fresh.traced = WEFT_TRACED_UNDECIDED;
	if (bpf_map_update_elem(&weft_socks, &key, &fresh, BPF_ANY))
		stat_inc(WEFT_STAT_SOCKETS_FULL);
	return 0;
}

/* A connection ends: the socket is destroyed, after the application closed it
 * and TCP is done with it (not at the CLOSE state, which a half-closed or reset
 * socket reaches while the application still reads). */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(weft_sock_destroy, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct weft_sock *st = bpf_map_lookup_elem(&weft_socks, &key);
	if (!st)
		return 0;
	/* Only sockets that carried traffic while the probes ran get a close
	 * record: user space ends their streams (bodies delimited by the close)
	 * and forgets them. */
	if (st->traced == WEFT_TRACED_YES && st->tgid) {
		struct weft_config *c = config();
		struct weft_event *e = bpf_ringbuf_reserve(&weft_events, sizeof(*e), 0);
		if (e) {
			__u64 now = bpf_ktime_get_ns();
			fill_common(e, st);
			e->ts_enter_ns = now;
			e->ts_exit_ns = now;
			e->ret = 0;
			e->tcp_seq = 0;
			e->capture_seq = st->capture_seq;
			e->payload_len = 0;
			e->direction = 0;
			e->syscall = WEFT_SYS_CLOSE;
			e->flags = 0;
			bpf_ringbuf_submit(e, wakeup_flags(c));
		} else {
			stat_inc(WEFT_STAT_RINGBUF_DROPS);
		}
	}
	bpf_map_delete_elem(&weft_socks, &key);
	return 0;
}

/*
 * OpenSSL (uprobes on libssl's SSL_write, SSL_write_ex, SSL_read and
 * SSL_read_ex, attached by user space to each libssl file in use). The entry
 * keeps the buffer in the task's storage; the sends and receives the call
 * makes on its socket give the socket and the seq of its first encrypted byte
 * (on_data); the return writes one record of the plaintext with the socket's
 * facts. A call that moved nothing on a socket (a read served from OpenSSL's
 * buffer) uses the socket its SSL object last used, if that socket still
 * lives, with WEFT_FLAG_NO_SEQ.
 */
static __always_inline int ssl_enter(__u8 direction, __u64 ssl, __u64 buf, __u64 len_ptr)
{
	struct weft_config *c = config();
	if (!process_traced(c, bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct weft_ssl_call *s = bpf_task_storage_get(&weft_ssl_calls, bpf_get_current_task_btf(), 0,
						       BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s)
		return 0;
	s->ssl = ssl;
	s->buf = buf;
	s->len_ptr = len_ptr;
	s->ts_enter_ns = bpf_ktime_get_ns();
	s->sk = 0;
	s->sock_id = 0;
	s->tcp_seq = 0;
	s->direction = direction;
	s->has_seq = 0;
	s->active = 1;
	return 0;
}

static __always_inline int ssl_exit(long rc)
{
	struct weft_ssl_call *s = bpf_task_storage_get(&weft_ssl_calls, bpf_get_current_task_btf(), 0, 0);
	if (!s || !s->active)
		return 0;
	s->active = 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct weft_ssl_key key = { .ssl = s->ssl, .tgid = pid_tgid >> 32 };
	struct weft_ssl_sock known = {};
	if (s->direction == WEFT_SSL_HANDSHAKE) {
		/* Finished or not (WANT_READ), the SSL object uses this socket. */
		if (s->has_seq) {
			known.sk = s->sk;
			known.sock_id = s->sock_id;
			bpf_map_update_elem(&weft_ssl_socks, &key, &known, BPF_ANY);
		}
		return 0;
	}
	__s64 n;
	if (s->len_ptr) {
		/* SSL_read_ex / SSL_write_ex: 1 on success, the count behind len_ptr. */
		__u64 v = 0;
		if ((int)rc <= 0 || bpf_probe_read_user(&v, sizeof(v), (void *)s->len_ptr))
			return 0;
		n = (__s64)v;
	} else {
		n = (int)rc;
	}
	if (n <= 0)
		return 0;
	__u8 flags = WEFT_FLAG_TLS;
	if (s->has_seq) {
		known.sk = s->sk;
		known.sock_id = s->sock_id;
		bpf_map_update_elem(&weft_ssl_socks, &key, &known, BPF_ANY);
	} else {
		struct weft_ssl_sock *k = bpf_map_lookup_elem(&weft_ssl_socks, &key);
		if (!k) {
			stat_inc(WEFT_STAT_TLS_NO_SOCKET);
			return 0;
		}
		known = *k;
		flags |= WEFT_FLAG_NO_SEQ;
	}
	__u64 skey = known.sk;
	struct weft_sock *f = bpf_map_lookup_elem(&weft_socks, &skey);
	/* Gone, or another socket at that address since. */
	if (!f || f->sock_id != known.sock_id) {
		stat_inc(WEFT_STAT_TLS_NO_SOCKET);
		return 0;
	}
	if (f->traced != WEFT_TRACED_YES)
		return 0;
	struct weft_config *c = config();
	take_over(f, pid_tgid);
	f->tls = 1;
	struct weft_call call = {
		.ts_enter_ns = s->ts_enter_ns,
		.ts_exit_ns = bpf_ktime_get_ns(),
		.ret = n,
		.buf = s->buf,
		.iovcnt = 0,
		.tcp_seq = s->has_seq ? s->tcp_seq : 0,
		.capture_seq = __sync_fetch_and_add(&f->capture_seq, 1),
		.direction = s->direction,
		.syscall = s->direction == WEFT_DIR_EGRESS ? WEFT_SYS_SSL_WRITE : WEFT_SYS_SSL_READ,
		.flags = flags,
	};
	emit(c, f, &call, false);
	return 0;
}

/* The arguments are read from the registers (x86-64: di, si, dx, cx). */
SEC("uprobe")
int weft_ssl_write(struct pt_regs *ctx)
{
	/* SSL_write(ssl, buf, num) */
	return ssl_enter(WEFT_DIR_EGRESS, ctx->di, ctx->si, 0);
}

SEC("uprobe")
int weft_ssl_write_ex(struct pt_regs *ctx)
{
	/* SSL_write_ex(ssl, buf, num, &written) */
	return ssl_enter(WEFT_DIR_EGRESS, ctx->di, ctx->si, ctx->cx);
}

SEC("uprobe")
int weft_ssl_read(struct pt_regs *ctx)
{
	/* SSL_read(ssl, buf, num) */
	return ssl_enter(WEFT_DIR_INGRESS, ctx->di, ctx->si, 0);
}

SEC("uprobe")
int weft_ssl_read_ex(struct pt_regs *ctx)
{
	/* SSL_read_ex(ssl, buf, num, &readbytes) */
	return ssl_enter(WEFT_DIR_INGRESS, ctx->di, ctx->si, ctx->cx);
}

SEC("uprobe")
int weft_ssl_handshake(struct pt_regs *ctx)
{
	/* SSL_do_handshake(ssl): ties the SSL object to its socket. */
	return ssl_enter(WEFT_SSL_HANDSHAKE, ctx->di, 0, 0);
}

SEC("uprobe")
int weft_ssl_free(struct pt_regs *ctx)
{
	/* SSL_free(ssl): the address may be reused by the next SSL object. */
	struct weft_ssl_key key = { .ssl = ctx->di, .tgid = bpf_get_current_pid_tgid() >> 32 };
	bpf_map_delete_elem(&weft_ssl_socks, &key);
	return 0;
}

/* One return program for all: the entry said which call it was. */
SEC("uretprobe")
int weft_ssl_ret(struct pt_regs *ctx)
{
	return ssl_exit((long)ctx->ax);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
