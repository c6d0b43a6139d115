//! The `file` exporter: writes each batch as one OTLP `Export*ServiceRequest`
//! to a file, as JSON lines or length-prefixed protobuf, with optional zstd
//! and size-based rotation.
//!
//! It runs on the exporter helper with the queue and retries off, so a batch
//! is in the file's buffer when `consume` returns; a timer flushes the buffer
//! every `flush_interval`, and shutdown flushes and syncs it to disk.

pub mod config;
#[cfg(test)]
mod tests;
pub mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_yaml_ng::Value;
use tokio::task::JoinHandle;
use weft_pipeline::exporterhelper::{
    ExportClient, ExportError, QueueSettings, QueuedExporter, RetrySettings, TimeoutSettings,
};
use weft_pipeline::{
    parse_config, ComponentError, ConfigFieldError, Exporter, ExporterFactory, Payload, Settings,
    Signal,
};

use crate::common::{config_error, cpu_bound};
use config::{FileCompression, FileConfig, Format};
use writer::FileWriter;

/// Factory for `file`.
pub struct FileFactory;

impl ExporterFactory for FileFactory {
    fn type_name(&self) -> &'static str {
        "file"
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<FileConfig>(raw).map(|_| ())
    }

    fn create(&self, settings: Settings, raw: &Value) -> Result<Arc<dyn Exporter>, ComponentError> {
        let cfg = parse_config::<FileConfig>(raw).map_err(config_error)?;
        Ok(Arc::new(QueuedExporter::new(
            &settings,
            QueueSettings::disabled(),
            RetrySettings::disabled(),
            TimeoutSettings::none(),
            Arc::new(FileClient::new(settings.id.to_string(), cfg)),
        )))
    }
}

/// Encodes one payload as the record written to the file, framing included.
pub fn encode_record(
    payload: &Payload,
    format: Format,
    compression: FileCompression,
) -> Result<Vec<u8>, String> {
    let body = match format {
        Format::Json => crate::otlp_json::encode_request(payload)
            .map_err(|e| format!("cannot encode OTLP/JSON: {e}"))?,
        Format::Proto => crate::otlp_http::encode_proto(payload),
    };
    let body = match compression {
        FileCompression::None => body,
        FileCompression::Zstd => {
            zstd::bulk::compress(&body, 0).map_err(|e| format!("cannot compress a record: {e}"))?
        }
    };
    if format == Format::Json && compression == FileCompression::None {
        let mut line = body;
        line.push(b'\n');
        return Ok(line);
    }
    let len = u32::try_from(body.len()).map_err(|_| {
        format!(
            "a {} byte record does not fit the 4-byte length prefix",
            body.len()
        )
    })?;
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

/// Owns the output file.
pub struct FileClient {
    id: String,
    cfg: FileConfig,
    writer: Arc<Mutex<Option<FileWriter>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl FileClient {
    pub fn new(id: String, cfg: FileConfig) -> FileClient {
        FileClient {
            id,
            cfg,
            writer: Arc::new(Mutex::new(None)),
            flusher: Mutex::new(None),
        }
    }

    fn create_directory(&self, path: &std::path::Path) -> Result<(), ComponentError> {
        let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Ok(());
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(self.cfg.directory_mode());
        }
        builder.create(dir).map_err(|e| {
            ComponentError::new(format!(
                "exporter {}: cannot create directory {}: {e}",
                self.id,
                dir.display()
            ))
        })
    }
}

fn lock(w: &Mutex<Option<FileWriter>>) -> std::sync::MutexGuard<'_, Option<FileWriter>> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl ExportClient for FileClient {
    async fn start(&self) -> Result<(), ComponentError> {
        let path = PathBuf::from(&self.cfg.path);
        if self.cfg.create_directory {
            self.create_directory(&path)?;
        }
        let writer =
            FileWriter::open(&path, self.cfg.append, self.cfg.rotation.clone()).map_err(|e| {
                ComponentError::new(format!(
                    "exporter {}: cannot open {}: {e}",
                    self.id,
                    path.display()
                ))
            })?;
        *lock(&self.writer) = Some(writer);

        let interval = self.cfg.flush_interval;
        if !interval.is_zero() {
            let writer = self.writer.clone();
            let id = self.id.clone();
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let writer = writer.clone();
                    let flushed =
                        tokio::task::spawn_blocking(move || match lock(&writer).as_mut() {
                            Some(w) => w.flush(),
                            None => Ok(()),
                        })
                        .await;
                    if let Ok(Err(e)) = flushed {
                        tracing::warn!(exporter = %id, error = %e, "cannot flush the output file");
                    }
                }
            });
            *self.flusher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        Ok(())
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let (format, compression) = (self.cfg.format, self.cfg.compression);
        cpu_bound(|| {
            let record =
                encode_record(payload, format, compression).map_err(ExportError::Permanent)?;
            let mut guard = lock(&self.writer);
            let Some(writer) = guard.as_mut() else {
                return Err(ExportError::permanent(format!(
                    "the output file {} is not open",
                    self.cfg.path
                )));
            };
            writer.write_record(&record).map_err(|e| {
                ExportError::permanent(format!("cannot write to {}: {e}", self.cfg.path))
            })
        })
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        if let Some(task) = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        let writer = self.writer.clone();
        let path = self.cfg.path.clone();
        tokio::task::spawn_blocking(move || match lock(&writer).take() {
            Some(mut w) => w.sync(),
            None => Ok(()),
        })
        .await
        .map_err(|e| ComponentError::new(format!("flush task failed: {e}")))?
        .map_err(|e| ComponentError::new(format!("cannot flush {path}: {e}")))
    }
}
