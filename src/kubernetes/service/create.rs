//! A request in cluster mode. The domain checks it (`domain::check_request`: the rules the
//! engine and the allocator apply too); then the session object is written, named after a
//! buffer workstation of the pool when one is free and nobody queues there (the create is the
//! claim: a name exists once, so two replicas can never take one workstation), otherwise under
//! a fresh name for the allocator to place. A ready workstation taken by name is the answer at
//! once (`domain::taken_by_name`); otherwise the create waits for the allocator's decision.

use std::sync::Arc;

use kube::api::PostParams;

use super::{KubeSessionService, writes::api_error};
use crate::{
    domain::{
        Caller, NewSession, SessionId, SessionPhase, State, WorkstationId, check_request, taken_by_name,
    },
    kubernetes::{
        build::session::{RequestInput, request_object},
        io::{execute::fault, metrics::Category},
    },
    service::{CreateSession, Created, ServiceError},
};

/// Workstations a request tries to take by name before leaving it to the allocator.
const CLAIM_ATTEMPTS: usize = 4;

impl KubeSessionService {
    /// Answers a create: the caller's existing session, a workstation taken by name, or the
    /// allocator's placement.
    pub(super) async fn create_request(
        &self,
        caller: &Caller,
        req: CreateSession,
    ) -> Result<Created, ServiceError> {
        let state = self.read_state().await;
        let key = req.idempotency_key.as_deref();
        if let Some(existing) = check_request(&state, caller, &req.pool, key, self.settings.request)? {
            let session = state.session(&existing).expect("found by the check");
            return Ok(Created { session: self.view(&state, session, caller), created: false });
        }
        let (new, taken) = self.create_session(caller, &req, &state).await?;
        let now = self.clock.now();
        // A ready workstation taken by name is the answer already: no need to wait for the watch.
        if let Some(session) = taken.and_then(|w| taken_by_name(&state, caller, &new, &w, now)) {
            self.answered_unseen(new.id);
            return Ok(Created { session: self.view(&state, &session, caller), created: true });
        }
        let id = new.id;
        let decided = |s: &State| {
            s.session(&id).is_some_and(|x| x.phase != SessionPhase::Queued || x.workstation.is_some())
        };
        let state = self.wait_for(self.settings.create_wait, decided).await;
        match state.session(&id) {
            Some(session) => Ok(Created { session: self.view(&state, session, caller), created: true }),
            // The allocator deleted it as a duplicate of a live session: answer with that one.
            None => {
                let live =
                    state.live_session(&caller.user, &req.pool).ok_or(ServiceError::SessionNotFound(id))?;
                Ok(Created { session: self.view(&state, live, caller), created: false })
            }
        }
    }

    /// Writes the session object of a request; returns the request as written and the buffer
    /// workstation it took, if any. A lost race for a workstation's name moves on to the next.
    async fn create_session(
        &self,
        caller: &Caller,
        req: &CreateSession,
        state: &Arc<State>,
    ) -> Result<(NewSession, Option<WorkstationId>), ServiceError> {
        let mut state = state.clone();
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(taken) = self.claims.take(&state, &req.pool, std::time::Instant::now()) else { break };
            let new = self.new_session(SessionId(taken.to_string()), req);
            match self.sessions.create(&PostParams::default(), &self.object_of(caller, &new)).await {
                Ok(_) => {
                    fault::pause_after("claim").await;
                    return Ok((new, Some(taken)));
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    self.metrics.error(Category::ClaimConflict);
                    tracing::debug!(workstation = %taken, "another request took this workstation first");
                    state = self.state();
                }
                Err(e) => {
                    self.claims.release(&taken);
                    return Err(api_error(e));
                }
            }
        }
        // None free, or every one tried was taken meanwhile: the allocator places it.
        let new = self.new_session(SessionId(uuid::Uuid::new_v4().simple().to_string()), req);
        self.sessions
            .create(&PostParams::default(), &self.object_of(caller, &new))
            .await
            .map_err(api_error)?;
        Ok((new, None))
    }

    fn new_session(&self, id: SessionId, req: &CreateSession) -> NewSession {
        NewSession { id, pool: req.pool.clone(), idempotency_key: req.idempotency_key.clone() }
    }

    fn object_of(&self, caller: &Caller, new: &NewSession) -> crate::crd::WorkstationSession {
        request_object(RequestInput {
            id: &new.id,
            namespace: &self.namespace,
            user: &caller.user,
            pool: &new.pool,
            requested_at: self.clock.now(),
            idempotency_key: new.idempotency_key.as_deref(),
        })
    }
}
