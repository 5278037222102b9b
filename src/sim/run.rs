//! The simulation loop: the production domain code (`decide_request`, `apply`, `observe`,
//! `settle`) in virtual time, with a virtual backend whose workstations become ready after
//! the pool's start delay and are gone after the stop delay. Drafters from the trace ask for a
//! workstation, are active (keepalive) while they work, and end the session when done.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashSet},
    time::Duration,
};

use jiff::{Timestamp, civil::Time};

use super::{config::SimConfig, trace::Trace};
use crate::domain::{
    Action, Caller, Decision, EndReason, Endpoint, Handover, NewSession, Observation, PoolSpec,
    ReconcilePolicy, RequestDecision, RequestPolicy, SessionId, SessionPhase, State, UserId, WorkstationId,
    apply, decide_request, observe, settle,
    time::{after, elapsed},
};

/// Pool specs a simulation runs with, and the policy's name in the report.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name in the report (`cadbroker`, `fixed buffer`, `schedule only`).
    pub name: String,
    /// What it does, in one line.
    pub description: String,
    /// The pools, as this policy configures them.
    pub pools: Vec<PoolSpec>,
}

/// One point of the time series (every virtual minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When.
    pub at: Timestamp,
    /// Sessions that want a workstation: in use, starting for a session, or queued.
    pub demand: u32,
    /// Workstations held by a session and ready.
    pub in_use: u32,
    /// Unclaimed workstations: ready (warm) or starting for the buffer.
    pub warm: u32,
    /// Sessions in the queue.
    pub queued: u32,
    /// The autoscaler's warm target in force (all pools).
    pub target: u32,
}

/// Workstation-hours by what the workstations were doing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hours {
    /// Ready and held by a session.
    pub in_use: f64,
    /// Unclaimed: ready and waiting, or starting for the buffer.
    pub idle: f64,
    /// Starting for a session that waits on it.
    pub starting: f64,
    /// Being stopped.
    pub stopping: f64,
    /// GPU-hours of all of the above.
    pub gpu: f64,
}

/// What happened in one simulation run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The policy's name.
    pub policy: String,
    /// Its description.
    pub description: String,
    /// Sessions created from the trace.
    pub requests: u32,
    /// Of those, served at once by a warm workstation.
    pub instant: u32,
    /// Requests of users who still held a live session in that pool (returned it, not counted).
    pub duplicates: u32,
    /// Requests refused (per-user cap).
    pub refused: u32,
    /// Sessions still waiting when the simulation ended.
    pub unserved: u32,
    /// Wait of each created session (0 for instant ones; until the end for unserved ones).
    pub waits: Vec<Duration>,
    /// When each created session was requested and whether it was served instantly.
    pub served: Vec<(Timestamp, bool)>,
    /// Workstation-hours.
    pub hours: Hours,
    /// Sessions ended by the idle timeout.
    pub idle_ends: u32,
    /// Sessions ended at the maximum lifetime.
    pub lifetime_ends: u32,
    /// The time series, one sample a minute.
    pub samples: Vec<Sample>,
    /// Every decision, in order.
    pub decisions: Vec<Decision>,
    /// Simulated span.
    pub from: Timestamp,
    /// End of the simulated span.
    pub to: Timestamp,
}

impl Outcome {
    /// Share of created sessions served instantly, 0..=1.
    pub fn instant_share(&self) -> f64 {
        if self.requests == 0 { 1.0 } else { f64::from(self.instant) / f64::from(self.requests) }
    }

    /// Idle workstation-hours per in-use workstation-hour.
    pub fn idle_ratio(&self) -> f64 {
        if self.hours.in_use == 0.0 { 0.0 } else { self.hours.idle / self.hours.in_use }
    }

    /// The `q`-quantile of waits (nearest rank).
    pub fn wait_quantile(&self, q: f64) -> Duration {
        let mut w = self.waits.clone();
        w.sort();
        if w.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * w.len() as f64).ceil() as usize).clamp(1, w.len());
        w[rank - 1]
    }
}

/// Events of the virtual world, in the order they are handled within one instant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Ready(WorkstationId),
    Gone(WorkstationId),
    UserEnds(SessionId),
    Arrive(usize),
    Tick,
}

struct Sim<'a> {
    config: &'a SimConfig,
    trace: &'a Trace,
    state: State,
    now: Timestamp,
    queue: BinaryHeap<Reverse<(Timestamp, Event, u64)>>,
    seq: u64,
    /// Sessions waiting to be ready: the trace row that asked.
    waiting: BTreeMap<SessionId, usize>,
    /// Ready sessions whose drafter still works: when the drafter ends it.
    working: BTreeMap<SessionId, Timestamp>,
    stopping: HashSet<WorkstationId>,
    last: Timestamp,
    next_sample: Timestamp,
    out: Outcome,
}

