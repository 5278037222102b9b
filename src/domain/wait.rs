//! How long a waiting session will probably wait, from what the pool did recently: observed
//! start durations and how long sessions held their workstations. Pure: `(state, session, now)`.
//!
//! A Starting session waits for the rest of a typical start. A Queued session at position `k`
//! waits for the `k`-th workstation to free up (each held one frees after the typical rest of a
//! session that has lasted as long, never later than its maximum lifetime or pending forced
//! end), then for a start. Past as many positions as the pool has workstations, each round adds
//! a typical session length.

use std::time::Duration;

use jiff::Timestamp;

use super::{
    PoolSpec, Session, SessionPhase, State, WorkstationPhase,
    memory::{PoolMemory, quantile},
    time::{after, elapsed},
};

/// The estimated time until `session` is Ready, for Queued and Starting sessions.
pub fn estimated_wait(state: &State, session: &Session, now: Timestamp) -> Option<Duration> {
    let memory = state.memory(&session.pool);
    match session.phase {
        SessionPhase::Starting => {
            let ws = state.workstation(session.workstation.as_ref()?)?;
            Some(memory.typical_start().saturating_sub(elapsed(ws.created_at, now)))
        }
        SessionPhase::Queued => {
            let position = state.queue_position(session)?;
            let pool = state.pool(&session.pool)?;
            let mut frees = free_times(state, pool, memory, now);
            if frees.is_empty() {
                return None;
            }
            frees.sort();
            let k = position - 1;
            let rounds = (k / frees.len()) as u32;
            let slot = frees[k % frees.len()] + typical_hold(pool, memory) * rounds;
            Some(slot + memory.typical_start())
        }
        _ => None,
    }
}

/// When each of the pool's `max` slots is expected to be free, from now.
fn free_times(state: &State, pool: &PoolSpec, memory: &PoolMemory, now: Timestamp) -> Vec<Duration> {
    let mut frees = Vec::new();
    for w in state.pool_workstations(&pool.name) {
        let holder = w.session.as_ref().and_then(|id| state.session(id));
        let free_in = match (w.phase, holder) {
            (WorkstationPhase::Stopping, _) | (_, None) => Duration::ZERO,
            (WorkstationPhase::Ready, Some(s)) if s.phase == SessionPhase::Ready => {
                remaining(pool, memory, s, now)
            }
            // Starting for a session (or a session on its way out): a whole session from now.
            (_, Some(s)) if s.phase.is_live() => {
                memory.typical_start().saturating_sub(elapsed(w.created_at, now)) + typical_hold(pool, memory)
            }
            (_, Some(_)) => Duration::ZERO,
        };
        frees.push(free_in);
    }
    let free_slots = pool.capacity.max.saturating_sub(frees.len() as u32);
    frees.extend((0..free_slots).map(|_| Duration::ZERO));
    frees
}

/// The expected rest of a Ready session: the median remaining length of recent sessions that
/// lasted longer than this one has so far, never past its maximum lifetime or pending forced
/// end; half the time to that end when no recent session lasted this long.
fn remaining(pool: &PoolSpec, memory: &PoolMemory, s: &Session, now: Timestamp) -> Duration {
    let Some(ready_at) = s.ready_at else { return Duration::ZERO };
    let age = elapsed(ready_at, now);
    let mut end = after(ready_at, pool.limits.max_lifetime);
    if let Some(w) = s.warning {
        end = end.min(w.ends_at);
    }
    let cap = elapsed(now, end);
    let longer = memory.holds().filter(|d| *d > age).map(|d| d - age);
    quantile(longer, 0.5).map_or(cap / 2, |rest| rest.min(cap))
}

/// A typical session length: the median of recent ones, or half the maximum lifetime.
fn typical_hold(pool: &PoolSpec, memory: &PoolMemory) -> Duration {
    quantile(memory.holds(), 0.5).unwrap_or(pool.limits.max_lifetime / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Action, Endpoint, NewSession, Observation, ReconcilePolicy, RequestDecision, RequestPolicy,
        SessionId, apply, decide_request, mk_pool, observe, settle,
    };

    const RECONCILE: ReconcilePolicy = ReconcilePolicy {
        retention: Duration::from_secs(3600),
        handover: crate::domain::Handover::Allocator,
    };

    fn t(secs: u64) -> Timestamp {
        after(Timestamp::UNIX_EPOCH, Duration::from_secs(1_800_000_000 + secs))
    }

    fn request(state: &mut State, n: u32, now: Timestamp) -> SessionId {
        let caller = crate::domain::Caller {
            user: format!("iss#u{n}").as_str().into(),
            groups: Some(Default::default()),
            admin: false,
        };
        let req = NewSession { id: format!("s{n}").as_str().into(), pool: "p".into(), idempotency_key: None };
        let policy = RequestPolicy { max_sessions_per_user: 3, handover: crate::domain::Handover::Allocator };
        let RequestDecision::Create(actions) = decide_request(state, &caller, &req, policy, now).unwrap()
        else {
            panic!("new user")
        };
        actions.iter().for_each(|a| apply(state, a, now));
        req.id
    }

    fn all_ready(state: &mut State, now: Timestamp) {
        let starting: Vec<_> = state
            .workstations()
            .filter(|w| w.phase == WorkstationPhase::Starting)
            .map(|w| w.id.clone())
            .collect();
        for workstation in starting {
            let endpoint = Endpoint { host: "127.0.0.1".into(), port: 9 };
            observe(state, &Observation::Ready { workstation, node: "n".into(), endpoint }, now);
        }
        settle(state, now, RECONCILE);
    }

    #[test]
    fn a_queued_session_waits_for_the_earliest_end_plus_a_start() {
        // max 2, no buffer: two sessions fill the pool, a third queues.
        let mut state = State::with_pools([mk_pool("p", 0, 2, 0)]);
        let a = request(&mut state, 1, t(0));
        let _b = request(&mut state, 2, t(0));
        assert_eq!(estimated_wait(&state, state.session(&a).unwrap(), t(30)), Some(Duration::from_secs(90)));
        all_ready(&mut state, t(60)); // starts took 60 s
        let c = request(&mut state, 3, t(60));
        let d = request(&mut state, 4, t(60));
        let queued = state.session(&c).unwrap();
        assert_eq!(queued.phase, SessionPhase::Queued);
        // No session ended yet: half the time to the 10 h maximum lifetime, plus a 60 s start.
        let five_h = Duration::from_secs(5 * 3600);
        assert_eq!(estimated_wait(&state, queued, t(60)), Some(five_h + Duration::from_secs(60)));
        // History: sessions lasting an hour. The two running ones have run 10 minutes.
        for _ in 0..5 {
            state.memory.entry("p".into()).or_default().record_hold(Duration::from_secs(3600));
        }
        let now = t(60 + 600);
        let wait_c = estimated_wait(&state, state.session(&c).unwrap(), now).unwrap();
        assert_eq!(wait_c, Duration::from_secs(3000 + 60));
        // The second in line waits for the second slot, which frees at the same time here.
        let wait_d = estimated_wait(&state, state.session(&d).unwrap(), now).unwrap();
        assert_eq!(wait_d, wait_c);
        // A pending forced end caps the estimate.
        let warning = crate::domain::Warning {
            reason: crate::domain::EndReason::IdleTimeout,
            at: now,
            ends_at: t(60 + 900),
        };
        apply(&mut state, &Action::Warn { session: a, warning }, now);
        let wait_c = estimated_wait(&state, state.session(&c).unwrap(), now).unwrap();
        assert_eq!(wait_c, Duration::from_secs(300 + 60));
    }
}
