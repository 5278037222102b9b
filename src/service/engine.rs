//! The embedded session service: the domain state behind one lock, decisions from `domain`,
//! effects carried out on a backend. Backend calls are made while the lock is held, so the
//! backend sees starts and stops in the order they were decided (they only enqueue work).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::sync::{Notify, broadcast};

use super::read;
use super::{
    ConnectLinks, ConnectTarget, CreateSession, Created, PoolView, ServiceError, SessionEvent,
    SessionService, SessionView,
};
use crate::{
    backend::{Backend, StartRequest},
    clock::Clock,
    domain::{
        Action, Caller, DECISIONS_KEPT, Decision, EndReason, NewSession, Observation, Policy, PoolName,
        PoolSpec, RequestDecision, Session, SessionId, SessionPhase, State, apply, decide_request, observe,
        settle,
    },
};

/// Counts for the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Sessions by (pool, phase), retained ended ones included.
    pub sessions: Vec<(String, SessionPhase, u64)>,
    /// Queue length by pool.
    pub queues: Vec<(String, u64)>,
    /// Workstations by (pool, state): warm, starting, in_use, stopping.
    pub workstations: Vec<(String, &'static str, u64)>,
}

impl EngineStats {
    /// Counts of `state` for metrics.
    pub fn of(state: &State) -> Self {
        let mut sessions = std::collections::BTreeMap::<(String, SessionPhase), u64>::new();
        for s in state.sessions() {
            *sessions.entry((s.pool.to_string(), s.phase)).or_default() += 1;
        }
        let mut stats = Self {
            sessions: sessions.into_iter().map(|((p, ph), n)| (p, ph, n)).collect(),
            ..Self::default()
        };
        for pool in state.pools() {
            let c = state.counts(&pool.name);
            let name = pool.name.to_string();
            stats.queues.push((name.clone(), c.queued as u64));
            for (kind, n) in [
                ("warm", c.warm),
                ("starting", c.starting_unclaimed + c.starting_reserved),
                ("in_use", c.in_use),
                ("stopping", c.stopping),
            ] {
                stats.workstations.push((name.clone(), kind, n as u64));
            }
        }
        stats
    }
}

/// The in-memory session service over a backend.
pub struct Engine {
    state: Mutex<State>,
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<SessionEvent>,
    kick: Notify,
    policy: Policy,
    ready: AtomicBool,
    /// Builds owners' connect URLs (the gateway's ticketed links); none: no connect URLs.
    links: OnceLock<Arc<dyn ConnectLinks>>,
    /// The most recent scaling and culling decisions per pool, oldest first.
    decisions: Mutex<BTreeMap<PoolName, VecDeque<Decision>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("backend", &self.backend.name()).finish_non_exhaustive()
    }
}

impl crate::metrics::StatsSource for Engine {
    fn stats(&self) -> EngineStats {
        Engine::stats(self)
    }
}

