//! The controller loop of the embedded engine: folds backend observations in as they arrive
//! and reconciles when they or a request changed something, and on a fixed tick (limits are
//! time-driven). Reconciles are at least `MIN_GAP` apart, so a burst of requests costs one
//! pass, not one per request.

use std::{sync::Arc, time::Duration};

use tokio::{sync::mpsc::UnboundedReceiver, time::Instant};

use super::engine::Engine;
use crate::{domain::Observation, shutdown::Shutdown};

/// Most observations folded in under one lock.
const BATCH: usize = 256;
/// Shortest time between two reconciles; bounds how late a warm buffer refill starts.
const MIN_GAP: Duration = Duration::from_millis(2);

/// Runs until `shutdown`, then stops every workstation.
pub async fn run(
    engine: Arc<Engine>,
    mut observations: UnboundedReceiver<Observation>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    engine.reconcile();
    engine.set_ready(true);
    let mut batch = Vec::with_capacity(BATCH);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            n = observations.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                engine.observe(&batch);
                batch.clear();
            }
            _ = engine.kicked() => {}
            _ = tick.tick() => {}
            _ = shutdown.wait() => break,
        }
        tokio::time::sleep_until(last + MIN_GAP).await;
        // Whatever arrived while waiting goes into the same pass.
        while let Ok(obs) = observations.try_recv() {
            batch.push(obs);
        }
        if !batch.is_empty() {
            engine.observe(&batch);
            batch.clear();
        }
        engine.reconcile();
        last = Instant::now();
    }
    engine.shutdown();
}
