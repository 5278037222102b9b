//! The service's other writes: a session's end (its final status, as a compare-and-swap),
//! activity and disconnect annotations, and an admin's change or delete of a pool (the patch
//! built from the typed spec, `crd::ManagedPoolSpec`).

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::KubeSessionService;
use crate::{
    crd::ManagedPoolSpec,
    domain::{Caller, EndReason, FieldError, PoolName, PoolSpec, SessionId, State, time::elapsed},
    kubernetes::{build::session::ended_status, io::execute::write_status, labels},
    service::{PoolView, ServiceError, SessionView, read},
};

/// Tries to record an end against a session that keeps changing.
const END_ATTEMPTS: usize = 5;

/// A failed write as the API reports it: logged here, no internals to the client.
pub(super) fn api_error(e: kube::Error) -> ServiceError {
    tracing::warn!(error = %e, "Kubernetes API write failed");
    ServiceError::Unavailable("the cluster did not accept the write".into())
}

impl KubeSessionService {
    /// Ends a session the caller may see (its owner, or an admin) and answers with it as the
    /// cache then shows it.
    pub(super) async fn end_session(
        &self,
        caller: &Caller,
        id: &SessionId,
    ) -> Result<SessionView, ServiceError> {
        let state = self.read_state().await;
        let session = read::visible(&state, caller, id)?;
        if session.phase.is_live() {
            let reason =
                if session.user == caller.user { EndReason::UserEnded } else { EndReason::AdminEnded };
            self.write_end(id, reason).await?;
            let ended = |s: &State| s.session(id).is_none_or(|x| !x.phase.is_live());
            let state = self.wait_for(self.settings.create_wait, ended).await;
            if let Some(s) = state.session(id) {
                return Ok(self.view(&state, s, caller));
            }
        }
        Ok(self.view(&state, session, caller))
    }

    /// Records the end of a live session in its status, as a compare-and-swap on the object
    /// this replica last saw (retried on a newer one); the allocator then deletes its
    /// workstation.
    async fn write_end(&self, id: &SessionId, reason: EndReason) -> Result<(), ServiceError> {
        for _ in 0..END_ATTEMPTS {
            let state = self.state();
            let Some(session) = state.session(id).filter(|s| s.phase.is_live()) else { return Ok(()) };
            let Some(cr) = self.stores.session(&self.namespace, id.as_str()) else { return Ok(()) };
            let status = ended_status(&state, session, reason, self.clock.now(), cr.status.as_ref());
            let rv = cr.metadata.resource_version.as_deref();
            match write_status(&self.sessions, id.as_str(), &status, rv).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // Changed since the cache saw it: wait for the newer object, then again.
                    let mut changes = self.stores.changes();
                    let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(ServiceError::Unavailable("the session kept changing; try again".into()))
    }

    /// Annotates a live session's activity, at most every `activityInterval`, and always
    /// while a disconnect is pending (only a later activity lifts it).
    pub(super) async fn write_activity(&self, state: &State, id: &SessionId) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let recent = state
            .session(id)
            .and_then(|s| s.last_activity)
            .is_some_and(|t| elapsed(t, now) < self.settings.activity_interval);
        if recent && self.away_since(id).is_none() {
            return Ok(());
        }
        self.annotate(id, labels::LAST_ACTIVITY, now.to_string()).await
    }

    /// Annotates the first disconnect of a live session: the grace runs from the first, as in
    /// the domain, so a pending one stays.
    pub(super) async fn write_disconnect(&self, id: &SessionId) -> Result<(), ServiceError> {
        if self.away_since(id).is_some() {
            return Ok(());
        }
        self.annotate(id, labels::DISCONNECTED_AT, self.clock.now().to_string()).await
    }

    async fn annotate(&self, id: &SessionId, key: &str, value: String) -> Result<(), ServiceError> {
        let patch = json!({ "metadata": { "annotations": { key: value } } });
        self.sessions
            .patch(id.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error)?;
        Ok(())
    }

    /// Writes an admin's change of an existing pool and answers once the cache shows it. A new
    /// pool needs a workload template, which only the cluster's own tools write.
    pub(super) async fn patch_pool(&self, spec: PoolSpec) -> Result<(PoolView, bool), ServiceError> {
        if self.state().pool(&spec.name).is_none() {
            return Err(ServiceError::InvalidPool(vec![FieldError {
                field: "template",
                message: "in cluster mode a new pool needs a pod template: create the CapacityPool with kubectl, then manage it here".into(),
            }]));
        }
        let patch = ManagedPoolSpec::from(&spec).merge_patch();
        self.pools
            .patch(spec.name.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error)?;
        let name = spec.name.clone();
        let shows = |s: &State| s.pool(&name).is_some_and(|p| p.capacity == spec.capacity);
        let state = self.wait_for(self.settings.create_wait, shows).await;
        let pool = state.pool(&name).ok_or_else(|| ServiceError::PoolNotFound(name.clone()))?;
        Ok((PoolView::of(&state, pool, true), false))
    }

    /// Deletes a pool's object; its sessions end in the allocator's next pass.
    pub(super) async fn delete_pool_object(&self, name: &PoolName) -> Result<(), ServiceError> {
        self.pools.delete(name.as_str(), &DeleteParams::default()).await.map_err(api_error)?;
        Ok(())
    }
}
