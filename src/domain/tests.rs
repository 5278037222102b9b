//! Scenario and property tests of the domain: requests, queueing, the warm buffer and limits.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;

const POLICY: RequestPolicy = RequestPolicy { max_sessions_per_user: 3, handover: Handover::Allocator };
const RECONCILE: ReconcilePolicy =
    ReconcilePolicy { retention: Duration::from_secs(3600), handover: Handover::Allocator };

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn user(name: &str) -> Caller {
    Caller { user: UserId(format!("iss#{name}")), groups: Some(Default::default()), admin: false }
}

fn request(state: &mut State, who: &str, pool: &str, id: &str, now: Timestamp) -> SessionId {
    let req = NewSession { id: SessionId::from(id), pool: PoolName::from(pool), idempotency_key: None };
    match decide_request(state, &user(who), &req, POLICY, now).unwrap() {
        RequestDecision::Existing(id) => id,
        RequestDecision::Create(actions) => {
            for a in &actions {
                apply(state, a, now);
            }
            req.id
        }
    }
}

/// Plays a backend that starts and stops everything at once.
fn backend_catches_up(state: &mut State, now: Timestamp) {
    let pending: Vec<_> = state.workstations().map(|w| (w.id.clone(), w.phase)).collect();
    for (id, phase) in pending {
        let obs = match phase {
            WorkstationPhase::Starting => Observation::Ready {
                workstation: id.clone(),
                node: "node-0".into(),
                endpoint: Endpoint { host: "127.0.0.1".into(), port: 9 },
            },
            WorkstationPhase::Stopping => Observation::Gone { workstation: id, lost: false },
            WorkstationPhase::Ready => continue,
        };
        observe(state, &obs, now);
    }
}

fn warmed_up(pool: PoolSpec) -> State {
    let mut state = State::with_pools([pool]);
    settle(&mut state, t(0), RECONCILE);
    backend_catches_up(&mut state, t(1));
    settle(&mut state, t(1), RECONCILE);
    state
}

fn phase(state: &State, id: &SessionId) -> SessionPhase {
    state.session(id).unwrap().phase
}

#[test]
fn a_request_claims_a_warm_workstation_and_is_ready_at_once() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 2));
    assert_eq!(state.counts(&"cad".into()).warm, 2);
    let id = request(&mut state, "alice", "cad", "s1", t(2));
    assert_eq!(phase(&state, &id), SessionPhase::Ready);
    settle(&mut state, t(2), RECONCILE);
    let c = state.counts(&"cad".into());
    assert_eq!((c.in_use, c.warm, c.starting_unclaimed), (1, 1, 1), "the buffer refills");
}

#[test]
fn without_a_warm_workstation_a_request_starts_one() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 0));
    let id = request(&mut state, "alice", "cad", "s1", t(2));
    assert_eq!(phase(&state, &id), SessionPhase::Starting);
    backend_catches_up(&mut state, t(3));
    settle(&mut state, t(3), RECONCILE);
    assert_eq!(phase(&state, &id), SessionPhase::Ready);
}

#[test]
fn a_full_pool_queues_in_order_and_serves_the_head_when_a_session_ends() {
    let mut state = warmed_up(mk_pool("cad", 0, 1, 1));
    let first = request(&mut state, "alice", "cad", "s1", t(2));
    let second = request(&mut state, "bob", "cad", "s2", t(3));
    let third = request(&mut state, "carol", "cad", "s3", t(4));
    assert_eq!(phase(&state, &second), SessionPhase::Queued);
    assert_eq!(state.queue_position(state.session(&second).unwrap()), Some(1));
    assert_eq!(state.queue_position(state.session(&third).unwrap()), Some(2));
    apply(&mut state, &Action::EndSession { session: first.clone(), reason: EndReason::UserEnded }, t(5));
    assert_eq!(phase(&state, &first), SessionPhase::Ending);
    settle(&mut state, t(5), RECONCILE);
    assert_eq!(phase(&state, &second), SessionPhase::Queued, "the pool is full until the old one stops");
    backend_catches_up(&mut state, t(6));
    assert_eq!(phase(&state, &first), SessionPhase::Ended);
    settle(&mut state, t(6), RECONCILE);
    assert_eq!(phase(&state, &second), SessionPhase::Starting);
    assert_eq!(state.queue_position(state.session(&third).unwrap()), Some(1));
}

