//! Reload rebuilds only what changed, keeps the rest running, and an invalid
//! or unstartable config leaves the running graph in place. Real components on
//! loopback: the otlp receiver, batch, the file exporter.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use weft_pipeline::config::{Document, ServiceConfig, Source};
use weft_pipeline::graph::Service;
use weft_pipeline::host::Host;
use weft_pipeline::{Registry, Telemetry};

fn registry() -> Registry {
    let mut r = Registry::new();
    weft_receiver::register(&mut r);
    weft_processors::register(&mut r);
    weft_exporters::register(&mut r);
    r
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn config(registry: &Registry, text: &str) -> ServiceConfig {
    let doc = Document::load(
        &[Source::Text {
            name: "test.yaml".into(),
            text: text.into(),
        }],
        &[],
    )
    .expect("config loads");
    ServiceConfig::from_document(&doc, registry).expect("config is valid")
}

fn yaml(http_port: u16, batch_timeout: &str, file: &str, extra_exporter: bool) -> String {
    let extra = if extra_exporter {
        "\n  file/2:\n    path: FILE2"
    } else {
        ""
    };
    let extra_in_pipeline = if extra_exporter { ", file/2" } else { "" };
    format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http_port}\n\
         processors:\n  batch:\n    timeout: {batch_timeout}\n\
         exporters:\n  file:\n    path: {file}{extra}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [file{extra_in_pipeline}]\n"
    )
}

async fn post_span(port: u16, name: &str) -> u16 {
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"{name}"}}]}}]}}]}}"#
    );
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    resp.status().as_u16()
}

fn span_names(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .flat_map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("one JSON request per line");
            // One line is one export request; the batch processor may have
            // merged several posts into it (several resourceSpans).
            let mut names = Vec::new();
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        names.push(s["name"].as_str().unwrap_or_default().to_string());
                    }
                }
            }
            names
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rebuilds_only_what_changed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = registry();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.jsonl");
    let out2 = dir.path().join("out2.jsonl");
    let out_s = out.to_str().expect("utf-8 path");
    let port = free_port();
    let service = Service::new(
        Arc::new(registry.clone()),
        Telemetry::new(),
        Arc::new(Host::new()),
    );

    service
        .start(config(&registry, &yaml(port, "10ms", out_s, false)))
        .await
        .expect("starts");
    let first = service.instance_tokens().await;
    assert_eq!(post_span(port, "before").await, 200);

    // Only the batch processor's config changes: receiver and exporter stay.
    service
        .reload(config(&registry, &yaml(port, "20ms", out_s, false)))
        .await
        .expect("reloads");
    assert!(!service
        .reload(config(&registry, &yaml(port, "20ms", out_s, false)))
        .await
        .expect("an unchanged config reloads to nothing"));
    let second = service.instance_tokens().await;
    assert_eq!(first["receiver:otlp"], second["receiver:otlp"]);
    assert_eq!(first["exporter:file"], second["exporter:file"]);
    assert_ne!(
        first["processor:traces:batch"],
        second["processor:traces:batch"]
    );
    assert_eq!(post_span(port, "after-batch-change").await, 200);

    // An added exporter rebuilds the pipeline (its fanout changed) but keeps
    // the existing exporter and the receiver.
    let with_second =
        yaml(port, "20ms", out_s, true).replace("FILE2", out2.to_str().expect("utf-8 path"));
    service
        .reload(config(&registry, &with_second))
        .await
        .expect("reloads");
    let third = service.instance_tokens().await;
    assert_eq!(second["receiver:otlp"], third["receiver:otlp"]);
    assert_eq!(second["exporter:file"], third["exporter:file"]);
    assert!(third.contains_key("exporter:file/2"));
    assert_ne!(
        second["processor:traces:batch"],
        third["processor:traces:batch"]
    );
    assert_eq!(post_span(port, "after-exporter-added").await, 200);

    // A graph that cannot start (the receiver's new port is taken) is rolled
    // back: the old receiver serves again on its port.
    let blocker = TcpListener::bind("127.0.0.1:0").expect("bind a blocker");
    let taken = blocker.local_addr().expect("addr").port();
    let unstartable =
        with_second.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{taken}"));
    let err = service
        .reload(config(&registry, &unstartable))
        .await
        .expect_err("the new receiver cannot bind");
    assert!(
        err.to_string().contains("cannot start receiver otlp"),
        "{err}"
    );
    assert_eq!(
        service.instance_tokens().await.get("exporter:file/2"),
        third.get("exporter:file/2")
    );
    assert_eq!(post_span(port, "after-failed-reload").await, 200);
    drop(blocker);

    tokio::time::sleep(Duration::from_millis(50)).await;
    service.shutdown().await;
    assert_eq!(
        span_names(&out),
        [
            "before",
            "after-batch-change",
            "after-exporter-added",
            "after-failed-reload"
        ]
    );
    assert_eq!(
        span_names(&out2),
        ["after-exporter-added", "after-failed-reload"]
    );
    assert_eq!(
        service
            .telemetry()
            .value("weft_config_reloads", &[("result", "success")]),
        Some(2)
    );
    assert_eq!(
        service
            .telemetry()
            .value("weft_config_reloads", &[("result", "failure")]),
        Some(1)
    );
}
