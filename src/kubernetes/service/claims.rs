//! Which buffer pod a request takes by name. A request takes a pod by creating its session
//! under the pod's name: the API server lets a name exist once, so that create is the
//! compare-and-swap, and it costs no write to the pod. Within one replica, concurrent requests
//! keep out of each other's way through short reservations; across replicas the create
//! decides, and the loser tries the next pod.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::domain::{PoolName, State, WorkstationId, WorkstationPhase};

/// How long a pod picked by one request is skipped by this replica's other requests: longer
/// than a create takes, shorter than any wait a user would notice if the create failed.
const RESERVED_FOR: Duration = Duration::from_secs(30);

/// This replica's pods picked by requests in flight.
#[derive(Debug, Default)]
pub struct Claims {
    reserved: Mutex<HashMap<WorkstationId, Instant>>,
}

impl Claims {
    /// Picks a buffer pod of `pool` for a request and reserves it, or `None` when there is none
    /// free or sessions queue in the pool (a request never overtakes the queue).
    pub fn take(&self, state: &State, pool: &PoolName, now: Instant) -> Option<WorkstationId> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        reserved.retain(|_, at| now.duration_since(*at) < RESERVED_FOR);
        let pick = buffer_pod(state, pool, |w| reserved.contains_key(w))?;
        reserved.insert(pick.clone(), now);
        Some(pick)
    }

    /// Gives a reservation back after a create that failed for another reason than the race.
    pub fn release(&self, pod: &WorkstationId) {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner()).remove(pod);
    }
}

/// The buffer pod a request should take: the oldest ready one, else the oldest starting one;
/// none while sessions queue in the pool. Pure.
pub fn buffer_pod(
    state: &State,
    pool: &PoolName,
    skip: impl Fn(&WorkstationId) -> bool,
) -> Option<WorkstationId> {
    if !state.queue(pool).is_empty() {
        return None;
    }
    let free = || state.pool_workstations(pool).filter(|w| w.session.is_none() && !skip(&w.id));
    let ready = free()
        .filter(|w| w.phase == WorkstationPhase::Ready)
        .min_by(|a, b| (a.ready_at, &a.id).cmp(&(b.ready_at, &b.id)));
    let starting = || {
        free()
            .filter(|w| w.phase == WorkstationPhase::Starting)
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
    };
    ready.or_else(starting).map(|w| w.id.clone())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::domain::{Session, SessionId, SessionPhase, UserId, Workstation, mk_pool};

    fn ws(name: &str, phase: WorkstationPhase, at: i64, session: Option<&str>) -> Workstation {
        let at = Timestamp::from_second(1_800_000_000 + at).unwrap();
        Workstation {
            id: WorkstationId(name.into()),
            pool: PoolName("cad".into()),
            phase,
            session: session.map(|s| SessionId(s.into())),
            node: None,
            endpoint: None,
            created_at: at,
            ready_at: (phase == WorkstationPhase::Ready).then_some(at),
            message: None,
        }
    }

    fn state(workstations: &[Workstation]) -> State {
        let mut state = State::with_pools([mk_pool("cad", 0, 8, 2)]);
        workstations.iter().cloned().for_each(|w| state.restore_workstation(w));
        state
    }

    #[test]
    fn takes_the_oldest_ready_pod_then_starting_ones_and_never_a_held_one() {
        let state = state(&[
            ws("cad-ws-1", WorkstationPhase::Ready, 5, Some("s1")),
            ws("cad-ws-2", WorkstationPhase::Ready, 9, None),
            ws("cad-ws-3", WorkstationPhase::Ready, 7, None),
            ws("cad-ws-4", WorkstationPhase::Starting, 1, None),
            ws("cad-ws-5", WorkstationPhase::Stopping, 0, None),
        ]);
        let claims = Claims::default();
        let now = Instant::now();
        let picks: Vec<_> = (0..4).map(|_| claims.take(&state, &"cad".into(), now).map(|w| w.0)).collect();
        assert_eq!(
            picks,
            [Some("cad-ws-3".into()), Some("cad-ws-2".into()), Some("cad-ws-4".into()), None],
            "each concurrent request gets its own pod"
        );
        claims.release(&WorkstationId("cad-ws-2".into()));
        assert_eq!(claims.take(&state, &"cad".into(), now), Some(WorkstationId("cad-ws-2".into())));
        let later = now + RESERVED_FOR;
        assert_eq!(claims.take(&state, &"cad".into(), later), Some(WorkstationId("cad-ws-3".into())));
    }

    #[test]
    fn a_request_never_overtakes_the_queue() {
        let mut state = state(&[ws("cad-ws-2", WorkstationPhase::Ready, 9, None)]);
        let queued = Session::new(
            SessionId("q1".into()),
            UserId("iss#bob".into()),
            PoolName("cad".into()),
            Timestamp::from_second(1_800_000_000).unwrap(),
            None,
        );
        assert_eq!(queued.phase, SessionPhase::Queued);
        state.restore_session(queued);
        assert_eq!(buffer_pod(&state, &"cad".into(), |_| false), None);
    }
}
