//! Finding the files that hold OpenSSL's `SSL_read`/`SSL_write`, so their uprobes are
//! attached once per file: the host's `libssl.so.*` when capture starts, then whatever
//! new processes map (a venv's bundled libssl, a container's own, a configured
//! executable). A uprobe on a file fires in every process that maps it, started before
//! or after the attach, so each file is attached once, known by device and inode.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::config::TlsConfig;

/// Directories searched for the host's OpenSSL when capture starts.
const SYSTEM_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// Where OpenSSL's shared read and write paths start in a library file, as file
/// offsets: the functions `SSL_read`/`SSL_read_ex` and `SSL_write`/`SSL_write_ex` call
/// (`ssl_read_internal(s, buf, num, &readbytes)`, `ssl_write_internal(s, buf, num,
/// &written)`). A uprobe there costs a fraction of one on the exported functions: those
/// begin with `sub $n, %rsp`, which the kernel must single-step out of line (a second
/// trap per call), while these begin with `push`, which it emulates; and one probe
/// serves both forms of each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslInternals {
    pub read: u64,
    pub write: u64,
}

/// Finds [`SslInternals`] in an ELF file, or None when anything is not exactly as
/// expected: the exported `_ex` functions must be a bare call (after an optional
/// `endbr64` and `sub $imm8, %rsp`) to functions that start with `push`, and the
/// library's symbol versions must say OpenSSL 1.1.1, 3.0 or 3.1 (later releases changed
/// `ssl_write_internal`'s parameters). The caller then probes the exported functions.
pub fn openssl_internals(data: &[u8]) -> Option<SslInternals> {
    use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
    let file = object::File::parse(data).ok()?;
    if file.architecture() != object::Architecture::X86_64 {
        return None;
    }
    // Versions: .dynstr names the symbol version nodes.
    let dynstr = file.section_by_name(".dynstr")?.data().ok()?;
    let mut known = false;
    for name in dynstr.split(|b| *b == 0) {
        let Some(v) = name.strip_prefix(b"OPENSSL_") else {
            continue;
        };
        if v.starts_with(b"3.0.") || v.starts_with(b"3.1.") || v.starts_with(b"1_1_") {
            known = true;
        } else if v.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
    }
    if !known {
        return None;
    }
    let offset_of = |addr: u64| -> Option<u64> {
        file.segments().find_map(|seg| {
            let (off, size) = seg.file_range();
            let end = seg.address().checked_add(size)?;
            if addr >= seg.address() && addr < end {
                off.checked_add(addr - seg.address())
            } else {
                None
            }
        })
    };
    let bytes_at = |addr: u64, n: usize| -> Option<&[u8]> {
        let off = usize::try_from(offset_of(addr)?).ok()?;
        data.get(off..off.checked_add(n)?)
    };
    let target = |symbol: &str| -> Option<u64> {
        let sym = file.dynamic_symbols().find(|s| s.name() == Ok(symbol))?;
        let addr = sym.address();
        let code = bytes_at(addr, 16)?;
        let mut i = 0;
        if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            i += 4;
        }
        if code[i..].starts_with(&[0x48, 0x83, 0xec]) {
            i += 4;
        }
        if code.get(i) != Some(&0xe8) {
            return None;
        }
        let rel = i32::from_le_bytes(code.get(i + 1..i + 5)?.try_into().ok()?);
        let callee = addr
            .checked_add(i as u64 + 5)?
            .checked_add_signed(i64::from(rel))?;
        let head = bytes_at(callee, 2)?;
        let push = |b: u8| (0x50..=0x57).contains(&b);
        if !(push(head[0]) || (head[0] == 0x41 && push(head[1]))) {
            return None;
        }
        offset_of(callee)
    };
    let read = target("SSL_read_ex")?;
    let write = target("SSL_write_ex")?;
    (read != write).then_some(SslInternals { read, write })
}

/// Whether a file name is OpenSSL's libssl: `libssl.so.3`, `libssl.so.1.1`, or a copy
/// a Python wheel bundles under a hashed name (`libssl-8e6b2f1a.so.3`); not NSS's
/// `libssl3.so`, not the unversioned development link.
pub fn is_libssl(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("libssl") else {
        return false;
    };
    let rest = match rest.strip_prefix('-') {
        Some(hashed) => match hashed.find(".so.") {
            Some(at) if at > 0 && hashed[..at].bytes().all(|b| b.is_ascii_alphanumeric()) => {
                &hashed[at..]
            }
            _ => return false,
        },
        None => rest,
    };
    rest.strip_prefix(".so.").is_some_and(|v| !v.is_empty())
}

