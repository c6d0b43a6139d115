//! Build script: produces `$OUT_DIR/socket_trace.bpf.o`, the kernel side of the `ebpf`
//! receiver, by compiling `ebpf-probes/` with clang, or by copying the committed prebuilt
//! object when clang or the libbpf headers are missing (refusing it when it is stale).
//!
//! Environment:
//! - `WEFT_BPF_CLANG`: the clang to use (default `clang` on `PATH`); when set, it must work.
//! - `WEFT_BPF_PREBUILT=1`: use the prebuilt object even when clang is available.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Probe sources relative to `ebpf-probes/`, in hash order. `scripts/check-probes.sh`
/// hashes the same list the same way; keep the two in step.
const SOURCES: [&str; 2] = ["socket_trace.bpf.c", "include/weft_kernel_types.h"];
const MAIN_SOURCE: &str = "socket_trace.bpf.c";
const OBJECT: &str = "socket_trace.bpf.o";
const PREBUILT_OBJECT: &str = "prebuilt/socket_trace.bpf.o";
const PREBUILT_HASH: &str = "prebuilt/SOURCES.sha256";

/// The clang flags shared with `scripts/build-probes.sh` (which adds `-Werror`: warnings
/// of a newer clang should not break everyone's build, only the committed object's).
const CLANG_FLAGS: [&str; 7] = [
    "-O2",
    "-g",
    "-target",
    "bpf",
    "-mcpu=v3",
    "-D__TARGET_ARCH_x86",
    "-Wall",
];

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let probes = manifest_dir.join("../ebpf-probes");
    // Canonical, because clang records the canonical working directory in the debug
    // info and the prefix map has to match it.
    let probes = probes
        .canonicalize()
        .map_err(|e| format!("cannot find the probe sources at {}: {e}", probes.display()))?;

    for file in SOURCES.iter().chain([&PREBUILT_OBJECT, &PREBUILT_HASH]) {
        println!("cargo:rerun-if-changed={}", probes.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=WEFT_BPF_CLANG");
    println!("cargo:rerun-if-env-changed=WEFT_BPF_PREBUILT");

    let object = out_dir.join(OBJECT);
    let force_prebuilt = match env::var("WEFT_BPF_PREBUILT").as_deref() {
        Ok("1") => true,
        Ok("0") | Ok("") | Err(_) => false,
        Ok(other) => return Err(format!("WEFT_BPF_PREBUILT must be 1 or 0, not {other:?}")),
    };
    if force_prebuilt {
        return use_prebuilt(&probes, &object, "WEFT_BPF_PREBUILT=1");
    }

    let explicit = env::var_os("WEFT_BPF_CLANG").filter(|v| !v.is_empty());
    let clang = match &explicit {
        // A relative path is taken from where cargo runs, not from ebpf-probes/ where
        // clang runs.
        Some(path) if Path::new(path).components().count() > 1 => {
            Path::new(path).canonicalize().map_err(|e| {
                format!(
                    "WEFT_BPF_CLANG={} cannot be used: {e}",
                    Path::new(path).display()
                )
            })?
        }
        Some(path) => PathBuf::from(path),
        None => PathBuf::from("clang"),
    };
    match find_headers(&clang) {
        Toolchain::Ready => compile(&clang, &probes, &object),
        Toolchain::Missing(reason) => match explicit {
            Some(path) => Err(format!(
                "WEFT_BPF_CLANG={} cannot build the eBPF probes: {reason}",
                Path::new(&path).display()
            )),
            None => use_prebuilt(&probes, &object, &reason),
        },
    }
}

enum Toolchain {
    Ready,
    /// Why the probes cannot be compiled here.
    Missing(String),
}

/// Asks clang itself whether it finds the libbpf headers, so include paths set up in
/// clang's configuration count as much as `/usr/include`.
fn find_headers(clang: &Path) -> Toolchain {
    let child = Command::new(clang)
        .args(["-target", "bpf", "-E", "-x", "c", "-o", "/dev/null", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Toolchain::Missing(format!("{} not found", clang.display()))
        }
        Err(e) => return Toolchain::Missing(format!("cannot run {}: {e}", clang.display())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as a failed exit status below.
        let _ = stdin.write_all(b"#include <bpf/bpf_helpers.h>\n#include <bpf/bpf_core_read.h>\n");
    }
    match child.wait() {
        Ok(status) if status.success() => Toolchain::Ready,
        Ok(_) => Toolchain::Missing(format!(
            "{} does not find the libbpf headers bpf/bpf_helpers.h and bpf/bpf_core_read.h",
            clang.display()
        )),
        Err(e) => Toolchain::Missing(format!("cannot run {}: {e}", clang.display())),
    }
}

fn compile(clang: &Path, probes: &Path, object: &Path) -> Result<(), String> {
    // Compiled from inside ebpf-probes/ with a relative source path, and the directory
    // mapped to ".", so the debug info and BTF carry no path of the building machine.
    let output = Command::new(clang)
        .current_dir(probes)
        .args(CLANG_FLAGS)
        .arg(format!("-fdebug-prefix-map={}=.", probes.display()))
        .args(["-c", MAIN_SOURCE, "-o"])
        .arg(object)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", clang.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{} failed to compile ebpf-probes/{MAIN_SOURCE} ({}):\n{stderr}",
            clang.display(),
            output.status
        ));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning=ebpf-probes: {line}");
    }
    // The committed object is what builds without clang use: remind whoever changes the
    // sources here to refresh it.
    if let Ok(Some((recorded, current))) = stale_prebuilt(probes) {
        println!(
            "cargo:warning=ebpf-probes/{PREBUILT_OBJECT} is stale (sources hash {current}, \
             recorded {recorded}): run scripts/build-probes.sh"
        );
    }
    Ok(())
}

