//! Actions (what a decision wants done) and how each one changes the state. Applying is pure
//! too; the imperative shell additionally carries out the actions that touch the world
//! (`StartWorkstation`, `StopWorkstation`) through a backend.

use jiff::Timestamp;

use super::{
    Decision, EndReason, PoolName, PoolSpec, Session, SessionId, SessionPhase, State, Warning, WorkstationId,
    WorkstationPhase, memory::ScaleMemory, session::Workstation, time::elapsed,
};

/// One step a decision asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // fields are named for what they hold; variant docs say the rest
pub enum Action {
    /// Record a new session (phase Queued until a later action in the same batch moves it).
    CreateSession(Box<Session>),
    /// Hand a warm workstation to a session: the session is Ready at once.
    Claim { session: SessionId, workstation: WorkstationId },
    /// Let a session wait on a workstation that is already starting.
    Reserve { session: SessionId, workstation: WorkstationId },
    /// Start a new workstation, for a session or for the warm buffer.
    StartWorkstation {
        workstation: WorkstationId,
        /// Sequence number the name was generated from.
        seq: u64,
        pool: PoolName,
        session: Option<SessionId>,
    },
    /// A session's reserved workstation is up: the session becomes Ready.
    MarkReady { session: SessionId },
    /// Warn that a session will be ended.
    Warn { session: SessionId, warning: Warning },
    /// Lift a pending warning (activity after an idle warning).
    ClearWarning { session: SessionId },
    /// End a session: Ending while its workstation stops, or Ended if it holds none.
    EndSession { session: SessionId, reason: EndReason },
    /// A session's workstation failed or vanished.
    FailSession { session: SessionId, reason: EndReason, message: String },
    /// Stop a workstation (surplus warm, or its session ended).
    StopWorkstation { workstation: WorkstationId },
    /// Record activity on a session (keepalive, desktop traffic, a reconnect).
    Touch { session: SessionId },
    /// The session's last desktop connection closed (reported by the gateway).
    Disconnect { session: SessionId },
    /// Update the autoscaler's memory of a pool (the warm target in force and its cooldown).
    Remember { pool: PoolName, scale: ScaleMemory },
    /// A decision with its inputs and reason, for the record; changes nothing in the state.
    Record(Box<Decision>),
    /// Add or replace a pool.
    PutPool(Box<PoolSpec>),
    /// Remove a pool (its sessions are ended by reconcile).
    DeletePool(PoolName),
    /// Drop an ended session whose retention passed.
    Forget { session: SessionId },
}

impl Action {
    /// The session whose visible state this action changes, for event streams.
    pub fn session(&self) -> Option<&SessionId> {
        match self {
            Action::CreateSession(s) => Some(&s.id),
            Action::Claim { session, .. }
            | Action::Reserve { session, .. }
            | Action::MarkReady { session }
            | Action::Warn { session, .. }
            | Action::ClearWarning { session }
            | Action::EndSession { session, .. }
            | Action::FailSession { session, .. }
            | Action::Touch { session }
            | Action::Disconnect { session }
            | Action::Forget { session } => Some(session),
            Action::StartWorkstation { session, .. } => session.as_ref(),
            Action::StopWorkstation { .. }
            | Action::PutPool(_)
            | Action::DeletePool(_)
            | Action::Remember { .. }
            | Action::Record(_) => None,
        }
    }
}

