//! The `weft` command line against good and bad configs: exit codes and the
//! exact message fragments a user sees (component id / key and line:column).

use std::io::Write;
use std::process::{Command, Output};

fn weft(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run weft")
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    f.write_all(text.as_bytes()).expect("write config");
    f
}

const GOOD: &str = "receivers:
  otlp:
    protocols:
      grpc:
processors:
  batch:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
";

/// (name, config, fragments that must all appear on stderr)
const BAD: &[(&str, &str, &[&str])] = &[
    (
        "unknown top-level key",
        "recievers:\n  otlp:\n",
        &["'' has invalid keys: recievers", "line 1, column 1"],
    ),
    (
        "unknown key in a component",
        "receivers:\n  otlp:\n    protocols:\n      htttp:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["receivers::otlp::protocols", "unknown field `htttp`", "line 4, column 7"],
    ),
    (
        "no receivers",
        "exporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["no receiver configuration specified in config"],
    ),
    (
        "no exporters",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["no exporter configuration specified in config"],
    ),
    (
        "no pipelines",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\n",
        &["service must have at least one pipeline"],
    ),
    (
        "pipeline references an unconfigured receiver",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp, otlp/2]\n      exporters: [debug]\n",
        &["references receiver \"otlp/2\" which is not configured", "service::pipelines::traces::receivers::1", "line 10, column 25"],
    ),
    (
        "processor listed twice",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  batch:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch, batch]\n      exporters: [debug]\n",
        &["references processor \"batch\" multiple times", "line 13"],
    ),
    (
        "pipeline without receivers",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      exporters: [debug]\n",
        &["pipeline \"traces\": must have at least one receiver", "line 9, column 5"],
    ),
    (
        "pipeline without exporters",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n",
        &["pipeline \"traces\": must have at least one exporter"],
    ),
    (
        "unknown component type lists the valid ones",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  kafka:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [kafka]\n",
        &["unknown type: \"kafka\" for id: \"kafka\"", "valid values: [", "otlp_grpc", "line 6, column 3"],
    ),
    (
        "bad component id",
        "receivers:\n  otlp/:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["invalid receiver id \"otlp/\"", "the part after \"/\" should not be empty"],
    ),
    (
        "bad pipeline signal",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  pipelines:\n    spans:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["unknown signal \"spans\""],
    ),
    (
        "otlp receiver without protocols",
        "receivers:\n  otlp:\n    protocols:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["receivers::otlp", "must specify at least one protocol"],
    ),
    (
        "bad Go duration",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  batch:\n    timeout: 5 seconds\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [debug]\n",
        &["processors::batch::timeout", "invalid duration \"5 seconds\"", "line 7, column 5"],
    ),
    (
        "batch max below size",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  batch:\n    send_batch_size: 100\n    send_batch_max_size: 10\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [debug]\n",
        &["processors::batch::send_batch_max_size", "send_batch_max_size must be greater or equal to send_batch_size", "line 8, column 5"],
    ),
    (
        "memory_limiter without check_interval",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  memory_limiter:\n    limit_mib: 100\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter]\n      exporters: [debug]\n",
        &["processors::memory_limiter::check_interval", "must be greater than zero"],
    ),
    (
        "YAML syntax error",
        "receivers:\n  otlp: [\n",
        &["cannot parse YAML", "line"],
    ),
    (
        "unsupported config source",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: ${file:/x}\n",
        &["receivers::otlp::protocols::grpc::endpoint", "unsupported config source \"file\"", "line 5, column 9"],
    ),
    (
        "extension referenced but not configured",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  extensions: [health_check]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["references extension \"health_check\" which is not configured"],
    ),
    (
        "auth names an extension not enabled",
        "extensions:\n  bearertokenauth:\n    token: t\nreceivers:\n  otlp:\n    protocols:\n      grpc:\n        auth:\n          authenticator: bearertokenauth\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["receivers::otlp::protocols::grpc::auth::authenticator", "references extension \"bearertokenauth\", which is not configured under `extensions` and listed in `service.extensions`", "line 9"],
    ),
    (
        "storage names an unknown extension",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  otlp:\n    endpoint: h:4317\n    sending_queue:\n      storage: file_storage/missing\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp]\n",
        &["exporters::otlp::sending_queue::storage", "references extension \"file_storage/missing\""],
    ),
    (
        "bearertokenauth without a token",
        "extensions:\n  bearertokenauth:\n    scheme: Bearer\nreceivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  extensions: [bearertokenauth]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["extensions::bearertokenauth", "set one of `token`, `tokens` or `filename`"],
    ),
    (
        "unknown service key",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  pipeline:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
        &["'service' has invalid keys: pipeline", "line 8, column 3"],
    ),
    (
        "exporter without endpoint",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  otlp:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp]\n",
        &["exporters::otlp", "endpoint"],
    ),
    (
        "ebpf payload_bytes out of range",
        "receivers:\n  ebpf:\n    payload_bytes: 20000\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [ebpf]\n      exporters: [debug]\n",
        &["receivers::ebpf::payload_bytes", "must be between 1 and 16384, got 20000", "line 3"],
    ),
    (
        "ebpf ring buffer not a power of two",
        "receivers:\n  ebpf:\n    ring_buffer_bytes: 100000\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [ebpf]\n      exporters: [debug]\n",
        &["receivers::ebpf::ring_buffer_bytes", "power of two"],
    ),
    (
        "ebpf bad header name",
        "receivers:\n  ebpf:\n    redact_headers: [\"X Api\"]\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [ebpf]\n      exporters: [debug]\n",
        &["receivers::ebpf::redact_headers::0", "not a valid HTTP header name"],
    ),
    (
        "autotracing max_hold below window + grace",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  autotracing:\n    max_hold: 1s\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [autotracing]\n      exporters: [debug]\n",
        &["processors::autotracing::max_hold", "must be at least window + grace", "line 7, column 5"],
    ),
    (
        "autotracing unknown sdk_merge",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  autotracing:\n    sdk_merge: maybe\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [autotracing]\n      exporters: [debug]\n",
        &["processors::autotracing::sdk_merge", "unknown variant `maybe`, expected `child` or `merge`"],
    ),
    (
        "autotracing in a metrics pipeline",
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  autotracing:\nexporters:\n  debug:\nservice:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      processors: [autotracing]\n      exporters: [debug]\n",
        &["processor \"autotracing\" does not support metrics"],
    ),
    (
        "ebpf unknown key",
        "receivers:\n  ebpf:\n    payload: 10\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [ebpf]\n      exporters: [debug]\n",
        &["receivers::ebpf", "unknown field `payload`"],
    ),
];

