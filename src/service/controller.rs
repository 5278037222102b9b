//! The controller loop of the embedded engine: folds backend observations in as they arrive,
//! reconciles when a request kicks it and on a fixed tick (limits are time-driven).

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::Engine;
use crate::{domain::Observation, shutdown::Shutdown};

/// Most observations folded in under one lock.
const BATCH: usize = 256;

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
    loop {
        tokio::select! {
            n = observations.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                engine.observe(&batch);
                batch.clear();
            }
            _ = engine.kicked() => engine.reconcile(),
            _ = tick.tick() => engine.reconcile(),
            _ = shutdown.wait() => break,
        }
    }
    engine.shutdown();
}
