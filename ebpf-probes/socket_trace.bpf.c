// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Socket syscall capture for the weft ebpf receiver: one fixed-layout record
 * per read/write-family syscall on a TCP socket (one per message for
 * recvmmsg/sendmmsg), with the correlation facts the stitcher needs (tcp seq,
 * role, 5-tuple, per-socket counter) and a prefix of the payload. Syscall
 * tracepoints only, so no kprobes are needed.
 */
#include "include/weft_kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define WEFT_EVENT_VERSION 1
#define WEFT_MAX_PAYLOAD 16384
#define WEFT_DEFAULT_PAYLOAD 1024
#define WEFT_COMM_LEN 16

enum weft_syscall {
	WEFT_SYS_READ = 1,
	WEFT_SYS_WRITE = 2,
	WEFT_SYS_RECVFROM = 3,
	WEFT_SYS_SENDTO = 4,
	WEFT_SYS_CONNECT = 5,
	WEFT_SYS_ACCEPT = 6,
	WEFT_SYS_CLOSE = 7,
	WEFT_SYS_READV = 8,
	WEFT_SYS_WRITEV = 9,
	WEFT_SYS_RECVMSG = 10,
	WEFT_SYS_SENDMSG = 11,
	WEFT_SYS_RECVMMSG = 12,
	WEFT_SYS_SENDMMSG = 13,
	WEFT_SYS_SENDFILE = 14,
};

/* iovec entries copied per syscall; bytes in later entries are counted as
 * truncated. */
#define WEFT_MAX_IOV 8

/* recvmmsg/sendmmsg messages recorded per syscall, one record each. Bytes of
 * later messages are not recorded; user space sees the gap in tcp_seq. */
#define WEFT_MAX_MMSG 4

enum weft_role { WEFT_ROLE_UNKNOWN = 0, WEFT_ROLE_CLIENT = 1, WEFT_ROLE_SERVER = 2 };
enum weft_direction { WEFT_DIR_EGRESS = 1, WEFT_DIR_INGRESS = 2 };

/* Counters in the stats per-CPU array; user space sums over CPUs. */
enum weft_stat {
	WEFT_STAT_RINGBUF_DROPS = 0,  /* record lost: ring buffer full */
	WEFT_STAT_TRUNCATED = 1,      /* payload longer than the captured prefix */
	WEFT_STAT_PAYLOAD_FAULT = 2,  /* user buffer unreadable; record sent without payload */
	WEFT_STAT_ACTIVE_FULL = 3,    /* too many syscalls in flight to track one more */
	WEFT_STAT_MAX = 4,
};

/* Record flags. */
#define WEFT_FLAG_TRUNCATED 0x1
#define WEFT_FLAG_PAYLOAD_FAULT 0x2
/* sendfile: the bytes came from a file and are not captured (payload_len is
 * 0, ret counts them); always set together with WEFT_FLAG_TRUNCATED. */
#define WEFT_FLAG_FROM_FILE 0x4

/*
 * Wire record. Header is 120 bytes, then payload_len bytes of payload.
 * Little-endian host order except the addresses, which are network order as
 * the kernel keeps them; ports are host order.
 */
struct weft_event {
	__u64 ts_enter_ns;   /* CLOCK_MONOTONIC at sys_enter */
	__u64 ts_exit_ns;    /* CLOCK_MONOTONIC at sys_exit */
	__u64 cgroup_id;
	__u64 sock_id;       /* socket inode number: unique while the socket lives */
	__u32 pid;           /* tgid */
	__u32 tid;
	__s64 ret;           /* bytes moved (for *mmsg: by this message) */
	__u32 tcp_seq;       /* seq of the first byte: write_seq (egress) / copied_seq (ingress) at entry */
	__u32 capture_seq;   /* per-socket record counter, from 0 */
	__u32 payload_len;   /* bytes of payload following the header */
	__u16 family;        /* AF_INET or AF_INET6 */
	__u16 lport;
	__u16 rport;
	__u8 role;           /* enum weft_role */
	__u8 direction;      /* enum weft_direction */
	__u8 syscall;        /* enum weft_syscall */
	__u8 flags;          /* WEFT_FLAG_* */
	__u8 version;        /* WEFT_EVENT_VERSION */
	__u8 _pad;
	__u8 laddr[16];      /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	char comm[WEFT_COMM_LEN];
	__u8 payload[];
};