#[test]
fn a_repeated_request_returns_the_live_session() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 1));
    let a = request(&mut state, "alice", "cad", "s1", t(2));
    let b = request(&mut state, "alice", "cad", "s2", t(3));
    assert_eq!(a, b);
    assert!(state.session(&"s2".into()).is_none());
}

#[test]
fn an_idempotency_key_reused_for_another_pool_is_refused() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 1));
    state = {
        let mut s = state;
        apply(&mut s, &Action::PutPool(Box::new(mk_pool("gis", 0, 4, 0))), t(1));
        s
    };
    let mut req = NewSession { id: "s1".into(), pool: "cad".into(), idempotency_key: Some("k".into()) };
    let RequestDecision::Create(actions) = decide_request(&state, &user("al"), &req, POLICY, t(2)).unwrap()
    else {
        panic!("first request creates")
    };
    actions.iter().for_each(|a| apply(&mut state, a, t(2)));
    req.pool = "gis".into();
    req.id = "s2".into();
    let err = decide_request(&state, &user("al"), &req, POLICY, t(3)).unwrap_err();
    assert!(matches!(err, RequestError::IdempotencyConflict { .. }));
}

#[test]
fn the_per_user_cap_counts_live_sessions_across_pools() {
    let pools = ["a", "b", "c", "d"].map(|p| mk_pool(p, 0, 4, 0));
    let mut state = State::with_pools(pools);
    for (i, p) in ["a", "b", "c"].iter().enumerate() {
        request(&mut state, "al", p, &format!("s{i}"), t(1));
    }
    let req = NewSession { id: "s9".into(), pool: "d".into(), idempotency_key: None };
    assert_eq!(decide_request(&state, &user("al"), &req, POLICY, t(2)), Err(RequestError::UserLimit(3)));
}

#[test]
fn an_idle_session_is_warned_then_ended_and_activity_lifts_the_warning() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 1));
    let id = request(&mut state, "al", "cad", "s1", t(0));
    // Defaults: idle 30 min, warn 5 min before.
    settle(&mut state, t(24 * 60), RECONCILE);
    assert!(state.session(&id).unwrap().warning.is_none());
    settle(&mut state, t(25 * 60), RECONCILE);
    let w = state.session(&id).unwrap().warning.expect("warned 5 min ahead");
    assert_eq!((w.reason, w.ends_at), (EndReason::IdleTimeout, t(30 * 60)));
    apply(&mut state, &Action::Touch { session: id.clone() }, t(26 * 60));
    assert!(state.session(&id).unwrap().warning.is_none(), "activity lifts an idle warning");
    settle(&mut state, t(51 * 60), RECONCILE);
    assert!(state.session(&id).unwrap().warning.is_some());
    settle(&mut state, t(56 * 60), RECONCILE);
    let s = state.session(&id).unwrap();
    assert_eq!((s.phase, s.end_reason), (SessionPhase::Ending, Some(EndReason::IdleTimeout)));
}

#[test]
fn a_session_past_its_deadline_without_a_warning_is_warned_first() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 1));
    let id = request(&mut state, "al", "cad", "s1", t(0));
    // The broker was away: the first look is far past both deadlines.
    settle(&mut state, t(20 * 3600), RECONCILE);
    let s = state.session(&id).unwrap();
    assert_eq!(s.phase, SessionPhase::Ready);
    assert_eq!(s.warning.unwrap().ends_at, t(20 * 3600 + 300));
}

#[test]
fn deleting_a_pool_ends_its_sessions_and_stops_its_workstations() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 2));
    let id = request(&mut state, "al", "cad", "s1", t(2));
    apply(&mut state, &Action::DeletePool("cad".into()), t(3));
    settle(&mut state, t(3), RECONCILE);
    assert_eq!(state.session(&id).unwrap().end_reason, Some(EndReason::PoolDeleted));
    assert!(state.workstations().all(|w| w.phase == WorkstationPhase::Stopping));
    backend_catches_up(&mut state, t(4));
    assert_eq!(state.workstations().count(), 0);
}

