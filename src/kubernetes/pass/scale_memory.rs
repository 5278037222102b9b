//! The autoscaler's cooldown memory in cluster mode, pure: every allocator pass rebuilds the
//! domain state from the caches, so the warm target in force and since when the computed target
//! has been below it ([`ScaleMemory`]) live in the CapacityPool's status
//! (`status.autoscaler`). `restore` reads them back into the state before the pass decides;
//! `status_of` is what the pass writes when the memory changed. No client required.

use jiff::Timestamp;

use crate::kubernetes::snapshot::Snapshot;
use crate::{
    crd::AutoscalerMemory,
    domain::{Action, PoolName, State, apply, memory::ScaleMemory},
};

/// The status form of a pool's memory.
pub fn status_of(memory: &ScaleMemory) -> AutoscalerMemory {
    AutoscalerMemory {
        warm: memory.warm,
        below_since: memory.below.map(|(since, _)| since.to_string()),
        below_peak: memory.below.map(|(_, peak)| peak),
        hold_recorded: memory.hold_recorded,
    }
}

/// The domain form of a pool's stored memory. A `belowSince` that does not parse is read as
/// "not below": the cooldown then starts again, which errs towards keeping workstations warm.
pub fn memory_of(status: &AutoscalerMemory) -> ScaleMemory {
    let since = status.below_since.as_deref().and_then(|s| s.parse::<Timestamp>().ok());
    ScaleMemory {
        warm: status.warm,
        below: since.zip(status.below_peak),
        hold_recorded: status.hold_recorded,
    }
}

/// Puts each pool's stored memory into `state` (pools without one keep the empty memory).
pub fn restore(state: &mut State, snapshot: &Snapshot, now: Timestamp) {
    for pool in &snapshot.pools {
        let (Some(name), Some(stored)) =
            (pool.metadata.name.as_ref(), pool.status.as_ref().and_then(|s| s.autoscaler.as_ref()))
        else {
            continue;
        };
        let remember = Action::Remember { pool: PoolName(name.clone()), scale: memory_of(stored) };
        apply(state, &remember, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_survives_its_status_form() {
        let since: Timestamp = "2026-03-10T06:40:35.123456789Z".parse().unwrap();
        for memory in [
            ScaleMemory { warm: 5, below: Some((since, 3)), hold_recorded: true },
            ScaleMemory { warm: 2, below: None, hold_recorded: false },
        ] {
            let status = status_of(&memory);
            let json = serde_json::to_value(&status).unwrap();
            let back: AutoscalerMemory = serde_json::from_value(json).unwrap();
            assert_eq!(memory_of(&back), memory);
        }
    }

    #[test]
    fn a_cleared_cooldown_is_written_as_null_so_a_merge_patch_removes_it() {
        let json = serde_json::to_value(status_of(&ScaleMemory { warm: 1, ..Default::default() })).unwrap();
        assert!(json["belowSince"].is_null() && json.as_object().unwrap().contains_key("belowSince"));
        assert!(json.as_object().unwrap().contains_key("belowPeak"));
    }
}
