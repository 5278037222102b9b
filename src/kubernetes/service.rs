//! The session service of cluster mode: every replica answers the API from its watch caches
//! and writes intents (new WorkstationSession objects, end requests, activity annotations);
//! only the allocator decides. A create waits on the cache, not by polling, for the allocator's
//! answer.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use jiff::Timestamp;
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::sync::broadcast;

use super::{
    labels,
    restore::{Restored, restore},
    store::Stores,
};
use crate::service::read;
use crate::{
    crd::{EndRequest, WorkstationSession, WorkstationSessionSpec},
    domain::{
        Caller, Decision, EndReason, PoolName, PoolSpec, RequestError, Session, SessionId, SessionPhase,
        State,
    },
    service::{
        ConnectLinks, ConnectTarget, CreateSession, Created, PoolView, ServiceError, SessionEvent,
        SessionService, SessionView,
    },
};

/// Settings of the cluster-mode service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSettings {
    /// How long a create waits for the allocator's decision before answering 202.
    pub create_wait: Duration,
    /// Live sessions one user may hold across pools.
    pub max_sessions_per_user: u32,
    /// Activity is written at most this often per session.
    pub activity_interval: Duration,
}

/// Cluster-mode implementation of [`SessionService`].
pub struct KubeSessionService {
    stores: Stores,
    sessions: Api<WorkstationSession>,
    namespace: String,
    settings: ServiceSettings,
    cached: Mutex<(u64, Arc<State>)>,
    events: broadcast::Sender<SessionEvent>,
    links: OnceLock<Arc<dyn ConnectLinks>>,
}

impl KubeSessionService {
    /// A service over `stores`, writing to `namespace`.
    pub fn new(client: &Client, namespace: &str, stores: Stores, settings: ServiceSettings) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        let service = Arc::new(Self {
            sessions: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
            stores,
            settings,
            cached: Mutex::new((u64::MAX, Arc::new(State::default()))),
            events,
            links: OnceLock::new(),
        });
        tokio::spawn(forward_session_changes(Arc::downgrade(&service)));
        service
    }

    /// Installs the builder of connect URLs (the gateway's).
    pub fn set_connect_links(&self, links: Arc<dyn ConnectLinks>) {
        let _ = self.links.set(links);
    }

    /// The domain state as the caches hold it now, rebuilt only after a change.
    pub(super) fn state(&self) -> Arc<State> {
        let version = *self.stores.changes().borrow();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != version {
            let Restored { state, intents, .. } = restore(&self.stores.snapshot(), Timestamp::now());
            let mut state = state;
            // Requests the allocator has not decided yet show as Queued.
            for intent in intents {
                let s = Session::new(
                    intent.id,
                    intent.user,
                    intent.pool,
                    intent.requested_at,
                    intent.idempotency_key,
                );
                state.restore_session(s);
            }
            *cached = (version, Arc::new(state));
        }
        cached.1.clone()
    }

    fn view(&self, state: &State, session: &Session, caller: &Caller) -> SessionView {
        SessionView::for_viewer(state, session, caller, self.links.get().map(|l| l.as_ref()))
            .with_estimated_wait(state, session, Timestamp::now())
    }

    /// Waits until `done` holds for the cached state, or `timeout` passes.
    async fn wait_for(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> Arc<State> {
        let mut changes = self.stores.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.state();
            if done(&state) {
                return state;
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return state;
            }
        }
    }

    fn check_request(
        &self,
        state: &State,
        caller: &Caller,
        req: &CreateSession,
    ) -> Result<Option<SessionId>, ServiceError> {
        let pool = state.pool(&req.pool).ok_or_else(|| RequestError::UnknownPool(req.pool.clone()))?;
        if !pool.may_use(caller) {
            return Err(RequestError::PoolForbidden(req.pool.clone()).into());
        }
        if let Some(key) = &req.idempotency_key
            && let Some(existing) = state.idempotent_session(&caller.user, key)
        {
            if existing.pool != req.pool {
                return Err(RequestError::IdempotencyConflict {
                    key: key.clone(),
                    pool: existing.pool.clone(),
                }
                .into());
            }
            return Ok(Some(existing.id.clone()));
        }
        if let Some(live) = state.live_session(&caller.user, &req.pool) {
            return Ok(Some(live.id.clone()));
        }
        let max = self.settings.max_sessions_per_user;
        if state.live_sessions_of(&caller.user) as u32 >= max {
            return Err(RequestError::UserLimit(max).into());
        }
        Ok(None)
    }

    fn not_ready(&self) -> Result<(), ServiceError> {
        if self.stores.is_ready() {
            Ok(())
        } else {
            Err(ServiceError::Unavailable("caches are syncing".into()))
        }
    }
}