#[test]
fn ended_sessions_are_forgotten_after_retention() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 0));
    let id = request(&mut state, "al", "cad", "s1", t(2));
    apply(&mut state, &Action::EndSession { session: id.clone(), reason: EndReason::UserEnded }, t(3));
    settle(&mut state, t(3), RECONCILE);
    backend_catches_up(&mut state, t(3));
    assert_eq!(phase(&state, &id), SessionPhase::Ended);
    settle(&mut state, t(3 + 3599), RECONCILE);
    assert!(state.session(&id).is_some());
    settle(&mut state, t(3 + 3600), RECONCILE);
    assert!(state.session(&id).is_none());
}

// === property tests ===

#[derive(Debug, Clone)]
enum Op {
    Request {
        user: u8,
        pool: u8,
    },
    End {
        user: u8,
        pool: u8,
    },
    BackendStep,
    Touch {
        user: u8,
        pool: u8,
    },
    Advance {
        secs: u16,
    },
    SetCapacity {
        pool: u8,
        max: u8,
        warm: u8,
        min: u8,
    },
    Disconnect {
        user: u8,
        pool: u8,
    },
    /// An every-day UTC window from `start` for `hours` (0: no schedule).
    SetSchedule {
        pool: u8,
        start: u8,
        hours: u8,
        warm: u8,
        min: u8,
    },
    AdvanceHours {
        hours: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 0u8..2).prop_map(|(user, pool)| Op::Request { user, pool }),
        2 => (0u8..6, 0u8..2).prop_map(|(user, pool)| Op::End { user, pool }),
        3 => Just(Op::BackendStep),
        1 => (0u8..6, 0u8..2).prop_map(|(user, pool)| Op::Touch { user, pool }),
        2 => (1u16..2000).prop_map(|secs| Op::Advance { secs }),
        1 => (0u8..2, 1u8..5, 0u8..5, 0u8..5).prop_map(|(pool, max, warm, min)| Op::SetCapacity { pool, max, warm, min }),
        1 => (0u8..6, 0u8..2).prop_map(|(user, pool)| Op::Disconnect { user, pool }),
        1 => (0u8..2, 0u8..24, 0u8..6, 0u8..5, 0u8..3)
            .prop_map(|(pool, start, hours, warm, min)| Op::SetSchedule { pool, start, hours, warm, min }),
        1 => (1u8..5).prop_map(|hours| Op::AdvanceHours { hours }),
    ]
}

fn pool_name(p: u8) -> PoolName {
    PoolName(format!("pool-{p}"))
}

struct Checker {
    warned: HashSet<SessionId>,
    creation_order: Vec<SessionId>,
    /// Per pool, since when a lower warm target has been waiting for its cooldown.
    cooldown_from: HashMap<PoolName, Timestamp>,
}

/// `settle`, checking every batch against the state it was computed on.
fn settle_checked(state: &mut State, now: Timestamp, checker: &mut Checker) -> Vec<Action> {
    let mut all = Vec::new();
    for _ in 0..8 {
        let batch = reconcile(state, now, RECONCILE);
        if batch.is_empty() {
            break;
        }
        checker.check_batch(state, &batch, now);
        for a in &batch {
            apply(state, a, now);
        }
        all.extend(batch);
    }
    all
}

