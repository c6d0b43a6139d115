//! Exporter helper: bounded sending queue, retry with backoff, timeout. (in progress)
