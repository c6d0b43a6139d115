//! Configuration of the `file` exporter, key for key as the collector's.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use weft_pipeline::{ComponentConfig, ConfigFieldError};

/// How each batch is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// OTLP/JSON, one `Export*ServiceRequest` per line.
    #[default]
    Json,
    /// OTLP protobuf, each request preceded by its length (4 bytes, big-endian).
    Proto,
}

/// Compression of each written record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileCompression {
    #[default]
    None,
    /// Each record is compressed on its own and length-prefixed.
    Zstd,
}

impl<'de> Deserialize<'de> for FileCompression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FileCompression, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("") | Some("none") => Ok(FileCompression::None),
            Some("zstd") => Ok(FileCompression::Zstd),
            Some(other) => Err(serde::de::Error::custom(format!(
                "unsupported compression {other:?}: the file exporter supports zstd or none"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Required. The file to write. Without `rotation` and `append` it is
    /// truncated at start.
    pub path: String,
    /// Append to an existing file instead of truncating it. Not with
    /// `rotation` or `compression`.
    pub append: bool,
    /// Rotate the file by size. Absent: no rotation. Present (even empty):
    /// rotation with the defaults below.
    #[serde(deserialize_with = "present_means_enabled")]
    pub rotation: Option<RotationSettings>,
    /// `json` (default) or `proto`.
    pub format: Format,
    /// `zstd` or none (default).
    pub compression: FileCompression,
    /// How often buffered data is flushed to the file (default 1s).
    #[serde(with = "weft_pipeline::config::duration")]
    pub flush_interval: Duration,
    /// Writing one file per resource attribute value is not supported; only
    /// `enabled: false` is accepted.
    pub group_by: Option<GroupBy>,
    /// Create the parent directory of `path` at start.
    pub create_directory: bool,
    /// Octal permissions for created directories (default `0755`); needs
    /// `create_directory`.
    pub directory_permissions: Option<String>,
    /// Encoding extensions are not supported; must be unset.
    pub encoding: Option<String>,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: String::new(),
            append: false,
            rotation: None,
            format: Format::Json,
            compression: FileCompression::None,
            flush_interval: Duration::from_secs(1),
            group_by: None,
            create_directory: false,
            directory_permissions: None,
            encoding: None,
        }
    }
}

/// `rotation`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationSettings {
    /// Rotate before the file would grow past this size (default 100).
    pub max_megabytes: u64,
    /// Delete backups older than this many days (default 0: keep by age).
    pub max_days: u64,
    /// Keep at most this many backups (default 100; 0 keeps all).
    pub max_backups: u64,
    /// Accepted for compatibility: backup timestamps are always UTC.
    pub localtime: bool,
}

impl Default for RotationSettings {
    fn default() -> Self {
        RotationSettings {
            max_megabytes: 100,
            max_days: 0,
            max_backups: 100,
            localtime: false,
        }
    }
}

/// `group_by`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupBy {
    pub enabled: bool,
    pub resource_attribute: Option<String>,
    pub max_open_files: Option<usize>,
}

fn present_means_enabled<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RotationSettings>, D::Error> {
    Ok(Some(
        Option::<RotationSettings>::deserialize(d)?.unwrap_or_default(),
    ))
}

impl FileConfig {
    /// Directory permissions as a mode, when directories are created.
    pub fn directory_mode(&self) -> u32 {
        self.directory_permissions
            .as_deref()
            .and_then(|p| u32::from_str_radix(p.trim_start_matches("0o"), 8).ok())
            .unwrap_or(0o755)
    }
}

impl ComponentConfig for FileConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        if self.path.trim().is_empty() {
            return Err(ConfigFieldError::at(&["path"], "path must be non-empty"));
        }
        if self.append && self.compression != FileCompression::None {
            return Err(ConfigFieldError::new(
                "append and compression enabled at the same time is not supported",
            ));
        }
        if self.append && self.rotation.is_some() {
            return Err(ConfigFieldError::new(
                "append and rotation enabled at the same time is not supported",
            ));
        }
        if self.group_by.as_ref().is_some_and(|g| g.enabled) {
            return Err(ConfigFieldError::at(
                &["group_by"],
                "group_by is not supported by weft's file exporter; remove it or set `enabled: false`",
            ));
        }
        if self.encoding.is_some() {
            return Err(ConfigFieldError::at(
                &["encoding"],
                "encoding extensions are not supported; use `format: json` or `format: proto`",
            ));
        }
        if let Some(r) = &self.rotation {
            if r.max_megabytes == 0 {
                return Err(ConfigFieldError::at(
                    &["rotation", "max_megabytes"],
                    "`max_megabytes` must be positive",
                ));
            }
        }
        match (&self.directory_permissions, self.create_directory) {
            (Some(_), false) => {
                return Err(ConfigFieldError::at(
                    &["directory_permissions"],
                    "directory_permissions requires create_directory to be true",
                ))
            }
            (Some(p), true) => match u32::from_str_radix(p.trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 => {}
                Ok(_) => {
                    return Err(ConfigFieldError::at(
                        &["directory_permissions"],
                        "directory_permissions contain invalid bits for file access",
                    ))
                }
                Err(_) => {
                    return Err(ConfigFieldError::at(
                        &["directory_permissions"],
                        "directory_permissions value must be a valid octal representation",
                    ))
                }
            },
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_pipeline::parse_config;

    fn parse(yaml: &str) -> Result<FileConfig, ConfigFieldError> {
        parse_config(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn defaults_and_rotation_presence() {
        let cfg = parse("path: out.json").unwrap();
        assert_eq!(cfg.format, Format::Json);
        assert_eq!(cfg.rotation, None);
        assert_eq!(cfg.flush_interval, Duration::from_secs(1));
        let cfg = parse("{path: out.json, rotation: {}}").unwrap();
        assert_eq!(cfg.rotation, Some(RotationSettings::default()));
        let cfg = parse("path: out.json\nrotation:\n").unwrap();
        assert_eq!(cfg.rotation, Some(RotationSettings::default()));
        let cfg = parse("{path: o, rotation: {max_megabytes: 10, max_backups: 3}, format: proto, compression: zstd}").unwrap();
        let r = cfg.rotation.unwrap();
        assert_eq!((r.max_megabytes, r.max_backups, r.max_days), (10, 3, 0));
        assert_eq!(cfg.compression, FileCompression::Zstd);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(parse("{}").unwrap_err().path, vec!["path"]);
        assert_eq!(
            parse("{path: o, format: xml}").unwrap_err().path,
            vec!["format"]
        );
        let err = parse("{path: o, compression: gzip}").unwrap_err();
        assert_eq!(err.path, vec!["compression"]);
        let err = parse("{path: 'o/*', group_by: {enabled: true}}").unwrap_err();
        assert_eq!(err.path, vec!["group_by"]);
        assert!(err.message.contains("not supported"));
        assert!(parse("{path: o, group_by: {enabled: false}}").is_ok());
        assert!(parse("{path: o, append: true, rotation: {}}").is_err());
        assert!(parse("{path: o, append: true, compression: zstd}").is_err());
        assert_eq!(
            parse("{path: o, directory_permissions: '0755'}")
                .unwrap_err()
                .path,
            vec!["directory_permissions"]
        );
        assert_eq!(
            parse("{path: o, create_directory: true, directory_permissions: '9'}")
                .unwrap_err()
                .path,
            vec!["directory_permissions"]
        );
    }
}