fn use_prebuilt(probes: &Path, object: &Path, reason: &str) -> Result<(), String> {
    if let Some((recorded, current)) = stale_prebuilt(probes)? {
        return Err(format!(
            "the prebuilt eBPF object ebpf-probes/{PREBUILT_OBJECT} is stale: the probe \
             sources hash to {current} but ebpf-probes/{PREBUILT_HASH} records {recorded}. \
             Run scripts/build-probes.sh (needs clang and the libbpf headers), or make clang \
             available to this build. The prebuilt object is used because: {reason}."
        ));
    }
    fs::copy(probes.join(PREBUILT_OBJECT), object).map_err(|e| {
        format!(
            "cannot copy ebpf-probes/{PREBUILT_OBJECT} to {}: {e}",
            object.display()
        )
    })?;
    println!(
        "cargo:warning=using the prebuilt eBPF object ebpf-probes/{PREBUILT_OBJECT} ({reason})"
    );
    Ok(())
}

/// `Some((recorded, current))` when the recorded hash differs from the sources' hash.
fn stale_prebuilt(probes: &Path) -> Result<Option<(String, String)>, String> {
    let path = probes.join(PREBUILT_HASH);
    let recorded = fs::read_to_string(&path)
        .map_err(|e| format!("cannot read ebpf-probes/{PREBUILT_HASH}: {e}"))?;
    let recorded = recorded.trim().to_owned();
    let current = sources_hash(probes)?;
    Ok((recorded != current).then_some((recorded, current)))
}

/// SHA-256 over each source's relative path, a NUL byte and its contents, in `SOURCES`
/// order, as lower-case hex.
fn sources_hash(probes: &Path) -> Result<String, String> {
    let mut hasher = Sha256::new();
    for file in SOURCES {
        let bytes = fs::read(probes.join(file))
            .map_err(|e| format!("cannot read ebpf-probes/{file}: {e}"))?;
        hasher.update(file.as_bytes());
        hasher.update([0u8]);
        hasher.update(&bytes);
    }
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set (not run by cargo?)"))
}
