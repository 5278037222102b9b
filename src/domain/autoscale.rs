//! How many unclaimed workstations a pool should keep: the warm buffer. Per pool and per
//! evaluation, pure in `(spec, memory, counts, now)`:
//!
//! 1. the schedule's buffer: the first active window's `warm` (or `capacity.warm`), looked up
//!    both now and one start time ahead, so a window's buffer is ready when it opens;
//! 2. raised by recent demand: with `n` requests in the last `demandWindow`, the arrivals
//!    expected while a claimed workstation is replaced are Poisson with mean
//!    `λ = n / demandWindow × start time`; the buffer is the smallest `w` with
//!    `P(N ≤ w - 1) ≥ instantPercent`, so a request finds a warm one that often;
//! 3. lowered only after the target stayed below the buffer for `scaleDownCooldown`, and then
//!    to the highest target seen during that cooldown;
//! 4. clamped: in use + unclaimed + starting never exceeds `max`, and at least `min` (the
//!    window's, or `capacity.min`) run. Scaling only ever stops unclaimed workstations.
//!
//! Each change of the target comes with a [`Decision`] that states its inputs and reason.

use std::time::Duration;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    Decision, DecisionInputs, DecisionKind, PoolCounts, PoolSpec,
    memory::{PoolMemory, ScaleMemory},
    schedule,
    time::{after, before, elapsed},
};

/// How a pool's warm buffer follows demand (the pool spec's `autoscale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscaleSpec {
    /// Requests over this window set the demand rate.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "15m")]
    #[schemars(with = "String")]
    pub demand_window: Duration,
    /// Percentage of requests the buffer aims to serve instantly at the recent rate (1-99);
    /// 0 turns demand scaling off (the schedule alone sets the buffer).
    pub instant_percent: u32,
    /// A lower target applies only after the target stayed below the buffer this long.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "10m")]
    #[schemars(with = "String")]
    pub scale_down_cooldown: Duration,
    /// Low-priority placeholder pods that keep GPU nodes ready for this pool (cluster mode, so the
    /// cluster autoscaler adds nodes ahead of demand). Not acted on by the embedded backends.
    pub placeholders: u32,
}

impl Default for AutoscaleSpec {
    fn default() -> Self {
        Self {
            demand_window: Duration::from_secs(15 * 60),
            instant_percent: 98,
            scale_down_cooldown: Duration::from_secs(10 * 60),
            placeholders: 0,
        }
    }
}

impl AutoscaleSpec {
    /// Problems with these settings, given the pool's `max`.
    pub(super) fn validate(&self, max: u32, errors: &mut Vec<super::FieldError>) {
        let mut bad = |field, message: String| errors.push(super::FieldError { field, message });
        if self.demand_window < Duration::from_secs(60) || self.demand_window > Duration::from_secs(24 * 3600)
        {
            bad("autoscale.demandWindow", "must be between 1m and 24h".into());
        }
        if self.instant_percent > 99 {
            bad("autoscale.instantPercent", format!("{} is more than 99", self.instant_percent));
        }
        if self.scale_down_cooldown > Duration::from_secs(24 * 3600) {
            bad("autoscale.scaleDownCooldown", "must be at most 24h".into());
        }
        if self.placeholders > max {
            bad("autoscale.placeholders", format!("{} is more than capacity.max ({max})", self.placeholders));
        }
    }
}

/// The buffer and minimum in force for a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmTarget {
    /// Unclaimed workstations to keep.
    pub warm: u32,
    /// Workstations to keep running in all.
    pub min: u32,
}

/// What the policy computes for a pool at one instant, before the cooldown.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The schedule window that sets the buffer (now, or opening within a start time).
    pub window: Option<String>,
    /// Whether that window is not open yet (pre-warming).
    pub prewarm: bool,
    /// Buffer from the schedule, or `capacity.warm`.
    pub schedule_warm: u32,
    /// Minimum from the schedule, or `capacity.min`.
    pub min: u32,
    /// Requests in the demand window.
    pub arrivals: u32,
    /// Start time the buffer bridges.
    pub start: Duration,
    /// Buffer recent demand asks for.
    pub demand_warm: u32,
    /// `max(schedule_warm, demand_warm)`, at most `capacity.max`.
    pub warm: u32,
}

