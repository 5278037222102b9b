//! What the broker remembers about each pool's recent past, for the autoscaler and the wait
//! estimate: request arrival times (within the demand window), observed start durations and
//! how long sessions held their workstations, and the warm target in force. Every record is
//! bounded, by time and by count.

use std::{collections::VecDeque, time::Duration};

use jiff::Timestamp;

use super::time::before;

/// Most arrivals kept per pool; beyond this the demand rate saturates (10 000 requests in one
/// demand window is far beyond any pool's `max`).
pub const MAX_ARRIVALS: usize = 10_000;
/// Start durations kept per pool (the most recent).
pub const MAX_STARTS: usize = 32;
/// Session hold durations kept per pool (the most recent).
pub const MAX_HOLDS: usize = 128;
/// Start time assumed until a pool has started a workstation.
pub const DEFAULT_START: Duration = Duration::from_secs(120);

/// The autoscaler's memory of one pool: the warm target in force, and whether (since when) the
/// computed target has been below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleMemory {
    /// The warm target in force.
    pub warm: u32,
    /// Since when the computed target has been below `warm`, and the highest target seen
    /// since then; `None` while the target is at or above `warm`.
    pub below: Option<(Timestamp, u32)>,
    /// Whether holding this level was already recorded as a decision (once per level, so a
    /// target bouncing around the level does not flood the record).
    pub hold_recorded: bool,
}

/// Recent history of one pool.
#[derive(Debug, Clone, Default)]
pub struct PoolMemory {
    /// Times sessions were requested (created), oldest first.
    pub(super) arrivals: VecDeque<Timestamp>,
    /// How long workstations took from start to ready, oldest first.
    pub(super) starts: VecDeque<Duration>,
    /// How long sessions held a workstation (ready to end), oldest first.
    pub(super) holds: VecDeque<Duration>,
    /// The warm target in force.
    pub(super) scale: ScaleMemory,
}

fn push_bounded<T>(ring: &mut VecDeque<T>, value: T, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(value);
}

/// The `q`-quantile (0..=1) of `values`, by the nearest-rank method.
pub(super) fn quantile(values: impl Iterator<Item = Duration>, q: f64) -> Option<Duration> {
    let mut sorted: Vec<_> = values.collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl PoolMemory {
    /// No history.
    pub const EMPTY: PoolMemory = PoolMemory {
        arrivals: VecDeque::new(),
        starts: VecDeque::new(),
        holds: VecDeque::new(),
        scale: ScaleMemory { warm: 0, below: None, hold_recorded: false },
    };

    /// Records a request at `now`, forgetting arrivals older than `keep`.
    pub(super) fn record_arrival(&mut self, now: Timestamp, keep: Duration) {
        let cutoff = before(now, keep);
        while self.arrivals.front().is_some_and(|t| *t <= cutoff) {
            self.arrivals.pop_front();
        }
        push_bounded(&mut self.arrivals, now, MAX_ARRIVALS);
    }

    /// Records how long a workstation took to start.
    pub(super) fn record_start(&mut self, took: Duration) {
        push_bounded(&mut self.starts, took, MAX_STARTS);
    }

    /// Records how long a session held its workstation.
    pub(super) fn record_hold(&mut self, held: Duration) {
        push_bounded(&mut self.holds, held, MAX_HOLDS);
    }

    /// Requests made after `since` (and not after `now`).
    pub fn arrivals_after(&self, since: Timestamp, now: Timestamp) -> u32 {
        let from = self.arrivals.partition_point(|t| *t <= since);
        let to = self.arrivals.partition_point(|t| *t <= now);
        to.saturating_sub(from) as u32
    }

    /// How long a start takes when it takes long (the 90th percentile of recent starts), the
    /// time a warm buffer must bridge; [`DEFAULT_START`] before any start was seen.
    pub fn start_estimate(&self) -> Duration {
        quantile(self.starts.iter().copied(), 0.9).unwrap_or(DEFAULT_START)
    }

    /// A typical start (the median of recent starts), for wait estimates.
    pub fn typical_start(&self) -> Duration {
        quantile(self.starts.iter().copied(), 0.5).unwrap_or(DEFAULT_START)
    }

    /// Recent hold durations, oldest first.
    pub fn holds(&self) -> impl Iterator<Item = Duration> + '_ {
        self.holds.iter().copied()
    }

    /// The warm target in force.
    pub fn scale(&self) -> &ScaleMemory {
        &self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::after;

    fn t(secs: u64) -> Timestamp {
        after(Timestamp::UNIX_EPOCH, Duration::from_secs(1_800_000_000 + secs))
    }

    #[test]
    fn arrivals_are_forgotten_after_the_window_and_capped_in_number() {
        let mut m = PoolMemory::default();
        for s in 0..100 {
            m.record_arrival(t(s * 60), Duration::from_secs(15 * 60));
        }
        assert_eq!(m.arrivals.len(), 15, "only the last 15 minutes are kept");
        assert_eq!(m.arrivals_after(t(94 * 60), t(99 * 60)), 5);
        for _ in 0..MAX_ARRIVALS + 10 {
            m.record_arrival(t(6000), Duration::from_secs(3600));
        }
        assert_eq!(m.arrivals.len(), MAX_ARRIVALS);
    }

    #[test]
    fn start_estimates_use_observations_and_a_default_before_any() {
        let mut m = PoolMemory::default();
        assert_eq!(m.start_estimate(), DEFAULT_START);
        for s in 1..=10 {
            m.record_start(Duration::from_secs(s * 10));
        }
        assert_eq!(m.start_estimate(), Duration::from_secs(90));
        assert_eq!(m.typical_start(), Duration::from_secs(50));
        for _ in 0..MAX_STARTS {
            m.record_start(Duration::from_secs(7));
        }
        assert_eq!(m.start_estimate(), Duration::from_secs(7), "old starts age out");
    }
}
