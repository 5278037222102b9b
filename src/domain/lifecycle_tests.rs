//! Virtual-time tests of the lifecycle and the autoscaler through `settle`: reconnect grace,
//! maximum lifetime, decisions with reasons, schedules with pre-warming and cooldown, and the
//! buffer across the 2026 and 2027 EU daylight-saving changes.

use std::time::Duration;

use jiff::{Timestamp, civil::time as hm};

use super::*;

const RECONCILE: ReconcilePolicy =
    ReconcilePolicy { retention: Duration::from_secs(3600), handover: Handover::Allocator };

fn t(secs: u64) -> Timestamp {
    time::after(Timestamp::from_second(1_800_000_000).unwrap(), Duration::from_secs(secs))
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Starts what was asked for at least `delay` ago and stops everything asked to stop.
fn backend(state: &mut State, now: Timestamp, delay: Duration) {
    let pending: Vec<_> = state.workstations().map(|w| (w.id.clone(), w.phase, w.created_at)).collect();
    for (id, phase, created_at) in pending {
        let obs = match phase {
            WorkstationPhase::Starting if time::elapsed(created_at, now) < delay => continue,
            WorkstationPhase::Starting => Observation::Ready {
                workstation: id,
                node: "n".into(),
                endpoint: Endpoint { host: "127.0.0.1".into(), port: 9 },
            },
            WorkstationPhase::Stopping => Observation::Gone { workstation: id, lost: false },
            WorkstationPhase::Ready => continue,
        };
        observe(state, &obs, now);
    }
}

/// Settles and lets an instant backend catch up, returning the decisions recorded.
fn step(state: &mut State, now: Timestamp) -> Vec<Decision> {
    step_after(state, now, Duration::ZERO)
}

/// Settles and lets a backend that starts in `delay` catch up, returning the decisions.
fn step_after(state: &mut State, now: Timestamp, delay: Duration) -> Vec<Decision> {
    let mut actions = settle(state, now, RECONCILE);
    backend(state, now, delay);
    actions.extend(settle(state, now, RECONCILE));
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Record(d) => Some(*d),
            _ => None,
        })
        .collect()
}

fn ready_session(state: &mut State, pool: &str, now: Timestamp) -> SessionId {
    let caller = Caller { user: UserId::from("iss#al"), groups: Some(Default::default()), admin: false };
    let req = NewSession { id: "s1".into(), pool: pool.into(), idempotency_key: None };
    let policy = RequestPolicy { max_sessions_per_user: 3, handover: Handover::Allocator };
    let RequestDecision::Create(actions) = decide_request(state, &caller, &req, policy, now).unwrap() else {
        panic!("a new session")
    };
    actions.iter().for_each(|a| apply(state, a, now));
    step(state, now);
    assert_eq!(state.session(&req.id).unwrap().phase, SessionPhase::Ready);
    req.id
}

#[test]
fn a_dropped_connection_is_warned_after_the_reconnect_grace_and_ended_warn_before_later() {
    // Defaults: idle 30m, reconnect grace 2m, warn 5m before.
    let mut state = State::with_pools([mk_pool("cad", 0, 4, 0)]);
    let id = ready_session(&mut state, "cad", t(0));
    apply(&mut state, &Action::Disconnect { session: id.clone() }, t(60));
    step(&mut state, t(60 + 119));
    assert!(state.session(&id).unwrap().warning.is_none(), "within the grace");
    // A reconnect (traffic) within the grace changes nothing.
    apply(&mut state, &Action::Touch { session: id.clone() }, t(170));
    assert!(state.session(&id).unwrap().disconnected_at.is_none());
    apply(&mut state, &Action::Disconnect { session: id.clone() }, t(200));
    let decisions = step(&mut state, t(200 + 120));
    let w = state.session(&id).unwrap().warning.expect("warned when the grace ran out");
    assert_eq!((w.reason, w.ends_at), (EndReason::IdleTimeout, t(200 + 120 + 300)));
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].kind, DecisionKind::Warn);
    assert!(decisions[0].reason.contains("desktop disconnected at"), "{}", decisions[0].reason);
    step(&mut state, t(200 + 120 + 299));
    assert_eq!(state.session(&id).unwrap().phase, SessionPhase::Ready);
    let decisions = step(&mut state, t(200 + 120 + 300));
    let s = state.session(&id).unwrap();
    assert_eq!((s.phase, s.end_reason), (SessionPhase::Ended, Some(EndReason::IdleTimeout)));
    assert!(decisions.iter().any(|d| d.kind == DecisionKind::End && d.session.as_ref() == Some(&id)));
}

