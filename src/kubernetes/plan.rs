//! Pure diff of the desired domain state against the cluster: the writes that make the cluster
//! match. Pod writes come first and carry what they guard: a session's status is written only
//! if the pod write it depends on succeeded. No write here claims a buffer pod: only a
//! request's create of a session under the pod's name does (docs/cluster-mode.md), and every
//! status write is a compare-and-swap on the session's resourceVersion, so a pass that read
//! the cluster before an API replica ended a session cannot write it back to life.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::{
    pod::{Owner, PodInput, build_workstation_pod},
    restore::Snapshot,
};
use crate::{
    crd::{CapacityPoolStatus, WorkstationSessionStatus},
    domain::{Session, SessionId, SessionPhase, State, WorkstationPhase},
};

/// One write to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create a workstation pod.
    CreatePod { pod: Box<Pod> },
    /// Delete a pod (if its uid is still `uid`); `session` is the one it was labelled for.
    DeletePod { name: String, uid: String, session: Option<String> },
    /// Replace a session's status if its resourceVersion is still `resource_version`; skipped
    /// when the pod write named in `after` failed.
    SessionStatus {
        name: String,
        status: Box<WorkstationSessionStatus>,
        resource_version: Option<String>,
        after: Option<String>,
    },
    /// Delete a session object (retention passed, or a duplicate request).
    DeleteSession { name: String },
    /// Replace a pool's status.
    PoolStatus { name: String, status: CapacityPoolStatus },
}

fn rfc3339(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| t.to_string())
}

/// The status a session should show.
pub fn session_status(state: &State, s: &Session) -> WorkstationSessionStatus {
    let ws = s.workstation.as_ref().and_then(|w| state.workstation(w));
    WorkstationSessionStatus {
        phase: Some(s.phase),
        pod: s.workstation.as_ref().map(ToString::to_string),
        node: ws.and_then(|w| w.node.clone()),
        queue_position: state.queue_position(s).map(|p| p as u32),
        ready_at: rfc3339(s.ready_at),
        last_activity: rfc3339(s.last_activity),
        warning: s.warning,
        ended_at: rfc3339(s.ended_at),
        end_reason: s.end_reason,
        message: s.message.clone(),
    }
}

/// Everything to write so that the cluster matches `desired`. `duplicates` are session objects
/// to delete because they repeat a live session.
pub fn plan(
    desired: &State,
    snapshot: &Snapshot,
    namespace: &str,
    duplicates: &[String],
    now: Timestamp,
) -> Vec<Write> {
    let pods: HashMap<&str, &Pod> =
        snapshot.pods.iter().filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref()))).collect();
    let session_uids: HashMap<&str, &str> = snapshot
        .sessions
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, s.metadata.uid.as_deref()?)))
        .collect();
    // Sessions whose object still shows them live: their pod goes only after their end is recorded.
    let recorded_live: HashSet<&str> = snapshot
        .sessions
        .iter()
        .filter(|s| !s.status.as_ref().and_then(|st| st.phase).is_some_and(SessionPhase::is_terminal))
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    let pools: HashMap<&str, &crate::crd::CapacityPool> =
        snapshot.pools.iter().filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref()))).collect();
    let mut writes = Vec::new();
    let mut pod_write_for: BTreeMap<String, String> = BTreeMap::new();
    for ws in desired.workstations() {
        let name = ws.id.to_string();
        match pods.get(name.as_str()) {
            None if ws.phase != WorkstationPhase::Stopping => {
                let Some(pool) = pools.get(ws.pool.as_str()) else { continue };
                let owner = match &ws.session {
                    Some(s) => match session_uids.get(s.as_str()) {
                        Some(uid) => {
                            Owner { kind: "WorkstationSession", name: s.to_string(), uid: uid.to_string() }
                        }
                        None => continue,
                    },
                    None => Owner {
                        kind: "CapacityPool",
                        name: ws.pool.to_string(),
                        uid: pool.metadata.uid.clone().unwrap_or_default(),
                    },
                };
                let pod = build_workstation_pod(&PodInput {
                    name: &name,
                    namespace,
                    pool: ws.pool.as_str(),
                    template: &pool.spec.template,
                    gpu_model: pool.spec.gpu_model.as_deref(),
                    session: ws.session.as_ref().map(|s| s.as_str()),
                    owner: &owner,
                });
                if let Some(s) = &ws.session {
                    pod_write_for.insert(s.to_string(), name.clone());
                }
                writes.push(Write::CreatePod { pod: Box::new(pod) });
            }
            None => {}
            // A pod is its session's by its label (started for it) or by its name (taken by a
            // named request): there is no claim to write, only deletes. The pod of a session
            // that is ending is deleted only once the session's object records the end (this
            // pass writes it, the next deletes), so a broker killed in between leaves an
            // ended session with a pod to delete, never a live one whose pod vanished.
            Some(pod)
                if ws.phase == WorkstationPhase::Stopping
                    && pod.metadata.deletion_timestamp.is_none()
                    && !ending_unrecorded(desired, ws.session.as_ref(), &recorded_live) =>
            {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let session = ws.session.as_ref().map(ToString::to_string);
                writes.push(Write::DeletePod { name, uid, session });
            }
            Some(_) => {}
        }
    }
    let live_pods: HashSet<&str> = pods.keys().copied().collect();
    plan_sessions(desired, snapshot, &pod_write_for, &live_pods, now, &mut writes);
    writes.extend(duplicates.iter().map(|name| Write::DeleteSession { name: name.clone() }));
    plan_pools(desired, snapshot, now, &mut writes);
    writes
}

