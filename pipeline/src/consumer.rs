//! The consumer contract between pipeline stages, and the fanout that feeds several.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use crate::data::{Batch, Signal};

/// Why a consumer did not take a batch. Receivers map `Retryable` to 503 /
/// UNAVAILABLE and `Permanent` to 400 / INVALID_ARGUMENT; exporters retry only
/// `Retryable`.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ConsumeError {
    #[error("{0}")]
    Permanent(String),
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("no {0} pipeline takes data from this receiver")]
    NoPipeline(Signal),
}

impl ConsumeError {
    pub fn retryable(message: impl Into<String>) -> ConsumeError {
        ConsumeError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ConsumeError::Retryable { .. })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The consumer changes the data it receives in place.
    pub mutates_data: bool,
    /// `consume` returns Ok only once the data is on disk somewhere
    /// downstream (an exporter with a persistent sending queue): a processor
    /// that holds data (batch) then answers only once its data got there.
    pub acks_on_disk: bool,
}

#[async_trait]
pub trait Consumer: Send + Sync {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError>;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

pub type DynConsumer = Arc<dyn Consumer>;

/// Sends each batch to every consumer. Payloads are shared by `Arc`, so a
/// non-mutating consumer never costs a copy; a mutating one copies on write.
/// Errors: the first permanent error wins, else the first retryable one.
pub struct Fanout {
    consumers: Vec<DynConsumer>,
}

impl Fanout {
    pub fn new(consumers: Vec<DynConsumer>) -> Fanout {
        Fanout { consumers }
    }

    /// One consumer needs no fanout wrapper.
    pub fn build(mut consumers: Vec<DynConsumer>) -> DynConsumer {
        if consumers.len() == 1 {
            if let Some(only) = consumers.pop() {
                return only;
            }
        }
        Arc::new(Fanout::new(consumers))
    }
}

#[async_trait]
impl Consumer for Fanout {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let results =
            futures_util::future::join_all(self.consumers.iter().map(|c| c.consume(batch.clone())))
                .await;
        let mut first_err: Option<ConsumeError> = None;
        for r in results {
            if let Err(e) = r {
                match (&first_err, &e) {
                    (None, _) => first_err = Some(e),
                    (Some(prev), ConsumeError::Permanent(_)) if prev.is_retryable() => {
                        first_err = Some(e)
                    }
                    _ => {}
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mutates_data: self.consumers.iter().any(|c| c.capabilities().mutates_data),
            acks_on_disk: self.consumers.iter().any(|c| c.capabilities().acks_on_disk),
        }
    }
}

/// A consumer whose target can be replaced while batches flow: receivers hold
/// one per signal, and a reload swaps the graph behind it.
pub struct SwapConsumer {
    signal: Signal,
    target: ArcSwap<Option<DynConsumer>>,
}

impl SwapConsumer {
    pub fn new(signal: Signal) -> SwapConsumer {
        SwapConsumer {
            signal,
            target: ArcSwap::from_pointee(None),
        }
    }

    pub fn set(&self, target: Option<DynConsumer>) {
        self.target.store(Arc::new(target));
    }

    pub fn is_set(&self) -> bool {
        self.target.load().is_some()
    }
}

#[async_trait]
impl Consumer for SwapConsumer {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let target = self.target.load_full();
        match target.as_ref() {
            Some(c) => c.consume(batch).await,
            None => Err(ConsumeError::NoPipeline(self.signal)),
        }
    }
}

/// What a receiver sends into: one consumer per signal.
#[derive(Clone)]
pub struct ReceiverOutputs {
    pub traces: DynConsumer,
    pub metrics: DynConsumer,
    pub logs: DynConsumer,
}

impl ReceiverOutputs {
    pub fn for_signal(&self, signal: Signal) -> &DynConsumer {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }
}
