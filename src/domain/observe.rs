//! Facts reported by a backend about workstations, folded into the state. The decisions that
//! follow (mark a session Ready, end it) are taken by `reconcile`, not here.

use jiff::Timestamp;

use super::{EndReason, Endpoint, SessionPhase, State, WorkstationId, WorkstationPhase};

/// Something a backend saw happen to a workstation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // fields are named for what they hold; variant docs say the rest
pub enum Observation {
    /// The desktop is up at `endpoint` on `node`.
    Ready { workstation: WorkstationId, node: String, endpoint: Endpoint },
    /// Still starting, with the reason (for example "0/4 nodes have 2 free nvidia.com/gpu").
    Pending { workstation: WorkstationId, node: Option<String>, message: String },
    /// It crashed or could not be started.
    Failed { workstation: WorkstationId, message: String },
    /// It no longer exists (stopped on request, or lost with its node when `lost` is set).
    Gone { workstation: WorkstationId, lost: bool },
}

/// Folds one observation into the state. Unknown workstations are ignored: the reconcile
/// loop stops any workstation the state does not account for.
pub fn observe(state: &mut State, observation: &Observation, now: Timestamp) {
    match observation {
        Observation::Ready { workstation, node, endpoint } => {
            if let Some(w) = state.workstations.get_mut(workstation) {
                if w.phase == WorkstationPhase::Starting {
                    w.phase = WorkstationPhase::Ready;
                    w.ready_at = Some(now);
                    let took = super::time::elapsed(w.created_at, now);
                    if state.pools.contains_key(&w.pool) {
                        state.memory.entry(w.pool.clone()).or_default().record_start(took);
                    }
                }
                w.node = Some(node.clone());
                w.endpoint = Some(endpoint.clone());
                w.message = None;
            }
        }
        Observation::Pending { workstation, node, message } => {
            if let Some(w) = state.workstations.get_mut(workstation) {
                w.node = node.clone();
                w.message = Some(message.clone());
                if let Some(s) = w.session.as_ref().and_then(|id| state.sessions.get_mut(id)) {
                    s.message = Some(message.clone());
                }
            }
        }
        Observation::Failed { workstation, message } => {
            workstation_lost(state, workstation, EndReason::PodFailed, message, now)
        }
        Observation::Gone { workstation, lost } => {
            if *lost {
                workstation_lost(state, workstation, EndReason::NodeLost, "node lost", now);
            } else {
                workstation_gone(state, workstation, now);
            }
        }
    }
}

fn workstation_gone(state: &mut State, id: &WorkstationId, now: Timestamp) {
    let Some(w) = state.workstations.remove(id) else { return };
    let Some(s) = w.session.as_ref().and_then(|sid| state.sessions.get_mut(sid)) else { return };
    match s.phase {
        SessionPhase::Ending => {
            s.phase = SessionPhase::Ended;
            s.ended_at = Some(now);
            let id = s.id.clone();
            state.ended.push_back((now, id));
        }
        // Stopped without being asked: the session lost its workstation.
        SessionPhase::Starting | SessionPhase::Ready => {
            let sid = s.id.clone();
            super::apply::apply(
                state,
                &super::Action::FailSession {
                    session: sid,
                    reason: EndReason::PodFailed,
                    message: "workstation stopped unexpectedly".into(),
                },
                now,
            );
        }
        _ => {}
    }
}

fn workstation_lost(state: &mut State, id: &WorkstationId, reason: EndReason, message: &str, now: Timestamp) {
    let Some(w) = state.workstations.get_mut(id) else { return };
    // Keep the record as Stopping so reconcile asks the backend to clean it up.
    w.phase = WorkstationPhase::Stopping;
    let session = w.session.clone();
    if let Some(sid) = session {
        let live_or_ending = state.sessions.get(&sid).is_some_and(|s| !s.phase.is_terminal());
        if live_or_ending {
            let action = super::Action::FailSession { session: sid, reason, message: message.to_owned() };
            super::apply::apply(state, &action, now);
        }
    }
}