struct weft_config {
	__u32 payload_bytes; /* 0 = default; capped at WEFT_MAX_PAYLOAD */
	__u32 exclude_tgid;  /* weft's own process, never traced */
	__u32 wakeup_bytes;  /* wake the reader once this much is unread; 0 = every record */
	__u32 _pad;
};

/* Ring buffer flags and query (UAPI enum values). */
#define WEFT_RB_NO_WAKEUP 1
#define WEFT_RB_FORCE_WAKEUP 2
#define WEFT_RB_AVAIL_DATA 0

/* State of one syscall between enter and exit. */
struct weft_active {
	__u64 ts_enter_ns;
	__u64 buf;           /* user buffer, or iovec array when iovcnt > 0, or mmsghdr array for *mmsg */
	__u64 iovcnt;        /* iovec count, or vlen for *mmsg */
	__u64 sk;
	__u64 sock_id;
	__u32 fd;
	__u32 tcp_seq;
	__u8 syscall;
	__u8 _pad[7];
};

struct weft_sock_state {
	__u32 capture_seq;
	__u8 role;
	__u8 _pad[3];
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct weft_active);
} weft_active SEC(".maps");

/* LRU so that sockets whose close() we never saw (fd passed to another
 * process, exit without close) age out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* struct sock address */
	__type(value, struct weft_sock_state);
} weft_sockets SEC(".maps");

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

/* Waking the reader for every record costs a context switch per syscall; the
 * reader also polls on a short timer, so a wakeup is forced only once
 * wakeup_bytes are waiting. */
static __always_inline __u64 wakeup_flags(void)
{
	struct weft_config *c = config();
	if (!c || !c->wakeup_bytes)
		return 0;
	if (bpf_ringbuf_query(&weft_events, WEFT_RB_AVAIL_DATA) >= c->wakeup_bytes)
		return WEFT_RB_FORCE_WAKEUP;
	return WEFT_RB_NO_WAKEUP;
}

static __always_inline bool excluded(__u64 pid_tgid)
{
	struct weft_config *c = config();
	return c && c->exclude_tgid && c->exclude_tgid == (__u32)(pid_tgid >> 32);
}

/*
 * fd -> struct sock of an inet TCP stream socket, or NULL. Filters early:
 * regular files, pipes and AF_UNIX sockets stop here.
 */