/// Computes the uncooled target of `pool` at `now`.
pub fn evaluate(pool: &PoolSpec, memory: &PoolMemory, now: Timestamp) -> Evaluation {
    let start = memory.start_estimate();
    let (now_w, ahead_w) =
        (schedule::active(&pool.schedules, now), schedule::active(&pool.schedules, after(now, start)));
    let warm_of = |w: Option<&schedule::ScheduleWindow>| w.and_then(|w| w.warm).unwrap_or(pool.capacity.warm);
    let min_of = |w: Option<&schedule::ScheduleWindow>| w.and_then(|w| w.min).unwrap_or(pool.capacity.min);
    let prewarm = warm_of(ahead_w) > warm_of(now_w);
    let window = if prewarm { ahead_w } else { now_w };
    let a = pool.autoscale;
    let arrivals = memory.arrivals_after(before(now, a.demand_window), now);
    // The rate over the whole window, or over its last third when that is higher: a wave that
    // starts is seen within minutes, one that ends is forgotten slowly.
    let recent = memory.arrivals_after(before(now, a.demand_window / 3), now);
    let span = a.demand_window.as_secs_f64();
    let rate = (f64::from(arrivals) / span).max(f64::from(recent) * 3.0 / span);
    let demand_warm = if a.instant_percent == 0 || arrivals == 0 {
        0
    } else {
        poisson_quantile(rate * start.as_secs_f64(), f64::from(a.instant_percent) / 100.0) + 1
    };
    let schedule_warm = warm_of(now_w).max(warm_of(ahead_w));
    Evaluation {
        window: window.map(|w| w.describe()),
        prewarm,
        schedule_warm,
        min: min_of(now_w).max(min_of(ahead_w)).min(pool.capacity.max),
        arrivals,
        start,
        demand_warm: demand_warm.min(pool.capacity.max),
        warm: schedule_warm.max(demand_warm).min(pool.capacity.max),
    }
}

/// The smallest `k` with `P(N <= k) >= p` for `N ~ Poisson(lambda)`. Summed in log space so
/// large means do not underflow.
fn poisson_quantile(lambda: f64, p: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = (lambda + 12.0 * lambda.sqrt() + 12.0) as u32;
    let (mut log_term, mut cdf) = (-lambda, (-lambda).exp());
    let mut k = 0;
    while cdf < p && k < limit {
        k += 1;
        log_term += (lambda / f64::from(k)).ln();
        cdf += log_term.exp();
    }
    k
}

/// The autoscaler's answer for one pool: the target to size to now, and the memory update and
/// decision record when the target changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePlan {
    /// Target in force after this evaluation.
    pub target: WarmTarget,
    /// New memory, if it changes.
    pub remember: Option<ScaleMemory>,
    /// The decision to record, if any.
    pub decision: Option<Decision>,
}

/// Applies the cooldown to this evaluation. Emits a memory update only when something
/// changes, so reconciling twice at the same instant changes nothing the second time.
pub fn plan(pool: &PoolSpec, memory: &PoolMemory, counts: &PoolCounts, now: Timestamp) -> ScalePlan {
    let eval = evaluate(pool, memory, now);
    let held = memory.scale();
    let cooldown = pool.autoscale.scale_down_cooldown;
    let raw = eval.warm;
    let level = |warm, below, hold_recorded| Some(ScaleMemory { warm, below, hold_recorded });
    let (remember, kind) = match held.below {
        _ if raw > held.warm => (level(raw, None, false), Some(DecisionKind::ScaleUp)),
        // Back at the level: the cooldown starts again when the target next falls.
        Some(_) if raw == held.warm => (level(raw, None, held.hold_recorded), None),
        _ if raw == held.warm => (None, None),
        _ if cooldown.is_zero() => (level(raw, None, false), Some(DecisionKind::ScaleDown)),
        // The target fell: hold the level for the cooldown, recorded once per level.
        None => {
            let kind = (!held.hold_recorded).then_some(DecisionKind::Hold);
            (level(held.warm, Some((now, raw)), true), kind)
        }
        Some((since, peak)) if elapsed(since, now) >= cooldown => {
            let warm = peak.max(raw);
            let below = (raw < warm).then_some((now, raw));
            (level(warm, below, below.is_some()), Some(DecisionKind::ScaleDown))
        }
        Some((since, peak)) if raw > peak => (level(held.warm, Some((since, raw)), true), None),
        Some(_) => (None, None),
    };
    let warm = remember.as_ref().map_or(held.warm, |m| m.warm);
    let decision = kind.map(|kind| decide(pool, held, warm, kind, &eval, counts, now));
    ScalePlan { target: WarmTarget { warm, min: eval.min }, remember, decision }
}

