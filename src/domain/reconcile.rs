//! The periodic decision: serve queues as capacity frees, keep warm buffers, promote sessions
//! whose workstation came up, warn and end sessions at their limits, stop what nobody holds,
//! forget expired records. `reconcile` returns one consistent batch; `settle` applies batches
//! until nothing is left to do.

use std::time::Duration;

use jiff::Timestamp;

use super::{
    Action, Decision, DecisionInputs, DecisionKind, EndReason, Handover, PoolName, Session, SessionPhase,
    State, Warning, WorkstationPhase, apply,
    autoscale::{self, WarmTarget, desired_unclaimed},
    time::{after, before},
};

/// Broker-wide settings the reconcile step needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilePolicy {
    /// How long ended sessions are kept as the usage record.
    pub retention: Duration,
    /// How queued sessions get workstations started for the warm buffer.
    pub handover: Handover,
}

/// Everything that should happen now, as one batch that is consistent in itself.
pub fn reconcile(state: &State, now: Timestamp, policy: ReconcilePolicy) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut offset = 0;
    for pool in state.pools() {
        let plan = autoscale::plan(pool, state.memory(&pool.name), &state.counts(&pool.name), now);
        if let Some(scale) = plan.remember {
            actions.push(Action::Remember { pool: pool.name.clone(), scale });
        }
        actions.extend(plan.decision.map(|d| Action::Record(Box::new(d))));
        offset = serve_pool(state, &pool.name, plan.target, offset, policy.handover, &mut actions);
    }
    for session in state.live_sessions() {
        session_step(state, session, now, &mut actions);
    }
    stop_unheld(state, &mut actions);
    forget_expired(state, now, policy.retention, &mut actions);
    actions
}

/// Reconciles and applies until a fixed point (bounded), returning everything applied.
pub fn settle(state: &mut State, now: Timestamp, policy: ReconcilePolicy) -> Vec<Action> {
    let mut all = Vec::new();
    for _ in 0..8 {
        let batch = reconcile(state, now, policy);
        if batch.is_empty() {
            break;
        }
        for action in &batch {
            apply(state, action, now);
        }
        all.extend(batch);
    }
    all
}

/// Serves the pool's queue first come first, then sizes its warm buffer to `target`. Returns
/// the new name offset.
fn serve_pool(
    state: &State,
    pool: &PoolName,
    target: WarmTarget,
    mut offset: u64,
    handover: Handover,
    out: &mut Vec<Action>,
) -> u64 {
    let spec = state.pool(pool).expect("iterating existing pools");
    let max = spec.capacity.max;
    let mut counts = state.counts(pool);
    let queue = state.queue(pool);
    if queue.is_empty() && counts.unclaimed() == desired_unclaimed(max, target, &counts, false) {
        // The common case after a claim or an end: nothing to serve, buffer right.
        return offset;
    }
    // Newest first, so that `pop` hands out the oldest.
    let mut warm: Vec<_> = state
        .pool_workstations(pool)
        .filter(|w| w.phase == WorkstationPhase::Ready && w.session.is_none())
        .collect();
    warm.sort_by(|a, b| (b.ready_at, &b.id).cmp(&(a.ready_at, &a.id)));
    let mut starting: Vec<_> = state
        .pool_workstations(pool)
        .filter(|w| w.phase == WorkstationPhase::Starting && w.session.is_none())
        .collect();
    starting.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    let mut waiting = 0;
    let hand_over = handover == Handover::Allocator;
    for session in queue {
        // Oldest warm first (`pop` takes from the end of the reversed order).
        if hand_over && let Some(w) = warm.pop() {
            out.push(Action::Claim { session: session.clone(), workstation: w.id.clone() });
            counts.warm -= 1;
            counts.in_use += 1;
        } else if hand_over && let Some(w) = starting.pop() {
            out.push(Action::Reserve { session: session.clone(), workstation: w.id.clone() });
            counts.starting_unclaimed -= 1;
            counts.starting_reserved += 1;
        } else if counts.total() < spec.capacity.max {
            out.push(Action::StartWorkstation {
                workstation: State::session_workstation_name(session),
                seq: 0,
                pool: pool.clone(),
                session: Some(session.clone()),
            });
            counts.starting_reserved += 1;
        } else {
            // At the maximum and unable to hand a buffer workstation over: stop one (the
            // newest starting, then the newest warm: least sunk cost) so that the next pass
            // can start one for this session.
            if !hand_over && let Some(w) = take_newest(&mut starting).or_else(|| take_newest(&mut warm)) {
                if w.phase == WorkstationPhase::Ready {
                    counts.warm -= 1;
                } else {
                    counts.starting_unclaimed -= 1;
                }
                counts.stopping += 1;
                out.push(Action::StopWorkstation { workstation: w.id.clone() });
            }
            waiting += 1;
        }
    }
    let target = desired_unclaimed(max, target, &counts, waiting > 0);
    let unclaimed = counts.unclaimed();
    for _ in unclaimed..target {
        let (workstation, seq) = state.workstation_name(pool, offset);
        offset += 1;
        out.push(Action::StartWorkstation { workstation, seq, pool: pool.clone(), session: None });
    }
    // Surplus: newest starting ones first (least sunk cost), then the newest warm ones.
    let surplus = unclaimed.saturating_sub(target) as usize;
    let victims = starting.iter().chain(warm.iter()).take(surplus);
    out.extend(victims.map(|w| Action::StopWorkstation { workstation: w.id.clone() }));
    offset
}

/// Removes the newest of workstations sorted newest first.
fn take_newest<'a>(sorted: &mut Vec<&'a super::Workstation>) -> Option<&'a super::Workstation> {
    (!sorted.is_empty()).then(|| sorted.remove(0))
}

