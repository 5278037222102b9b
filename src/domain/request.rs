//! Deciding what a session request gets: an existing session, a warm workstation, a starting
//! one, a new start, or a place in the queue. Pure: the caller supplies the new session's name.

use jiff::Timestamp;
use thiserror::Error;

use super::{Action, Caller, EndReason, PoolName, Session, SessionId, State};

/// A drafter's request for a workstation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Name for the session if one is created (random, chosen by the shell).
    pub id: SessionId,
    /// Pool asked for.
    pub pool: PoolName,
    /// The client's Idempotency-Key header.
    pub idempotency_key: Option<String>,
}

/// Broker-wide rules that apply to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Live sessions one user may hold across all pools.
    pub max_sessions_per_user: u32,
    /// How workstations started for the warm buffer reach sessions.
    pub handover: Handover,
}

/// How a session gets a workstation that was started for the warm buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handover {
    /// The allocator hands one over (claims a warm one, reserves a starting one): the in-memory
    /// backends, whose state has one writer.
    #[default]
    Allocator,
    /// Only the request itself can take one, by naming the session after it (cluster mode: the
    /// create of that name is the compare-and-swap, see docs/cluster-mode.md). The allocator
    /// starts a workstation for every session it places, and at the pool's maximum stops an
    /// unclaimed one to make room for a queued session.
    NamedRequestOnly,
}

/// What a request results in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// The user already has this session (same pool, or same Idempotency-Key): nothing to do.
    Existing(SessionId),
    /// Create a session; the first action creates it, the rest place it.
    Create(Vec<Action>),
}

/// Why a request is refused. Each maps to one API error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[allow(missing_docs)] // fields are named for what they hold; variant docs say the rest
pub enum RequestError {
    /// No pool of that name.
    #[error("there is no pool named '{0}'")]
    UnknownPool(PoolName),
    /// The caller may not use the pool.
    #[error("you may not use pool '{0}'")]
    PoolForbidden(PoolName),
    /// The Idempotency-Key was used before for a different pool.
    #[error("Idempotency-Key '{key}' was already used for pool '{pool}'")]
    IdempotencyConflict { key: String, pool: PoolName },
    /// The caller holds as many live sessions as allowed.
    #[error("you already hold {0} live sessions, the most allowed; end one first")]
    UserLimit(u32),
}

impl RequestError {
    /// The end reason of a request refused after it was recorded (cluster mode records the
    /// request first and decides it in the allocator's next pass), so the user is told why.
    pub fn end_reason(&self) -> EndReason {
        match self {
            Self::UnknownPool(_) => EndReason::PoolDeleted,
            Self::PoolForbidden(_) => EndReason::NotEntitled,
            Self::IdempotencyConflict { .. } => EndReason::IdempotencyConflict,
            Self::UserLimit(_) => EndReason::UserLimit,
        }
    }
}

/// What a request is, before placing: one of the caller's live sessions it repeats (same
/// pool, or same Idempotency-Key), or a new session the caller may have, or why not. The one
/// check both session services and the allocator make.
pub fn check_request(
    state: &State,
    caller: &Caller,
    pool: &PoolName,
    idempotency_key: Option<&str>,
    policy: RequestPolicy,
) -> Result<Option<SessionId>, RequestError> {
    let spec = state.pool(pool).ok_or_else(|| RequestError::UnknownPool(pool.clone()))?;
    if !spec.may_use(caller) {
        return Err(RequestError::PoolForbidden(pool.clone()));
    }
    if let Some(key) = idempotency_key
        && let Some(existing) = state.idempotent_session(&caller.user, key)
    {
        if existing.pool != *pool {
            return Err(RequestError::IdempotencyConflict {
                key: key.to_owned(),
                pool: existing.pool.clone(),
            });
        }
        return Ok(Some(existing.id.clone()));
    }
    if let Some(live) = state.live_session(&caller.user, pool) {
        return Ok(Some(live.id.clone()));
    }
    let held = state.live_sessions_of(&caller.user) as u32;
    if held >= policy.max_sessions_per_user {
        return Err(RequestError::UserLimit(policy.max_sessions_per_user));
    }
    Ok(None)
}

/// The session of a request that took the ready workstation `workstation` by name (cluster
/// mode: the session's create under the workstation's name is the claim), as it stands the
/// moment the create succeeded: Ready on that workstation. `None` unless it is ready.
pub fn taken_by_name(
    state: &State,
    caller: &Caller,
    req: &NewSession,
    workstation: &super::WorkstationId,
    now: Timestamp,
) -> Option<Session> {
    state.workstation(workstation).filter(|w| w.phase == super::WorkstationPhase::Ready)?;
    let mut session =
        Session::new(req.id.clone(), caller.user.clone(), req.pool.clone(), now, req.idempotency_key.clone());
    session.phase = super::SessionPhase::Ready;
    session.workstation = Some(workstation.clone());
    session.ready_at = Some(now);
    session.last_activity = Some(now);
    Some(session)
}

