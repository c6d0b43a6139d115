//! Service-wide state that components can read: readiness for health checks.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Host {
    ready: AtomicBool,
}

impl Host {
    pub fn new() -> Host {
        Host::default()
    }

    /// True while a pipeline graph is running and accepting data.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release)
    }
}
