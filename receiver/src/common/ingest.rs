//! The hand-off from a receiver to its pipeline, with the collector's
//! receiver counters kept for every request.

use std::sync::Arc;
use std::time::Instant;

use weft_pipeline::otlp_wire::EncodedTraces;
use weft_pipeline::self_trace::{self, Attr, Caller, Parent, SpanKind};
use weft_pipeline::{
    Batch, ClientMetadata, ConsumeError, Payload, ReceiverMetrics, ReceiverOutputs, Settings,
    Signal,
};

/// Hands decoded requests to the pipeline and counts the outcome, for one
/// receiver and transport.
pub(crate) struct Ingest {
    host: Arc<weft_pipeline::host::Host>,
    origin: Arc<str>,
    transport: &'static str,
    /// The `format` attribute of receive spans.
    format: &'static str,
    /// Receive span names, by signal.
    span_names: [String; 3],
    outputs: ReceiverOutputs,
    pub(crate) metrics: ReceiverMetrics,
}

impl Ingest {
    pub(crate) fn new(
        settings: &Settings,
        transport: &'static str,
        outputs: ReceiverOutputs,
    ) -> Arc<Ingest> {
        Arc::new(Ingest {
            host: settings.host.clone(),
            origin: Arc::from(settings.id.to_string()),
            transport,
            format: format_of(&settings.id.type_name, transport),
            span_names: Signal::ALL
                .map(|s| self_trace::receive_span_name(&settings.id.to_string(), s)),
            outputs,
            metrics: ReceiverMetrics::new(&settings.telemetry, &settings.id, transport),
        })
    }

    /// The credential and TLS checks of one server, from its `auth` key.
    pub(crate) fn guard(
        &self,
        auth: Option<&weft_pipeline::auth::AuthConfig>,
    ) -> Result<super::guard::Guard, weft_pipeline::ComponentError> {
        let auth = match auth {
            Some(a) => Some(weft_pipeline::auth::server_authenticator(&self.host, a)?),
            None => None,
        };
        Ok(super::guard::Guard::new(
            auth,
            self.metrics.unauthenticated.clone(),
            self.metrics.tls_handshake_failures.clone(),
        ))
    }

    /// The caller of an HTTP request, read only when weft traces itself.
    pub(crate) fn caller_http(&self, headers: &http::HeaderMap) -> Caller {
        match self.host.self_tracer() {
            None => Caller::default(),
            Some(t) => {
                Caller::from_headers(&t, headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
            }
        }
    }

    /// The caller of a gRPC request, read only when weft traces itself.
    pub(crate) fn caller_grpc(&self, metadata: &tonic::metadata::MetadataMap) -> Caller {
        match self.host.self_tracer() {
            None => Caller::default(),
            Some(_)
                if metadata
                    .get(weft_pipeline::self_telemetry::SELF_TELEMETRY_HEADER)
                    .is_some() =>
            {
                Caller {
                    parent: None,
                    self_telemetry: true,
                }
            }
            Some(t) if !t.reads_headers() => Caller::default(),
            Some(_) => self.caller_http(&metadata.clone().into_headers()),
        }
    }

    /// Sends one request's data downstream. A request without any resource
    /// entry is acknowledged without bothering the pipeline.
    pub(crate) async fn consume(
        &self,
        payload: Payload,
        metadata: Option<ClientMetadata>,
        received_at: Instant,
        caller: Caller,
    ) -> Result<(), ConsumeError> {
        if payload.is_empty() {
            return Ok(());
        }
        let batch = Batch::new(payload, self.origin.clone());
        self.consume_batch(batch, metadata, received_at, caller)
            .await
    }

    /// As [`Ingest::consume`], for traces that stay encoded.
    pub(crate) async fn consume_encoded(
        &self,
        traces: EncodedTraces,
        metadata: Option<ClientMetadata>,
        received_at: Instant,
        caller: Caller,
    ) -> Result<(), ConsumeError> {
        if traces.resource_count() == 0 {
            return Ok(());
        }
        let batch = Batch::encoded(traces, self.origin.clone());
        self.consume_batch(batch, metadata, received_at, caller)
            .await
    }

    async fn consume_batch(
        &self,
        mut batch: Batch,
        metadata: Option<ClientMetadata>,
        received_at: Instant,
        caller: Caller,
    ) -> Result<(), ConsumeError> {
        let signal = batch.signal();
        let items = batch.item_count() as u64;
        batch.received_at = received_at;
        batch.metadata = metadata.map(Arc::new);
        // weft's own receive span (the collector's `receiver/<id>/…Received`);
        // never for weft's own telemetry arriving here.
        let mut span = match self.host.self_tracer() {
            Some(t) if !caller.self_telemetry => Some(t.start(
                self.span_names[signal as usize].clone(),
                SpanKind::Server,
                Parent::Remote(caller.parent),
                vec![
                    Attr::new("otelcol.component.kind", "receiver"),
                    Attr::new("otelcol.component.id", self.origin.to_string()),
                    Attr::new("otelcol.signal", signal.as_str()),
                    Attr::new("transport", self.transport),
                    Attr::new("format", self.format),
                ],
            )),
            _ => None,
        };
        if let Some(s) = &span {
            batch.self_spans = s.as_parent();
        }
        let result = self.outputs.for_signal(signal).consume(batch).await;
        if let Some(s) = &mut span {
            let word = self_trace::items_word(signal);
            let (accepted, refused) = if result.is_ok() {
                (items, 0)
            } else {
                (0, items)
            };
            s.set(Attr::new(format!("accepted_{word}"), accepted as i64));
            s.set(Attr::new(format!("refused_{word}"), refused as i64));
            match &result {
                Ok(()) => {}
                Err(e) => s.error(e.to_string()),
            }
        }
        drop(span);
        match &result {
            Ok(()) => self.metrics.accepted(signal).add(items),
            Err(e) => {
                self.metrics.refused(signal).add(items);
                tracing::debug!(
                    receiver = %self.origin,
                    transport = self.transport,
                    %signal,
                    items,
                    error = %e,
                    "pipeline refused data"
                );
            }
        }
        result
    }

    /// Counts a request rejected before it reached the pipeline.
    pub(crate) fn bad_request(&self, why: &dyn std::fmt::Display) {
        self.metrics.bad_requests.inc();
        tracing::debug!(
            receiver = %self.origin,
            transport = self.transport,
            "rejected request: {why}"
        );
    }
}

/// The collector's `format` of a receiver's requests.
fn format_of(receiver_type: &str, transport: &str) -> &'static str {
    match (receiver_type, transport) {
        ("otlp", _) => "protobuf",
        ("jaeger", "grpc") => "protobuf",
        ("jaeger", _) => "thrift",
        ("zipkin", _) => "zipkin",
        ("datadog", _) => "msgpack",
        ("ebpf", _) => "ebpf",
        _ => "unknown",
    }
}
