//! The file exporter writing real files in a temporary directory.

use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use weft_pipeline::{Batch, Exporter, Telemetry};

use super::*;
use crate::testutil::{exporter_value, resource_spans, settings, string_kv, trace_batch, yaml};

fn exporter(t: &Telemetry, config: &str) -> Arc<dyn Exporter> {
    let raw = yaml(config);
    FileFactory.check_config(&raw).unwrap();
    FileFactory.create(settings("file", t), &raw).unwrap()
}

/// Splits a file of length-prefixed records.
fn framed_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    out
}

fn json_lines(path: &Path) -> Vec<ExportTraceServiceRequest> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn json_lines_parse_back_to_the_same_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.json");
    std::fs::write(&path, "stale content\n").unwrap();
    let t = Telemetry::new();
    // a long flush interval: shutdown alone must make the data durable
    let exp = exporter(
        &t,
        &format!("{{path: '{}', flush_interval: 1h}}", path.display()),
    );
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["GET /cart", "SELECT cart"]))
        .await
        .unwrap();
    exp.consume(trace_batch(&["POST /pay"])).await.unwrap();
    exp.shutdown().await.unwrap();

    let requests = json_lines(&path);
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].resource_spans,
        resource_spans(&["GET /cart", "SELECT cart"])
    );
    assert_eq!(requests[1].resource_spans, resource_spans(&["POST /pay"]));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]}"#), "{text}");
    assert_eq!(exporter_value(&t, "otelcol_exporter_sent_spans", "file"), 3);
}

#[tokio::test]
async fn append_keeps_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.json");
    let first = encode_record(
        &Payload::Traces(resource_spans(&["old"])),
        Format::Json,
        FileCompression::None,
    )
    .unwrap();
    std::fs::write(&path, first).unwrap();
    let t = Telemetry::new();
    let exp = exporter(&t, &format!("{{path: '{}', append: true}}", path.display()));
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["new"])).await.unwrap();
    exp.shutdown().await.unwrap();
    let requests = json_lines(&path);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].resource_spans, resource_spans(&["old"]));
    assert_eq!(requests[1].resource_spans, resource_spans(&["new"]));
}

#[tokio::test]
async fn proto_and_zstd_records_are_length_prefixed() {
    for (format, compression) in [("proto", "none"), ("proto", "zstd"), ("json", "zstd")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let t = Telemetry::new();
        let exp = exporter(
            &t,
            &format!(
                "{{path: '{}', format: {format}, compression: {compression}}}",
                path.display()
            ),
        );
        exp.start().await.unwrap();
        exp.consume(trace_batch(&["a"])).await.unwrap();
        exp.consume(trace_batch(&["b", "c"])).await.unwrap();
        exp.shutdown().await.unwrap();

        let records = framed_records(&std::fs::read(&path).unwrap());
        assert_eq!(records.len(), 2, "{format}/{compression}");
        let decoded: Vec<ExportTraceServiceRequest> = records
            .iter()
            .map(|r| {
                let raw = if compression == "zstd" {
                    zstd::decode_all(r.as_slice()).unwrap()
                } else {
                    r.clone()
                };
                if format == "proto" {
                    ExportTraceServiceRequest::decode(raw.as_slice()).unwrap()
                } else {
                    serde_json::from_slice(&raw).unwrap()
                }
            })
            .collect();
        assert_eq!(decoded[0].resource_spans, resource_spans(&["a"]));
        assert_eq!(decoded[1].resource_spans, resource_spans(&["b", "c"]));
    }
}

/// A batch of about 300 KiB as JSON.
fn big_batch(n: usize) -> Batch {
    let mut rs: Vec<ResourceSpans> = resource_spans(&[&format!("span-{n}")]);
    rs[0].scope_spans[0].spans[0]
        .attributes
        .push(string_kv("payload", &"x".repeat(300 * 1024)));
    Batch::new(Payload::Traces(rs), Arc::from("otlp"))
}

#[tokio::test]
async fn rotation_keeps_max_backups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.json");
    let t = Telemetry::new();
    let exp = exporter(
        &t,
        &format!(
            "{{path: '{}', rotation: {{max_megabytes: 1, max_backups: 2}}}}",
            path.display()
        ),
    );
    exp.start().await.unwrap();
    // 3 records fit in 1 MiB, so 12 records make 4 files: 3 backups, 1 pruned
    for n in 0..12 {
        exp.consume(big_batch(n)).await.unwrap();
    }
    exp.shutdown().await.unwrap();

    let mut backups = writer::list_backups(&path).unwrap();
    backups.sort();
    assert_eq!(backups.len(), 2, "{backups:?}");
    let mut names = Vec::new();
    for (stamp, backup) in &backups {
        let file = backup.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(file, format!("spans-{stamp}.json"));
        assert!(std::fs::metadata(backup).unwrap().len() <= 1024 * 1024);
        names.extend(
            json_lines(backup)
                .iter()
                .map(|r| r.resource_spans[0].scope_spans[0].spans[0].name.clone()),
        );
    }
    names.extend(
        json_lines(&path)
            .iter()
            .map(|r| r.resource_spans[0].scope_spans[0].spans[0].name.clone()),
    );
    // the oldest backup (span-0..2) was pruned; the rest are in order
    let want: Vec<String> = (3..12).map(|n| format!("span-{n}")).collect();
    assert_eq!(names, want);
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_sent_spans", "file"),
        12
    );
}

#[tokio::test]
async fn creates_the_directory_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/out.json");
    let t = Telemetry::new();
    let exp = exporter(
        &t,
        &format!(
            "{{path: '{}', create_directory: true, directory_permissions: '0750'}}",
            path.display()
        ),
    );
    exp.start().await.unwrap();
    exp.consume(trace_batch(&["a"])).await.unwrap();
    exp.shutdown().await.unwrap();
    assert_eq!(json_lines(&path).len(), 1);

    let missing = dir.path().join("nope/out.json");
    let exp = exporter(&t, &format!("path: '{}'", missing.display()));
    let err = exp.start().await.unwrap_err();
    assert!(err.0.contains("cannot open"), "{err}");
    assert!(err.0.contains("nope/out.json"), "{err}");
}

#[tokio::test]
async fn consume_after_shutdown_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    let t = Telemetry::new();
    let exp = exporter(&t, &format!("path: '{}'", path.display()));
    exp.start().await.unwrap();
    exp.shutdown().await.unwrap();
    let err = exp.consume(trace_batch(&["late"])).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(
        exporter_value(&t, "otelcol_exporter_enqueue_failed_spans", "file"),
        1
    );
}