/// The mapped file paths in a `/proc/<pid>/maps` text, each once.
pub fn mapped_files(maps: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let Some(path) = fields.nth(5).map(str::trim_start) else {
            continue;
        };
        if path.starts_with('/') && !path.ends_with(" (deleted)") && !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// What the TLS discovery did, for the receiver's log and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Files newly probed, with what was probed in each.
    pub files: Vec<(PathBuf, String)>,
    /// Files that could not be probed, with the reason (each reported once).
    pub failed: Vec<(PathBuf, String)>,
}

/// The files probed so far and the processes already looked at.
pub struct TlsDiscovery {
    config: TlsConfig,
    /// Files looked at (probed or failed), by device and inode.
    files: HashSet<(u64, u64)>,
    /// Processes looked at, with the executable they ran then (an exec is a new look).
    pids: HashMap<u32, PathBuf>,
    probed: usize,
}

impl TlsDiscovery {
    pub fn new(config: TlsConfig) -> TlsDiscovery {
        TlsDiscovery {
            config,
            files: HashSet::new(),
            pids: HashMap::new(),
            probed: 0,
        }
    }

    /// Files probed so far.
    pub fn probed(&self) -> usize {
        self.probed
    }

    /// Whether a mapped file is one to probe.
    fn wanted(&self, path: &str) -> bool {
        let name = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        (self.config.openssl && is_libssl(name))
            || self
                .config
                .libraries
                .iter()
                .any(|l| l == path || (!l.starts_with('/') && l == name))
    }