/// Promotes, warns and ends one live session.
fn session_step(state: &State, session: &Session, now: Timestamp, out: &mut Vec<Action>) {
    let Some(pool) = state.pool(&session.pool) else {
        out.push(Action::EndSession { session: session.id.clone(), reason: EndReason::PoolDeleted });
        return;
    };
    let workstation = session.workstation.as_ref().and_then(|w| state.workstation(w));
    match session.phase {
        SessionPhase::Starting => match workstation {
            Some(w) if w.phase == WorkstationPhase::Ready => {
                out.push(Action::MarkReady { session: session.id.clone() })
            }
            Some(_) => {}
            None => out.push(Action::FailSession {
                session: session.id.clone(),
                reason: EndReason::PodFailed,
                message: "its workstation disappeared while starting".into(),
            }),
        },
        SessionPhase::Ready => limits_step(session, &pool.limits, now, out),
        _ => {}
    }
}

/// Warns ahead of the nearest forced end, and ends the session once a warning's time is up.
/// A forced end always comes at least `warnBefore` after its warning, and each warning and
/// end is recorded as a decision.
fn limits_step(session: &Session, limits: &super::SessionLimits, now: Timestamp, out: &mut Vec<Action>) {
    let Some((deadline, reason)) = deadline(session, limits) else { return };
    match session.warning {
        Some(w) if w.reason == reason && now >= w.ends_at => {
            out.push(Action::EndSession { session: session.id.clone(), reason });
            out.push(cull_record(session, limits, DecisionKind::End, reason, w.ends_at, now));
        }
        Some(w) if w.reason == reason => {}
        _ if now >= before(deadline, limits.warn_before) => {
            let ends_at = deadline.max(after(now, limits.warn_before));
            let warning = Warning { reason, at: now, ends_at };
            out.push(Action::Warn { session: session.id.clone(), warning });
            out.push(cull_record(session, limits, DecisionKind::Warn, reason, ends_at, now));
        }
        _ => {}
    }
}

/// The nearest forced end of a Ready session and its reason: the maximum lifetime, the idle
/// timeout from the last activity, or, when its desktop connection has been away longer than
/// `reconnectGrace`, `warnBefore` after the grace ran out (it counts as idle from then on).
pub(super) fn deadline(session: &Session, limits: &super::SessionLimits) -> Option<(Timestamp, EndReason)> {
    let (ready_at, active_at) = (session.ready_at?, session.last_activity?);
    let mut idle = after(active_at, limits.idle_timeout);
    if let Some(gone) = session.disconnected_at {
        idle = idle.min(after(after(gone, limits.reconnect_grace), limits.warn_before));
    }
    let life = after(ready_at, limits.max_lifetime);
    Some(if life <= idle { (life, EndReason::MaxLifetime) } else { (idle, EndReason::IdleTimeout) })
}

fn cull_record(
    session: &Session,
    limits: &super::SessionLimits,
    kind: DecisionKind,
    reason: EndReason,
    ends_at: Timestamp,
    now: Timestamp,
) -> Action {
    let idle_deadline = session.last_activity.map(|t| after(t, limits.idle_timeout));
    let why = match (reason, session.disconnected_at) {
        (EndReason::MaxLifetime, _) => {
            format!("maximum lifetime {} since ready", humantime::format_duration(limits.max_lifetime))
        }
        (_, Some(gone))
            if idle_deadline
                .is_none_or(|idle| after(after(gone, limits.reconnect_grace), limits.warn_before) < idle) =>
        {
            format!(
                "desktop disconnected at {gone}, not back within the reconnect grace {}",
                humantime::format_duration(limits.reconnect_grace)
            )
        }
        _ => format!(
            "no activity since {} (idle timeout {})",
            session.last_activity.map(|t| t.to_string()).unwrap_or_default(),
            humantime::format_duration(limits.idle_timeout)
        ),
    };
    let text = match kind {
        DecisionKind::Warn => {
            format!("warn session {} (user {}): ends at {ends_at}, {why}", session.id, session.user)
        }
        _ => format!(
            "end session {} (user {}): {why}; warned at {}",
            session.id,
            session.user,
            session.warning.map(|w| w.at.to_string()).unwrap_or_default()
        ),
    };
    let inputs = DecisionInputs {
        limit: Some(reason),
        last_activity: session.last_activity,
        disconnected_at: session.disconnected_at,
        ready_at: session.ready_at,
        ends_at: Some(ends_at),
        ..DecisionInputs::default()
    };
    let decision = Decision {
        pool: session.pool.clone(),
        at: now,
        kind,
        reason: text,
        session: Some(session.id.clone()),
        inputs,
    };
    Action::Record(Box::new(decision))
}

/// Stops workstations held by no live session, and those of deleted pools.
fn stop_unheld(state: &State, out: &mut Vec<Action>) {
    for w in state.workstations() {
        if w.phase == WorkstationPhase::Stopping {
            continue;
        }
        let holder_gone = w.session.as_ref().is_some_and(|id| {
            state.session(id).is_none_or(|s| !matches!(s.phase, SessionPhase::Starting | SessionPhase::Ready))
        });
        if holder_gone || state.pool(&w.pool).is_none() {
            out.push(Action::StopWorkstation { workstation: w.id.clone() });
        }
    }
}

fn forget_expired(state: &State, now: Timestamp, retention: Duration, out: &mut Vec<Action>) {
    let cutoff = before(now, retention);
    let expired = state.ended.iter().take_while(|(at, _)| *at <= cutoff);
    out.extend(expired.map(|(_, id)| Action::Forget { session: id.clone() }));
}
