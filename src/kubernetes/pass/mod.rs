//! The allocator's pass, pure: the functional core of cluster mode. Nothing here talks to the
//! API server or imports a kube client: a pass reads a [`Snapshot`] and returns the writes
//! and decisions, which the I/O side ([`super::io`]) carries out. One pass, in order:
//!
//! ```text
//!  snapshot ─► restore (state + undecided requests) ─► scale_memory::restore
//!           ─► decide each request (domain::decide_request) ─► activity, disconnects
//!           ─► domain::settle (reconcile) ─► plan (workstations, sessions, pools)
//!           ─► placeholders::plan_placeholders ─► Pass { writes, decisions }
//! ```

pub mod disconnect;
pub mod placeholders;
pub mod plan;
pub mod restore;
pub mod scale_memory;
pub mod write;

use jiff::Timestamp;

use self::{plan::plan, restore::Intent, write::Write};
use super::snapshot::Snapshot;
use crate::domain::{
    Action, Caller, Decision, NewSession, Policy, RequestDecision, Session, SessionPhase, State, apply,
    decide_request, settle,
};

/// What one pass asks for.
#[derive(Debug, Default)]
pub struct Pass {
    /// Writes that make the cluster match the decisions.
    pub writes: Vec<Write>,
    /// Scaling and culling decisions taken in this pass, in order, to publish as Events.
    pub decisions: Vec<Decision>,
}

/// The writes one pass asks for, and the decisions behind them.
pub fn pass(snapshot: &Snapshot, namespace: &str, policy: Policy, now: Timestamp) -> Pass {
    let restored = restore::restore(snapshot, now);
    let mut state = restored.state;
    scale_memory::restore(&mut state, snapshot, now);
    let mut duplicates = Vec::new();
    for intent in restored.intents {
        if let Some(duplicate) = decide_intent(&mut state, intent, policy, now) {
            duplicates.push(duplicate);
        }
    }
    for session in restored.activity {
        apply(&mut state, &Action::Touch { session }, now);
    }
    // After the activity: a disconnect counts only when later than the last activity, and it
    // is applied at the time it happened (the reconnect grace runs from then).
    for (session, at) in disconnect::disconnects(snapshot) {
        apply(&mut state, &Action::Disconnect { session }, at);
    }
    let applied = settle(&mut state, now, policy.reconcile);
    let decisions = applied
        .into_iter()
        .filter_map(|a| match a {
            Action::Record(d) => Some(*d),
            _ => None,
        })
        .collect();
    let mut writes = plan(&state, snapshot, namespace, &duplicates, now);
    writes.extend(placeholders::plan_placeholders(&state, snapshot, namespace));
    Pass { writes, decisions }
}