static __always_inline struct sock *tcp_sock_of_fd(__u32 fd, __u64 *sock_id)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (bpf_core_read(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (!inode)
		return NULL;
	unsigned short mode = BPF_CORE_READ(inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return NULL;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	*sock_id = BPF_CORE_READ(inode, i_ino);
	return sk;
}

static __always_inline bool is_egress(__u8 syscall)
{
	return syscall == WEFT_SYS_WRITE || syscall == WEFT_SYS_SENDTO ||
	       syscall == WEFT_SYS_WRITEV || syscall == WEFT_SYS_SENDMSG ||
	       syscall == WEFT_SYS_SENDMMSG || syscall == WEFT_SYS_SENDFILE;
}

static __always_inline int on_data_enter(struct weft_sys_enter_ctx *ctx, __u8 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (excluded(pid_tgid))
		return 0;
	struct weft_active a = {};
	a.fd = (__u32)ctx->args[0];
	struct sock *sk = tcp_sock_of_fd(a.fd, &a.sock_id);
	if (!sk)
		return 0;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	if (is_egress(syscall))
		a.tcp_seq = BPF_CORE_READ(tp, write_seq);
	else
		a.tcp_seq = BPF_CORE_READ(tp, copied_seq);
	a.ts_enter_ns = bpf_ktime_get_ns();
	a.buf = ctx->args[1];
	if (syscall == WEFT_SYS_READV || syscall == WEFT_SYS_WRITEV ||
	    syscall == WEFT_SYS_RECVMMSG || syscall == WEFT_SYS_SENDMMSG) {
		/* *mmsg: the entries' msg_len is only filled in at exit, so the
		 * mmsghdr array itself is read there. */
		a.iovcnt = ctx->args[2];
	} else if (syscall == WEFT_SYS_RECVMSG || syscall == WEFT_SYS_SENDMSG) {
		struct weft_user_msghdr m = {};
		if (bpf_probe_read_user(&m, sizeof(m), (void *)ctx->args[1]))
			return 0;
		a.buf = m.msg_iov;
		a.iovcnt = m.msg_iovlen;
	} else if (syscall == WEFT_SYS_SENDFILE) {
		/* args[1] is the source file's fd: nothing to read at exit. */
		a.buf = 0;
	}
	a.sk = (__u64)sk;
	a.syscall = syscall;
	if (bpf_map_update_elem(&weft_active, &pid_tgid, &a, BPF_ANY))
		stat_inc(WEFT_STAT_ACTIVE_FULL);
	return 0;
}

static __always_inline void fill_tuple(struct weft_event *e, struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET) {
		__be32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(e->laddr, &l, 4);
		__builtin_memcpy(e->raddr, &r, 4);
	} else {
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr);
	}
}

/* Copy up to want bytes from a user iovec array into the record's payload;
 * returns the bytes copied. */
static __always_inline __u32 gather_iov(struct weft_scratch *s, __u64 iov_ptr, __u64 iovcnt,
					__u32 want, struct weft_event *e)
{
	__u32 off = 0;
	for (int i = 0; i < WEFT_MAX_IOV; i++) {
		if (i >= iovcnt || off >= want)
			break;
		struct weft_iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iov_ptr + i * sizeof(iov)))) {
			e->flags |= WEFT_FLAG_PAYLOAD_FAULT;
			stat_inc(WEFT_STAT_PAYLOAD_FAULT);
			break;
		}
		__u32 chunk = want - off;
		if (iov.iov_len < chunk)
			chunk = iov.iov_len;
		if (off > WEFT_MAX_IOV_OFFSET || chunk > WEFT_MAX_PAYLOAD)
			break;
		if (bpf_probe_read_user(s->buf + sizeof(struct weft_event) + off, chunk,
					(void *)iov.iov_base)) {
			e->flags |= WEFT_FLAG_PAYLOAD_FAULT;
			stat_inc(WEFT_STAT_PAYLOAD_FAULT);
			break;
		}
		off += chunk;
	}
	if (off < want && !(e->flags & WEFT_FLAG_TRUNCATED)) {
		e->flags |= WEFT_FLAG_TRUNCATED;
		stat_inc(WEFT_STAT_TRUNCATED);
	}
	return off;
}

/*
 * Build in the scratch buffer, and send, one record of `bytes` bytes whose
 * first byte has sequence number tcp_seq. The payload prefix comes from buf:
 * a plain buffer, or an iovec array of iovcnt entries when vectored. cap 0
 * captures nothing (the record is then flagged truncated).
 */
