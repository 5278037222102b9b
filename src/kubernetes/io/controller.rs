//! The allocator: while this replica holds the lease, runs a pass whenever the caches change
//! (at most every `MIN_GAP`) and on a tick for time-driven limits.

use std::time::Duration;

use tokio::{sync::watch, time::Instant};

use super::{events::Events, execute::Writer, overlay::Overlay, store::Stores};
use crate::{
    clock::Clock,
    domain::Policy,
    kubernetes::{
        pass::{Pass, pass},
        snapshot::Snapshot,
    },
    shutdown::Shutdown,
};

/// Shortest time between two passes. Requests that take a ready warm pod never wait for a pass
/// (the replica answers from the create), so a pass is needed only for what takes seconds
/// anyway (starting pods, queues, limits); a burst of watch events then costs a few passes,
/// not one per event, and leaves the CPU to the requests.
const MIN_GAP: Duration = Duration::from_millis(25);

/// What the allocator works with.
pub struct Allocator {
    /// The watch caches.
    pub stores: Stores,
    /// Writes to the cluster.
    pub writer: Writer,
    /// Publishes the decisions of each pass as Events on their pools.
    pub events: Events,
    /// Namespace of everything.
    pub namespace: String,
    /// Domain policies.
    pub policy: Policy,
    /// Where passes read the time.
    pub clock: std::sync::Arc<dyn Clock>,
    /// Pass at least this often.
    pub interval: Duration,
}

/// Runs the allocator until shutdown, passing only while `leading`.
pub async fn run(allocator: Allocator, mut leading: watch::Receiver<bool>, mut shutdown: Shutdown) {
    let Allocator { stores, writer, events, namespace, policy, clock, interval } = allocator;
    tracing::debug!("allocator starting");
    let mut changes = stores.changes();
    tokio::select! {
        _ = stores.wait_ready() => {}
        _ = shutdown.wait() => return,
    }
    tracing::debug!("allocator caches ready");
    let mut tick = tokio::time::interval(interval);
    let mut last = Instant::now();
    let mut overlay = Overlay::default();
    let mut reported = ReportedProblems::default();
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
        let snapshot = overlay.apply(stores.snapshot(), std::time::Instant::now());
        reported.report(&snapshot, &events);
        let Pass { writes, decisions } = pass(&snapshot, &namespace, policy, clock.now());
        last = Instant::now();
        tracing::debug!(writes = writes.len(), decisions = decisions.len(), "allocator pass");
        for decision in &decisions {
            tracing::info!(pool = %decision.pool, kind = ?decision.kind, reason = %decision.reason, "decision");
        }
        if !decisions.is_empty() {
            // Best effort and off the allocator's path: an Event that is slow or refused must
            // not hold up the next pass.
            let events = events.clone();
            tokio::spawn(async move {
                for (seq, decision) in decisions.iter().enumerate() {
                    events.pool_decision(decision, seq).await;
                }
            });
        }
        if writes.is_empty() {
            continue;
        }
        let outcome = writer.execute(writes).await;
        tracing::debug!(
            done = outcome.done,
            failed = outcome.failed,
            skipped = outcome.skipped,
            "allocator writes"
        );
        overlay.record(outcome.written, std::time::Instant::now());
    }
}

/// Pools whose unusable spec parts were already reported, by the generation reported: each
/// problem is published once per spec change, not once per pass.
#[derive(Default)]
struct ReportedProblems(std::collections::HashMap<String, i64>);

impl ReportedProblems {
    fn report(&mut self, snapshot: &Snapshot, events: &Events) {
        for pool in &snapshot.pools {
            let (Some(name), generation) =
                (pool.metadata.name.clone(), pool.metadata.generation.unwrap_or(0))
            else {
                continue;
            };
            if self.0.get(&name) == Some(&generation) {
                continue;
            }
            self.0.insert(name.clone(), generation);
            let problems = pool.spec_problems();
            if problems.is_empty() {
                continue;
            }
            tracing::warn!(pool = %name, ?problems, "parts of the pool spec are ignored");
            let events = events.clone();
            tokio::spawn(async move {
                events.warn_pool(&name, "InvalidPoolSpec", problems.join("; ")).await;
            });
        }
    }
}
