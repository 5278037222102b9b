//! Pure translation of what the cluster holds (pools, sessions, pods) into the domain state,
//! plus the requests the leader still has to act on. Nothing is kept between passes: every
//! pass, and every restarted broker, starts from here.

use std::{collections::HashMap, sync::Arc};

use jiff::Timestamp;

use crate::{
    crd::WorkstationSession,
    domain::{
        Action, EndReason, Observation, PoolName, PoolSpec, Session, SessionId, SessionPhase, State, UserId,
        Workstation, WorkstationId, WorkstationPhase, apply, observe,
    },
    kubernetes::{labels, snapshot::Snapshot},
};

/// A session object the leader has not decided yet.
#[derive(Debug, Clone)]
pub struct Intent {
    /// Session name.
    pub id: SessionId,
    /// User key.
    pub user: UserId,
    /// Pool asked for.
    pub pool: PoolName,
    /// When it was asked.
    pub requested_at: Timestamp,
    /// Idempotency-Key.
    pub idempotency_key: Option<String>,
}

/// The domain state and the pending requests found in a snapshot.
#[derive(Debug, Default)]
pub struct Restored {
    /// Decided sessions, workstations and pools.
    pub state: State,
    /// New requests, oldest first.
    pub intents: Vec<Intent>,
    /// Activity recorded by API replicas after the status's.
    pub activity: Vec<SessionId>,
}

fn ts(s: &Option<String>) -> Option<Timestamp> {
    s.as_deref().and_then(|s| s.parse().ok())
}

/// Reads a snapshot back into the domain.
pub fn restore(snapshot: &Snapshot, now: Timestamp) -> Restored {
    let pools: HashMap<String, PoolSpec> = snapshot
        .pools
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), PoolSpec::from(p.as_ref())))
        .collect();
    let mut out = Restored { state: State::with_pools(pools.values().cloned()), ..Restored::default() };
    let mut held_by: HashMap<SessionId, WorkstationId> = HashMap::new();
    let mut max_number = 0;
    let mut workstations: Vec<Workstation> =
        snapshot.workstations().filter_map(|object| object.workstation(&pools)).collect();
    claim_by_name(&mut workstations, &snapshot.sessions);
    release_extra_claims(&mut workstations);
    // Buffer pods' names become session names, so neither may be generated again while either
    // exists.
    let names = workstations
        .iter()
        .map(|w| w.id.as_str())
        .chain(snapshot.sessions.iter().filter_map(|s| s.metadata.name.as_deref()));
    for name in names {
        if let Some(n) = name.rsplit("-ws-").next().and_then(|n| n.parse::<u64>().ok()) {
            max_number = max_number.max(n);
        }
    }
    for ws in workstations {
        if let Some(s) = &ws.session {
            held_by.insert(s.clone(), ws.id.clone());
        }
        out.state.restore_workstation(ws);
    }
    out.state.reserve_workstation_numbers(max_number + 1);
    let mut sessions: Vec<&WorkstationSession> = snapshot.sessions.iter().map(Arc::as_ref).collect();
    sessions.sort_by(|a, b| {
        (&a.spec.requested_at, &a.metadata.name).cmp(&(&b.spec.requested_at, &b.metadata.name))
    });
    restore_memories(&mut out.state, &sessions);
    for cr in sessions {
        restore_session(&mut out, cr, &held_by);
    }
    account_for_missing_pods(&mut out.state, now);
    out
}

/// Each pool's recent requests and hold times, from the decided session records (`sessions`
/// sorted by request time; undecided intents are recorded when the pass decides them).
fn restore_memories(state: &mut State, sessions: &[&WorkstationSession]) {
    let mut arrivals: HashMap<&str, Vec<Timestamp>> = HashMap::new();
    let mut holds: HashMap<&str, Vec<std::time::Duration>> = HashMap::new();
    for cr in sessions {
        let Some(status) = cr.status.as_ref().filter(|s| s.phase.is_some()) else { continue };
        if let Ok(at) = cr.spec.requested_at.parse() {
            arrivals.entry(&cr.spec.pool).or_default().push(at);
        }
        if let (Some(ready), Some(ended)) = (ts(&status.ready_at), ts(&status.ended_at)) {
            holds.entry(&cr.spec.pool).or_default().push(ended.duration_since(ready).unsigned_abs());
        }
    }
    let pools: Vec<PoolName> = state.pools().map(|p| p.name.clone()).collect();
    for pool in pools {
        let none = Vec::new();
        let a = arrivals.get(pool.as_str()).unwrap_or(&none);
        let h = holds.get(pool.as_str()).map_or(&[][..], Vec::as_slice);
        state.restore_memory(&pool, a, h);
    }
}

