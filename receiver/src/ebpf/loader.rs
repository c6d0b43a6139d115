//! Loading the kernel side: checks that say exactly what the machine lacks (privilege,
//! BTF, tracefs, syscall tracepoints), then the probes loaded with aya, attached to their
//! tracepoints, configured, and their ring buffer and counters handed out.

use std::fmt::Write as _;
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};

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
pub const STAT_ACTIVE_FULL: usize = 3;
pub const STAT_COUNT: usize = 4;

/// Why the probes are not running; each message is one sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load eBPF programs (running as uid {uid} without them)")]
    Privilege { uid: u32 },
    #[error("the kernel has no BTF ({BTF_PATH} is missing): it must be built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed ({0}): run `mount -t tracefs nodev {TRACEFS}`")]
    NoTracefs(String),
    #[error("the kernel has no syscall tracepoints ({0} is missing): it must be built with CONFIG_FTRACE_SYSCALLS=y")]
    NoSyscallTracepoints(String),
    #[error("the kernel refused the probes: {0}")]
    Load(String),
    #[error("cannot attach {program} to tracepoint {category}/{name}: {error}")]
    Attach {
        program: String,
        category: String,
        name: String,
        error: String,
    },
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

/// Where the tracing events live, mounting tracefs when it is absent.
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
/// would fix it.
pub fn preflight() -> Result<&'static str, LoadError> {
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
    let dir = tracing_dir()?;
    let probe = format!("{dir}/events/syscalls/sys_enter_read");
    if !Path::new(&probe).is_dir() {
        return Err(LoadError::NoSyscallTracepoints(probe));
    }
    Ok(dir)
}

/// The tracepoint a program attaches to, from its name: `weft_enter_<call>` and
/// `weft_exit_<call>` go to `syscalls/sys_{enter,exit}_<call>`, `weft_sched_<event>` to
/// `sched/sched_<event>`.
pub fn tracepoint_of(program: &str) -> Option<(&'static str, String)> {
    // On 64-bit kernels sendfile's tracepoints carry the 64 of its syscall name.
    let syscall = |call: &str| match call {
        "sendfile" => "sendfile64".to_string(),
        c => c.to_string(),
    };
    if let Some(call) = program.strip_prefix("weft_enter_") {
        return Some(("syscalls", format!("sys_enter_{}", syscall(call))));
    }
    if let Some(call) = program.strip_prefix("weft_exit_") {
        return Some(("syscalls", format!("sys_exit_{}", syscall(call))));
    }
    if let Some(ev) = program.strip_prefix("weft_sched_") {
        return Some(("sched", format!("sched_{ev}")));
    }
    None
}

/// The loaded, attached probes. Dropping it detaches them.
pub struct Probes {
    ebpf: Ebpf,
    /// Tracepoints this kernel lacks, skipped (their syscalls are not captured).
    pub skipped: Vec<String>,
}

impl Probes {
    /// Loads and attaches every program; tracepoints the kernel lacks are skipped with a
    /// warning unless they are the basic read/write ones.
    pub fn load(payload_bytes: u32, ring_buffer_bytes: u32) -> Result<Probes, LoadError> {
        let tracing_dir = preflight()?;
        raise_memlock();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("weft_events", ring_buffer_bytes)
            .load(PROBES)
            .map_err(|e| LoadError::Load(chain(&e)))?;
        {
            let map = ebpf
                .map_mut("weft_config")
                .ok_or(LoadError::Missing("the weft_config map"))?;
            let mut config: Array<&mut MapData, [u32; 4]> =
                Array::try_from(map).map_err(|e| LoadError::Load(chain(&e)))?;
            let wakeup_bytes = ring_buffer_bytes / WAKEUP_FRACTION;
            config
                .set(0, [payload_bytes, std::process::id(), wakeup_bytes, 0], 0)
                .map_err(|e| LoadError::Load(chain(&e)))?;
        }
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        let mut skipped = Vec::new();
        for name in names {
            let Some((category, tp)) = tracepoint_of(&name) else {
                continue;
            };
            if !Path::new(&format!("{tracing_dir}/events/{category}/{tp}")).is_dir() {
                tracing::warn!(
                    tracepoint = %format!("{category}/{tp}"),
                    "this kernel lacks the tracepoint; its syscall is not captured"
                );
                skipped.push(format!("{category}/{tp}"));
                continue;
            }
            let attach_err = |error: String| LoadError::Attach {
                program: name.clone(),
                category: category.to_string(),
                name: tp.clone(),
                error,
            };
            let prog: &mut TracePoint = ebpf
                .program_mut(&name)
                .ok_or(LoadError::Missing("a program it listed"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(chain(&e)))?;
            prog.load().map_err(|e| attach_err(chain(&e)))?;
            prog.attach(category, &tp)
                .map_err(|e| attach_err(chain(&e)))?;
        }
        Ok(Probes { ebpf, skipped })
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