static __always_inline void emit_record(struct weft_scratch *s, struct weft_active *a,
					struct weft_sock_state *st, __u64 ts_exit_ns, __s64 bytes,
					__u32 tcp_seq, __u64 buf, __u64 iovcnt, bool vectored,
					__u32 cap, __u8 direction, __u8 flags)
{
	struct weft_event *e = (struct weft_event *)s->buf;
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	e->ts_enter_ns = a->ts_enter_ns;
	e->ts_exit_ns = ts_exit_ns;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->sock_id = a->sock_id;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->ret = bytes;
	e->tcp_seq = tcp_seq;
	e->capture_seq = __sync_fetch_and_add(&st->capture_seq, 1);
	e->role = st->role;
	e->direction = direction;
	e->syscall = a->syscall;
	e->flags = flags;
	e->version = WEFT_EVENT_VERSION;
	e->_pad = 0;
	__builtin_memset(e->laddr, 0, sizeof(e->laddr));
	__builtin_memset(e->raddr, 0, sizeof(e->raddr));
	fill_tuple(e, (struct sock *)a->sk);
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	__u32 n = bytes < (__s64)cap ? (__u32)bytes : cap;
	if ((__u64)bytes > n) {
		e->flags |= WEFT_FLAG_TRUNCATED;
		stat_inc(WEFT_STAT_TRUNCATED);
	}
	/* Re-bound n where the verifier can see it. */
	if (n > WEFT_MAX_PAYLOAD)
		n = WEFT_MAX_PAYLOAD;
	if (n > 0 && !vectored) {
		if (bpf_probe_read_user(s->buf + sizeof(struct weft_event), n, (void *)buf)) {
			e->flags |= WEFT_FLAG_PAYLOAD_FAULT;
			stat_inc(WEFT_STAT_PAYLOAD_FAULT);
			n = 0;
		}
	} else if (n > 0) {
		n = gather_iov(s, buf, iovcnt, n, e);
	}
	e->payload_len = n;
	/* Variable-size output: the ring holds header + captured bytes only. */
	if (bpf_ringbuf_output(&weft_events, s, sizeof(struct weft_event) + n, wakeup_flags()))
		stat_inc(WEFT_STAT_RINGBUF_DROPS);
}

/*
 * recvmmsg/sendmmsg return a message count; each message becomes its own
 * record whose ret is that message's msg_len and whose tcp_seq follows the
 * bytes of the messages before it in the same call.
 */
static __always_inline void emit_mmsg(struct weft_scratch *s, struct weft_active *a,
				      struct weft_sock_state *st, __u64 ts_exit_ns, __s64 msgs,
				      __u32 cap, __u8 direction)
{
	__u32 tcp_seq = a->tcp_seq;
	__u64 vec = a->buf;
	__u64 vlen = a->iovcnt;
	for (int i = 0; i < WEFT_MAX_MMSG; i++) {
		if (i >= msgs || i >= vlen)
			break;
		struct weft_user_mmsghdr m = {};
		/* Without msg_len neither this record nor the seq of the next
		 * is known. */
		if (bpf_probe_read_user(&m, sizeof(m),
					(void *)(vec + i * sizeof(struct weft_user_mmsghdr))))
			break;
		if (m.msg_len == 0)
			continue;
		emit_record(s, a, st, ts_exit_ns, m.msg_len, tcp_seq, m.msg_hdr.msg_iov,
			    m.msg_hdr.msg_iovlen, true, cap, direction, 0);
		tcp_seq += m.msg_len;
	}
}

/*
 * syscall is a constant in each program, so every exit program keeps only its
 * own record path (the mmsg loop is by far the costliest to verify).
 */