/// Applies one action. Actions naming something that no longer exists change nothing, so a
/// batch computed on a slightly older state can never corrupt the current one.
pub fn apply(state: &mut State, action: &Action, now: Timestamp) {
    match action {
        Action::CreateSession(session) => create_session(state, session, now),
        Action::Claim { session, workstation } => claim(state, session, workstation, now),
        Action::Reserve { session, workstation } => reserve(state, session, workstation),
        Action::StartWorkstation { workstation, seq, pool, session } => {
            start_workstation(state, workstation, *seq, pool, session.as_ref(), now)
        }
        Action::MarkReady { session } => mark_ready(state, session, now),
        Action::Warn { session, warning } => {
            if let Some(s) = state.sessions.get_mut(session) {
                s.warning = Some(*warning);
            }
        }
        Action::ClearWarning { session } => {
            if let Some(s) = state.sessions.get_mut(session) {
                s.warning = None;
            }
        }
        Action::EndSession { session, reason } => end_session(state, session, *reason, now),
        Action::FailSession { session, reason, message } => {
            fail_session(state, session, *reason, message, now)
        }
        Action::StopWorkstation { workstation } => {
            if let Some(w) = state.workstations.get_mut(workstation) {
                w.phase = WorkstationPhase::Stopping;
            }
        }
        Action::Touch { session } => {
            if let Some(s) = state.sessions.get_mut(session).filter(|s| s.phase == SessionPhase::Ready) {
                s.last_activity = Some(now);
                s.disconnected_at = None;
                if s.warning.is_some_and(|w| w.reason == EndReason::IdleTimeout) {
                    s.warning = None;
                }
            }
        }
        Action::Disconnect { session } => {
            if let Some(s) = state.sessions.get_mut(session).filter(|s| s.phase == SessionPhase::Ready) {
                s.disconnected_at.get_or_insert(now);
            }
        }
        Action::Remember { pool, scale } => {
            if state.pools.contains_key(pool) {
                state.memory.entry(pool.clone()).or_default().scale = scale.clone();
            }
        }
        Action::Record(_) => {}
        Action::PutPool(pool) => {
            state.pools.insert(pool.name.clone(), (**pool).clone());
        }
        Action::DeletePool(name) => {
            state.pools.remove(name);
            state.memory.remove(name);
        }
        Action::Forget { session } => forget(state, session),
    }
}

fn create_session(state: &mut State, session: &Session, now: Timestamp) {
    if state.sessions.contains_key(&session.id) {
        return;
    }
    let s = session.clone();
    if let Some(pool) = state.pools.get(&s.pool) {
        let keep = pool.autoscale.demand_window;
        state.memory.entry(s.pool.clone()).or_default().record_arrival(now, keep);
    }
    state.live.insert((s.user.clone(), s.pool.clone()), s.id.clone());
    if let Some(key) = &s.idempotency_key {
        state.idempotency.insert((s.user.clone(), key.clone()), s.id.clone());
    }
    if s.phase == SessionPhase::Queued {
        state.queues.entry(s.pool.clone()).or_default().push(s.id.clone());
    }
    state.sessions.insert(s.id.clone(), s);
}

fn dequeue(state: &mut State, pool: &PoolName, id: &SessionId) {
    if let Some(q) = state.queues.get_mut(pool) {
        q.retain(|x| x != id);
        if q.is_empty() {
            state.queues.remove(pool);
        }
    }
}

fn claim(state: &mut State, id: &SessionId, ws: &WorkstationId, now: Timestamp) {
    let Some(w) = state.workstations.get_mut(ws) else { return };
    let Some(s) = state.sessions.get_mut(id) else { return };
    if !s.phase.is_live() || w.phase != WorkstationPhase::Ready || w.session.as_ref().is_some_and(|x| x != id)
    {
        return;
    }
    w.session = Some(id.clone());
    s.workstation = Some(ws.clone());
    s.phase = SessionPhase::Ready;
    s.ready_at = Some(now);
    s.last_activity = Some(now);
    s.message = None;
    let pool = s.pool.clone();
    dequeue(state, &pool, id);
}

fn reserve(state: &mut State, id: &SessionId, ws: &WorkstationId) {
    let Some(w) = state.workstations.get_mut(ws) else { return };
    let Some(s) = state.sessions.get_mut(id) else { return };
    if !s.phase.is_live() || w.session.is_some() || w.phase != WorkstationPhase::Starting {
        return;
    }
    w.session = Some(id.clone());
    s.workstation = Some(ws.clone());
    s.phase = SessionPhase::Starting;
    s.message = w.message.clone();
    let pool = s.pool.clone();
    dequeue(state, &pool, id);
}