impl Checker {
    /// Scaling never stops a workstation a live session holds, only limits and a deleted pool
    /// end sessions, forced ends come `warnBefore` after their warning, and a lower warm
    /// target comes only after its cooldown.
    fn check_batch(&mut self, state: &State, batch: &[Action], now: Timestamp) {
        let ended: HashSet<_> = batch
            .iter()
            .filter_map(|a| match a {
                Action::EndSession { session, reason: EndReason::PoolDeleted } => Some(session.clone()),
                _ => None,
            })
            .collect();
        for a in batch {
            match a {
                Action::StopWorkstation { workstation } => {
                    let holder = state.workstation(workstation).and_then(|w| w.session.as_ref());
                    let live = holder
                        .and_then(|id| state.session(id))
                        .filter(|s| matches!(s.phase, SessionPhase::Starting | SessionPhase::Ready));
                    if let Some(s) = live {
                        assert!(
                            ended.contains(&s.id),
                            "scaling stopped {workstation}, held by live {}",
                            s.id
                        );
                    }
                }
                Action::EndSession { session, reason } => {
                    let s = state.session(session).unwrap();
                    let limits = state.pool(&s.pool).map(|p| p.limits);
                    match reason {
                        EndReason::IdleTimeout | EndReason::MaxLifetime => {
                            let w = s.warning.expect("a forced end has a pending warning");
                            assert_eq!(w.reason, *reason, "warned for another reason");
                            let warn_before = limits.unwrap().warn_before;
                            assert!(
                                time::elapsed(w.at, now) >= warn_before,
                                "ended less than warnBefore after the warning"
                            );
                        }
                        EndReason::PoolDeleted => assert!(limits.is_none()),
                        other => panic!("reconcile ended {session} for {other:?}"),
                    }
                }
                Action::Record(d) => {
                    let cooldown = state.pool(&d.pool).unwrap().autoscale.scale_down_cooldown;
                    match d.kind {
                        DecisionKind::ScaleUp => {
                            self.cooldown_from.remove(&d.pool);
                        }
                        DecisionKind::Hold => {
                            self.cooldown_from.insert(d.pool.clone(), now);
                        }
                        DecisionKind::ScaleDown => {
                            let from = self.cooldown_from.insert(d.pool.clone(), now);
                            if !cooldown.is_zero() {
                                let from = from.expect("a lower target follows a hold");
                                assert!(time::elapsed(from, now) >= cooldown, "lowered within the cooldown");
                            }
                            assert!(d.inputs.warm_to < d.inputs.warm_from);
                        }
                        DecisionKind::Warn | DecisionKind::End => assert!(d.session.is_some()),
                    }
                }
                _ => {}
            }
        }
    }