/// A request takes a buffer pod by creating its session under the pod's name (the create is
/// the compare-and-swap: a name exists once), so an unlabelled pod belongs to the session of
/// its name when that session asked for the pod's pool.
fn claim_by_name(workstations: &mut [Workstation], sessions: &[Arc<WorkstationSession>]) {
    let pools: HashMap<&str, &str> =
        sessions.iter().filter_map(|s| Some((s.metadata.name.as_deref()?, s.spec.pool.as_str()))).collect();
    for ws in workstations.iter_mut().filter(|w| w.session.is_none()) {
        if pools.get(ws.id.as_str()) == Some(&ws.pool.as_str()) {
            ws.session = Some(SessionId(ws.id.to_string()));
        }
    }
}

/// Two allocators that both believed they led (a lease is not a fence) can each claim a
/// different warm pod for the same session: every claim is a compare-and-swap, so no pod is
/// ever shared, but the session then holds two. Keep a ready one, the oldest, and stop the
/// others: they were never handed to anyone else, but they
/// were handed out, so they are not returned to the warm buffer.
fn release_extra_claims(workstations: &mut [Workstation]) {
    let mut by_session: HashMap<SessionId, Vec<usize>> = HashMap::new();
    for (i, ws) in workstations.iter().enumerate() {
        if let Some(s) = &ws.session {
            by_session.entry(s.clone()).or_default().push(i);
        }
    }
    for (_, held) in by_session.into_iter().filter(|(_, held)| held.len() > 1) {
        // A rule every allocator applies alike from the same objects (not the session's
        // status, which each of them may have written differently).
        let keep = held
            .iter()
            .copied()
            .min_by_key(|&i| {
                let ws = &workstations[i];
                (ws.phase != WorkstationPhase::Ready, ws.created_at, ws.id.as_str().to_owned())
            })
            .expect("more than one");
        for i in held.into_iter().filter(|&i| i != keep) {
            workstations[i].session = None;
            workstations[i].phase = WorkstationPhase::Stopping;
            workstations[i].endpoint = None;
        }
    }
}

/// Sessions whose pod is not in the cache: a Starting one gets its pod back (the create is
/// idempotent: the name comes from the session), an Ending one is over, one whose end was
/// asked for ended, any other lost it.
fn account_for_missing_pods(state: &mut State, now: Timestamp) {
    let now_missing: Vec<(SessionId, SessionPhase, WorkstationId)> = state
        .live_sessions()
        .chain(state.sessions().filter(|s| s.phase == SessionPhase::Ending))
        .filter_map(|s| {
            let ws = s.workstation.clone()?;
            state.workstation(&ws).is_none().then(|| (s.id.clone(), s.phase, ws))
        })
        .collect();
    for (id, phase, ws) in now_missing {
        let Some((pool, created_at)) = state.session(&id).map(|s| (s.pool.clone(), s.requested_at)) else {
            continue;
        };
        let stand_in = |id: &SessionId, ws: &WorkstationId, phase| Workstation {
            id: ws.clone(),
            pool: pool.clone(),
            phase,
            session: Some(id.clone()),
            node: None,
            endpoint: None,
            created_at,
            ready_at: None,
            message: None,
        };
        match phase {
            SessionPhase::Starting => {
                state.restore_workstation(stand_in(&id, &ws, WorkstationPhase::Starting))
            }
            SessionPhase::Ending => {
                // Its workstation is gone: exactly what a backend reports when a stop completes.
                state.restore_workstation(stand_in(&id, &ws, WorkstationPhase::Stopping));
                observe(state, &Observation::Gone { workstation: ws, lost: false }, now);
            }
            SessionPhase::Queued => {}
            _ => {
                let fail = Action::FailSession {
                    session: id,
                    reason: EndReason::NodeLost,
                    message: "its workstation pod disappeared".into(),
                };
                apply(state, &fail, now);
            }
        }
    }
}