/// Runs `policy` over `trace`; `progress` is called with the share of virtual time done.
pub fn simulate(
    config: &SimConfig,
    policy: &Policy,
    trace: &Trace,
    progress: &mut dyn FnMut(f64),
) -> Outcome {
    let (from, to) = span(config, trace);
    let mut sim = Sim {
        config,
        trace,
        state: State::with_pools(policy.pools.iter().cloned()),
        now: from,
        queue: BinaryHeap::new(),
        seq: 0,
        waiting: BTreeMap::new(),
        working: BTreeMap::new(),
        stopping: HashSet::new(),
        last: from,
        next_sample: from,
        out: Outcome {
            policy: policy.name.clone(),
            description: policy.description.clone(),
            from,
            to,
            ..Outcome::default()
        },
    };
    for (i, a) in trace.arrivals.iter().enumerate() {
        sim.push(a.at, Event::Arrive(i));
    }
    sim.push(from, Event::Tick);
    let total = elapsed(from, to).as_secs_f64().max(1.0);
    let mut reported = 0.0;
    while let Some(at) = sim.next_instant() {
        sim.advance(at);
        let done = (elapsed(from, at).as_secs_f64() / total).min(1.0);
        if done - reported >= 0.01 {
            progress(done);
            reported = done;
        }
        sim.step();
    }
    progress(1.0);
    let end = sim.now.max(to);
    sim.advance(end);
    sim.out.to = end;
    sim.out.unserved = sim.waiting.len() as u32;
    let waits: Vec<_> = sim.waiting.values().map(|&i| elapsed(trace.arrivals[i].at, end)).collect();
    sim.out.waits.extend(waits);
    sim.out
}

/// Local midnight before the first request to local midnight after the last one.
fn span(config: &SimConfig, trace: &Trace) -> (Timestamp, Timestamp) {
    let tz = config.settings.time_zone.tz();
    let midnight =
        |t: Timestamp| tz.to_timestamp(tz.to_datetime(t).date().to_datetime(Time::midnight())).unwrap_or(t);
    let first = trace.arrivals.first().map_or(Timestamp::UNIX_EPOCH, |a| a.at);
    let last = trace.arrivals.last().map_or(first, |a| a.at);
    let next_day = tz.to_datetime(last).date().tomorrow().ok();
    let end = next_day.and_then(|d| tz.to_timestamp(d.to_datetime(Time::midnight())).ok()).unwrap_or(last);
    (midnight(first), end)
}

