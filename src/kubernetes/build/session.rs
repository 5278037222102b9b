//! The WorkstationSession objects cadbroker writes, pure: the object of a new request, the
//! status a session should show, and the final status of a session ended through the API.

use jiff::Timestamp;
use kube::api::ObjectMeta;

use crate::{
    crd::{WorkstationSession, WorkstationSessionSpec, WorkstationSessionStatus},
    domain::{EndReason, PoolName, Session, SessionId, SessionPhase, State, UserId},
};

fn rfc3339(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| t.to_string())
}

/// The status a session should show.
pub fn session_status(state: &State, s: &Session) -> WorkstationSessionStatus {
    let ws = s.workstation.as_ref().and_then(|w| state.workstation(w));
    WorkstationSessionStatus {
        phase: Some(s.phase),
        pod: s.workstation.as_ref().map(ToString::to_string),
        node: ws.and_then(|w| w.node.clone()),
        queue_position: state.queue_position(s).map(|p| p as u32),
        ready_at: rfc3339(s.ready_at),
        last_activity: rfc3339(s.last_activity),
        warning: s.warning,
        ended_at: rfc3339(s.ended_at),
        end_reason: s.end_reason,
        message: s.message.clone(),
    }
}

/// The final status of a session ended through the API: what it showed, ended now.
pub fn ended_status(
    state: &State,
    session: &Session,
    reason: EndReason,
    now: Timestamp,
    current: Option<&WorkstationSessionStatus>,
) -> WorkstationSessionStatus {
    let mut status = session_status(state, session);
    status.phase = Some(SessionPhase::Ended);
    status.ended_at = Some(now.to_string());
    status.end_reason = Some(reason);
    status.queue_position = None;
    if status.node.is_none() {
        status.node = current.and_then(|c| c.node.clone());
    }
    status
}

/// What a new request's object says: who asked, for which pool, when, with which key.
#[derive(Debug, Clone, Copy)]
pub struct RequestInput<'a> {
    /// Session name: a fresh one, or the name of the warm workstation it takes.
    pub id: &'a SessionId,
    /// Namespace.
    pub namespace: &'a str,
    /// The user.
    pub user: &'a UserId,
    /// The pool asked for.
    pub pool: &'a PoolName,
    /// When.
    pub requested_at: Timestamp,
    /// The client's Idempotency-Key.
    pub idempotency_key: Option<&'a str>,
}

/// The session object of a request, without status: the leader decides it.
pub fn request_object(input: RequestInput<'_>) -> WorkstationSession {
    WorkstationSession {
        metadata: ObjectMeta {
            name: Some(input.id.to_string()),
            namespace: Some(input.namespace.to_owned()),
            ..Default::default()
        },
        spec: WorkstationSessionSpec {
            user: input.user.to_string(),
            pool: input.pool.to_string(),
            requested_at: input.requested_at.to_string(),
            idempotency_key: input.idempotency_key.map(str::to_owned),
        },
        status: None,
    }
}