/// Decides a session request at `now`.
pub fn decide_request(
    state: &State,
    caller: &Caller,
    req: &NewSession,
    policy: RequestPolicy,
    now: Timestamp,
) -> Result<RequestDecision, RequestError> {
    if let Some(existing) = check_request(state, caller, &req.pool, req.idempotency_key.as_deref(), policy)? {
        return Ok(RequestDecision::Existing(existing));
    }
    let session =
        Session::new(req.id.clone(), caller.user.clone(), req.pool.clone(), now, req.idempotency_key.clone());
    let mut actions = vec![Action::CreateSession(Box::new(session))];
    if let Some(place) = place(state, &req.pool, &req.id, policy.handover) {
        actions.push(place);
    }
    Ok(RequestDecision::Create(actions))
}

/// Where a session waiting in `pool` can go now, if anywhere: a warm workstation, a starting
/// one nobody waits on, or a new one when the pool is below its maximum. Queued sessions go
/// first: a new request is placed only when nobody queues ahead of it.
pub(super) fn place(
    state: &State,
    pool: &PoolName,
    session: &SessionId,
    handover: Handover,
) -> Option<Action> {
    let queue = state.queue(pool);
    let ahead = queue.iter().take_while(|id| *id != session).count();
    if ahead > 0 {
        return None;
    }
    if handover == Handover::Allocator {
        if let Some(w) = state.warm_workstation(pool) {
            return Some(Action::Claim { session: session.clone(), workstation: w.id.clone() });
        }
        if let Some(w) = state.unreserved_starting(pool) {
            return Some(Action::Reserve { session: session.clone(), workstation: w.id.clone() });
        }
    }
    let spec = state.pool(pool)?;
    if state.counts(pool).total() < spec.capacity.max {
        return Some(Action::StartWorkstation {
            workstation: State::session_workstation_name(session),
            seq: 0,
            pool: pool.clone(),
            session: Some(session.clone()),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SessionPhase, UserId, Workstation, WorkstationId, WorkstationPhase, mk_pool};

    const POLICY: RequestPolicy =
        RequestPolicy { max_sessions_per_user: 1, handover: Handover::NamedRequestOnly };

    fn caller(user: &str) -> Caller {
        Caller { user: UserId(user.into()), groups: None, admin: false }
    }

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn the_check_says_why_a_request_is_refused_and_each_refusal_ends_with_its_own_reason() {
        let mut gis = mk_pool("gis", 0, 2, 0);
        gis.access.all_authenticated = false;
        let mut state = State::with_pools([mk_pool("cad", 0, 2, 0), gis]);
        let pool = |n: &str| PoolName(n.into());
        let refused = |state: &State, p: &str, key: Option<&str>| {
            check_request(state, &caller("alice"), &pool(p), key, POLICY).unwrap_err()
        };
        assert_eq!(refused(&state, "nosuch", None).end_reason(), EndReason::PoolDeleted);
        assert_eq!(refused(&state, "gis", None).end_reason(), EndReason::NotEntitled);
        assert_eq!(check_request(&state, &caller("alice"), &pool("cad"), Some("k"), POLICY), Ok(None));
        let s =
            Session::new(SessionId("s1".into()), UserId("alice".into()), pool("cad"), t0(), Some("k".into()));
        state.restore_session(s);
        let again = check_request(&state, &caller("alice"), &pool("cad"), None, POLICY);
        assert_eq!(again, Ok(Some(SessionId("s1".into()))), "a repeated request returns the live session");
        let mut other = mk_pool("other", 0, 2, 0);
        other.name = pool("other");
        state = {
            let mut s = State::with_pools([mk_pool("cad", 0, 2, 0), other]);
            let session = Session::new(
                SessionId("s1".into()),
                UserId("alice".into()),
                pool("cad"),
                t0(),
                Some("k".into()),
            );
            s.restore_session(session);
            s
        };
        assert_eq!(refused(&state, "other", Some("k")).end_reason(), EndReason::IdempotencyConflict);
        assert_eq!(refused(&state, "other", None).end_reason(), EndReason::UserLimit);
    }

    #[test]
    fn a_request_that_took_a_ready_workstation_by_name_is_ready_on_it() {
        let mut state = State::with_pools([mk_pool("cad", 0, 2, 0)]);
        let ws = |phase| Workstation {
            id: WorkstationId("cad-ws-1".into()),
            pool: PoolName("cad".into()),
            phase,
            session: None,
            node: None,
            endpoint: None,
            created_at: t0(),
            ready_at: None,
            message: None,
        };
        let req = NewSession {
            id: SessionId("cad-ws-1".into()),
            pool: PoolName("cad".into()),
            idempotency_key: None,
        };
        let id = WorkstationId("cad-ws-1".into());
        state.restore_workstation(ws(WorkstationPhase::Starting));
        assert!(taken_by_name(&state, &caller("alice"), &req, &id, t0()).is_none(), "not ready yet");
        state.restore_workstation(ws(WorkstationPhase::Ready));
        let s = taken_by_name(&state, &caller("alice"), &req, &id, t0()).expect("ready");
        assert_eq!(
            (s.phase, s.workstation.as_ref(), s.ready_at),
            (SessionPhase::Ready, Some(&id), Some(t0()))
        );
        assert_eq!(s.last_activity, Some(t0()));
    }
}