fn start_workstation(
    state: &mut State,
    id: &WorkstationId,
    seq: u64,
    pool: &PoolName,
    session: Option<&SessionId>,
    now: Timestamp,
) {
    if state.workstations.contains_key(id) {
        return;
    }
    state.next_workstation = state.next_workstation.max(seq + 1);
    state.workstations.insert(
        id.clone(),
        Workstation {
            id: id.clone(),
            pool: pool.clone(),
            phase: WorkstationPhase::Starting,
            session: None,
            node: None,
            endpoint: None,
            created_at: now,
            ready_at: None,
            message: None,
        },
    );
    if let Some(session) = session {
        reserve(state, session, id);
    }
}

fn mark_ready(state: &mut State, id: &SessionId, now: Timestamp) {
    let Some(s) = state.sessions.get_mut(id) else { return };
    let ws_ready = s
        .workstation
        .as_ref()
        .and_then(|w| state.workstations.get(w))
        .is_some_and(|w| w.phase == WorkstationPhase::Ready);
    if s.phase == SessionPhase::Starting && ws_ready {
        s.phase = SessionPhase::Ready;
        s.ready_at = Some(now);
        s.last_activity = Some(now);
        s.message = None;
    }
}

/// Records how long a session that held a workstation kept it.
fn record_hold(state: &mut State, s: &Session, now: Timestamp) {
    if let (Some(ready_at), true) = (s.ready_at, state.pools.contains_key(&s.pool)) {
        state.memory.entry(s.pool.clone()).or_default().record_hold(elapsed(ready_at, now));
    }
}

fn release_live(state: &mut State, s: &Session) {
    if state.live.get(&(s.user.clone(), s.pool.clone())) == Some(&s.id) {
        state.live.remove(&(s.user.clone(), s.pool.clone()));
    }
}

fn end_session(state: &mut State, id: &SessionId, reason: EndReason, now: Timestamp) {
    let Some(s) = state.sessions.get_mut(id) else { return };
    if !s.phase.is_live() {
        return;
    }
    let holds_workstation = s.workstation.as_ref().is_some_and(|w| state.workstations.contains_key(w));
    s.phase = if holds_workstation { SessionPhase::Ending } else { SessionPhase::Ended };
    s.end_reason = Some(reason);
    s.warning = None;
    if !holds_workstation {
        s.ended_at = Some(now);
    }
    let s = s.clone();
    if !holds_workstation {
        state.ended.push_back((now, id.clone()));
    }
    record_hold(state, &s, now);
    release_live(state, &s);
    dequeue(state, &s.pool, id);
}

fn fail_session(state: &mut State, id: &SessionId, reason: EndReason, message: &str, now: Timestamp) {
    let Some(s) = state.sessions.get_mut(id) else { return };
    if s.phase.is_terminal() {
        return;
    }
    // A session the user was already ending just ends; anything else failed.
    let was_live = s.phase.is_live();
    s.phase = if s.phase == SessionPhase::Ending { SessionPhase::Ended } else { SessionPhase::Failed };
    s.end_reason.get_or_insert(reason);
    s.ended_at = Some(now);
    s.message = Some(message.to_owned());
    s.warning = None;
    let s = s.clone();
    state.ended.push_back((now, id.clone()));
    if was_live {
        record_hold(state, &s, now);
    }
    release_live(state, &s);
    dequeue(state, &s.pool, id);
}

fn forget(state: &mut State, id: &SessionId) {
    if state.ended.front().is_some_and(|(_, x)| x == id) {
        state.ended.pop_front();
    } else {
        state.ended.retain(|(_, x)| x != id);
    }
    let Some(s) = state.sessions.get(id) else { return };
    if !s.phase.is_terminal() {
        return;
    }
    let s = state.sessions.remove(id).expect("checked above");
    if let Some(key) = &s.idempotency_key {
        let k = (s.user.clone(), key.clone());
        if state.idempotency.get(&k) == Some(id) {
            state.idempotency.remove(&k);
        }
    }
}