fn plan_sessions(
    desired: &State,
    snapshot: &Snapshot,
    pod_write_for: &BTreeMap<String, String>,
    pods: &HashSet<&str>,
    now: Timestamp,
    writes: &mut Vec<Write>,
) {
    for cr in &snapshot.sessions {
        let Some(name) = cr.metadata.name.as_deref() else { continue };
        let Some(session) = desired.session(&name.into()) else {
            // Forgotten after retention (duplicates are planned by the caller).
            if cr.status.as_ref().and_then(|s| s.phase).is_some_and(SessionPhase::is_terminal) {
                writes.push(Write::DeleteSession { name: name.to_owned() });
            }
            continue;
        };
        let mut status = session_status(desired, session);
        // An ended session's pod goes away after its final status; the record keeps its node.
        if session.phase.is_terminal() && status.node.is_none() {
            status.node = cr.status.as_ref().and_then(|s| s.node.clone());
        }
        // Ending with its pod still there: record the end now; the pod is deleted on the next
        // pass, once this record is in the cluster.
        if session.phase == SessionPhase::Ending
            && session.workstation.as_ref().is_some_and(|w| pods.contains(w.as_str()))
        {
            status.phase = Some(SessionPhase::Ended);
            status.ended_at = Some(now.to_string());
            status.queue_position = None;
        }
        if cr.status.as_ref() != Some(&status) {
            let after = pod_write_for.get(name).cloned();
            writes.push(Write::SessionStatus {
                name: name.to_owned(),
                status: Box::new(status),
                resource_version: cr.metadata.resource_version.clone(),
                after,
            });
        }
    }
}

/// Whether `session` is ending in `desired` while the cluster still records it live.
fn ending_unrecorded(desired: &State, session: Option<&SessionId>, recorded_live: &HashSet<&str>) -> bool {
    session.is_some_and(|s| {
        recorded_live.contains(s.as_str()) && desired.session(s).is_some_and(|x| !x.phase.is_live())
    })
}

/// Pool counts are written at most this often.
pub const POOL_STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn plan_pools(desired: &State, snapshot: &Snapshot, now: Timestamp, writes: &mut Vec<Write>) {
    for cr in &snapshot.pools {
        let Some(name) = cr.metadata.name.as_deref() else { continue };
        let c = desired.counts(&name.into());
        let current = cr.status.clone().unwrap_or_default();
        let mut status = CapacityPoolStatus {
            warm: c.warm,
            starting: c.starting_unclaimed + c.starting_reserved,
            in_use: c.in_use,
            queued: c.queued,
            desired_warm_reason: current.desired_warm_reason.clone(),
            updated_at: current.updated_at.clone(),
            autoscaler: Some(super::scale_memory::status_of(desired.memory(&name.into()).scale())),
        };
        let written_at = current.updated_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
        let due = written_at.is_none_or(|t| now.duration_since(t).unsigned_abs() >= POOL_STATUS_INTERVAL);
        // The autoscaler's memory is written as soon as it changes, whatever the counts' rate
        // limit: the next pass restores it from here, and a lost change would restart a
        // cooldown or repeat a decision.
        let remembered = current.autoscaler != status.autoscaler;
        if (current != status && due) || remembered {
            status.updated_at = Some(now.to_string());
            writes.push(Write::PoolStatus { name: name.to_owned(), status });
        }
    }
}