    fn check(&mut self, state: &State, applied: &[Action], now: Timestamp) {
        for a in applied {
            match a {
                Action::Warn { session, .. } => {
                    self.warned.insert(session.clone());
                }
                Action::EndSession { session, reason: EndReason::IdleTimeout | EndReason::MaxLifetime } => {
                    assert!(self.warned.contains(session), "forced end of {session} without a warning");
                }
                Action::CreateSession(s) => self.creation_order.push(s.id.clone()),
                _ => {}
            }
        }
        let mut holders = HashSet::new();
        for w in state.workstations() {
            if let Some(s) = &w.session {
                assert!(holders.insert(s.clone()), "{s} holds two workstations");
            }
        }
        for pool in state.pools() {
            let c = state.counts(&pool.name);
            let busy = c.in_use + c.starting_reserved;
            assert!(
                c.total() <= pool.capacity.max.max(busy + c.stopping),
                "pool {} above max: {c:?}",
                pool.name
            );
            // Never below the minimum in force (the schedule's or capacity.min), as far as
            // workstations being stopped leave room.
            let min = autoscale::evaluate(pool, state.memory(&pool.name), now).min;
            let running = c.total() - c.stopping;
            assert!(
                running >= min.min(pool.capacity.max.saturating_sub(c.stopping)),
                "pool {} below min {min}: {c:?}",
                pool.name
            );
            let q = state.queue(&pool.name);
            let order: Vec<_> = self.creation_order.iter().filter(|id| q.contains(id)).collect();
            assert!(order.iter().copied().eq(q.iter()), "queue order changed");
        }
        let mut live = HashSet::new();
        for s in state.live_sessions() {
            assert!(live.insert((s.user.clone(), s.pool.clone())), "two live sessions for one user and pool");
            if s.phase == SessionPhase::Ready {
                let w = state.workstation(s.workstation.as_ref().unwrap()).unwrap();
                assert_eq!(w.session.as_ref(), Some(&s.id));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold_under_any_sequence_of_requests_ends_and_backend_events(ops in prop::collection::vec(op(), 1..80)) {
        let mut state = State::with_pools([mk_pool("pool-0", 0, 3, 1), mk_pool("pool-1", 1, 2, 0)]);
        let mut now = t(0);
        let mut checker = Checker { warned: HashSet::new(), creation_order: Vec::new(), cooldown_from: HashMap::new() };
        let mut n = 0;
        for op in ops {
            let mut applied = Vec::new();
            match op {
                Op::Request { user: u, pool } => {
                    n += 1;
                    let req = NewSession { id: SessionId(format!("s{n}")), pool: pool_name(pool), idempotency_key: None };
                    let caller = user(&format!("u{u}"));
                    let before = state.live_session(&caller.user, &req.pool).map(|s| s.id.clone());
                    match decide_request(&state, &caller, &req, POLICY, now) {
                        Ok(RequestDecision::Existing(id)) => prop_assert_eq!(Some(id), before),
                        Ok(RequestDecision::Create(actions)) => {
                            prop_assert!(before.is_none(), "created a second session");
                            applied.extend(actions);
                        }
                        Err(e) => prop_assert!(matches!(e, RequestError::UserLimit(_)), "{e}"),
                    }
                }
                Op::End { user: u, pool } => {
                    if let Some(s) = state.live_session(&user(&format!("u{u}")).user, &pool_name(pool)) {
                        applied.push(Action::EndSession { session: s.id.clone(), reason: EndReason::UserEnded });
                    }
                }
                Op::Touch { user: u, pool } => {
                    if let Some(s) = state.live_session(&user(&format!("u{u}")).user, &pool_name(pool)) {
                        applied.push(Action::Touch { session: s.id.clone() });
                    }
                }
                Op::BackendStep => backend_catches_up(&mut state, now),
                Op::Advance { secs } => now = after_secs(now, secs),
                Op::SetCapacity { pool, max, warm, min } => {
                    let mut spec = state.pool(&pool_name(pool)).unwrap().clone();
                    spec.capacity = Capacity { max: max as u32, warm: (warm as u32).min(max as u32), min: (min as u32).min(max as u32) };
                    applied.push(Action::PutPool(Box::new(spec)));
                }
                Op::Disconnect { user: u, pool } => {
                    if let Some(s) = state.live_session(&user(&format!("u{u}")).user, &pool_name(pool)) {
                        applied.push(Action::Disconnect { session: s.id.clone() });
                    }
                }
                Op::SetSchedule { pool, start, hours, warm, min } => {
                    let mut spec = state.pool(&pool_name(pool)).unwrap().clone();
                    spec.schedules = (hours > 0).then(|| every_day_utc(start, hours, warm, min)).into_iter().collect();
                    applied.push(Action::PutPool(Box::new(spec)));
                }
                Op::AdvanceHours { hours } => now = time::after(now, Duration::from_secs(u64::from(hours) * 3600)),
            }
            for a in &applied {
                apply(&mut state, a, now);
            }
            applied.extend(settle_checked(&mut state, now, &mut checker));
            checker.check(&state, &applied, now);
        }
    }
}

fn every_day_utc(start: u8, hours: u8, warm: u8, min: u8) -> ScheduleWindow {
    let at = |h: u8| jiff::civil::time((h % 24) as i8, 0, 0, 0);
    ScheduleWindow {
        name: "window".into(),
        time_zone: Zone::parse("UTC").unwrap(),
        days: Vec::new(),
        start: at(start),
        end: at(start + hours),
        dates: Vec::new(),
        except_dates: Vec::new(),
        warm: Some(warm.into()),
        min: Some(min.into()),
    }
}

fn after_secs(t: Timestamp, secs: u16) -> Timestamp {
    time::after(t, Duration::from_secs(secs as u64))
}

const NAMED: RequestPolicy = RequestPolicy { max_sessions_per_user: 3, handover: Handover::NamedRequestOnly };
const NAMED_RECONCILE: ReconcilePolicy =
    ReconcilePolicy { retention: Duration::from_secs(3600), handover: Handover::NamedRequestOnly };

fn request_named(state: &mut State, who: &str, id: &str, now: Timestamp) -> SessionId {
    let req = NewSession { id: SessionId::from(id), pool: PoolName::from("cad"), idempotency_key: None };
    let RequestDecision::Create(actions) = decide_request(state, &user(who), &req, NAMED, now).unwrap()
    else {
        panic!("a new session")
    };
    actions.iter().for_each(|a| apply(state, a, now));
    req.id
}

#[test]
fn when_only_named_requests_take_buffer_workstations_the_allocator_starts_one_for_the_session() {
    let mut state = warmed_up(mk_pool("cad", 0, 4, 2));
    let id = request_named(&mut state, "alice", "s1", t(2));
    assert_eq!(phase(&state, &id), SessionPhase::Starting);
    let held = state.session(&id).unwrap().workstation.clone().unwrap();
    assert_eq!(held, State::session_workstation_name(&id), "its own workstation, not a warm one");
    assert_eq!(state.counts(&"cad".into()).warm, 2, "the warm buffer is untouched");
}

#[test]
fn at_the_maximum_a_queued_session_gets_room_by_stopping_an_unclaimed_workstation() {
    let mut state = warmed_up(mk_pool("cad", 0, 2, 2));
    let id = request_named(&mut state, "alice", "s1", t(2));
    assert_eq!(phase(&state, &id), SessionPhase::Queued);
    settle(&mut state, t(2), NAMED_RECONCILE);
    let c = state.counts(&"cad".into());
    // Room is made; with a queue waiting the buffer's target is zero, as in every mode.
    assert!(c.stopping >= 1 && c.total() == 2, "a warm workstation makes room: {c:?}");
    backend_catches_up(&mut state, t(3));
    settle(&mut state, t(3), NAMED_RECONCILE);
    assert_eq!(phase(&state, &id), SessionPhase::Starting);
    backend_catches_up(&mut state, t(4));
    settle(&mut state, t(4), NAMED_RECONCILE);
    assert_eq!(phase(&state, &id), SessionPhase::Ready);
    let c = state.counts(&"cad".into());
    assert_eq!(c.in_use, 1);
    assert!(c.total() <= 2, "never above the maximum: {c:?}");
}

fn hands_over(action: &Action) -> bool {
    matches!(action, Action::Claim { .. } | Action::Reserve { .. })
}

proptest! {
    /// With named handover the allocator never claims or reserves a buffer workstation, and a
    /// pool never exceeds its maximum, whatever the order of requests and ends.
    #[test]
    fn named_handover_never_claims_and_never_exceeds_max(
        max in 1u32..5, warm in 0u32..4, steps in proptest::collection::vec((0u8..3, 0usize..6), 1..30)
    ) {
        let mut state = State::with_pools([mk_pool("cad", 0, max, warm.min(max))]);
        settle(&mut state, t(0), NAMED_RECONCILE);
        let mut ids: Vec<SessionId> = Vec::new();
        for (i, (op, who)) in steps.into_iter().enumerate() {
            let now = t(i as i64 + 1);
            match op {
                0 => {
                    let req = NewSession { id: SessionId(format!("s{i}")), pool: "cad".into(), idempotency_key: None };
                    if let Ok(RequestDecision::Create(actions)) =
                        decide_request(&state, &user(&format!("u{who}")), &req, NAMED, now)
                    {
                        prop_assert!(!actions.iter().any(hands_over), "{:?}", actions);
                        actions.iter().for_each(|a| apply(&mut state, a, now));
                        ids.push(req.id);
                    }
                }
                1 => {
                    if let Some(id) = ids.get(who) {
                        apply(&mut state, &Action::EndSession { session: id.clone(), reason: EndReason::UserEnded }, now);
                    }
                }
                _ => backend_catches_up(&mut state, now),
            }
            let applied = settle(&mut state, now, NAMED_RECONCILE);
            prop_assert!(!applied.iter().any(hands_over), "{:?}", applied);
            prop_assert!(state.counts(&"cad".into()).total() <= max);
        }
    }
}
