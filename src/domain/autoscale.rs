//! How many unclaimed workstations a pool should keep: the warm buffer, kept within the pool's
//! minimum and maximum. Pure; the reconcile step turns the answer into starts and stops.

use super::{PoolCounts, PoolSpec};

/// Unclaimed (warm or starting-for-the-buffer) workstations the pool should have, given how
/// many are held by sessions (`used`) and being stopped. Never more than `max` allows, and
/// enough to keep `min` workstations running in all.
pub fn desired_unclaimed(pool: &PoolSpec, counts: &PoolCounts, queue_waiting: bool) -> u32 {
    if queue_waiting {
        // Every free slot goes to the queue first.
        return 0;
    }
    let used = counts.in_use + counts.starting_reserved;
    let room = pool.capacity.max.saturating_sub(used + counts.stopping);
    let for_min = pool.capacity.min.saturating_sub(used);
    pool.capacity.warm.max(for_min).min(room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pool::mk_pool;

    #[test]
    fn warm_buffer_shrinks_as_the_pool_fills() {
        let pool = mk_pool("p", 0, 4, 2);
        let c = PoolCounts { in_use: 3, ..PoolCounts::default() };
        assert_eq!(desired_unclaimed(&pool, &c, false), 1);
    }

    #[test]
    fn min_keeps_workstations_running_without_a_warm_buffer() {
        let pool = mk_pool("p", 3, 4, 0);
        let c = PoolCounts { in_use: 1, ..PoolCounts::default() };
        assert_eq!(desired_unclaimed(&pool, &c, false), 2);
    }

    #[test]
    fn a_waiting_queue_takes_every_slot() {
        let pool = mk_pool("p", 2, 4, 2);
        assert_eq!(desired_unclaimed(&pool, &PoolCounts::default(), true), 0);
    }
}