fn restore_session(out: &mut Restored, cr: &WorkstationSession, held_by: &HashMap<SessionId, WorkstationId>) {
    let Some(name) = cr.metadata.name.clone() else { return };
    let id = SessionId(name);
    let requested_at = cr.spec.requested_at.parse().unwrap_or(Timestamp::UNIX_EPOCH);
    let status = cr.status.clone().unwrap_or_default();
    let pod = held_by.get(&id).cloned();
    let phase = match (status.phase, &pod) {
        (Some(p), None) => p,
        (Some(p), Some(_)) if p != SessionPhase::Queued => p,
        // The pod write landed but the status write has not (or the broker was killed between
        // the two, or the cache has the pod first): the pod says.
        (_, Some(ws)) => match out.state.workstation(ws).map(|w| w.phase) {
            Some(WorkstationPhase::Ready) => SessionPhase::Ready,
            _ => SessionPhase::Starting,
        },
        (None, None) => {
            out.intents.push(Intent {
                id,
                user: UserId(cr.spec.user.clone()),
                pool: PoolName(cr.spec.pool.clone()),
                requested_at,
                idempotency_key: cr.spec.idempotency_key.clone(),
            });
            return;
        }
    };
    let workstation = pod.or_else(|| status.pod.clone().map(WorkstationId));
    let ready_at = ts(&status.ready_at).or((phase == SessionPhase::Ready).then_some(requested_at));
    let status_activity = ts(&status.last_activity).or(ready_at);
    let annotated = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::LAST_ACTIVITY))
        .and_then(|s| s.parse().ok());
    let mut session = Session::new(
        id.clone(),
        UserId(cr.spec.user.clone()),
        PoolName(cr.spec.pool.clone()),
        requested_at,
        cr.spec.idempotency_key.clone(),
    );
    session.phase = phase;
    session.workstation = workstation;
    session.ready_at = ready_at;
    session.last_activity = status_activity;
    session.warning = status.warning;
    session.ended_at = ts(&status.ended_at);
    session.end_reason = status.end_reason;
    // While starting, the pod's scheduling condition is the freshest word on why it waits.
    let pod_message = (phase == SessionPhase::Starting)
        .then(|| session.workstation.as_ref().and_then(|w| out.state.workstation(w)))
        .flatten()
        .and_then(|w| w.message.clone());
    session.message = pod_message.or_else(|| status.message.clone());
    let live = phase.is_live();
    out.state.restore_session(session);
    if live && annotated.is_some_and(|a: Timestamp| status_activity.is_none_or(|s| a > s)) {
        out.activity.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(name: &str, phase: WorkstationPhase, created: i64) -> Workstation {
        Workstation {
            id: WorkstationId(name.into()),
            pool: PoolName("cad".into()),
            phase,
            session: Some(SessionId("s1".into())),
            node: Some("gpu-node-1".into()),
            endpoint: None,
            created_at: Timestamp::from_second(created).unwrap(),
            ready_at: None,
            message: None,
        }
    }

    #[test]
    fn a_session_claimed_twice_keeps_its_oldest_ready_pod_whatever_order_the_cache_lists() {
        let pods = [
            held("cad-ws-3", WorkstationPhase::Starting, 10),
            held("cad-ws-2", WorkstationPhase::Ready, 30),
            held("cad-ws-1", WorkstationPhase::Ready, 20),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let mut listed: Vec<Workstation> = order.iter().map(|&i| pods[i].clone()).collect();
            release_extra_claims(&mut listed);
            let kept: Vec<&str> =
                listed.iter().filter(|w| w.session.is_some()).map(|w| w.id.as_str()).collect();
            assert_eq!(kept, ["cad-ws-1"]);
            assert!(
                listed.iter().filter(|w| w.session.is_none()).all(|w| w.phase == WorkstationPhase::Stopping)
            );
        }
    }
}