impl Sim<'_> {
    fn push(&mut self, at: Timestamp, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, event, self.seq)));
    }

    /// The next instant anything happens; `None` once the day is over and everyone left.
    fn next_instant(&self) -> Option<Timestamp> {
        let Reverse((at, _, _)) = self.queue.peek()?;
        let live = !self.working.is_empty() || !self.waiting.is_empty();
        // After the span, run on only while sessions are live, and at most a day more (a pool
        // far too small for its trace would otherwise queue for weeks of virtual time).
        if *at >= self.out.to && (!live || *at > after(self.out.to, Duration::from_secs(86_400))) {
            return None;
        }
        Some(*at)
    }

    /// Moves the clock to `to`, integrating workstation-hours and sampling on the way.
    fn advance(&mut self, to: Timestamp) {
        while self.next_sample <= to {
            let sample = self.sample(self.next_sample);
            self.out.samples.push(sample);
            self.next_sample = after(self.next_sample, Duration::from_secs(60));
        }
        let hours = elapsed(self.last, to).as_secs_f64() / 3600.0;
        if hours > 0.0 {
            for pool in self.state.pools() {
                let c = self.state.counts(&pool.name);
                let h = &mut self.out.hours;
                h.in_use += f64::from(c.in_use) * hours;
                h.idle += f64::from(c.unclaimed()) * hours;
                h.starting += f64::from(c.starting_reserved) * hours;
                h.stopping += f64::from(c.stopping) * hours;
                h.gpu += f64::from(c.total() * pool.gpus_per_workstation) * hours;
            }
        }
        self.last = to;
        self.now = to;
    }

    fn sample(&self, at: Timestamp) -> Sample {
        let mut s = Sample { at, demand: 0, in_use: 0, warm: 0, queued: 0, target: 0 };
        for pool in self.state.pools() {
            let c = self.state.counts(&pool.name);
            s.demand += c.in_use + c.starting_reserved + c.queued;
            s.in_use += c.in_use;
            s.warm += c.unclaimed();
            s.queued += c.queued;
            s.target += self.state.memory(&pool.name).scale().warm;
        }
        s
    }

    /// Handles everything due now, then reconciles as the controller would.
    fn step(&mut self) {
        let mut actions = Vec::new();
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > self.now {
                break;
            }
            let Reverse((_, event, _)) = self.queue.pop().expect("peeked");
            self.handle(event, &mut actions);
        }
        let policy = self.reconcile_policy();
        let settled = settle(&mut self.state, self.now, policy);
        actions.extend(settled);
        self.carry_out(&actions);
        self.promote();
    }

    fn reconcile_policy(&self) -> ReconcilePolicy {
        ReconcilePolicy { retention: self.config.broker.session_retention, handover: Handover::Allocator }
    }

    fn handle(&mut self, event: Event, actions: &mut Vec<Action>) {
        let now = self.now;
        match event {
            Event::Ready(workstation) => {
                let endpoint = Endpoint { host: "127.0.0.1".into(), port: 0 };
                observe(
                    &mut self.state,
                    &Observation::Ready { workstation, node: "virtual".into(), endpoint },
                    now,
                );
            }
            Event::Gone(workstation) => {
                self.stopping.remove(&workstation);
                observe(&mut self.state, &Observation::Gone { workstation, lost: false }, now);
            }
            Event::UserEnds(session) => {
                self.working.remove(&session);
                let Some(s) = self.state.session(&session).filter(|s| s.phase.is_live()) else { return };
                let mut end =
                    vec![Action::EndSession { session: session.clone(), reason: EndReason::UserEnded }];
                end.extend(s.workstation.clone().map(|workstation| Action::StopWorkstation { workstation }));
                self.apply_all(&end, actions);
            }
            Event::Arrive(i) => self.arrive(i, actions),
            Event::Tick => {
                self.keep_active(actions);
                self.push(after(now, self.config.tick), Event::Tick);
            }
        }
    }

    fn apply_all(&mut self, batch: &[Action], actions: &mut Vec<Action>) {
        for a in batch {
            apply(&mut self.state, a, self.now);
        }
        actions.extend_from_slice(batch);
    }

    fn arrive(&mut self, i: usize, actions: &mut Vec<Action>) {
        let a = &self.trace.arrivals[i];
        let caller = Caller { user: UserId(a.user.clone()), groups: None, admin: true };
        let id = SessionId(format!("s{}", i + 1));
        let req = NewSession { id: id.clone(), pool: a.pool.clone(), idempotency_key: None };
        let policy = RequestPolicy {
            max_sessions_per_user: self.config.broker.max_sessions_per_user,
            handover: Handover::Allocator,
        };
        match decide_request(&self.state, &caller, &req, policy, self.now) {
            Ok(RequestDecision::Create(batch)) => {
                self.apply_all(&batch, actions);
                self.out.requests += 1;
                let instant = self.state.session(&id).is_some_and(|s| s.phase == SessionPhase::Ready);
                self.out.instant += u32::from(instant);
                self.out.served.push((self.now, instant));
                self.waiting.insert(id, i);
            }
            Ok(RequestDecision::Existing(_)) => self.out.duplicates += 1,
            Err(_) => self.out.refused += 1,
        }
    }

    /// Drafters who are working count as active, as their desktop traffic would.
    fn keep_active(&mut self, actions: &mut Vec<Action>) {
        let stale = crate::domain::time::before(self.now, self.config.settings.activity_interval);
        let touch: Vec<_> = self
            .working
            .keys()
            .filter(|id| self.state.session(id).and_then(|s| s.last_activity).is_some_and(|t| t <= stale))
            .map(|id| Action::Touch { session: id.clone() })
            .collect();
        self.apply_all(&touch, actions);
    }

    /// The virtual backend carries out starts and stops; decisions and forced ends are noted.
    fn carry_out(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::StartWorkstation { workstation, pool, .. } => {
                    let delay = self.config.start_delays.get(pool).copied().unwrap_or_default();
                    self.push(after(self.now, delay), Event::Ready(workstation.clone()));
                }
                Action::StopWorkstation { workstation }
                    if self.state.workstation(workstation).is_some()
                        && self.stopping.insert(workstation.clone()) =>
                {
                    let at = after(self.now, self.config.settings.stop_delay);
                    self.push(at, Event::Gone(workstation.clone()));
                }
                Action::Record(decision) => self.out.decisions.push((**decision).clone()),
                Action::EndSession { session, reason } => {
                    match reason {
                        EndReason::IdleTimeout => self.out.idle_ends += 1,
                        EndReason::MaxLifetime => self.out.lifetime_ends += 1,
                        _ => {}
                    }
                    self.working.remove(session);
                }
                _ => {}
            }
        }
    }

    /// Sessions that became ready start their work; the wait is recorded.
    fn promote(&mut self) {
        let mut done = Vec::new();
        for (id, &i) in &self.waiting {
            let Some(s) = self.state.session(id) else {
                done.push((id.clone(), i, None));
                continue;
            };
            match s.phase {
                SessionPhase::Ready => done.push((id.clone(), i, s.ready_at)),
                p if !p.is_live() => done.push((id.clone(), i, None)),
                _ => {}
            }
        }
        for (id, i, ready_at) in done {
            self.waiting.remove(&id);
            let a = &self.trace.arrivals[i];
            if let Some(ready_at) = ready_at {
                self.out.waits.push(elapsed(a.at, ready_at));
                let ends = after(ready_at, a.duration);
                self.working.insert(id.clone(), ends);
                self.push(ends, Event::UserEnds(id));
            }
        }
    }
}