static __always_inline int on_data_exit(struct weft_sys_exit_ctx *ctx, __u8 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct weft_active *a = bpf_map_lookup_elem(&weft_active, &pid_tgid);
	if (!a)
		return 0;
	__s64 ret = ctx->ret;
	/* A stash of another syscall is stale (its exit was missed while the
	 * probes attached): its buffer means something else here. */
	if (ret <= 0 || a->syscall != syscall)
		goto out;
	__u8 direction = is_egress(syscall) ? WEFT_DIR_EGRESS : WEFT_DIR_INGRESS;

	__u32 zero = 0;
	struct weft_scratch *s = bpf_map_lookup_elem(&weft_scratch, &zero);
	if (!s)
		goto out;

	__u64 sk_key = a->sk;
	struct weft_sock_state *st = bpf_map_lookup_elem(&weft_sockets, &sk_key);
	if (!st) {
		struct weft_sock_state fresh = {};
		bpf_map_update_elem(&weft_sockets, &sk_key, &fresh, BPF_ANY);
		st = bpf_map_lookup_elem(&weft_sockets, &sk_key);
		if (!st)
			goto out;
	}

	__u64 ts_exit_ns = bpf_ktime_get_ns();
	__u32 cap = WEFT_DEFAULT_PAYLOAD;
	struct weft_config *c = config();
	if (c && c->payload_bytes)
		cap = c->payload_bytes;
	if (cap > WEFT_MAX_PAYLOAD)
		cap = WEFT_MAX_PAYLOAD;

	switch (syscall) {
	case WEFT_SYS_RECVMMSG:
	case WEFT_SYS_SENDMMSG:
		emit_mmsg(s, a, st, ts_exit_ns, ret, cap, direction);
		break;
	case WEFT_SYS_SENDFILE:
		/* Capture cap 0: the record carries the byte count only and is
		 * counted as truncated. */
		emit_record(s, a, st, ts_exit_ns, ret, a->tcp_seq, 0, 0, false, 0, direction,
			    WEFT_FLAG_FROM_FILE);
		break;
	default:
		emit_record(s, a, st, ts_exit_ns, ret, a->tcp_seq, a->buf, a->iovcnt,
			    a->iovcnt != 0, cap, direction, 0);
		break;
	}
out:
	bpf_map_delete_elem(&weft_active, &pid_tgid);
	return 0;
}

/* connect/accept: remember the fd at entry, mark the socket's role at exit. */
static __always_inline int on_fd_enter(struct weft_sys_enter_ctx *ctx, __u8 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (excluded(pid_tgid))
		return 0;
	struct weft_active a = {};
	a.fd = (__u32)ctx->args[0];
	a.syscall = syscall;
	a.ts_enter_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&weft_active, &pid_tgid, &a, BPF_ANY);
	return 0;
}

static __always_inline void set_role(__u32 fd, __u8 role)
{
	__u64 sock_id = 0;
	struct sock *sk = tcp_sock_of_fd(fd, &sock_id);
	if (!sk)
		return;
	__u64 key = (__u64)sk;
	/* A new connection starts a new counter even if the sock address is reused. */
	struct weft_sock_state st = { .capture_seq = 0, .role = role };
	bpf_map_update_elem(&weft_sockets, &key, &st, BPF_ANY);
}

SEC("tracepoint/syscalls/sys_enter_read")
int weft_enter_read(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_READ); }
SEC("tracepoint/syscalls/sys_exit_read")
int weft_exit_read(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_READ); }
SEC("tracepoint/syscalls/sys_enter_recvfrom")
int weft_enter_recvfrom(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_RECVFROM); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int weft_exit_recvfrom(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_RECVFROM); }
SEC("tracepoint/syscalls/sys_enter_write")
int weft_enter_write(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_WRITE); }
SEC("tracepoint/syscalls/sys_exit_write")
int weft_exit_write(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_WRITE); }
SEC("tracepoint/syscalls/sys_enter_sendto")
int weft_enter_sendto(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_SENDTO); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int weft_exit_sendto(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_SENDTO); }