fn decide(
    pool: &PoolSpec,
    held: &ScaleMemory,
    warm: u32,
    kind: DecisionKind,
    eval: &Evaluation,
    counts: &PoolCounts,
    now: Timestamp,
) -> Decision {
    let cooldown = pool.autoscale.scale_down_cooldown;
    let why = explain(pool, eval);
    let reason = match kind {
        DecisionKind::Hold => format!(
            "warm {} kept for the {} cooldown (until {}): target fell to {} ({why})",
            held.warm,
            humantime::format_duration(cooldown),
            after(now, cooldown),
            eval.warm
        ),
        DecisionKind::ScaleDown if warm > eval.warm => format!(
            "warm {} -> {warm} after the {} cooldown, the highest target during it (now {}: {why})",
            held.warm,
            humantime::format_duration(cooldown),
            eval.warm
        ),
        DecisionKind::ScaleDown if !cooldown.is_zero() => format!(
            "warm {} -> {warm} after the {} cooldown: {why}",
            held.warm,
            humantime::format_duration(cooldown)
        ),
        _ => format!("warm {} -> {warm}: {why}", held.warm),
    };
    let inputs = DecisionInputs {
        warm_from: Some(held.warm),
        warm_to: Some(warm),
        schedule: eval.window.clone(),
        schedule_warm: Some(eval.schedule_warm),
        min: Some(eval.min),
        max: Some(pool.capacity.max),
        demand_warm: Some(eval.demand_warm),
        arrivals: Some(eval.arrivals),
        demand_window_seconds: Some(pool.autoscale.demand_window.as_secs()),
        start_seconds: Some(eval.start.as_secs()),
        cooldown_seconds: Some(cooldown.as_secs()),
        in_use: Some(counts.in_use + counts.starting_reserved),
        unclaimed: Some(counts.unclaimed()),
        queued: Some(counts.queued),
        ..DecisionInputs::default()
    };
    Decision { pool: pool.name.clone(), at: now, kind, reason, session: None, inputs }
}

/// Why the uncooled target is what it is, in words.
fn explain(pool: &PoolSpec, eval: &Evaluation) -> String {
    let a = pool.autoscale;
    let start = humantime::format_duration(Duration::from_secs(eval.start.as_secs()));
    if eval.demand_warm > eval.schedule_warm {
        return format!(
            "demand, {} request{} in the last {}; {}% instant over a {start} start needs {}",
            eval.arrivals,
            if eval.arrivals == 1 { "" } else { "s" },
            humantime::format_duration(a.demand_window),
            a.instant_percent,
            eval.demand_warm
        );
    }
    match (&eval.window, eval.prewarm) {
        (Some(w), false) => format!("schedule window {w}"),
        (Some(w), true) => format!("schedule window {w} opens within the {start} start time"),
        (None, _) if eval.warm > 0 => format!("default buffer (capacity.warm {})", pool.capacity.warm),
        (None, _) => "no schedule window and no recent requests".to_owned(),
    }
}