#[test]
fn bad_configs_exit_2_with_a_clear_message() {
    for (name, text, fragments) in BAD {
        let f = write_config(text);
        let path = f.path().to_str().expect("utf-8 temp path");
        let out = weft(&["validate", "--config", path], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: exit code; stderr: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: panicked: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{name}: one line expected: {stderr}"
        );
        for frag in *fragments {
            assert!(
                stderr.contains(frag),
                "{name}: {frag:?} missing from: {stderr}"
            );
        }
        // Running (not only validating) fails the same way, before binding anything.
        let run = weft(&["--config", path], &[]);
        assert_eq!(run.status.code(), Some(2), "{name}: run exit code");
    }
}

#[test]
fn missing_file_and_bad_set_exit_2() {
    let out = weft(&["validate", "--config", "/nonexistent/weft.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read config file /nonexistent/weft.yaml"));
    let f = write_config(GOOD);
    let path = f.path().to_str().expect("utf-8 temp path");
    let out = weft(&["validate", "--config", path, "--set", "novalue"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("invalid --set \"novalue\": expected key=value"));
}

#[test]
fn good_configs_validate() {
    // The embedded default.
    let out = weft(&["validate"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = write_config(GOOD);
    let path = f.path().to_str().expect("utf-8 temp path");
    assert_eq!(
        weft(&["validate", "--config", path], &[]).status.code(),
        Some(0)
    );
    // Both exporter spellings, every signal, named pipelines and components.
    let aliases = write_config(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: ${env:WEFT_TEST_GRPC}\n      http:\nprocessors:\n  batch/fast:\n    timeout: 1m30s\n  memory_limiter:\n    check_interval: 1s\n    limit_percentage: 80\n    spike_limit_percentage: 20\nexporters:\n  otlp:\n    endpoint: localhost:4317\n    tls:\n      insecure: true\n  otlphttp/backup:\n    endpoint: http://localhost:4318\n  otlp_grpc/2:\n    endpoint: localhost:4317\n  otlp_http:\n    endpoint: http://localhost:4318\n    encoding: json\nextensions:\n  health_check:\nservice:\n  extensions: [health_check]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter, batch/fast]\n      exporters: [otlp, otlphttp/backup, otlp_grpc/2, otlp_http]\n    metrics/2:\n      receivers: [otlp]\n      exporters: [otlp]\n    logs:\n      receivers: [otlp]\n      processors: [batch/fast]\n      exporters: [otlp_http]\n",
    );
    let path = aliases.path().to_str().expect("utf-8 temp path");
    let out = weft(
        &["validate", "--config", path],
        &[("WEFT_TEST_GRPC", "localhost:14317")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn print_config_merges_expands_and_sets() {
    let a = write_config("receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: ${env:WEFT_TEST_HOST}:${env:WEFT_TEST_PORT}\nexporters:\n  debug:\n    verbosity: basic\n  file:\n    path: \"cost-$$5-${env:WEFT_UNSET:-fallback}.json\"\n");
    let b = write_config("exporters:\n  debug:\n    verbosity: detailed\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n");
    let out = weft(
        &[
            "print-config",
            "--config",
            a.path().to_str().expect("path"),
            "--config",
            b.path().to_str().expect("path"),
            "--set",
            "processors::batch::timeout=2s",
        ],
        &[("WEFT_TEST_HOST", "127.0.0.1"), ("WEFT_TEST_PORT", "5317")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value =
        serde_yaml_ng::from_slice(&out.stdout).expect("print-config prints YAML");
    assert_eq!(
        printed["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "127.0.0.1:5317"
    );
    assert_eq!(printed["exporters"]["debug"]["verbosity"], "detailed");
    assert_eq!(
        printed["exporters"]["file"]["path"],
        "cost-$5-fallback.json"
    );
    assert_eq!(printed["processors"]["batch"]["timeout"], "2s");
    assert_eq!(
        printed["service"]["pipelines"]["traces"]["exporters"][0],
        "debug"
    );
}

#[test]
fn components_lists_every_type() {
    let out = weft(&["components"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let listed: serde_json::Value = serde_yaml_ng::from_slice(&out.stdout).expect("YAML");
    let names = |k: &str| -> Vec<String> {
        listed[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        names("receivers"),
        ["datadog", "ebpf", "jaeger", "otlp", "zipkin"]
    );
    assert_eq!(
        names("processors"),
        [
            "autotracing",
            "batch",
            "memory_limiter",
            "propagation_merge"
        ]
    );
    assert_eq!(
        names("exporters"),
        [
            "debug",
            "file",
            "jaeger",
            "nop",
            "otlp",
            "otlp_grpc",
            "otlp_http",
            "otlphttp",
            "zipkin"
        ]
    );
    assert_eq!(
        names("extensions"),
        ["bearertokenauth", "file_storage", "health_check", "status"]
    );
}
