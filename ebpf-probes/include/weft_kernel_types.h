/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types the weft probes touch, declared with only the fields
 * they read. Every struct carries preserve_access_index, so clang emits CO-RE
 * relocations and the loader rewrites field offsets from the running kernel's
 * BTF: the layouts below need not match any kernel, only the field names and
 * types must. This replaces a full generated vmlinux.h (over 100k lines) and
 * keeps the probes buildable without kernel headers.
 */
#ifndef WEFT_KERNEL_TYPES_H
#define WEFT_KERNEL_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* Stable UAPI constants (include/uapi/linux/bpf.h), declared here so the
 * probes need no system kernel headers. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};
#define BPF_ANY 0
#define BPF_F_NO_PREALLOC 1
#define BPF_LOCAL_STORAGE_GET_F_CREATE 1

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_OOB 0x1
#define MSG_PEEK 0x2
#define MSG_TRUNC 0x20
#define MSG_ERRQUEUE 0x2000
/* TCP states (include/net/tcp_states.h). */
#define WEFT_TCP_SYN_SENT 2
#define WEFT_TCP_SYN_RECV 3
#define WEFT_TCP_LISTEN 10

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct inode {
	unsigned long i_ino;
};

struct file {
	struct inode *f_inode;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

/* x86: the task's status word; TS_COMPAT while it runs a 32-bit syscall. */
struct thread_info {
	__u32 status;
};
#define WEFT_TS_COMPAT 0x0002

#define WEFT_PF_IO_WORKER 0x00000010
#define WEFT_PF_KTHREAD 0x00200000

struct task_struct {
	struct thread_info thread_info;
	unsigned int flags;
	struct files_struct *files;
};

/* x86-64 saved user registers: the syscall number is in orig_ax, its
 * arguments in di, si, dx, r10, r8, r9, all still there at sys_exit. A
 * uprobe's context: a function's arguments in di, si, dx, cx, r8, r9, its
 * return value in ax. */
struct pt_regs {
	unsigned long r9;
	unsigned long r8;
	unsigned long r10;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	unsigned long skc_flags;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	__u16 sk_type;
	__u8 sk_shutdown;
	int sk_peek_off;
	void *sk_user_data;
	struct socket *sk_socket;
};
/* enum sock_flags: set by tcp_fin only, when the peer's FIN arrived. */
#define WEFT_SOCK_DONE 1

struct socket {
	struct file *file;
};

struct inet_connection_sock {
	const void *icsk_ulp_ops;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 copied_seq;
	__u32 rcv_nxt;
	__u32 write_seq;
};

#pragma clang attribute pop

/* User-space ABI structs (LP64), read with bpf_probe_read_user. */
struct weft_iovec {
	__u64 iov_base;
	__u64 iov_len;
};

struct weft_user_msghdr {
	__u64 msg_name;
	__s32 msg_namelen;
	__s32 _pad;
	__u64 msg_iov;
	__u64 msg_iovlen;
	__u64 msg_control;
	__u64 msg_controllen;
	__s32 msg_flags;
	__s32 _pad2;
};

/* recvmmsg/sendmmsg vector entry: the kernel stores the bytes moved for this
 * message in msg_len. */
struct weft_user_mmsghdr {
	struct weft_user_msghdr msg_hdr;
	__u32 msg_len;
	__u32 _pad;
};

_Static_assert(sizeof(struct weft_user_msghdr) == 56, "struct msghdr is 56 bytes on LP64");
_Static_assert(sizeof(struct weft_user_mmsghdr) == 64, "struct mmsghdr is 64 bytes on LP64");

#endif /* WEFT_KERNEL_TYPES_H */
