//! Pure diff of the desired domain state against the cluster: the writes that make the cluster
//! match. Workstation writes come first and carry what they guard: a session's status is
//! written only if the workstation write it depends on succeeded. No write here claims a
//! buffer workstation: only a request's create of a session under its name does
//! (docs/cluster-mode.md), and every
//! status write is a compare-and-swap on the session's resourceVersion, so a pass that read
//! the cluster before an API replica ended a session cannot write it back to life.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;

use super::write::Write;
use crate::{
    crd::{CapacityPool, CapacityPoolStatus},
    domain::{SessionId, SessionPhase, State, Workstation, WorkstationPhase},
    kubernetes::{
        build::{pod::Owner, session::session_status},
        snapshot::Snapshot,
        workload::{WorkstationInput, WorkstationManifest, WorkstationObject, build_workstation},
    },
};

/// Everything to write so that the cluster matches `desired`. `duplicates` are session objects
/// to delete because they repeat a live session.
pub fn plan(
    desired: &State,
    snapshot: &Snapshot,
    namespace: &str,
    duplicates: &[String],
    now: Timestamp,
) -> Vec<Write> {
    let cluster = Cluster::of(snapshot);
    let mut writes = Vec::new();
    let mut object_write_for: BTreeMap<String, String> = BTreeMap::new();
    for ws in desired.workstations() {
        let name = ws.id.as_str();
        match cluster.workstations.get(name) {
            None if ws.phase != WorkstationPhase::Stopping => {
                let Some(manifest) = cluster.manifest(ws, namespace) else { continue };
                if let Some(s) = &ws.session {
                    object_write_for.insert(s.to_string(), name.to_owned());
                }
                writes.push(Write::CreateWorkstation { manifest });
            }
            None => {}
            // A workstation is its session's by its label (started for it) or by its name
            // (taken by a named request): there is no claim to write, only deletes. The
            // workstation of a session that is ending is deleted only once the session's object
            // records the end (this pass writes it, the next deletes), so a broker killed in
            // between leaves an ended session with a workstation to delete, never a live one
            // whose workstation vanished.
            Some(object)
                if ws.phase == WorkstationPhase::Stopping
                    && !object.deleting()
                    && !ending_unrecorded(desired, ws.session.as_ref(), &cluster.recorded_live) =>
            {
                writes.push(Write::DeleteWorkstation {
                    kind: object.kind(),
                    name: name.to_owned(),
                    uid: object.uid().unwrap_or_default().to_owned(),
                    session: ws.session.as_ref().map(ToString::to_string),
                });
            }
            Some(_) => {}
        }
    }
    let existing: HashSet<&str> = cluster.workstations.keys().copied().collect();
    plan_sessions(desired, snapshot, &object_write_for, &existing, now, &mut writes);
    writes.extend(duplicates.iter().map(|name| Write::DeleteSession { name: name.clone() }));
    plan_pools(desired, snapshot, now, &mut writes);
    writes
}

/// The snapshot indexed by name, as the plan reads it.
struct Cluster<'a> {
    workstations: HashMap<&'a str, WorkstationObject<'a>>,
    session_uids: HashMap<&'a str, &'a str>,
    pools: HashMap<&'a str, &'a CapacityPool>,
    /// Sessions whose object still shows them live: their workstation goes only after their
    /// end is recorded.
    recorded_live: HashSet<&'a str>,
}

impl<'a> Cluster<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let sessions = || snapshot.sessions.iter();
        Self {
            workstations: snapshot.workstations().filter_map(|o| Some((o.name()?, o))).collect(),
            session_uids: sessions()
                .filter_map(|s| Some((s.metadata.name.as_deref()?, s.metadata.uid.as_deref()?)))
                .collect(),
            pools: snapshot
                .pools
                .iter()
                .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
                .collect(),
            recorded_live: sessions()
                .filter(|s| !s.status.as_ref().and_then(|st| st.phase).is_some_and(SessionPhase::is_terminal))
                .filter_map(|s| s.metadata.name.as_deref())
                .collect(),
        }
    }

    /// The object of a workstation to create, owned by its session (started for it) or its
    /// pool (warm); `None` while the pool or the session's object is not in the cache.
    fn manifest(&self, ws: &Workstation, namespace: &str) -> Option<WorkstationManifest> {
        let pool = self.pools.get(ws.pool.as_str())?;
        let owner = match &ws.session {
            Some(s) => {
                let uid = self.session_uids.get(s.as_str())?;
                Owner { kind: "WorkstationSession", name: s.to_string(), uid: uid.to_string() }
            }
            None => Owner {
                kind: "CapacityPool",
                name: ws.pool.to_string(),
                uid: pool.metadata.uid.clone().unwrap_or_default(),
            },
        };
        Some(build_workstation(&WorkstationInput {
            name: ws.id.as_str(),
            namespace,
            pool,
            session: ws.session.as_ref().map(|s| s.as_str()),
            owner: &owner,
        }))
    }
}

fn plan_sessions(
    desired: &State,
    snapshot: &Snapshot,
    object_write_for: &BTreeMap<String, String>,
    existing: &HashSet<&str>,
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
            && session.workstation.as_ref().is_some_and(|w| existing.contains(w.as_str()))
        {
            status.phase = Some(SessionPhase::Ended);
            status.ended_at = Some(now.to_string());
            status.queue_position = None;
        }
        if cr.status.as_ref() != Some(&status) {
            let after = object_write_for.get(name).cloned();
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
