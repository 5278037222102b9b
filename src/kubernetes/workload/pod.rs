//! How a workstation pod reads as the domain's workstation: Ready once it runs, is Ready and
//! has an address; the scheduler's word on why it waits; its endpoint at the pool's port.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use crate::{
    domain::{Endpoint, PoolName, PoolSpec, SessionId, Workstation, WorkstationId, WorkstationPhase},
    kubernetes::labels,
};

/// The workstation a pod stands for, or `None` for pods that are not cadbroker workstations.
pub fn workstation_of(pod: &Pod, pools: &HashMap<String, PoolSpec>) -> Option<Workstation> {
    let labels = pod.metadata.labels.as_ref()?;
    let pool = labels.get(labels::POOL)?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let pod_phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let ip = status.and_then(|s| s.pod_ip.clone());
    let phase = if pod.metadata.deletion_timestamp.is_some() || matches!(pod_phase, "Failed" | "Succeeded") {
        WorkstationPhase::Stopping
    } else if pod_phase == "Running" && ready && ip.is_some() {
        WorkstationPhase::Ready
    } else {
        WorkstationPhase::Starting
    };
    let port = pools.get(pool).map_or(6080, |p| p.connect.port);
    let message = status.and_then(|s| s.conditions.as_ref()).and_then(|cs| {
        cs.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False").and_then(|c| c.message.clone())
    });
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
    Some(Workstation {
        id: WorkstationId(pod.metadata.name.clone()?),
        pool: PoolName(pool.clone()),
        phase,
        session: labels.get(labels::SESSION).map(|s| SessionId(s.clone())),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        endpoint: (phase == WorkstationPhase::Ready)
            .then(|| Endpoint { host: ip.clone().unwrap_or_default(), port }),
        created_at: created,
        ready_at: (phase == WorkstationPhase::Ready).then_some(created),
        message,
    })
}