#[test]
fn a_reconnect_after_the_warning_lifts_it() {
    let mut state = State::with_pools([mk_pool("cad", 0, 4, 0)]);
    let id = ready_session(&mut state, "cad", t(0));
    apply(&mut state, &Action::Disconnect { session: id.clone() }, t(0));
    step(&mut state, t(120));
    assert!(state.session(&id).unwrap().warning.is_some());
    apply(&mut state, &Action::Touch { session: id.clone() }, t(200));
    step(&mut state, t(420));
    let s = state.session(&id).unwrap();
    assert!(s.warning.is_none() && s.phase == SessionPhase::Ready, "{s:?}");
}

#[test]
fn the_maximum_lifetime_is_warned_and_enforced_however_active_the_session_is() {
    let mut pool = mk_pool("cad", 0, 4, 0);
    pool.limits.max_lifetime = Duration::from_secs(3600);
    let mut state = State::with_pools([pool]);
    let id = ready_session(&mut state, "cad", t(0));
    let mut warned_at = None;
    for minute in 1..=60 {
        let now = t(minute * 60);
        apply(&mut state, &Action::Touch { session: id.clone() }, now);
        step(&mut state, now);
        let s = state.session(&id).unwrap();
        if let Some(w) = s.warning {
            assert_eq!(w.reason, EndReason::MaxLifetime);
            warned_at.get_or_insert(now);
        }
        if minute < 60 {
            assert_eq!(s.phase, SessionPhase::Ready, "minute {minute}");
        }
    }
    assert_eq!(warned_at, Some(t(55 * 60)), "warned 5 minutes ahead, and activity does not lift it");
    let s = state.session(&id).unwrap();
    assert_eq!((s.phase, s.end_reason), (SessionPhase::Ended, Some(EndReason::MaxLifetime)));
    // The hold was recorded for wait estimates.
    assert_eq!(state.memory(&"cad".into()).holds().last(), Some(Duration::from_secs(3600)));
}

fn office_pool() -> PoolSpec {
    let mut pool = mk_pool("cad", 0, 20, 1);
    pool.schedules = vec![ScheduleWindow {
        name: "weekday-peak".into(),
        time_zone: Zone::parse("Europe/Amsterdam").unwrap(),
        days: vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri],
        start: hm(7, 30, 0, 0),
        end: hm(18, 0, 0, 0),
        dates: Vec::new(),
        except_dates: Vec::new(),
        warm: Some(5),
        min: None,
    }];
    pool
}

/// Walks minute by minute with a 90 s start, returning (local time, decision) pairs.
fn walk(state: &mut State, from: &str, minutes: u64) -> Vec<(String, Decision)> {
    let start = at(from);
    let zone = jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap();
    let mut out = Vec::new();
    for minute in 0..minutes {
        let now = time::after(start, Duration::from_secs(minute * 60));
        for d in step_after(state, now, Duration::from_secs(90)) {
            out.push((now.to_zoned(zone.clone()).strftime("%a %H:%M %:z").to_string(), d));
        }
    }
    out
}