impl Engine {
    /// An engine serving `pools` on `backend`.
    pub fn new(
        pools: Vec<PoolSpec>,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Self {
            state: Mutex::new(State::with_pools(pools)),
            backend,
            clock,
            events,
            kick: Notify::new(),
            policy,
            ready: AtomicBool::new(false),
            links: OnceLock::new(),
            decisions: Mutex::new(BTreeMap::new()),
        })
    }

    /// Sets who builds connect URLs (once; later calls are ignored).
    pub fn set_connect_links(&self, links: Arc<dyn ConnectLinks>) {
        let _ = self.links.set(links);
    }

    /// `session` as `caller` sees it (a connect URL for the owner of a Ready session).
    fn view(&self, state: &State, session: &Session, caller: &Caller) -> SessionView {
        SessionView::for_viewer(state, session, caller, self.links.get().map(|l| l.as_ref()))
            .with_estimated_wait(state, session, self.clock.now())
    }

    /// Keeps `decision` in its pool's ring and logs it.
    fn record(&self, decision: &Decision) {
        tracing::info!(pool = %decision.pool, kind = ?decision.kind, "{}", decision.reason);
        let mut rings = self.decisions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ring = rings.entry(decision.pool.clone()).or_default();
        if ring.len() == DECISIONS_KEPT {
            ring.pop_front();
        }
        ring.push_back(decision.clone());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state itself stays consistent because
        // every change is a whole `apply`.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `actions`, carries out their effects on the backend and publishes events for
    /// the sessions they touched. Call with the lock held.
    fn commit(&self, state: &mut State, actions: &[Action], now: Timestamp) {
        for action in actions {
            apply(state, action, now);
        }
        self.carry_out(state, actions, BTreeSet::new());
    }

    fn carry_out(&self, state: &State, actions: &[Action], mut touched: BTreeSet<SessionId>) {
        for action in actions {
            match action {
                Action::StartWorkstation { workstation, pool, session, .. } => {
                    if let Some(spec) = state.pool(pool) {
                        let req = StartRequest {
                            workstation: workstation.clone(),
                            pool: spec.clone(),
                            session: session.clone(),
                        };
                        self.backend.start(req);
                    }
                }
                Action::StopWorkstation { workstation } => self.backend.stop(workstation),
                Action::Record(decision) => self.record(decision),
                Action::Forget { .. } => continue,
                _ => {}
            }
            touched.extend(action.session().cloned());
        }
        // Whoever waits behind a session that left a queue moved up.
        let pools: BTreeSet<_> =
            touched.iter().filter_map(|id| state.session(id)).map(|s| s.pool.clone()).collect();
        for pool in pools {
            touched.extend(state.queue(&pool).iter().cloned());
        }
        self.publish(state, touched);
    }

    fn publish(&self, state: &State, touched: BTreeSet<SessionId>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let now = self.clock.now();
        for id in touched {
            if let Some(s) = state.session(&id) {
                let view = SessionView::of(state, s).with_estimated_wait(state, s, now);
                let _ = self.events.send(SessionEvent { session: Arc::new(view) });
            }
        }
    }

    /// Folds backend observations into the state; the next [`reconcile`](Self::reconcile)
    /// acts on them. Called by the controller.
    pub fn observe(&self, observations: &[Observation]) {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut touched = BTreeSet::new();
        for obs in observations {
            let ws = match obs {
                Observation::Ready { workstation, .. }
                | Observation::Pending { workstation, .. }
                | Observation::Failed { workstation, .. }
                | Observation::Gone { workstation, .. } => workstation,
            };
            touched.extend(state.workstation(ws).and_then(|w| w.session.clone()));
            observe(&mut state, obs, now);
        }
        self.publish(&state, touched);
    }

    /// Re-evaluates everything now. Called by the controller on its tick and when kicked.
    pub fn reconcile(&self) {
        let now = self.clock.now();
        let mut state = self.lock();
        let actions = settle(&mut state, now, self.policy.reconcile);
        self.carry_out(&state, &actions, BTreeSet::new());
    }

    /// Resolves when some request changed what the controller should look at.
    pub async fn kicked(&self) {
        self.kick.notified().await
    }

    /// Marks the engine ready (the controller runs).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Stops every workstation (shutdown).
    pub fn shutdown(&self) {
        self.set_ready(false);
        self.backend.shutdown();
    }

    /// Counts for metrics.
    pub fn stats(&self) -> EngineStats {
        EngineStats::of(&self.lock())
    }

    fn new_session_id() -> SessionId {
        SessionId(uuid::Uuid::new_v4().simple().to_string())
    }
}

#[async_trait]
impl SessionService for Engine {
    async fn create(&self, caller: &Caller, req: CreateSession) -> Result<Created, ServiceError> {
        let now = self.clock.now();
        let new =
            NewSession { id: Self::new_session_id(), pool: req.pool, idempotency_key: req.idempotency_key };
        let mut state = self.lock();
        let (id, created) = match decide_request(&state, caller, &new, self.policy.request, now)? {
            RequestDecision::Existing(id) => (id, false),
            RequestDecision::Create(actions) => {
                self.commit(&mut state, &actions, now);
                (new.id, true)
            }
        };
        let session = self.view(&state, state.session(&id).expect("just decided"), caller);
        drop(state);
        if created {
            // The warm buffer may need a refill.
            self.kick.notify_one();
        }
        Ok(Created { session, created })
    }

