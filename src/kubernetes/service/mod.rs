//! The session service of cluster mode: every replica answers the API from its watch caches
//! and writes what users ask for: new WorkstationSession objects (named after a free warm
//! workstation, which is how a request takes it), the final status of a session it ends,
//! activity and disconnect annotations. Everything else the allocator decides. Requests are
//! checked by the domain (`domain::check_request`, the same rules the engine and the allocator
//! apply); a create that did not take a ready workstation waits on the cache, not by polling,
//! for the allocator's answer. The time comes from the broker's clock.

mod claims;
mod create;
mod writes;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client};
use tokio::sync::broadcast;

use self::claims::Claims;
use super::{
    io::{metrics::KubeMetrics, store::Stores},
    pass::{disconnect, restore},
};
use crate::{
    clock::Clock,
    crd::{CapacityPool, WorkstationSession},
    domain::{Caller, Decision, PoolName, PoolSpec, RequestPolicy, Session, SessionId, State},
    metrics::StatsSource,
    service::{
        ConnectLinks, ConnectTarget, CreateSession, Created, PoolView, ServiceError, SessionEvent,
        SessionService, SessionView, engine::EngineStats, read,
    },
};

/// Settings of the cluster-mode service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSettings {
    /// How long a create waits for the allocator's decision before answering 202.
    pub create_wait: Duration,
    /// The domain's request rules (the allocator applies the same).
    pub request: RequestPolicy,
    /// Activity is written at most this often per session.
    pub activity_interval: Duration,
}

/// Cluster-mode implementation of [`SessionService`].
pub struct KubeSessionService {
    stores: Stores,
    sessions: Api<WorkstationSession>,
    pools: Api<CapacityPool>,
    events: Api<Event>,
    namespace: String,
    settings: ServiceSettings,
    cached: Mutex<(u64, Arc<State>)>,
    changes: broadcast::Sender<SessionEvent>,
    links: OnceLock<Arc<dyn ConnectLinks>>,
    claims: Claims,
    metrics: Arc<KubeMetrics>,
    clock: Arc<dyn Clock>,
    /// Sessions this replica created and answered before its cache showed them.
    unseen: Mutex<Vec<(SessionId, tokio::time::Instant)>>,
}

impl std::fmt::Debug for KubeSessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSessionService").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl StatsSource for KubeSessionService {
    fn stats(&self) -> EngineStats {
        EngineStats::of(&self.state())
    }
}

impl KubeSessionService {
    /// A service over `stores`, writing to `namespace`, reading the time from `clock`.
    pub fn new(
        client: &Client,
        namespace: &str,
        stores: Stores,
        settings: ServiceSettings,
        metrics: Arc<KubeMetrics>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let (changes, _) = broadcast::channel(1024);
        let service = Arc::new(Self {
            sessions: Api::namespaced(client.clone(), namespace),
            pools: Api::namespaced(client.clone(), namespace),
            events: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
            stores,
            settings,
            cached: Mutex::new((u64::MAX, Arc::new(State::default()))),
            changes,
            links: OnceLock::new(),
            claims: Claims::default(),
            metrics,
            clock,
            unseen: Mutex::new(Vec::new()),
        });
        tokio::spawn(forward_session_changes(Arc::downgrade(&service)));
        service
    }

    /// Installs the builder of connect URLs (the gateway's).
    pub fn set_connect_links(&self, links: Arc<dyn ConnectLinks>) {
        let _ = self.links.set(links);
    }

