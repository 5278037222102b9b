//! The allocator: while this replica holds the lease, runs a pass whenever the caches change
//! (at most every `MIN_GAP`) and on a tick for time-driven limits.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use tokio::{sync::watch, time::Instant};

use super::{allocate::pass, execute::Writer, store::Stores};
use crate::{service::engine::EnginePolicy, shutdown::Shutdown};

/// Shortest time between two passes.
const MIN_GAP: Duration = Duration::from_millis(10);

/// Writes counted since start, by outcome (for metrics and the benchmark).
#[derive(Debug, Default)]
pub struct WriteCounters {
    /// Successful writes by the allocator.
    pub done: AtomicU64,
    /// Failed writes (retried later).
    pub failed: AtomicU64,
}

/// Runs the allocator until shutdown.
pub async fn run(
    stores: Stores,
    writer: Writer,
    namespace: String,
    policy: EnginePolicy,
    interval: Duration,
    mut leading: watch::Receiver<bool>,
    counters: Arc<WriteCounters>,
    mut shutdown: Shutdown,
) {
    tracing::debug!("allocator starting");
    let mut changes = stores.changes();
    stores.wait_ready().await;
    tracing::debug!("allocator caches ready");
    let mut tick = tokio::time::interval(interval);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tick.tick() => {}
            _ = leading.changed() => {}
            _ = shutdown.wait() => break,
        }
        if !*leading.borrow() {
            continue;
        }
        tokio::time::sleep_until(last + MIN_GAP).await;
        changes.borrow_and_update();
        let writes = pass(&stores.snapshot(), &namespace, policy, Timestamp::now());
        last = Instant::now();
        tracing::debug!(writes = writes.len(), "allocator pass");
        if writes.is_empty() {
            continue;
        }
        let outcome = writer.execute(writes).await;
        counters.done.fetch_add(outcome.done, Ordering::Relaxed);
        counters.failed.fetch_add(outcome.failed, Ordering::Relaxed);
    }
}
