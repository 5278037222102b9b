//! One allocator pass, pure: restore the domain state from a snapshot, decide every pending
//! request, end what the API asked to end, reconcile, and plan the writes.

use jiff::Timestamp;

use super::{
    plan::{Write, plan},
    restore::{Snapshot, restore},
};
use crate::{
    domain::{
        Action, Caller, NewSession, RequestDecision, Session, SessionPhase, apply, decide_request, settle,
    },
    service::engine::EnginePolicy,
};

/// The writes one pass asks for.
pub fn pass(snapshot: &Snapshot, namespace: &str, policy: EnginePolicy, now: Timestamp) -> Vec<Write> {
    let restored = restore(snapshot, now);
    let mut state = restored.state;
    let mut duplicates = Vec::new();
    for intent in restored.intents {
        // The API replica that wrote the intent checked pool access with the caller's token;
        // the allocator does not see groups, so it places the request as authorised.
        let caller = Caller { user: intent.user.clone(), groups: None, admin: true };
        let req = NewSession {
            id: intent.id.clone(),
            pool: intent.pool.clone(),
            idempotency_key: intent.idempotency_key,
        };
        match decide_request(&state, &caller, &req, policy.request, intent.requested_at) {
            Ok(RequestDecision::Existing(_)) => duplicates.push(intent.id.to_string()),
            Ok(RequestDecision::Create(actions)) => actions.iter().for_each(|a| apply(&mut state, a, now)),
            Err(refused) => {
                // Refused after the API accepted it (the pool went away, a race on the user's
                // cap): record it as Failed with the reason, so the user is told.
                let mut session =
                    Session::new(intent.id.clone(), intent.user, intent.pool, intent.requested_at, None);
                session.phase = SessionPhase::Queued;
                apply(&mut state, &Action::CreateSession(Box::new(session)), now);
                let fail = Action::FailSession {
                    session: intent.id,
                    reason: crate::domain::EndReason::PoolDeleted,
                    message: refused.to_string(),
                };
                apply(&mut state, &fail, now);
            }
        }
    }
    for (session, reason) in restored.ends {
        let ws = state.session(&session).and_then(|s| s.workstation.clone());
        apply(&mut state, &Action::EndSession { session, reason }, now);
        if let Some(workstation) = ws {
            apply(&mut state, &Action::StopWorkstation { workstation }, now);
        }
    }
    for session in restored.activity {
        apply(&mut state, &Action::Touch { session }, now);
    }
    settle(&mut state, now, policy.reconcile);
    plan(&state, snapshot, namespace, &duplicates, now)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        crd::CapacityPool,
        domain::{ReconcilePolicy, RequestPolicy},
        kubernetes::plan::Write,
    };

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

    const POLICY: EnginePolicy = EnginePolicy {
        request: RequestPolicy {
            max_sessions_per_user: 2,
            handover: crate::domain::Handover::NamedRequestOnly,
        },
        reconcile: ReconcilePolicy {
            retention: Duration::from_secs(3600),
            handover: crate::domain::Handover::NamedRequestOnly,
        },
    };

    #[test]
    fn an_empty_pool_with_a_warm_buffer_gets_warm_pods_owned_by_the_pool() {
        let snapshot = Snapshot { pools: vec![Arc::new(pool(2))], ..Snapshot::default() };
        let writes = pass(&snapshot, "ns", POLICY, Timestamp::now());
        let creates: Vec<_> = writes.iter().filter(|w| matches!(w, Write::CreatePod { .. })).collect();
        assert_eq!(creates.len(), 2, "{writes:#?}");
    }

    fn running_pod(name: &str) -> Arc<k8s_openapi::api::core::v1::Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                    "resourceVersion": "7", "creationTimestamp": "2026-11-30T08:00:00Z",
                    "labels": { "app.kubernetes.io/managed-by": "cadbroker", "cadbroker.io/pool": "cad" } },
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
        let writes = pass(&snapshot, "ns", POLICY, now);
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
            !writes.iter().any(|w| matches!(w, Write::CreatePod { .. } | Write::DeletePod { .. })),
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
        let writes = pass(&snapshot, "ns", POLICY, now);
        assert_eq!(
            writes,
            [Write::DeletePod {
                name: "cad-ws-1".into(),
                uid: "uid-cad-ws-1".into(),
                session: Some("cad-ws-1".into())
            }],
        );
    }
}