    /// The domain state as the caches hold it now, rebuilt only after a change. Requests the
    /// allocator has not decided yet show as Queued.
    fn state(&self) -> Arc<State> {
        let version = *self.stores.changes().borrow();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != version {
            let restore::Restored { mut state, intents, .. } =
                restore::restore(&self.stores.snapshot(), self.clock.now());
            for intent in intents {
                let restore::Intent { id, user, pool, requested_at, idempotency_key } = intent;
                state.restore_session(Session::new(id, user, pool, requested_at, idempotency_key));
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
            let now = tokio::time::Instant::now();
            unseen.retain(|(id, until)| *until > now && state.session(id).is_none());
            unseen.iter().map(|(id, _)| id.clone()).collect()
        };
        if pending.is_empty() {
            return state;
        }
        self.wait_for(self.settings.create_wait, |s| pending.iter().all(|id| s.session(id).is_some())).await
    }

    /// Remembers a session this replica answered for before its cache shows it.
    fn answered_unseen(&self, id: SessionId) {
        let until = tokio::time::Instant::now() + self.settings.create_wait;
        self.unseen.lock().unwrap_or_else(|p| p.into_inner()).push((id, until));
    }

    fn view(&self, state: &State, session: &Session, caller: &Caller) -> SessionView {
        SessionView::for_viewer(state, session, caller, self.links.get().map(|l| l.as_ref()))
            .with_estimated_wait(state, session, self.clock.now())
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

    fn not_ready(&self) -> Result<(), ServiceError> {
        if self.stores.is_ready() {
            Ok(())
        } else {
            Err(ServiceError::Unavailable("caches are syncing".into()))
        }
    }

    /// When the session's desktop went away, if the cached object records a disconnect that no
    /// later activity lifted.
    fn away_since(&self, id: &SessionId) -> Option<jiff::Timestamp> {
        self.stores.session(&self.namespace, id.as_str()).and_then(|cr| disconnect::away_since(&cr))
    }
}

async fn forward_session_changes(service: std::sync::Weak<KubeSessionService>) {
    let Some(mut rx) = service.upgrade().map(|s| s.stores.session_changes()) else { return };
    while let Ok(cr) = rx.recv().await {
        let Some(service) = service.upgrade() else { return };
        let Some(name) = cr.metadata.name.clone() else { continue };
        let state = service.state();
        if let Some(s) = state.session(&SessionId(name)) {
            let _ = service.changes.send(SessionEvent { session: Arc::new(SessionView::of(&state, s)) });
        }
    }
}

#[async_trait]
impl SessionService for KubeSessionService {
    async fn create(&self, caller: &Caller, req: CreateSession) -> Result<Created, ServiceError> {
        self.not_ready()?;
        self.create_request(caller, req).await
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
        self.end_session(caller, id).await
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
        let rx = self.changes.subscribe();
        let state = self.read_state().await;
        let session = read::visible(&state, caller, id)?;
        Ok((self.view(&state, session, caller), rx))
    }

    async fn pools(&self, caller: &Caller) -> Result<Vec<PoolView>, ServiceError> {
        Ok(read::pool_list(&self.state(), caller))
    }

    async fn put_pool(&self, caller: &Caller, spec: PoolSpec) -> Result<(PoolView, bool), ServiceError> {
        read::check_pool_write(caller, &spec)?;
        self.patch_pool(spec).await
    }

    async fn delete_pool(&self, caller: &Caller, name: &PoolName) -> Result<(), ServiceError> {
        if !caller.admin {
            return Err(ServiceError::AdminOnly);
        }
        if self.state().pool(name).is_none() {
            return Err(ServiceError::PoolNotFound(name.clone()));
        }
        self.delete_pool_object(name).await
    }

    fn ready(&self) -> bool {
        self.stores.is_ready()
    }

    async fn connect_target(&self, id: &SessionId) -> Result<ConnectTarget, ServiceError> {
        let state = self.read_state().await;
        read::connect_target(&state, id)
    }

    async fn record_activity(&self, id: &SessionId) -> Result<(), ServiceError> {
        let state = self.read_state().await;
        read::live(&state, id)?;
        self.write_activity(&state, id).await
    }

    fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.changes.subscribe()
    }

    async fn decisions(&self, caller: &Caller, pool: &PoolName) -> Result<Vec<Decision>, ServiceError> {
        if !caller.admin {
            return Err(ServiceError::AdminOnly);
        }
        if self.state().pool(pool).is_none() {
            return Err(ServiceError::PoolNotFound(pool.clone()));
        }
        // From the cluster, not from this replica's memory: every replica answers alike.
        super::io::decisions::read(&self.events, pool).await.map_err(writes::api_error)
    }

    async fn record_disconnect(&self, id: &SessionId) -> Result<(), ServiceError> {
        let state = self.state();
        read::live(&state, id)?;
        self.write_disconnect(id).await
    }
}
