//! Placeholder pods (a CapacityPool's `spec.placeholders`), pure: the writes that keep each
//! pool at its configured count. The pod itself is built in [`crate::kubernetes::build::placeholder`].
//!
//! A placeholder holds room for one workstation on a GPU node at a PriorityClass below every
//! real workload. A workstation that finds no room preempts one (the scheduler's work, not
//! ours); the pool then creates the placeholder again, and it stays Pending as Unschedulable,
//! which is the signal on which the cluster autoscaler adds a node. Placeholders are never
//! workstations: they carry `cadbroker.io/role=placeholder` and `cadbroker.io/placeholder-for`
//! instead of `cadbroker.io/pool`, and restore skips them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use super::write::Write;
use crate::{
    domain::State,
    kubernetes::{
        build::placeholder::{build_placeholder_pod, placeholder_name},
        labels,
        snapshot::{Snapshot, is_placeholder},
    },
};

/// The pool a placeholder pod holds room for.
fn placeholder_pool(pod: &Pod) -> Option<&str> {
    is_placeholder(pod)
        .then(|| pod.metadata.labels.as_ref()?.get(labels::PLACEHOLDER_FOR).map(String::as_str))?
}

/// Whether a placeholder still holds (or waits for) room: not being deleted, not finished.
fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Failed" | "Succeeded"))
}

