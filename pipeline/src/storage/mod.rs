//! The `file_storage` extension: a directory on local disk that exporters
//! name in `sending_queue.storage` to make their sending queue persistent.
//!
//! Each exporter gets its own queue directory under `directory`
//! (`exporter_<id>`, the id's `/` written as `~`), holding a segment log (see
//! [`queue`]). The collector keeps its queues in bbolt files; weft's format is
//! its own, so a directory written by the collector is not read.

pub mod queue;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::component::{
    parse_config, ComponentConfig, ComponentError, ConfigFieldError, Extension, ExtensionFactory,
    Lifecycle, Registry, Settings,
};
use crate::host::Host;

pub fn register(r: &mut Registry) {
    r.add_extension(Arc::new(FileStorageFactory));
}

/// Where the default `file_storage` keeps its data.
pub const DEFAULT_DIRECTORY: &str = "/var/lib/weft/file_storage";

/// `compaction`: accepted with the collector's keys. weft's segment log
/// compacts itself as it goes (a segment whose batches were all sent is
/// deleted, the ack log is rewritten when it grows), so these change nothing.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    pub on_start: bool,
    pub on_rebound: bool,
    pub directory: Option<String>,
    pub max_transaction_size: Option<u64>,
    pub rebound_needed_threshold_mib: Option<u64>,
    pub rebound_trigger_threshold_mib: Option<u64>,
    #[serde(with = "crate::config::duration::option")]
    pub check_interval: Option<Duration>,
    pub cleanup_on_start: bool,
}

/// `file_storage` settings, with the collector's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStorageConfig {
    /// Where the queues live. It must exist unless `create_directory` is set.
    pub directory: String,
    /// How long to wait for another process to release a queue directory.
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
    /// `fsync` each batch before acknowledging it: it then survives a power
    /// loss or kernel crash, not only a crash or kill of weft.
    pub fsync: bool,
    /// Create `directory` (and its parents) when it is missing.
    pub create_directory: bool,
    /// Permissions of a directory weft creates, in octal.
    pub directory_permissions: String,
    pub compaction: CompactionConfig,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: DEFAULT_DIRECTORY.into(),
            timeout: Duration::from_secs(1),
            fsync: false,
            create_directory: false,
            directory_permissions: "0750".into(),
            compaction: CompactionConfig::default(),
        }
    }
}

impl FileStorageConfig {
    fn permissions(&self) -> Option<u32> {
        u32::from_str_radix(self.directory_permissions.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
    }
}

impl ComponentConfig for FileStorageConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.directory.is_empty() {
            return Err(ConfigFieldError::at(
                &["directory"],
                "`directory` must not be empty",
            ));
        }
        if self.permissions().is_none() {
            return Err(ConfigFieldError::at(
                &["directory_permissions"],
                format!(
                    "`directory_permissions` {:?} is not an octal mode such as 0750",
                    self.directory_permissions
                ),
            ));
        }
        Ok(())
    }
}

/// What a started `file_storage` tells the exporters that use it.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSpec {
    pub directory: PathBuf,
    pub fsync: bool,
    pub timeout: Duration,
}

impl StorageSpec {
    /// The queue directory of one exporter: `exporter_<id>` with `/` written
    /// as `~` and any byte outside `[A-Za-z0-9_.-]` as `%XX`, so two ids never
    /// share a directory.
    pub fn queue_dir(&self, exporter: &str) -> PathBuf {
        let mut safe = String::with_capacity(exporter.len());
        for b in exporter.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    safe.push(b as char)
                }
                b'/' => safe.push('~'),
                _ => safe.push_str(&format!("%{b:02X}")),
            }
        }
        self.directory.join(format!("exporter_{safe}"))
    }
}

struct FileStorageFactory;

impl ExtensionFactory for FileStorageFactory {
    fn type_name(&self) -> &'static str {
        "file_storage"
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<FileStorageConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let config = parse_config::<FileStorageConfig>(raw)
            .map_err(|e| ComponentError::new(e.to_string()))?;
        Ok(Arc::new(FileStorage {
            id: settings.id.to_string(),
            spec: Arc::new(StorageSpec {
                directory: PathBuf::from(&config.directory),
                fsync: config.fsync,
                timeout: config.timeout,
            }),
            config,
            host: settings.host,
        }))
    }
}

struct FileStorage {
    id: String,
    config: FileStorageConfig,
    spec: Arc<StorageSpec>,
    host: Arc<Host>,
}

#[async_trait]
impl Lifecycle for FileStorage {
    async fn start(&self) -> Result<(), ComponentError> {
        let dir = &self.spec.directory;
        if !dir.is_dir() {
            if !self.config.create_directory {
                return Err(ComponentError::new(format!(
                    "directory {} does not exist (create it, or set create_directory: true)",
                    dir.display()
                )));
            }
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            std::os::unix::fs::DirBuilderExt::mode(
                &mut b,
                self.config.permissions().unwrap_or(0o750),
            );
            b.create(dir).map_err(|e| {
                ComponentError::new(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        // Writable, checked now rather than at the first batch.
        let probe = dir.join(".weft-write-check");
        std::fs::write(&probe, b"ok")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| {
                ComponentError::new(format!("directory {} is not writable: {e}", dir.display()))
            })?;
        self.host.add_storage(&self.id, self.spec.clone());
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.host.remove_storage(&self.id, &self.spec);
        Ok(())
    }
}

impl Extension for FileStorage {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<FileStorageConfig, ConfigFieldError> {
        parse_config::<FileStorageConfig>(&serde_yaml_ng::from_str(y).unwrap())
    }

    #[test]
    fn collector_keys_parse_with_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.directory, DEFAULT_DIRECTORY);
        assert!(!c.fsync);
        assert_eq!(c.timeout, Duration::from_secs(1));
        let c = parse(
            "directory: /q\nfsync: true\ncreate_directory: true\ntimeout: 2s\ncompaction:\n  on_start: true\n  on_rebound: true\n  directory: /tmp\n  max_transaction_size: 65536\n  check_interval: 5s\n",
        )
        .unwrap();
        assert_eq!(c.directory, "/q");
        assert!(c.fsync && c.create_directory && c.compaction.on_start);
        assert_eq!(c.compaction.check_interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("directory_permissions: rwx").unwrap_err();
        assert_eq!(e.path, vec!["directory_permissions"]);
        let e = parse("directory: ''").unwrap_err();
        assert_eq!(e.path, vec!["directory"]);
        assert!(parse("fsynk: true").is_err());
    }

    #[test]
    fn queue_dirs_are_one_per_exporter_and_safe() {
        let s = StorageSpec {
            directory: PathBuf::from("/q"),
            fsync: false,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            s.queue_dir("otlp/back"),
            PathBuf::from("/q/exporter_otlp~back")
        );
        assert_eq!(
            s.queue_dir("otlp/../x"),
            PathBuf::from("/q/exporter_otlp~..~x")
        );
    }
}
