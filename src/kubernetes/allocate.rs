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
        request: RequestPolicy { max_sessions_per_user: 2 },
        reconcile: ReconcilePolicy { retention: Duration::from_secs(3600) },
    };

    #[test]
    fn an_empty_pool_with_a_warm_buffer_gets_warm_pods_owned_by_the_pool() {
        let snapshot = Snapshot { pools: vec![Arc::new(pool(2))], ..Snapshot::default() };
        let writes = pass(&snapshot, "ns", POLICY, Timestamp::now());
        let creates: Vec<_> = writes.iter().filter(|w| matches!(w, Write::CreatePod { .. })).collect();
        assert_eq!(creates.len(), 2, "{writes:#?}");
    }
}