#[test]
fn a_schedule_prewarms_before_its_window_and_lowers_after_the_cooldown_with_reasons() {
    let mut state = State::with_pools([office_pool()]);
    // Tuesday 10 March 2026, CET. Starts take 90 s, observed as 2 minutes at this resolution.
    let seen = walk(&mut state, "2026-03-10T06:00:00+01:00", 13 * 60);
    let lines: Vec<_> = seen.iter().map(|(at, d)| format!("{at} {}", d.reason)).collect();
    assert_eq!(
        lines,
        [
            "Tue 06:00 +01:00 warm 0 -> 1: default buffer (capacity.warm 1)",
            "Tue 07:28 +01:00 warm 1 -> 5: schedule window weekday-peak Mon-Fri 07:30-18:00 Europe/Amsterdam opens within the 2m start time",
            "Tue 18:00 +01:00 warm 5 kept for the 10m cooldown (until 2026-03-10T17:10:00Z): target fell to 1 (default buffer (capacity.warm 1))",
            "Tue 18:10 +01:00 warm 5 -> 1 after the 10m cooldown: default buffer (capacity.warm 1)",
        ]
    );
    let inputs = &seen[1].1.inputs;
    assert_eq!((inputs.schedule_warm, inputs.start_seconds, inputs.warm_from), (Some(5), Some(120), Some(1)));
    assert_eq!(state.counts(&"cad".into()).warm, 1);
    let mut state = State::with_pools([office_pool()]);
    walk(&mut state, "2026-03-10T07:00:00+01:00", 31);
    assert_eq!(state.counts(&"cad".into()).warm, 5, "ready when the window opens at 07:30");
}

#[test]
fn scaling_down_stops_only_unclaimed_workstations() {
    let mut state = State::with_pools([office_pool()]);
    step(&mut state, at("2026-03-10T10:00:00+01:00"));
    assert_eq!(state.counts(&"cad".into()).warm, 5);
    let id = ready_session(&mut state, "cad", at("2026-03-10T17:00:00+01:00"));
    for now in [at("2026-03-10T18:00:00+01:00"), at("2026-03-10T18:30:00+01:00")] {
        apply(&mut state, &Action::Touch { session: id.clone() }, now);
        step(&mut state, now);
    }
    let c = state.counts(&"cad".into());
    assert_eq!((c.in_use, c.warm), (1, 1));
    assert_eq!(state.session(&id).unwrap().phase, SessionPhase::Ready);
}

/// The local times at which the pool's warm target changed, walking minute by minute.
fn target_changes(from: &str, hours: u64) -> Vec<String> {
    let mut state = State::with_pools([office_pool()]);
    walk(&mut state, from, hours * 60)
        .into_iter()
        .filter(|(_, d)| matches!(d.kind, DecisionKind::ScaleUp | DecisionKind::ScaleDown))
        .map(|(at, d)| format!("{at} {:?}", d.kind))
        .collect()
}

#[test]
fn the_buffer_follows_the_wall_clock_across_the_2026_and_2027_daylight_saving_changes() {
    // Spring 2026: clocks go forward on Sunday 29 March; the window is weekdays, so Friday
    // (CET) and Monday (CEST) both open at 07:28 local and lower at 18:10 local.
    let spring = target_changes("2026-03-27T00:00:00+01:00", 4 * 24);
    assert_eq!(
        spring,
        [
            "Fri 00:00 +01:00 ScaleUp",
            "Fri 07:28 +01:00 ScaleUp",
            "Fri 18:10 +01:00 ScaleDown",
            "Mon 07:28 +02:00 ScaleUp",
            "Mon 18:10 +02:00 ScaleDown"
        ]
    );
    // Autumn 2026: back on Sunday 25 October.
    let autumn = target_changes("2026-10-23T00:00:00+02:00", 4 * 24);
    assert_eq!(
        autumn[1..],
        [
            "Fri 07:28 +02:00 ScaleUp",
            "Fri 18:10 +02:00 ScaleDown",
            "Mon 07:28 +01:00 ScaleUp",
            "Mon 18:10 +01:00 ScaleDown"
        ]
    );
    // 2027: 28 March and 31 October.
    let spring = target_changes("2027-03-26T00:00:00+01:00", 4 * 24);
    assert_eq!(spring[3], "Mon 07:28 +02:00 ScaleUp");
    let autumn = target_changes("2027-10-29T00:00:00+02:00", 4 * 24);
    assert_eq!(autumn[3], "Mon 07:28 +01:00 ScaleUp");
}