    async fn list(&self, caller: &Caller) -> Result<Vec<SessionView>, ServiceError> {
        let state = self.lock();
        Ok(read::session_list(&state, caller, |s| self.view(&state, s, caller)))
    }

    async fn get(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let state = self.lock();
        let session = read::visible(&state, caller, id)?;
        Ok(self.view(&state, session, caller))
    }

    async fn end(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let session = read::visible(&state, caller, id)?;
        if session.phase.is_live() {
            let reason =
                if session.user == caller.user { EndReason::UserEnded } else { EndReason::AdminEnded };
            let mut actions = vec![Action::EndSession { session: id.clone(), reason }];
            if let Some(ws) = session.workstation.clone() {
                actions.push(Action::StopWorkstation { workstation: ws });
            }
            self.commit(&mut state, &actions, now);
            self.kick.notify_one();
        }
        Ok(self.view(&state, state.session(id).expect("visible above"), caller))
    }

    async fn keepalive(&self, caller: &Caller, id: &SessionId) -> Result<SessionView, ServiceError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let session = read::visible(&state, caller, id)?;
        if !session.phase.is_live() {
            return Err(ServiceError::SessionEnded(id.clone()));
        }
        self.commit(&mut state, &[Action::Touch { session: id.clone() }], now);
        Ok(self.view(&state, state.session(id).expect("visible above"), caller))
    }

    async fn watch(
        &self,
        caller: &Caller,
        id: &SessionId,
    ) -> Result<(SessionView, broadcast::Receiver<SessionEvent>), ServiceError> {
        // Subscribe before reading, so no change between the two is missed.
        let rx = self.events.subscribe();
        let state = self.lock();
        let session = read::visible(&state, caller, id)?;
        Ok((self.view(&state, session, caller), rx))
    }

    async fn pools(&self, caller: &Caller) -> Result<Vec<PoolView>, ServiceError> {
        Ok(read::pool_list(&self.lock(), caller))
    }

    async fn put_pool(&self, caller: &Caller, spec: PoolSpec) -> Result<(PoolView, bool), ServiceError> {
        read::check_pool_write(caller, &spec)?;
        let now = self.clock.now();
        let mut state = self.lock();
        let created = state.pool(&spec.name).is_none();
        let name = spec.name.clone();
        self.commit(&mut state, &[Action::PutPool(Box::new(spec))], now);
        let actions = settle(&mut state, now, self.policy.reconcile);
        self.carry_out(&state, &actions, BTreeSet::new());
        let view = PoolView::of(&state, state.pool(&name).expect("just put"), true);
        Ok((view, created))
    }

    async fn delete_pool(&self, caller: &Caller, name: &PoolName) -> Result<(), ServiceError> {
        if !caller.admin {
            return Err(ServiceError::AdminOnly);
        }
        let now = self.clock.now();
        let mut state = self.lock();
        if state.pool(name).is_none() {
            return Err(ServiceError::PoolNotFound(name.clone()));
        }
        self.commit(&mut state, &[Action::DeletePool(name.clone())], now);
        let actions = settle(&mut state, now, self.policy.reconcile);
        self.carry_out(&state, &actions, BTreeSet::new());
        Ok(())
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    async fn decisions(&self, caller: &Caller, pool: &PoolName) -> Result<Vec<Decision>, ServiceError> {
        if !caller.admin {
            return Err(ServiceError::AdminOnly);
        }
        if self.lock().pool(pool).is_none() {
            return Err(ServiceError::PoolNotFound(pool.clone()));
        }
        let rings = self.decisions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(rings.get(pool).map(|ring| ring.iter().rev().cloned().collect()).unwrap_or_default())
    }

    async fn record_disconnect(&self, id: &SessionId) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let mut state = self.lock();
        read::live(&state, id)?;
        self.commit(&mut state, &[Action::Disconnect { session: id.clone() }], now);
        Ok(())
    }

    async fn connect_target(&self, id: &SessionId) -> Result<ConnectTarget, ServiceError> {
        read::connect_target(&self.lock(), id)
    }

    async fn record_activity(&self, id: &SessionId) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let mut state = self.lock();
        read::live(&state, id)?;
        self.commit(&mut state, &[Action::Touch { session: id.clone() }], now);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }
}