/// Unclaimed (warm or starting-for-the-buffer) workstations the pool should have, given how
/// many are held by sessions and being stopped. Never more than `max` allows, and enough to
/// keep `target.min` workstations running in all.
pub fn desired_unclaimed(max: u32, target: WarmTarget, counts: &PoolCounts, queue_waiting: bool) -> u32 {
    if queue_waiting {
        // Every free slot goes to the queue first.
        return 0;
    }
    let used = counts.in_use + counts.starting_reserved;
    let room = max.saturating_sub(used + counts.stopping);
    let for_min = target.min.saturating_sub(used);
    target.warm.max(for_min).min(room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pool::mk_pool;

    fn target(warm: u32, min: u32) -> WarmTarget {
        WarmTarget { warm, min }
    }

    fn t(secs: u64) -> Timestamp {
        after(Timestamp::UNIX_EPOCH, Duration::from_secs(1_800_000_000 + secs))
    }

    #[test]
    fn warm_buffer_shrinks_as_the_pool_fills() {
        let c = PoolCounts { in_use: 3, ..PoolCounts::default() };
        assert_eq!(desired_unclaimed(4, target(2, 0), &c, false), 1);
    }

    #[test]
    fn min_keeps_workstations_running_without_a_warm_buffer() {
        let c = PoolCounts { in_use: 1, ..PoolCounts::default() };
        assert_eq!(desired_unclaimed(4, target(0, 3), &c, false), 2);
    }

    #[test]
    fn a_waiting_queue_takes_every_slot() {
        assert_eq!(desired_unclaimed(4, target(2, 2), &PoolCounts::default(), true), 0);
    }

    #[test]
    fn poisson_quantiles_match_tables() {
        // P(N <= 0) = e^-1 = 0.37; P(N <= 3) = 0.981 for lambda = 1.
        assert_eq!(poisson_quantile(1.0, 0.98), 3);
        assert_eq!(poisson_quantile(1.0, 0.30), 0);
        // lambda = 10: P(N <= 17) = 0.986, P(N <= 16) = 0.973.
        assert_eq!(poisson_quantile(10.0, 0.98), 17);
        // A large mean does not underflow: about lambda + 2.05 sigma.
        let q = poisson_quantile(2000.0, 0.98);
        assert!((2085..=2098).contains(&q), "{q}");
    }

    #[test]
    fn recent_requests_raise_the_buffer_above_the_default() {
        let pool = mk_pool("p", 0, 40, 1);
        let mut memory = PoolMemory::default();
        for s in 1..=30 {
            // 30 requests in 15 minutes, a 2 minute start: 4 expected per start.
            memory.record_arrival(t(s * 30), pool.autoscale.demand_window);
        }
        let eval = evaluate(&pool, &memory, t(900));
        assert_eq!((eval.arrivals, eval.schedule_warm), (30, 1));
        // P(Poisson(4) <= 8) = 0.979, <= 9 = 0.992: 9 + 1 warm.
        assert_eq!(eval.demand_warm, 10);
        assert_eq!(eval.warm, 10);
        let plan = plan(&pool, &memory, &PoolCounts::default(), t(900));
        let d = plan.decision.unwrap();
        assert_eq!(d.kind, DecisionKind::ScaleUp);
        assert!(
            d.reason.starts_with(
                "warm 0 -> 10: demand, 30 requests in the last 15m; 98% instant over a 2m start"
            ),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_lower_target_waits_for_the_cooldown_then_takes_the_highest_target_seen() {
        let pool = mk_pool("p", 0, 10, 2);
        let scale = ScaleMemory { warm: 6, below: None, hold_recorded: false };
        let mut memory = PoolMemory { scale, ..PoolMemory::default() };
        let counts = PoolCounts::default();
        let p1 = plan(&pool, &memory, &counts, t(0));
        assert_eq!(p1.target.warm, 6, "held");
        assert_eq!(p1.decision.as_ref().unwrap().kind, DecisionKind::Hold);
        memory.scale = p1.remember.unwrap();
        assert_eq!(plan(&pool, &memory, &counts, t(0)).remember, None, "a fixed point");
        let p2 = plan(&pool, &memory, &counts, t(599));
        assert_eq!((p2.target.warm, p2.remember), (6, None));
        let p3 = plan(&pool, &memory, &counts, t(600));
        assert_eq!(p3.target.warm, 2);
        let d = p3.decision.unwrap();
        assert_eq!(d.reason, "warm 6 -> 2 after the 10m cooldown: default buffer (capacity.warm 2)");
    }
}