fn delete(pod: &Pod) -> Write {
    Write::DeletePlaceholder {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The writes that keep every pool at its placeholder count, capped so that the pool's
/// workstations in `desired` (everything that counts against `max`) and its placeholders never
/// exceed `capacity.max`. Surplus placeholders go Pending ones first (they hold nothing), then
/// the newest; finished ones are deleted; new ones take the lowest free number, so that two
/// allocators create the same names and the second create fails.
pub fn plan_placeholders(desired: &State, snapshot: &Snapshot, namespace: &str) -> Vec<Write> {
    let mut writes = Vec::new();
    for pool in &snapshot.pools {
        let Some(name) = pool.metadata.name.as_deref() else { continue };
        let Some(spec) = desired.pool(&name.into()) else { continue };
        let ours: Vec<&Pod> = snapshot.placeholders().filter(|p| placeholder_pool(p) == Some(name)).collect();
        let (count, class) = match &pool.spec.placeholders {
            Some(p) => (p.count, p.priority_class_name.as_str()),
            None => (0, ""),
        };
        let room = spec.capacity.max.saturating_sub(desired.counts(&spec.name).total());
        let wanted = count.min(room) as usize;
        let (mut live, done): (Vec<&Pod>, Vec<&Pod>) = ours.iter().copied().partition(|p| is_live(p));
        writes.extend(done.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| delete(p)));
        if live.len() > wanted {
            // Kept first: scheduled, then oldest, then by name (deterministic across allocators).
            live.sort_by_key(|p| {
                let unscheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none();
                let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                (unscheduled, created.is_none(), created, p.metadata.name.clone())
            });
            writes.extend(live[wanted..].iter().map(|p| delete(p)));
        } else {
            // Names of pods still terminating stay taken until they are gone.
            let taken: BTreeSet<&str> = ours.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
            let free = (1..).map(|n| placeholder_name(name, n)).filter(|n| !taken.contains(n.as_str()));
            for pod_name in free.take(wanted - live.len()) {
                let pod = build_placeholder_pod(pool, &pod_name, namespace, class);
                writes.push(Write::CreatePlaceholder { pod: Box::new(pod) });
            }
        }
    }
    writes
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::{
        crd::CapacityPool,
        domain::{PoolName, SessionId, Workstation, WorkstationId, WorkstationPhase},
        kubernetes::pass::restore::restore,
    };

    fn pool(max: u32, placeholders: Option<u32>) -> CapacityPool {
        let mut spec = serde_json::json!({
            "capacity": { "min": 0, "max": max, "warm": 0 }, "access": { "allAuthenticated": true },
            "gpuModel": "NVIDIA-L40S",
            "template": {
                "metadata": { "labels": { "team": "gis" }, "annotations": { "test.cadbroker.io/start-delay": "0s" } },
                "spec": {
                    "priorityClassName": "cadbroker-workstation",
                    "nodeSelector": { "kubernetes.io/hostname": "gpu-node-4" },
                    "tolerations": [{ "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule" }],
                    "runtimeClassName": "nvidia",
                    "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "zone", "operator": "In", "values": ["a"] }] }] } } },
                    "volumes": [{ "name": "home", "persistentVolumeClaim": { "claimName": "home" } }],
                    "containers": [{ "name": "desktop", "image": "example.invalid/cad/desktop:2026.1",
                        "env": [{ "name": "LICENSE_SERVER", "value": "lic" }],
                        "volumeMounts": [{ "name": "home", "mountPath": "/home" }],
                        "resources": { "limits": { "nvidia.com/gpu": "1", "memory": "16Gi" } } }] } }
        });
        if let Some(count) = placeholders {
            spec["placeholders"] = serde_json::json!({ "count": count });
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cadbroker.io/v1alpha1", "kind": "CapacityPool",
            "metadata": { "name": "cad", "namespace": "ns", "uid": "pool-uid" }, "spec": spec
        }))
        .unwrap()
    }

    fn state_of(pool: &CapacityPool, workstations: u32) -> State {
        let mut state = State::with_pools([crate::domain::PoolSpec::from(pool)]);
        for i in 0..workstations {
            state.restore_workstation(Workstation {
                id: WorkstationId(format!("cad-ws-{i}")),
                pool: PoolName("cad".into()),
                phase: WorkstationPhase::Ready,
                session: Some(SessionId(format!("s{i}"))),
                node: None,
                endpoint: None,
                created_at: Timestamp::UNIX_EPOCH,
                ready_at: None,
                message: None,
            });
        }
        state
    }

    fn existing(pool: &CapacityPool, n: u32, scheduled: bool) -> Arc<Pod> {
        let mut pod = build_placeholder_pod(pool, &placeholder_name("cad", n), "ns", "cadbroker-placeholder");
        pod.metadata.uid = Some(format!("uid-{n}"));
        pod.metadata.creation_timestamp = Some(Time(Timestamp::from_second(i64::from(n) * 10).unwrap()));
        if scheduled {
            pod.spec.as_mut().unwrap().node_name = Some("gpu-node-4".into());
        }
        Arc::new(pod)
    }

    fn snapshot(pool: &CapacityPool, pods: Vec<Arc<Pod>>) -> Snapshot {
        Snapshot { pools: vec![Arc::new(pool.clone())], sessions: Vec::new(), pods }
    }

    fn created(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::CreatePlaceholder { pod } => pod.metadata.name.clone(),
                _ => None,
            })
            .collect()
    }

    fn deleted(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::DeletePlaceholder { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_placeholder_asks_for_what_a_workstation_asks_for_and_runs_nothing() {
        let pod =
            build_placeholder_pod(&pool(4, Some(1)), "cad-placeholder-1", "ns", "cadbroker-placeholder");
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["cadbroker.io/role"], "placeholder");
        assert_eq!(labels["cadbroker.io/placeholder-for"], "cad");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "cadbroker", "watched like every cadbroker pod");
        assert_eq!(labels["team"], "gis");
        assert!(!labels.contains_key("cadbroker.io/pool"), "never read as a workstation");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("CapacityPool", "pool-uid"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.priority_class_name.as_deref(), Some("cadbroker-placeholder"));
        assert_eq!(spec.node_selector.as_ref().unwrap()["kubernetes.io/hostname"], "gpu-node-4");
        assert_eq!(spec.node_selector.as_ref().unwrap()["nvidia.com/gpu.product"], "NVIDIA-L40S");
        assert_eq!(spec.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("nvidia.com/gpu"));
        assert!(spec.affinity.is_some());
        assert_eq!(spec.runtime_class_name.as_deref(), Some("nvidia"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(spec.volumes.is_none());
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("example.invalid/cad/desktop:2026.1"), "the node pulls it early");
        assert_eq!(c.command.as_ref().unwrap()[0], "sleep");
        assert!(c.env.is_none() && c.volume_mounts.is_none());
        assert_eq!(c.resources.as_ref().unwrap().limits.as_ref().unwrap()["nvidia.com/gpu"].0, "1");
        assert_eq!(c.security_context.as_ref().unwrap().allow_privilege_escalation, Some(false));
    }

    #[test]
    fn an_empty_pool_gets_its_placeholders_and_a_full_one_keeps_them() {
        let p = pool(10, Some(3));
        let writes = plan_placeholders(&state_of(&p, 0), &snapshot(&p, vec![]), "ns");
        assert_eq!(created(&writes), ["cad-placeholder-1", "cad-placeholder-2", "cad-placeholder-3"]);
        let pods = (1..=3).map(|n| existing(&p, n, true)).collect();
        assert!(plan_placeholders(&state_of(&p, 0), &snapshot(&p, pods), "ns").is_empty());
    }

    #[test]
    fn workstations_and_placeholders_never_exceed_max() {
        let p = pool(4, Some(3));
        let pods: Vec<_> = (1..=3).map(|n| existing(&p, n, n != 2)).collect();
        // Two workstations: room for two placeholders; the Pending one goes first.
        let writes = plan_placeholders(&state_of(&p, 2), &snapshot(&p, pods.clone()), "ns");
        assert_eq!(deleted(&writes), ["cad-placeholder-2"]);
        // Full: none at all; then the newest of the scheduled ones.
        let writes = plan_placeholders(&state_of(&p, 4), &snapshot(&p, pods.clone()), "ns");
        assert_eq!(deleted(&writes).len(), 3);
        let writes = plan_placeholders(&state_of(&p, 3), &snapshot(&p, pods), "ns");
        assert_eq!(deleted(&writes), ["cad-placeholder-3", "cad-placeholder-2"]);
        assert!(created(&writes).is_empty());
    }

    #[test]
    fn a_preempted_placeholder_is_replaced_under_a_free_name() {
        let p = pool(9, Some(2));
        let mut preempted = (*existing(&p, 1, true)).clone();
        preempted.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(100).unwrap()));
        let pods = vec![Arc::new(preempted), existing(&p, 2, true)];
        let writes = plan_placeholders(&state_of(&p, 1), &snapshot(&p, pods), "ns");
        assert_eq!(created(&writes), ["cad-placeholder-3"], "placeholder-1 is still terminating");
        assert!(deleted(&writes).is_empty(), "it is already being deleted");
    }

    #[test]
    fn finished_placeholders_are_cleaned_up_and_replaced() {
        let p = pool(9, Some(1));
        let mut failed = (*existing(&p, 1, true)).clone();
        failed.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        let writes = plan_placeholders(&state_of(&p, 0), &snapshot(&p, vec![Arc::new(failed)]), "ns");
        assert_eq!(deleted(&writes), ["cad-placeholder-1"]);
        assert_eq!(created(&writes), ["cad-placeholder-2"]);
    }

    #[test]
    fn turning_placeholders_off_deletes_them() {
        let on = pool(9, Some(2));
        let pods: Vec<_> = (1..=2).map(|n| existing(&on, n, true)).collect();
        let off = pool(9, None);
        assert_eq!(deleted(&plan_placeholders(&state_of(&off, 0), &snapshot(&off, pods), "ns")).len(), 2);
    }

    #[test]
    fn placeholders_are_never_restored_as_workstations() {
        let p = pool(9, Some(2));
        let pods: Vec<_> = (1..=2).map(|n| existing(&p, n, true)).collect();
        let restored = restore(&snapshot(&p, pods), Timestamp::from_second(1000).unwrap());
        assert_eq!(restored.state.workstations().count(), 0);
        // So a claim can never pick one: there is no warm workstation to claim.
        assert!(restored.state.warm_workstation(&PoolName("cad".into())).is_none());
    }
}
