//! The eBPF receiver: HTTP/1.x spans built from socket syscalls captured in the kernel,
//! with no SDK in the traced processes.
//!
//! Kernel probes on syscall tracepoints record, per read/write family call, the socket
//! identity, the TCP sequence of the first byte, timestamps, the syscall length and the
//! first `payload_bytes` of the payload. The user side reassembles those records into
//! per-socket byte streams, parses the HTTP/1.x messages they carry, pairs each request
//! with its response and turns every pair into one span (SERVER on the accepting side,
//! CLIENT on the connecting side) carrying the correlation facts the `autotracing`
//! processor joins into traces.
//!
//! This module holds the kernel-independent part of that user side:
//! - [`http1`]: an incremental HTTP/1.x parser for one direction of one socket, tolerant
//!   of truncated captures, pipelining and garbage;
//! - [`pairing`]: request/response pairing per socket into [`pairing::HttpExchange`]s.

pub mod http1;
pub mod pairing;

#[cfg(test)]
mod tests;
