//! The session service of cluster mode: every replica answers the API from its watch caches
//! and writes what users ask for: new WorkstationSession objects (named after a free warm pod,
//! which is how a request takes it), the final status of a session it ends, activity and
//! disconnect annotations. Everything else the allocator decides. A create that did not take a
//! ready pod waits on the cache, not by polling, for the allocator's answer.

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
    claims::Claims,
    labels,
    metrics::{Category, KubeMetrics},
    restore::{Restored, restore},
    store::Stores,
};
use crate::service::read;
use crate::{
    crd::{WorkstationSession, WorkstationSessionSpec, WorkstationSessionStatus},
    domain::{
        Caller, Decision, EndReason, PoolName, PoolSpec, RequestError, Session, SessionId, SessionPhase,
        State, WorkstationId,
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
    claims: Claims,
    metrics: Arc<KubeMetrics>,
    /// Sessions this replica created and answered before its cache showed them.
    unseen: Mutex<Vec<(SessionId, tokio::time::Instant)>>,
}

impl KubeSessionService {
    /// A service over `stores`, writing to `namespace`.
    pub fn new(
        client: &Client,
        namespace: &str,
        stores: Stores,
        settings: ServiceSettings,
        metrics: Arc<KubeMetrics>,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        let service = Arc::new(Self {
            sessions: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
            stores,
            settings,
            cached: Mutex::new((u64::MAX, Arc::new(State::default()))),
            events,
            links: OnceLock::new(),
            claims: Claims::default(),
            metrics,
            unseen: Mutex::new(Vec::new()),
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

    /// The cached state once it shows every session this replica answered for before its
    /// cache had it (read your own writes; bounded by `createWait`).
    async fn read_state(&self) -> Arc<State> {
        let state = self.state();
        let pending: Vec<SessionId> = {
            let mut unseen = self.unseen.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = tokio::time::Instant::now();
            unseen.retain(|(id, until)| *until > deadline && state.session(id).is_none());
            unseen.iter().map(|(id, _)| id.clone()).collect()
        };
        if pending.is_empty() {
            return state;
        }
        self.wait_for(self.settings.create_wait, |s| pending.iter().all(|id| s.session(id).is_some())).await
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

    /// Writes the session object of a request: named after a buffer pod of the pool when one
    /// is free and nobody queues there (the create is the claim: a name exists once, so two
    /// replicas can never take one pod), otherwise under a fresh name for the allocator to
    /// place. A lost race for a pod's name moves on to the next pod.
    async fn create_session(
        &self,
        caller: &Caller,
        req: &CreateSession,
        state: &Arc<State>,
    ) -> Result<(SessionId, Option<WorkstationId>), ServiceError> {
        let mut state = state.clone();
        for _ in 0..CLAIM_ATTEMPTS {
            let pod = self.claims.take(&state, &req.pool, std::time::Instant::now());
            let id = pod
                .clone()
                .map_or_else(|| SessionId(uuid::Uuid::new_v4().simple().to_string()), |w| SessionId(w.0));
            let cr = self.session_object(&id, caller, req);
            match self.sessions.create(&PostParams::default(), &cr).await {
                Ok(_) => {
                    if pod.is_some() {
                        super::execute::fault::pause_after("claim").await;
                    }
                    return Ok((id, pod));
                }
                Err(kube::Error::Api(e)) if e.code == 409 && pod.is_some() => {
                    self.metrics.error(Category::ClaimConflict);
                    tracing::debug!(pod = %id, "another request took this pod first");
                    state = self.state();
                }
                Err(e) => {
                    if let Some(w) = &pod {
                        self.claims.release(w);
                    }
                    return Err(api_error(e));
                }
            }
        }
        // Every pod tried was taken meanwhile: the allocator places it.
        let id = SessionId(uuid::Uuid::new_v4().simple().to_string());
        self.sessions
            .create(&PostParams::default(), &self.session_object(&id, caller, req))
            .await
            .map_err(api_error)?;
        Ok((id, None))
    }

    fn session_object(&self, id: &SessionId, caller: &Caller, req: &CreateSession) -> WorkstationSession {
        WorkstationSession {
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
            },
            status: None,
        }
    }

    /// Records the end of a live session in its status, as a compare-and-swap on the object
    /// this replica last saw (retried on a newer one); the allocator then deletes its pod.
    async fn write_end(&self, id: &SessionId, reason: EndReason) -> Result<(), ServiceError> {
        for _ in 0..END_ATTEMPTS {
            let state = self.state();
            let Some(session) = state.session(id).filter(|s| s.phase.is_live()) else { return Ok(()) };
            let Some(cr) = self.stores.session(&self.namespace, id.as_str()) else { return Ok(()) };
            let status = ended_status(&state, session, reason, Timestamp::now(), cr.status.as_ref());
            let rv = cr.metadata.resource_version.as_deref();
            match super::execute::write_status(&self.sessions, id.as_str(), &status, rv).await {
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

/// The session a request that took `pod` by name holds, when that pod is ready in `state`.
fn ready_on(
    state: &State,
    pod: &WorkstationId,
    id: &SessionId,
    caller: &Caller,
    req: &CreateSession,
) -> Option<Session> {
    state.workstation(pod).filter(|w| w.phase == crate::domain::WorkstationPhase::Ready)?;
    let now = Timestamp::now();
    let mut session =
        Session::new(id.clone(), caller.user.clone(), req.pool.clone(), now, req.idempotency_key.clone());
    session.phase = SessionPhase::Ready;
    session.workstation = Some(pod.clone());
    session.ready_at = Some(now);
    session.last_activity = Some(now);
    Some(session)
}

/// Pods a request tries to take by name before leaving it to the allocator.
const CLAIM_ATTEMPTS: usize = 4;
/// Tries to record an end against a session that keeps changing.
const END_ATTEMPTS: usize = 5;

/// The final status of a session ended through the API: what it showed, ended now.
fn ended_status(
    state: &State,
    session: &Session,
    reason: EndReason,
    now: Timestamp,
    current: Option<&WorkstationSessionStatus>,
) -> WorkstationSessionStatus {
    let mut status = super::plan::session_status(state, session);
    status.phase = Some(SessionPhase::Ended);
    status.ended_at = Some(now.to_string());
    status.end_reason = Some(reason);
    status.queue_position = None;
    if status.node.is_none() {
        status.node = current.and_then(|c| c.node.clone());
    }
    status
}

fn api_error(e: kube::Error) -> ServiceError {
    tracing::warn!(error = %e, "Kubernetes API write failed");
    ServiceError::Unavailable("the cluster did not accept the write".into())
}

#[async_trait]
impl SessionService for KubeSessionService {
    async fn create(&self, caller: &Caller, req: CreateSession) -> Result<Created, ServiceError> {
        self.not_ready()?;
        let state = self.read_state().await;
        if let Some(existing) = self.check_request(&state, caller, &req)? {
            let session = state.session(&existing).expect("found above");
            return Ok(Created { session: self.view(&state, session, caller), created: false });
        }
        let (id, taken) = self.create_session(caller, &req, &state).await?;
        // A ready pod taken by name is the answer already: no need to wait for the watch.
        if let Some(session) = taken.and_then(|pod| ready_on(&state, &pod, &id, caller, &req)) {
            let until = tokio::time::Instant::now() + self.settings.create_wait;
            self.unseen.lock().unwrap_or_else(|p| p.into_inner()).push((id, until));
            return Ok(Created { session: self.view(&state, &session, caller), created: true });
        }
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
        let state = self.read_state().await;
        Ok(read::session_list(&state, caller, |s| self.view(&state, s, caller)))
    }

    async fn get(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let state = self.read_state().await;
        let session = read::visible(&state, caller, id)?;
        Ok(self.view(&state, session, caller))
    }

    async fn end(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
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

    async fn keepalive(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let state = self.read_state().await;
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
        let state = self.read_state().await;
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
            "schedules": spec.schedules.iter().map(crate::crd::ScheduleWindowSpec::of).collect::<Vec<_>>(),
            "autoscale": crate::crd::AutoscaleTuning::of(&spec.autoscale),
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
        let state = self.read_state().await;
        let session = state.session(id).ok_or_else(|| ServiceError::SessionNotFound(id.clone()))?;
        let endpoint =
            session.workstation.as_ref().and_then(|w| state.workstation(w)).and_then(|w| w.endpoint.clone());
        Ok(ConnectTarget { user: session.user.clone(), phase: session.phase, endpoint })
    }

    async fn record_activity(&self, id: &SessionId) -> Result<(), ServiceError> {
        let state = self.read_state().await;
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
