//! weft's processors: `batch`, `memory_limiter`, `propagation_merge` and `autotracing`.

pub mod autotracing;
pub mod batch;
pub mod memory_limiter;
pub mod propagation_merge;

use std::sync::Arc;

use weft_pipeline::Registry;

/// Adds every processor factory of this crate to the registry.
pub fn register(r: &mut Registry) {
    r.add_processor(Arc::new(batch::BatchFactory));
    r.add_processor(Arc::new(memory_limiter::MemoryLimiterFactory));
    r.add_processor(Arc::new(propagation_merge::PropagationMergeFactory));
    r.add_processor(Arc::new(autotracing::AutotracingFactory));
}