/// Decides one recorded request into `state`; returns its name when it repeats a live
/// session (its object is then deleted).
fn decide_intent(state: &mut State, intent: Intent, policy: Policy, now: Timestamp) -> Option<String> {
    // The API replica that wrote the intent checked pool access with the caller's token;
    // the allocator does not see groups, so it places the request as authorised.
    let caller = Caller { user: intent.user.clone(), groups: None, admin: true };
    let req = NewSession {
        id: intent.id.clone(),
        pool: intent.pool.clone(),
        idempotency_key: intent.idempotency_key,
    };
    match decide_request(state, &caller, &req, policy.request, intent.requested_at) {
        Ok(RequestDecision::Existing(_)) => Some(intent.id.to_string()),
        Ok(RequestDecision::Create(actions)) => {
            actions.iter().for_each(|a| apply(state, a, now));
            None
        }
        Err(refused) => {
            // Refused after the API accepted it (the pool went away, a race on the user's
            // cap): record it as Failed with the reason, so the user is told.
            let mut session =
                Session::new(intent.id.clone(), intent.user, intent.pool, intent.requested_at, None);
            session.phase = SessionPhase::Queued;
            apply(state, &Action::CreateSession(Box::new(session)), now);
            let fail = Action::FailSession {
                session: intent.id,
                reason: refused.end_reason(),
                message: refused.to_string(),
            };
            apply(state, &fail, now);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{crd::CapacityPool, domain::Handover};

    fn pool(warm: u32) -> CapacityPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cadbroker.io/v1alpha1", "kind": "CapacityPool",
            "metadata": { "name": "cad", "namespace": "ns", "uid": "pool-uid" },
            "spec": { "capacity": { "min": 0, "max": 4, "warm": warm }, "access": { "allAuthenticated": true },
                "template": { "spec": { "containers": [{ "name": "d", "image": "x",
                    "resources": { "limits": { "nvidia.com/gpu": "1" } } }] } } }
        }))
        .unwrap()
    }

    const POLICY: Policy = Policy::new(Handover::NamedRequestOnly, 2, Duration::from_secs(3600));

    #[test]
    fn an_empty_pool_with_a_warm_buffer_gets_warm_pods_owned_by_the_pool() {
        let snapshot = Snapshot { pools: vec![Arc::new(pool(2))], ..Snapshot::default() };
        let writes = pass(&snapshot, "ns", POLICY, Timestamp::now()).writes;
        let creates: Vec<_> =
            writes.iter().filter(|w| matches!(w, Write::CreateWorkstation { .. })).collect();
        assert_eq!(creates.len(), 2, "{writes:#?}");
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn running_pod(name: &str) -> Arc<k8s_openapi::api::core::v1::Pod> {
        pod(name, None)
    }

    /// A running, ready pod of pool `cad`, held by `session` if given.
    fn pod(name: &str, session: Option<&str>) -> Arc<k8s_openapi::api::core::v1::Pod> {
        let mut labels =
            serde_json::json!({ "app.kubernetes.io/managed-by": "cadbroker", "cadbroker.io/pool": "cad" });
        if let Some(s) = session {
            labels["cadbroker.io/session"] = serde_json::json!(s);
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": "1",
                    "creationTimestamp": "2026-03-10T07:00:00Z", "labels": labels },
                "spec": { "nodeName": "gpu-node-1", "containers": [{ "name": "d", "image": "x" }] },
                "status": { "phase": "Running", "podIP": "127.1.0.9",
                    "conditions": [{ "type": "Ready", "status": "True" }] }
            }))
            .unwrap(),
        )
    }

    fn session(name: &str, status: serde_json::Value) -> Arc<crate::crd::WorkstationSession> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cadbroker.io/v1alpha1", "kind": "WorkstationSession",
                "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": "11" },
                "spec": { "user": "iss#alice", "pool": "cad", "requestedAt": "2026-11-30T08:01:00Z" },
                "status": status
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_session_named_after_a_warm_pod_holds_it_and_costs_one_status_write() {
        let snapshot = Snapshot {
            pools: vec![Arc::new(pool(1))],
            sessions: vec![session("cad-ws-1", serde_json::Value::Null)],
            pods: vec![running_pod("cad-ws-1"), running_pod("cad-ws-2")],
        };
        let now: Timestamp = "2026-11-30T08:01:01Z".parse().unwrap();
        let writes = pass(&snapshot, "ns", POLICY, now).writes;
        let statuses: Vec<_> = writes
            .iter()
            .filter_map(|w| match w {
                Write::SessionStatus { name, status, resource_version, .. } => {
                    Some((name.as_str(), status.phase, status.pod.as_deref(), resource_version.as_deref()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            statuses,
            [("cad-ws-1", Some(SessionPhase::Ready), Some("cad-ws-1"), Some("11"))],
            "{writes:#?}"
        );
        assert!(
            !writes
                .iter()
                .any(|w| matches!(w, Write::CreateWorkstation { .. } | Write::DeleteWorkstation { .. })),
            "no pod is written: the other pod is the warm buffer: {writes:#?}"
        );
    }

    #[test]
    fn a_session_ended_through_the_api_gets_its_pod_deleted_and_no_further_status_write() {
        let now: Timestamp = "2026-11-30T09:00:00Z".parse().unwrap();
        let snapshot = Snapshot {
            pools: vec![Arc::new(pool(0))],
            sessions: vec![session(
                "cad-ws-1",
                serde_json::json!({ "phase": "Ended", "pod": "cad-ws-1", "node": "gpu-node-1",
                    "readyAt": "2026-11-30T08:01:00Z", "lastActivity": "2026-11-30T08:01:00Z",
                    "endedAt": "2026-11-30T08:59:00Z", "endReason": "UserEnded" }),
            )],
            pods: vec![running_pod("cad-ws-1")],
        };
        let mut writes = pass(&snapshot, "ns", POLICY, now).writes;
        // The pool's own status (counts, autoscaler memory) is not the session's.
        writes.retain(|w| !matches!(w, Write::PoolStatus { .. }));
        assert_eq!(
            writes,
            [Write::DeleteWorkstation {
                kind: crate::kubernetes::workload::WorkloadKind::Pod,
                name: "cad-ws-1".into(),
                uid: "uid-cad-ws-1".into(),
                session: Some("cad-ws-1".into())
            }],
        );
    }

    fn with_status(mut pool: CapacityPool, status: serde_json::Value) -> Arc<CapacityPool> {
        pool.status = Some(serde_json::from_value(status).unwrap());
        Arc::new(pool)
    }

    fn deletes(writes: &[Write]) -> usize {
        writes.iter().filter(|w| matches!(w, Write::DeleteWorkstation { .. })).count()
    }

    fn stored_memory(writes: &[Write]) -> Option<crate::crd::AutoscalerMemory> {
        writes.iter().find_map(|w| match w {
            Write::PoolStatus { status, .. } => status.autoscaler.clone(),
            _ => None,
        })
    }

    #[test]
    fn a_pass_after_a_restore_keeps_the_warm_level_for_the_cooldown() {
        // Warm 4 held since 08:00 while the target (capacity.warm 2) is lower; cooldown 10m.
        let status = serde_json::json!({ "warm": 4, "updatedAt": "2026-03-10T08:05:00Z",
            "autoscaler": { "warm": 4, "belowSince": "2026-03-10T08:00:00Z", "belowPeak": 2, "holdRecorded": true } });
        let pods: Vec<_> = (1..=4).map(|i| pod(&format!("cad-ws-{i}"), None)).collect();
        let snapshot = Snapshot { pools: vec![with_status(pool(2), status)], pods, ..Snapshot::default() };
        let during = pass(&snapshot, "ns", POLICY, t("2026-03-10T08:05:01Z"));
        assert_eq!(deletes(&during.writes), 0, "still cooling down: {:#?}", during.writes);
        assert!(during.decisions.is_empty(), "the hold was recorded before the restore");
        assert!(stored_memory(&during.writes).is_none(), "nothing changed, nothing written");

        let after = pass(&snapshot, "ns", POLICY, t("2026-03-10T08:10:00Z"));
        assert_eq!(deletes(&after.writes), 2, "{:#?}", after.writes);
        assert_eq!(after.decisions.len(), 1);
        assert_eq!(after.decisions[0].kind, crate::domain::DecisionKind::ScaleDown);
        // Written at once, though the counts were written under 10 s ago.
        let stored = stored_memory(&after.writes).expect("the new level is written");
        assert_eq!((stored.warm, stored.below_since), (2, None));
    }

    #[test]
    fn without_its_memory_a_pass_would_drop_the_buffer_at_once() {
        // What cluster mode did before the memory was kept in the status.
        let pods: Vec<_> = (1..=4).map(|i| pod(&format!("cad-ws-{i}"), None)).collect();
        let snapshot = Snapshot { pools: vec![Arc::new(pool(2))], pods, ..Snapshot::default() };
        let first = pass(&snapshot, "ns", POLICY, t("2026-03-10T08:05:01Z"));
        assert_eq!(deletes(&first.writes), 2);
        assert_eq!(first.decisions[0].kind, crate::domain::DecisionKind::ScaleUp, "warm 0 -> 2");
        assert_eq!(stored_memory(&first.writes).map(|m| m.warm), Some(2));
    }

    /// Session `s1` on pod `cad-ws-1`, Ready, its desktop disconnected at 09:00.
    fn disconnected_session() -> crate::crd::WorkstationSession {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cadbroker.io/v1alpha1", "kind": "WorkstationSession",
            "metadata": { "name": "s1", "namespace": "ns", "uid": "s1-uid", "annotations": {
                "cadbroker.io/last-activity": "2026-03-10T08:59:00Z",
                "cadbroker.io/disconnected-at": "2026-03-10T09:00:00Z" } },
            "spec": { "user": "iss#alice", "pool": "cad", "requestedAt": "2026-03-10T08:00:00Z" },
            "status": { "phase": "Ready", "pod": "cad-ws-1", "readyAt": "2026-03-10T08:00:01Z",
                "lastActivity": "2026-03-10T08:59:00.5Z" }
        }))
        .unwrap()
    }

    fn with_written_status(
        mut cr: crate::crd::WorkstationSession,
        writes: &[Write],
    ) -> crate::crd::WorkstationSession {
        cr.status = writes.iter().find_map(|w| match w {
            Write::SessionStatus { status, .. } => Some((**status).clone()),
            _ => None,
        });
        cr
    }

    #[test]
    fn a_recorded_disconnect_is_culled_after_the_reconnect_grace() {
        // Default limits: reconnect grace 2m, warning 5m before the end.
        let session = disconnected_session();
        let snapshot = Snapshot {
            pools: vec![Arc::new(pool(0))],
            sessions: vec![Arc::new(session.clone())],
            pods: vec![pod("cad-ws-1", Some("s1"))],
        };
        let within = pass(&snapshot, "ns", POLICY, t("2026-03-10T09:01:30Z"));
        assert!(within.decisions.iter().all(|d| d.kind != crate::domain::DecisionKind::Warn));
        let after = pass(&snapshot, "ns", POLICY, t("2026-03-10T09:02:30Z"));
        let warn =
            after.decisions.iter().find(|d| d.kind == crate::domain::DecisionKind::Warn).expect("warned");
        assert_eq!(warn.inputs.disconnected_at, Some(t("2026-03-10T09:00:00Z")));
        assert!(warn.reason.contains("reconnect grace"), "{}", warn.reason);
        let warned = after.writes.iter().find_map(|w| match w {
            Write::SessionStatus { status, .. } => status.warning,
            _ => None,
        });
        assert_eq!(warned.map(|w| w.ends_at), Some(t("2026-03-10T09:07:30Z")));

        // Back within the grace: a later activity lifts the disconnect, so no warning.
        let mut back = session;
        back.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("cadbroker.io/last-activity".into(), "2026-03-10T09:00:20Z".into());
        let snapshot = Snapshot { sessions: vec![Arc::new(back)], ..snapshot };
        let later = pass(&snapshot, "ns", POLICY, t("2026-03-10T09:03:30Z"));
        assert!(later.decisions.is_empty(), "{:?}", later.decisions);
    }

    #[test]
    fn an_ended_sessions_pod_is_deleted_only_after_the_end_is_recorded() {
        let pods = vec![pod("cad-ws-1", Some("s1"))];
        let snapshot = |cr| Snapshot {
            pools: vec![Arc::new(pool(0))],
            sessions: vec![Arc::new(cr)],
            pods: pods.clone(),
        };
        let warned = pass(&snapshot(disconnected_session()), "ns", POLICY, t("2026-03-10T09:02:30Z"));
        let cr = with_written_status(disconnected_session(), &warned.writes);
        // Past the warning's end: the session is ended by the allocator.
        let ending = pass(&snapshot(cr.clone()), "ns", POLICY, t("2026-03-10T09:08:00Z"));
        let ended = with_written_status(cr, &ending.writes);
        let status = ended.status.as_ref().expect("the end is written");
        assert_eq!(
            (status.phase, status.end_reason),
            (Some(SessionPhase::Ended), Some(crate::domain::EndReason::IdleTimeout))
        );
        assert_eq!(
            deletes(&ending.writes),
            0,
            "the pod stays until the end is recorded: {:#?}",
            ending.writes
        );
        // Killed here, a new broker finds the end recorded and the pod still there: it deletes it.
        let next = pass(&snapshot(ended), "ns", POLICY, t("2026-03-10T09:08:01Z"));
        assert_eq!(deletes(&next.writes), 1, "{:#?}", next.writes);
        assert!(!next.writes.iter().any(|w| matches!(w, Write::SessionStatus { .. })), "{:#?}", next.writes);
    }
}