async fn forward_session_changes(service: std::sync::Weak<KubeSessionService>) {
    let Some(mut rx) = service.upgrade().map(|s| s.stores.session_changes()) else { return };
    while let Ok(cr) = rx.recv().await {
        let Some(service) = service.upgrade() else { return };
        let Some(name) = cr.metadata.name.clone() else { continue };
        let state = service.state();
        if let Some(s) = state.session(&SessionId(name)) {
            let _ = service.events.send(SessionEvent { session: Arc::new(SessionView::of(&state, s)) });
        }
    }
}

fn api_error(e: kube::Error) -> ServiceError {
    tracing::warn!(error = %e, "Kubernetes API write failed");
    ServiceError::Unavailable("the cluster did not accept the write".into())
}

#[async_trait]
impl SessionService for KubeSessionService {
    async fn create(&self, caller: &Caller, req: CreateSession) -> Result<Created, ServiceError> {
        self.not_ready()?;
        let state = self.state();
        if let Some(existing) = self.check_request(&state, caller, &req)? {
            let session = state.session(&existing).expect("found above");
            return Ok(Created { session: self.view(&state, session, caller), created: false });
        }
        let id = SessionId(uuid::Uuid::new_v4().simple().to_string());
        let cr = WorkstationSession {
            metadata: ObjectMeta {
                name: Some(id.to_string()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: WorkstationSessionSpec {
                user: caller.user.to_string(),
                pool: req.pool.to_string(),
                requested_at: Timestamp::now().to_string(),
                idempotency_key: req.idempotency_key.clone(),
                end_requested: None,
            },
            status: None,
        };
        self.sessions.create(&PostParams::default(), &cr).await.map_err(api_error)?;
        let decided = |s: &State| {
            s.session(&id).is_none_or(|x| x.phase != SessionPhase::Queued || x.workstation.is_some())
                && s.session(&id).is_some()
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

    async fn list(&self, caller: &Caller) -> Result<Vec<SessionView>, ServiceError> {
        let state = self.state();
        Ok(read::session_list(&state, caller, |s| self.view(&state, s, caller)))
    }

    async fn get(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let state = self.state();
        let session = read::visible(&state, caller, id)?;
        Ok(self.view(&state, session, caller))
    }

    async fn end(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let state = self.state();
        let session = read::visible(&state, caller, id)?;
        if session.phase.is_live() {
            let reason =
                if session.user == caller.user { EndReason::UserEnded } else { EndReason::AdminEnded };
            let end = EndRequest { reason, at: Timestamp::now().to_string() };
            let patch = json!({ "spec": { "endRequested": end } });
            self.sessions
                .patch(id.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_error)?;
            let ended = |s: &State| s.session(id).is_none_or(|x| !x.phase.is_live());
            let state = self.wait_for(self.settings.create_wait, ended).await;
            if let Some(s) = state.session(id) {
                return Ok(self.view(&state, s, caller));
            }
        }
        Ok(self.view(&state, session, caller))
    }

    async fn keepalive(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let state = self.state();
        let session = read::visible(&state, caller, id)?;
        if !session.phase.is_live() {
            return Err(ServiceError::SessionEnded(id.clone()));
        }
        self.record_activity(id).await?;
        Ok(self.view(&state, session, caller))
    }

    async fn watch(
        &self,
        caller: &Caller,
        id: &SessionId,
    ) -> Result<(SessionView, broadcast::Receiver<SessionEvent>), ServiceError> {
        let rx = self.events.subscribe();
        let state = self.state();
        let session = read::visible(&state, caller, id)?;
        Ok((self.view(&state, session, caller), rx))
    }

    async fn pools(&self, caller: &Caller) -> Result<Vec<PoolView>, ServiceError> {
        Ok(read::pool_list(&self.state(), caller))
    }

    async fn put_pool(&self, caller: &Caller, spec: PoolSpec) -> Result<(PoolView, bool), ServiceError> {
        read::check_pool_write(caller, &spec)?;
        let state = self.state();
        if state.pool(&spec.name).is_none() {
            return Err(ServiceError::InvalidPool(vec![crate::domain::FieldError {
                field: "template",
                message: "in cluster mode a new pool needs a pod template: create the CapacityPool with kubectl, then manage it here".into(),
            }]));
        }
        let patch = json!({ "spec": {
            "displayName": spec.display_name, "description": spec.description, "gpuModel": spec.gpu_model,
            "capacity": spec.capacity, "access": spec.access, "limits": spec.limits, "connect": spec.connect,
        }});
        let pools: Api<crate::crd::CapacityPool> =
            Api::namespaced(self.sessions.clone().into_client(), &self.namespace);
        pools
            .patch(spec.name.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error)?;
        let name = spec.name.clone();
        let state = self
            .wait_for(self.settings.create_wait, |s| {
                s.pool(&name).is_some_and(|p| p.capacity == spec.capacity)
            })
            .await;
        let pool = state.pool(&name).ok_or_else(|| ServiceError::PoolNotFound(name.clone()))?;
        Ok((PoolView::of(&state, pool, true), false))
    }

    async fn delete_pool(&self, caller: &Caller, name: &PoolName) -> Result<(), ServiceError> {
        if !caller.admin {
            return Err(ServiceError::AdminOnly);
        }
        if self.state().pool(name).is_none() {
            return Err(ServiceError::PoolNotFound(name.clone()));
        }
        let pools: Api<crate::crd::CapacityPool> =
            Api::namespaced(self.sessions.clone().into_client(), &self.namespace);
        pools.delete(name.as_str(), &DeleteParams::default()).await.map_err(api_error)?;
        Ok(())
    }

    fn ready(&self) -> bool {
        self.stores.is_ready()
    }

    async fn connect_target(&self, id: &SessionId) -> Result<ConnectTarget, ServiceError> {
        let state = self.state();
        let session = state.session(id).ok_or_else(|| ServiceError::SessionNotFound(id.clone()))?;
        let endpoint =
            session.workstation.as_ref().and_then(|w| state.workstation(w)).and_then(|w| w.endpoint.clone());
        Ok(ConnectTarget { user: session.user.clone(), phase: session.phase, endpoint })
    }

    async fn record_activity(&self, id: &SessionId) -> Result<(), ServiceError> {
        let state = self.state();
        let session = state.session(id).ok_or_else(|| ServiceError::SessionNotFound(id.clone()))?;
        if !session.phase.is_live() {
            return Err(ServiceError::SessionEnded(id.clone()));
        }
        let now = Timestamp::now();
        let recent = session
            .last_activity
            .is_some_and(|t| crate::domain::time::elapsed(t, now) < self.settings.activity_interval);
        // A pending disconnect is lifted only by a later activity: write it whatever the interval.
        if !recent || self.away_since(id).is_some() {
            let patch = json!({ "metadata": { "annotations": { labels::LAST_ACTIVITY: now.to_string() } } });
            self.sessions
                .patch(id.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_error)?;
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    async fn decisions(&self, caller: &Caller, pool: &PoolName) -> Result<Vec<Decision>, ServiceError> {
        if !caller.admin {
            return Err(ServiceError::AdminOnly);
        }
        if self.state().pool(pool).is_none() {
            return Err(ServiceError::PoolNotFound(pool.clone()));
        }
        // From the cluster, not from this replica's memory: every replica answers alike.
        let events = Api::namespaced(self.sessions.clone().into_client(), &self.namespace);
        super::decisions::read(&events, pool).await.map_err(api_error)
    }

    async fn record_disconnect(&self, id: &SessionId) -> Result<(), ServiceError> {
        let state = self.state();
        let session = state.session(id).ok_or_else(|| ServiceError::SessionNotFound(id.clone()))?;
        if !session.phase.is_live() {
            return Err(ServiceError::SessionEnded(id.clone()));
        }
        // The grace runs from the first disconnect, as in the domain: a pending one stays.
        if self.away_since(id).is_none() {
            let now = Timestamp::now().to_string();
            let patch = json!({ "metadata": { "annotations": { labels::DISCONNECTED_AT: now } } });
            self.sessions
                .patch(id.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_error)?;
        }
        Ok(())
    }
}

impl KubeSessionService {
    /// When the session's desktop went away, if the cached object records a disconnect that no
    /// later activity lifted.
    fn away_since(&self, id: &SessionId) -> Option<Timestamp> {
        self.stores.session(&self.namespace, id.as_str()).and_then(|cr| super::disconnect::away_since(&cr))
    }
}
