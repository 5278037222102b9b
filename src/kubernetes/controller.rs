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

/// What the allocator works with.
pub struct Allocator {
    /// The watch caches.
    pub stores: Stores,
    /// Writes to the cluster.
    pub writer: Writer,
    /// Namespace of everything.
    pub namespace: String,
    /// Domain policies.
    pub policy: EnginePolicy,
    /// Pass at least this often.
    pub interval: Duration,
    /// Write counts.
    pub counters: Arc<WriteCounters>,
}

/// Runs the allocator until shutdown, passing only while `leading`.
pub async fn run(allocator: Allocator, mut leading: watch::Receiver<bool>, mut shutdown: Shutdown) {
    let Allocator { stores, writer, namespace, policy, interval, counters } = allocator;
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
