//! The file behind the file exporter: buffered writes, size-based rotation to
//! `<name>-<timestamp><ext>` backups, and pruning of old backups.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::config::RotationSettings;

const MEGABYTE: u64 = 1024 * 1024;

/// One open output file.
pub struct FileWriter {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    rotation: Option<RotationSettings>,
    _claim: PathClaim,
}

/// Paths this process has open for writing, with how many writers hold each.
/// A reload starts the new file exporter before the old one has drained; when
/// both point at the same file, the new one must not truncate what the old one
/// is still writing.
static OPEN_PATHS: std::sync::Mutex<std::collections::BTreeMap<PathBuf, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

struct PathClaim(PathBuf);

impl PathClaim {
    /// Claims `path`; true when another writer in this process already holds it.
    fn take(path: &Path) -> (PathClaim, bool) {
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut open = OPEN_PATHS.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        *count += 1;
        let shared = *count > 1;
        (PathClaim(key), shared)
    }
}

impl Drop for PathClaim {
    fn drop(&mut self) {
        let mut open = OPEN_PATHS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.0);
            }
        }
    }
}

impl FileWriter {
    /// Opens `path`: appended to when rotating (the current file keeps
    /// growing until it is rotated) or with `append`, truncated otherwise —
    /// unless another writer of this process still has it open (a reload in
    /// progress). Writes always use O_APPEND, and the buffer hands the kernel
    /// whole records, so two writers on one file never interleave inside a line.
    pub fn open(path: &Path, append: bool, rotation: Option<RotationSettings>) -> io::Result<Self> {
        let keep = append || rotation.is_some();
        let (claim, shared) = PathClaim::take(path);
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if !keep && !shared {
            file.set_len(0)?;
        }
        let size = file.metadata()?.len();
        Ok(FileWriter {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(256 * 1024, file),
            size,
            rotation,
            _claim: claim,
        })
    }

    /// Writes one framed record, rotating first if it would not fit.
    pub fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        if let Some(r) = &self.rotation {
            let limit = r.max_megabytes.saturating_mul(MEGABYTE);
            if self.size > 0 && self.size + record.len() as u64 > limit {
                self.rotate()?;
            }
        }
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// Flushes and asks the kernel to put the data on disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let mut at = SystemTime::now();
        let mut backup = backup_path(&self.path, at);
        // Two rotations within one millisecond must not overwrite each other.
        while backup.exists() {
            at += Duration::from_millis(1);
            backup = backup_path(&self.path, at);
        }
        fs::rename(&self.path, &backup)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.file = BufWriter::with_capacity(256 * 1024, file);
        self.size = 0;
        if let Err(e) = self.prune() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove old backups");
        }
        Ok(())
    }

    /// Removes backups beyond `max_backups` and older than `max_days`.
    fn prune(&self) -> io::Result<()> {
        let Some(r) = &self.rotation else {
            return Ok(());
        };
        let mut backups = list_backups(&self.path)?;
        // Newest first: the timestamp format sorts lexically.
        backups.sort_by(|a, b| b.0.cmp(&a.0));
        let now = SystemTime::now();
        for (i, (stamp, path)) in backups.iter().enumerate() {
            let too_many = r.max_backups > 0 && i as u64 >= r.max_backups;
            let too_old = r.max_days > 0
                && parse_stamp(stamp).is_some_and(|t| {
                    now.duration_since(t).unwrap_or_default()
                        > Duration::from_secs(r.max_days * 24 * 3600)
                });
            if too_many || too_old {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// `name.ext` → (`name`, `.ext`); a leading dot is part of the name.
fn split_name(path: &Path) -> (String, String) {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.rfind('.') {
        Some(i) if i > 0 => (file[..i].to_string(), file[i..].to_string()),
        _ => (file, String::new()),
    }
}

/// `2022-09-14T05-02-14.173`, UTC.
fn stamp(at: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(at).to_string();
    s.trim_end_matches('Z').replace(':', "-")
}

fn parse_stamp(stamp: &str) -> Option<SystemTime> {
    if stamp.len() != 23 {
        return None;
    }
    let mut s = stamp.to_string();
    s.replace_range(13..14, ":");
    s.replace_range(16..17, ":");
    humantime::parse_rfc3339(&format!("{s}Z")).ok()
}

/// Where the current file goes when rotated at `at`.
pub fn backup_path(path: &Path, at: SystemTime) -> PathBuf {
    let (name, ext) = split_name(path);
    path.with_file_name(format!("{name}-{}{ext}", stamp(at)))
}

/// The backups of `path` as (timestamp, path).
pub fn list_backups(path: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let (name, ext) = split_name(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{name}-");
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some(stamp) = rest.strip_suffix(ext.as_str()) else {
            continue;
        };
        if parse_stamp(stamp).is_some() {
            out.push((stamp.to_string(), entry.path()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_keep_the_extension() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_663_131_734_173);
        assert_eq!(
            backup_path(Path::new("/x/data.json"), at),
            PathBuf::from("/x/data-2022-09-14T05-02-14.173.json")
        );
        assert_eq!(
            backup_path(Path::new("/x/data"), at),
            PathBuf::from("/x/data-2022-09-14T05-02-14.173")
        );
        assert_eq!(parse_stamp("2022-09-14T05-02-14.173"), Some(at));
        assert_eq!(parse_stamp("2022-09-14"), None);
    }
}

#[cfg(test)]
mod shared_path_tests {
    use super::*;

    #[test]
    fn a_second_writer_on_an_open_path_appends_instead_of_truncating() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"stale\n").expect("seed file");
        let mut old = FileWriter::open(&path, false, None).expect("open old");
        old.write_record(b"a\n").expect("write a");
        old.flush().expect("flush a");
        // What a reload does: the replacement opens while the old one drains.
        let mut new = FileWriter::open(&path, false, None).expect("open new");
        new.write_record(b"b\n").expect("write b");
        new.flush().expect("flush b");
        old.write_record(b"c\n").expect("write c");
        old.flush().expect("flush c");
        drop(old);
        drop(new);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a\nb\nc\n");
        // Once nobody holds it, a fresh open truncates as configured.
        let mut again = FileWriter::open(&path, false, None).expect("open again");
        again.write_record(b"d\n").expect("write d");
        again.flush().expect("flush d");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "d\n");
    }
}
