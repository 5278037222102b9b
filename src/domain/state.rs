//! The broker's whole world as one value, with the indexes the hot paths need. Only
//! `apply` and `observe` change it; everything else reads.

use std::collections::{BTreeMap, HashMap, VecDeque};

use jiff::Timestamp;

use super::{
    PoolName, PoolSpec, Session, SessionId, SessionPhase, UserId, Workstation, WorkstationId,
    WorkstationPhase, memory::PoolMemory,
};

/// The memory of a pool that has none yet.
static NO_MEMORY: PoolMemory = PoolMemory::EMPTY;

/// Pools, sessions (live and retained ended ones) and workstations.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub(super) pools: BTreeMap<PoolName, PoolSpec>,
    pub(super) sessions: HashMap<SessionId, Session>,
    pub(super) workstations: BTreeMap<WorkstationId, Workstation>,
    /// Live session of a user in a pool: at most one.
    pub(super) live: HashMap<(UserId, PoolName), SessionId>,
    /// Idempotency keys of retained sessions.
    pub(super) idempotency: HashMap<(UserId, String), SessionId>,
    /// Queued sessions per pool, first come first.
    pub(super) queues: BTreeMap<PoolName, Vec<SessionId>>,
    /// Sessions that reached a terminal phase, oldest end first (for retention).
    pub(super) ended: VecDeque<(Timestamp, SessionId)>,
    /// Next number for generated workstation names.
    pub(super) next_workstation: u64,
    /// Recent arrivals, start and hold durations and the warm target in force, per pool.
    pub(super) memory: BTreeMap<PoolName, PoolMemory>,
}

/// How a pool's workstations are used right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Ready and not claimed.
    pub warm: u32,
    /// Starting and not reserved for a session.
    pub starting_unclaimed: u32,
    /// Starting for a session that waits on it.
    pub starting_reserved: u32,
    /// Ready and claimed by a session.
    pub in_use: u32,
    /// Being stopped (still counted against `max` until gone).
    pub stopping: u32,
    /// Sessions waiting in the queue.
    pub queued: u32,
}

impl PoolCounts {
    /// Workstations that count against the pool's `max`.
    pub fn total(&self) -> u32 {
        self.warm + self.starting_unclaimed + self.starting_reserved + self.in_use + self.stopping
    }

    /// Workstations not held by any session (warm or starting for the buffer).
    pub fn unclaimed(&self) -> u32 {
        self.warm + self.starting_unclaimed
    }
}

impl State {
    /// A state holding `pools` and nothing else.
    pub fn with_pools(pools: impl IntoIterator<Item = PoolSpec>) -> Self {
        let mut state = State::default();
        for pool in pools {
            state.pools.insert(pool.name.clone(), pool);
        }
        state
    }

    /// Restores a session read back from storage (cluster mode), keeping the indexes right.
    /// Queued sessions join their pool's queue in the order they are inserted: insert in
    /// request order.
    pub fn restore_session(&mut self, session: Session) {
        let key = (session.user.clone(), session.pool.clone());
        if session.phase.is_live() {
            self.live.insert(key, session.id.clone());
        }
        if let Some(k) = &session.idempotency_key {
            self.idempotency.insert((session.user.clone(), k.clone()), session.id.clone());
        }
        if session.phase == SessionPhase::Queued {
            self.queues.entry(session.pool.clone()).or_default().push(session.id.clone());
        }
        if session.phase.is_terminal() {
            // Kept sorted by end time: retention forgets from the front.
            let at = session.ended_at.unwrap_or(session.requested_at);
            let i = self.ended.partition_point(|(t, _)| *t <= at);
            self.ended.insert(i, (at, session.id.clone()));
        }
        self.sessions.insert(session.id.clone(), session);
    }

    /// Restores a workstation read back from storage (cluster mode).
    pub fn restore_workstation(&mut self, workstation: Workstation) {
        self.workstations.insert(workstation.id.clone(), workstation);
    }

    /// Rebuilds what a pool remembers from its session records (cluster mode rebuilds the
    /// state on every pass): request times, oldest first, and how long ended sessions held
    /// their workstations. Without it the demand-driven warm buffer would forget each request
    /// one pass after it arrived, and start and stop warm pods in turn.
    pub fn restore_memory(&mut self, pool: &PoolName, arrivals: &[Timestamp], holds: &[std::time::Duration]) {
        let Some(keep) = self.pools.get(pool).map(|p| p.autoscale.demand_window) else { return };
        let memory = self.memory.entry(pool.clone()).or_default();
        for at in arrivals {
            memory.record_arrival(*at, keep);
        }
        for held in holds {
            memory.record_hold(*held);
        }
    }

