//! The hand-off from a receiver to its pipeline, with the collector's
//! receiver counters kept for every request.

use std::sync::Arc;
use std::time::Instant;

use weft_pipeline::otlp_wire::EncodedTraces;
use weft_pipeline::{
    Batch, ClientMetadata, ConsumeError, Payload, ReceiverMetrics, ReceiverOutputs, Settings,
};

/// Hands decoded requests to the pipeline and counts the outcome, for one
/// receiver and transport.
pub(crate) struct Ingest {
    host: Arc<weft_pipeline::host::Host>,
    origin: Arc<str>,
    transport: &'static str,
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

    /// Sends one request's data downstream. A request without any resource
    /// entry is acknowledged without bothering the pipeline.
    pub(crate) async fn consume(
        &self,
        payload: Payload,
        metadata: Option<ClientMetadata>,
        received_at: Instant,
    ) -> Result<(), ConsumeError> {
        if payload.is_empty() {
            return Ok(());
        }
        let batch = Batch::new(payload, self.origin.clone());
        self.consume_batch(batch, metadata, received_at).await
    }

    /// As [`Ingest::consume`], for traces that stay encoded.
    pub(crate) async fn consume_encoded(
        &self,
        traces: EncodedTraces,
        metadata: Option<ClientMetadata>,
        received_at: Instant,
    ) -> Result<(), ConsumeError> {
        if traces.resource_count() == 0 {
            return Ok(());
        }
        let batch = Batch::encoded(traces, self.origin.clone());
        self.consume_batch(batch, metadata, received_at).await
    }

    async fn consume_batch(
        &self,
        mut batch: Batch,
        metadata: Option<ClientMetadata>,
        received_at: Instant,
    ) -> Result<(), ConsumeError> {
        let signal = batch.signal();
        let items = batch.item_count() as u64;
        batch.received_at = received_at;
        batch.metadata = metadata.map(Arc::new);
        let result = self.outputs.for_signal(signal).consume(batch).await;
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
