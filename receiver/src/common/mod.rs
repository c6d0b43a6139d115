//! What the receivers share: endpoints and binding, the server loop with
//! graceful stop, TLS and CORS from the collector's keys, and the hand-off to
//! the pipeline with its counters.

pub(crate) mod cors;
pub(crate) mod grpc;
pub(crate) mod guard;
pub(crate) mod http;
pub(crate) mod ingest;
pub mod net;
pub(crate) mod running;
pub mod tls;
