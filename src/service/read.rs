//! Reads every session service answers alike from a domain state, whichever backend built it:
//! which sessions a caller may see, the session list, the pools a caller may use, the checks
//! on an admin's pool spec before anything is written, and the gateway's view of a session.

use super::{ConnectTarget, PoolView, ServiceError, SessionView};
use crate::domain::{Caller, PoolSpec, Session, SessionId, State};

/// The session, if `caller` may see it (its owner, or an admin); otherwise not found, so that
/// other users' session ids are not confirmed.
pub fn visible<'a>(state: &'a State, caller: &Caller, id: &SessionId) -> Result<&'a Session, ServiceError> {
    state
        .session(id)
        .filter(|s| caller.admin || s.user == caller.user)
        .ok_or_else(|| ServiceError::SessionNotFound(id.clone()))
}

/// The sessions `caller` may see, newest first, each as `view` shows it.
pub fn session_list(
    state: &State,
    caller: &Caller,
    view: impl Fn(&Session) -> SessionView,
) -> Vec<SessionView> {
    let mut views: Vec<_> =
        state.sessions().filter(|s| caller.admin || s.user == caller.user).map(view).collect();
    views.sort_by(|a, b| b.requested_at.cmp(&a.requested_at).then_with(|| a.id.cmp(&b.id)));
    views
}

/// The pools `caller` may use, with what is free now.
pub fn pool_list(state: &State, caller: &Caller) -> Vec<PoolView> {
    state.pools().filter(|p| p.may_use(caller)).map(|p| PoolView::of(state, p, caller.admin)).collect()
}

/// Only an admin may write a pool, and only a valid one.
pub fn check_pool_write(caller: &Caller, spec: &PoolSpec) -> Result<(), ServiceError> {
    if !caller.admin {
        return Err(ServiceError::AdminOnly);
    }
    let problems = spec.validate();
    if problems.is_empty() { Ok(()) } else { Err(ServiceError::InvalidPool(problems)) }
}

/// A live session, whoever asks (the gateway's reports), or why not.
pub fn live<'a>(state: &'a State, id: &SessionId) -> Result<&'a Session, ServiceError> {
    let session = state.session(id).ok_or_else(|| ServiceError::SessionNotFound(id.clone()))?;
    if session.phase.is_live() { Ok(session) } else { Err(ServiceError::SessionEnded(id.clone())) }
}

/// What the gateway needs to reach a session's desktop.
pub fn connect_target(state: &State, id: &SessionId) -> Result<ConnectTarget, ServiceError> {
    let session = state.session(id).ok_or_else(|| ServiceError::SessionNotFound(id.clone()))?;
    let endpoint =
        session.workstation.as_ref().and_then(|w| state.workstation(w)).and_then(|w| w.endpoint.clone());
    Ok(ConnectTarget { user: session.user.clone(), phase: session.phase, endpoint })
}