    /// Makes generated workstation names start at `next` or later.
    pub fn reserve_workstation_numbers(&mut self, next: u64) {
        self.next_workstation = self.next_workstation.max(next);
    }

    /// A pool by name.
    pub fn pool(&self, name: &PoolName) -> Option<&PoolSpec> {
        self.pools.get(name)
    }

    /// All pools, by name.
    pub fn pools(&self) -> impl Iterator<Item = &PoolSpec> {
        self.pools.values()
    }

    /// What the broker remembers of a pool's recent past (empty for a new pool).
    pub fn memory(&self, pool: &PoolName) -> &PoolMemory {
        self.memory.get(pool).unwrap_or(&NO_MEMORY)
    }

    /// A session by name.
    pub fn session(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Live sessions (Queued, Starting, Ready), in no particular order.
    pub fn live_sessions(&self) -> impl Iterator<Item = &Session> {
        self.live.values().filter_map(|id| self.sessions.get(id))
    }

    /// All sessions, live and retained, in no particular order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// A workstation by name.
    pub fn workstation(&self, id: &WorkstationId) -> Option<&Workstation> {
        self.workstations.get(id)
    }

    /// All workstations, by name.
    pub fn workstations(&self) -> impl Iterator<Item = &Workstation> {
        self.workstations.values()
    }

    /// Workstations of one pool, by name.
    pub fn pool_workstations<'a>(&'a self, pool: &'a PoolName) -> impl Iterator<Item = &'a Workstation> {
        self.workstations.values().filter(move |w| &w.pool == pool)
    }

    /// The user's live session in `pool`, if any.
    pub fn live_session(&self, user: &UserId, pool: &PoolName) -> Option<&Session> {
        self.live.get(&(user.clone(), pool.clone())).and_then(|id| self.sessions.get(id))
    }

    /// The session an Idempotency-Key of this user already created, if retained.
    pub fn idempotent_session(&self, user: &UserId, key: &str) -> Option<&Session> {
        self.idempotency.get(&(user.clone(), key.to_owned())).and_then(|id| self.sessions.get(id))
    }

    /// How many live sessions the user holds across all pools.
    pub fn live_sessions_of(&self, user: &UserId) -> usize {
        self.live.keys().filter(|(u, _)| u == user).count()
    }

    /// The pool's queue, first come first.
    pub fn queue(&self, pool: &PoolName) -> &[SessionId] {
        self.queues.get(pool).map(Vec::as_slice).unwrap_or(&[])
    }

    /// 1-based queue position of a queued session.
    pub fn queue_position(&self, session: &Session) -> Option<usize> {
        if session.phase != SessionPhase::Queued {
            return None;
        }
        self.queue(&session.pool).iter().position(|id| id == &session.id).map(|i| i + 1)
    }

    /// How the pool's workstations are used.
    pub fn counts(&self, pool: &PoolName) -> PoolCounts {
        let mut c = PoolCounts { queued: self.queue(pool).len() as u32, ..PoolCounts::default() };
        for w in self.pool_workstations(pool) {
            match (w.phase, w.session.is_some()) {
                (WorkstationPhase::Ready, false) => c.warm += 1,
                (WorkstationPhase::Ready, true) => c.in_use += 1,
                (WorkstationPhase::Starting, false) => c.starting_unclaimed += 1,
                (WorkstationPhase::Starting, true) => c.starting_reserved += 1,
                (WorkstationPhase::Stopping, _) => c.stopping += 1,
            }
        }
        c
    }

    /// A warm (ready, unclaimed) workstation of the pool; the oldest first, so that names
    /// and tests are deterministic.
    pub fn warm_workstation<'a>(&'a self, pool: &'a PoolName) -> Option<&'a Workstation> {
        self.pool_workstations(pool)
            .filter(|w| w.phase == WorkstationPhase::Ready && w.session.is_none())
            .min_by(|a, b| (a.ready_at, &a.id).cmp(&(b.ready_at, &b.id)))
    }

    /// A starting workstation of the pool that no session waits on yet.
    pub fn unreserved_starting<'a>(&'a self, pool: &'a PoolName) -> Option<&'a Workstation> {
        self.pool_workstations(pool)
            .filter(|w| w.phase == WorkstationPhase::Starting && w.session.is_none())
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
    }

    /// The name of a workstation started for one session. Derived from the session, so that two
    /// allocators racing (in cluster mode) create the same object, and the second create fails.
    pub fn session_workstation_name(session: &SessionId) -> WorkstationId {
        WorkstationId(format!("ws-{session}"))
    }

    /// The name the next generated workstation of `pool` gets, `offset` names ahead.
    pub fn workstation_name(&self, pool: &PoolName, offset: u64) -> (WorkstationId, u64) {
        let n = self.next_workstation + offset;
        (WorkstationId(format!("{pool}-ws-{n}")), n)
    }
}