    /// The host's libraries and the configured absolute paths, for the first attach.
    pub fn startup_candidates(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if self.config.openssl {
            for dir in SYSTEM_DIRS {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(is_libssl))
                    .map(|e| e.path())
                    .collect();
                names.sort();
                out.extend(names);
            }
        }
        out.extend(
            self.config
                .libraries
                .iter()
                .filter(|l| l.starts_with('/'))
                .map(PathBuf::from),
        );
        out
    }

    /// Probes each candidate file not seen before with `attach`.
    pub fn attach_files<F>(&mut self, candidates: Vec<PathBuf>, attach: &mut F) -> Attached
    where
        F: FnMut(&Path) -> Result<String, String>,
    {
        let mut done = Attached::default();
        for path in candidates {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() || !self.files.insert((meta.dev(), meta.ino())) {
                continue;
            }
            match attach(&path) {
                Ok(n) => {
                    self.probed += 1;
                    done.files.push((path, n));
                }
                Err(e) => done.failed.push((path, e)),
            }
        }
        done
    }

    /// Looks at processes not seen before (or that exec'd since) under `proc`, and
    /// probes the wanted files they map. Files are reached through the process's
    /// root, so a container's own libssl is probed, not the host's file of that name.
    pub fn scan<F>(&mut self, proc: &Path, attach: &mut F) -> Attached
    where
        F: FnMut(&Path) -> Result<String, String>,
    {
        let mut live: HashSet<u32> = HashSet::new();
        let mut candidates = Vec::new();
        let Ok(entries) = std::fs::read_dir(proc) else {
            return Attached::default();
        };
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            live.insert(pid);
            let dir = entry.path();
            // A kernel thread or a process gone: nothing to read.
            let Ok(exe) = std::fs::read_link(dir.join("exe")) else {
                continue;
            };
            if self.pids.get(&pid) == Some(&exe) {
                continue;
            }
            let Ok(maps) = std::fs::read_to_string(dir.join("maps")) else {
                continue;
            };
            self.pids.insert(pid, exe);
            for path in mapped_files(&maps) {
                if self.wanted(path) {
                    candidates.push(dir.join("root").join(path.trim_start_matches('/')));
                }
            }
        }
        self.pids.retain(|p, _| live.contains(p));
        self.attach_files(candidates, attach)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internals_of_the_host_libssl() {
        // On a host with OpenSSL 3.0/3.1 or 1.1.1 both entries are found and start
        // with a push; on others the answer is None (exported functions are probed).
        for path in [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
        ] {
            let Ok(data) = std::fs::read(path) else {
                continue;
            };
            if let Some(i) = openssl_internals(&data) {
                for off in [i.read, i.write] {
                    let b = &data[off as usize..off as usize + 2];
                    assert!(
                        (0x50..=0x57).contains(&b[0]) || b[0] == 0x41,
                        "{path}: {b:02x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn internals_refuse_what_is_not_elf_or_not_openssl() {
        assert_eq!(openssl_internals(b""), None);
        assert_eq!(openssl_internals(b"\x7fELF garbage"), None);
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(openssl_internals(&me), None);
    }

    #[test]
    fn libssl_names() {
        assert!(is_libssl("libssl.so.3"));
        assert!(is_libssl("libssl.so.1.1"));
        assert!(is_libssl("libssl-8e6b2f1a.so.3"));
        assert!(!is_libssl("libssl-.so.3"));
        assert!(!is_libssl("libssl-x.so"));
        assert!(!is_libssl("libssl.so"));
        assert!(!is_libssl("libssl3.so"));
        assert!(!is_libssl("libcrypto.so.3"));
    }

    #[test]
    fn maps_give_each_file_once() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 1234   /usr/bin/curl
7f0000000000-7f0000001000 r--p 00000000 08:01 99     /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000001000-7f0000002000 r-xp 00001000 08:01 99     /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000003000-7f0000004000 rw-p 00000000 00:00 0 
7f0000005000-7f0000006000 r-xp 00000000 08:01 77     /opt/app/lib/my lib.so
7f0000007000-7f0000008000 r-xp 00000000 08:01 78     /tmp/gone.so (deleted)
7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0      [stack]
";
        assert_eq!(
            mapped_files(maps),
            vec![
                "/usr/bin/curl",
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/opt/app/lib/my lib.so"
            ]
        );
    }

    #[test]
    fn wanted_files() {
        let d = TlsDiscovery::new(TlsConfig {
            openssl: true,
            libraries: vec!["node".into(), "/opt/app/bin/server".into()],
            shared_functions: true,
        });
        assert!(d.wanted("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(d.wanted("/usr/local/bin/node"));
        assert!(d.wanted("/opt/app/bin/server"));
        assert!(!d.wanted("/usr/bin/server"));
        assert!(!d.wanted("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"));
        let off = TlsDiscovery::new(TlsConfig {
            openssl: false,
            libraries: vec![],
            shared_functions: true,
        });
        assert!(!off.wanted("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
    }

    #[test]
    fn each_file_is_attached_once() {
        let dir = std::env::temp_dir().join(format!("weft-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libssl.so.3");
        std::fs::write(&lib, b"x").unwrap();
        let link = dir.join("libssl.so.3.link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link).unwrap();
        let mut d = TlsDiscovery::new(TlsConfig::default());
        let mut calls = Vec::new();
        let mut attach = |p: &Path| {
            calls.push(p.to_path_buf());
            Ok("4 functions".to_string())
        };
        let first = d.attach_files(
            vec![lib.clone(), link.clone(), dir.join("missing")],
            &mut attach,
        );
        assert_eq!(first.files, vec![(lib.clone(), "4 functions".to_string())]);
        let again = d.attach_files(vec![link], &mut attach);
        assert_eq!(again, Attached::default());
        assert_eq!(calls, vec![lib]);
        assert_eq!(d.probed(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_maps_are_scanned_once() {
        // The test binary maps its own executable: configured by path, it is found
        // through /proc/<pid>/root, and a second scan does not look again.
        let exe = std::env::current_exe().unwrap();
        let mut d = TlsDiscovery::new(TlsConfig {
            openssl: false,
            libraries: vec![exe.to_string_lossy().into_owned()],
            shared_functions: true,
        });
        let mut seen = Vec::new();
        let mut attach = |p: &Path| {
            seen.push(p.to_path_buf());
            Err("not an OpenSSL file".to_string())
        };
        let first = d.scan(Path::new("/proc"), &mut attach);
        assert_eq!(first.failed.len(), 1, "{first:?}");
        assert!(first.failed[0].0.ends_with(exe.strip_prefix("/").unwrap()));
        let again = d.scan(Path::new("/proc"), &mut attach);
        assert_eq!(again, Attached::default());
        assert_eq!(seen.len(), 1);
    }
}