SEC("tracepoint/syscalls/sys_enter_readv")
int weft_enter_readv(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_READV); }
SEC("tracepoint/syscalls/sys_exit_readv")
int weft_exit_readv(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_READV); }
SEC("tracepoint/syscalls/sys_enter_writev")
int weft_enter_writev(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_WRITEV); }
SEC("tracepoint/syscalls/sys_exit_writev")
int weft_exit_writev(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_WRITEV); }
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int weft_enter_recvmsg(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_RECVMSG); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int weft_exit_recvmsg(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_RECVMSG); }
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int weft_enter_sendmsg(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_SENDMSG); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int weft_exit_sendmsg(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_SENDMSG); }

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int weft_enter_recvmmsg(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_RECVMMSG); }
SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int weft_exit_recvmmsg(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_RECVMMSG); }
SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int weft_enter_sendmmsg(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_SENDMMSG); }
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int weft_exit_sendmmsg(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_SENDMMSG); }
/* sendfile(out_fd, in_fd, ...): out_fd (args[0]) is the socket. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int weft_enter_sendfile(struct weft_sys_enter_ctx *ctx) { return on_data_enter(ctx, WEFT_SYS_SENDFILE); }
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int weft_exit_sendfile(struct weft_sys_exit_ctx *ctx) { return on_data_exit(ctx, WEFT_SYS_SENDFILE); }

SEC("tracepoint/syscalls/sys_enter_connect")
int weft_enter_connect(struct weft_sys_enter_ctx *ctx) { return on_fd_enter(ctx, WEFT_SYS_CONNECT); }

SEC("tracepoint/syscalls/sys_exit_connect")
int weft_exit_connect(struct weft_sys_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct weft_active *a = bpf_map_lookup_elem(&weft_active, &pid_tgid);
	if (!a)
		return 0;
	/* Non-blocking connect returns -EINPROGRESS and still makes a client. */
	if (a->syscall == WEFT_SYS_CONNECT && (ctx->ret == 0 || ctx->ret == -EINPROGRESS))
		set_role(a->fd, WEFT_ROLE_CLIENT);
	bpf_map_delete_elem(&weft_active, &pid_tgid);
	return 0;
}

static __always_inline int on_accept_exit(struct weft_sys_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (excluded(pid_tgid))
		return 0;
	if (ctx->ret >= 0)
		set_role((__u32)ctx->ret, WEFT_ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int weft_exit_accept4(struct weft_sys_exit_ctx *ctx) { return on_accept_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_accept")
int weft_exit_accept(struct weft_sys_exit_ctx *ctx) { return on_accept_exit(ctx); }

/* close: forget the socket while its file is still reachable from the fd. */
SEC("tracepoint/syscalls/sys_enter_close")
int weft_enter_close(struct weft_sys_enter_ctx *ctx)
{
	__u64 sock_id = 0;
	struct sock *sk = tcp_sock_of_fd((__u32)ctx->args[0], &sock_id);
	if (!sk)
		return 0;
	__u64 key = (__u64)sk;
	/* Only sockets that carried traffic (or were connected/accepted) while the
	 * probes ran have state, and only those get a close record: user space ends
	 * their streams (bodies delimited by the close) and forgets them. */
	struct weft_sock_state *st = bpf_map_lookup_elem(&weft_sockets, &key);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (st && !excluded(pid_tgid)) {
		struct weft_event *e = bpf_ringbuf_reserve(&weft_events, sizeof(*e), 0);
		if (e) {
			__u64 now = bpf_ktime_get_ns();
			e->ts_enter_ns = now;
			e->ts_exit_ns = now;
			e->cgroup_id = bpf_get_current_cgroup_id();
			e->sock_id = sock_id;
			e->pid = pid_tgid >> 32;
			e->tid = (__u32)pid_tgid;
			e->ret = 0;
			e->tcp_seq = 0;
			e->capture_seq = st->capture_seq;
			e->payload_len = 0;
			e->role = st->role;
			e->direction = 0;
			e->syscall = WEFT_SYS_CLOSE;
			e->flags = 0;
			e->version = WEFT_EVENT_VERSION;
			e->_pad = 0;
			__builtin_memset(e->laddr, 0, sizeof(e->laddr));
			__builtin_memset(e->raddr, 0, sizeof(e->raddr));
			fill_tuple(e, sk);
			bpf_get_current_comm(e->comm, sizeof(e->comm));
			bpf_ringbuf_submit(e, wakeup_flags());
		} else {
			stat_inc(WEFT_STAT_RINGBUF_DROPS);
		}
	}
	bpf_map_delete_elem(&weft_sockets, &key);
	return 0;
}

/* A thread that dies inside a syscall never reaches sys_exit. */
SEC("tracepoint/sched/sched_process_exit")
int weft_sched_process_exit(struct weft_sched_process_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&weft_active, &pid_tgid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
