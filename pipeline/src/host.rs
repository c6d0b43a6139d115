//! Service-wide state that components can read: readiness for health checks,
//! and the extensions other components use by id (storage for persistent
//! sending queues).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::Authenticator;
use crate::self_trace::SelfTracer;
use crate::status::StatusHub;
use crate::storage::StorageSpec;

#[derive(Debug, Default)]
pub struct Host {
    ready: AtomicBool,
    storages: Mutex<BTreeMap<String, Arc<StorageSpec>>>,
    authenticators: Mutex<BTreeMap<String, Authenticator>>,
    status: Arc<StatusHub>,
    /// weft's own tracer while `service.telemetry.traces` is on.
    self_tracer: arc_swap::ArcSwapOption<SelfTracer>,
}

impl Host {
    pub fn new() -> Host {
        Host::default()
    }

    /// What the `status` extension shows (kept whether or not one runs).
    pub fn status(&self) -> Arc<StatusHub> {
        self.status.clone()
    }

    /// True while a pipeline graph is running and accepting data.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release)
    }

    /// weft's own tracer, when it traces itself: one atomic load when it
    /// does not.
    pub fn self_tracer(&self) -> Option<Arc<SelfTracer>> {
        let g = self.self_tracer.load();
        g.as_ref().map(Arc::clone)
    }

    pub fn set_self_tracer(&self, tracer: Option<Arc<SelfTracer>>) {
        self.self_tracer.store(tracer);
    }

    /// Uninstalls `tracer` if it is still the one installed.
    pub fn clear_self_tracer(&self, tracer: &Arc<SelfTracer>) {
        let current = self.self_tracer.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, tracer)) {
            self.self_tracer.store(None);
        }
    }

    /// A started storage extension, by id (`file_storage/queue`).
    pub fn storage(&self, id: &str) -> Option<Arc<StorageSpec>> {
        self.storages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn add_storage(&self, id: &str, spec: Arc<StorageSpec>) {
        self.storages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), spec);
    }

    /// Forgets `id` if it is still `spec` (a replacement may have taken it).
    pub fn remove_storage(&self, id: &str, spec: &Arc<StorageSpec>) {
        let mut m = self.storages.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(id).is_some_and(|s| Arc::ptr_eq(s, spec)) {
            m.remove(id);
        }
    }

    /// A started authenticator extension, by id (`bearertokenauth/ingest`).
    pub fn authenticator(&self, id: &str) -> Option<Authenticator> {
        self.authenticators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn add_authenticator(&self, id: &str, a: Authenticator) {
        self.authenticators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), a);
    }

    /// Forgets `id` if it is still `a` (a replacement may have taken it).
    pub fn remove_authenticator(&self, id: &str, a: &Authenticator) {
        let mut m = self
            .authenticators
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let same = m.get(id).is_some_and(|cur| match (&cur.server, &a.server) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        });
        if same {
            m.remove(id);
        }
    }
}
