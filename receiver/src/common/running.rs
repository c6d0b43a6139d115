//! The servers of a started receiver, and their bounded, graceful stop.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_pipeline::ComponentId;

/// How long shutdown waits for in-flight requests before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Server tasks spawned by a start, all stopped by one token.
pub(crate) struct Running {
    pub token: CancellationToken,
    pub tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    /// Stops accepting at once, then gives requests in flight until
    /// [`SHUTDOWN_GRACE`] to finish; later ones are dropped with a warning.
    pub(crate) async fn stop(self, receiver: &ComponentId) {
        self.token.cancel();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for (transport, mut task) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    receiver = %receiver,
                    transport,
                    "requests still in flight after {}s; dropped",
                    SHUTDOWN_GRACE.as_secs()
                );
            }
        }
    }
}
