//! Carries out planned writes against the API server: pod writes first (creates, claims as
//! compare-and-swap, deletes), then the status writes that depended on them. 404 on delete and
//! 409 on create count as done; a lost claim race is skipped and decided again next pass.

use std::collections::HashSet;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
};
use serde_json::{Value, json};

use super::plan::Write;
use crate::crd::{CapacityPool, WorkstationSession};

/// Writes in flight at once.
const CONCURRENCY: usize = 8;

/// Outcome of one pass's writes, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Writes that succeeded.
    pub done: u64,
    /// Writes that failed (retried by a later pass).
    pub failed: u64,
    /// Writes skipped because the pod write they depended on failed.
    pub skipped: u64,
}

/// The API handles writes need.
#[derive(Clone)]
pub struct Writer {
    pods: Api<Pod>,
    sessions: Api<WorkstationSession>,
    pools: Api<CapacityPool>,
}

const STATUS_FIELDS: [&str; 10] = [
    "phase",
    "pod",
    "node",
    "queuePosition",
    "readyAt",
    "lastActivity",
    "warning",
    "endedAt",
    "endReason",
    "message",
];

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Writer {
    /// Writers in `namespace`.
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self {
            pods: Api::namespaced(client.clone(), namespace),
            sessions: Api::namespaced(client.clone(), namespace),
            pools: Api::namespaced(client.clone(), namespace),
        }
    }

    /// Executes `writes` in two waves.
    pub async fn execute(&self, writes: Vec<Write>) -> Outcome {
        let (pod_writes, rest): (Vec<_>, Vec<_>) = writes.into_iter().partition(|w| {
            matches!(w, Write::CreatePod { .. } | Write::ClaimPod { .. } | Write::DeletePod { .. })
        });
        let mut outcome = Outcome::default();
        let results: Vec<(Option<String>, bool)> =
            stream::iter(pod_writes).map(|w| self.pod_write(w)).buffer_unordered(CONCURRENCY).collect().await;
        let mut failed_pods = HashSet::new();
        for (name, ok) in results {
            if ok {
                outcome.done += 1;
            } else {
                outcome.failed += 1;
                failed_pods.extend(name);
            }
        }
        let rest: Vec<_> = rest
            .into_iter()
            .filter(|w| match w {
                Write::SessionStatus { after: Some(pod), .. } if failed_pods.contains(pod) => {
                    outcome.skipped += 1;
                    false
                }
                _ => true,
            })
            .collect();
        let results: Vec<bool> =
            stream::iter(rest).map(|w| self.other_write(w)).buffer_unordered(CONCURRENCY).collect().await;
        for ok in results {
            if ok { outcome.done += 1 } else { outcome.failed += 1 }
        }
        outcome
    }

    async fn pod_write(&self, write: Write) -> (Option<String>, bool) {
        match write {
            Write::CreatePod { pod } => {
                let name = pod.metadata.name.clone();
                let result = self.pods.create(&PostParams::default(), &pod).await;
                let ok = match &result {
                    Ok(_) => true,
                    // Already there: an earlier pass or another allocator created it.
                    Err(e) if is_status(e, 409) => true,
                    Err(e) => {
                        tracing::warn!(pod = ?name, error = %e, category = "create_pod", "write failed");
                        false
                    }
                };
                (name, ok)
            }
            Write::ClaimPod { name, session, owner, resource_version } => {
                let patch = json!({ "metadata": {
                    "resourceVersion": resource_version,
                    "labels": { super::labels::SESSION: session },
                    "ownerReferences": [owner.reference()],
                }});
                let result = self.pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                if let Err(e) = &result {
                    let category = if is_status(e, 409) { "claim_conflict" } else { "claim_pod" };
                    tracing::info!(pod = %name, %session, error = %e, category, "claim not made");
                }
                (Some(name), result.is_ok())
            }
            Write::DeletePod { name, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                    ..Default::default()
                };
                let result = self.pods.delete(&name, &dp).await;
                let ok = match &result {
                    Ok(_) => true,
                    Err(e) if is_status(e, 404) || is_status(e, 409) => true,
                    Err(e) => {
                        tracing::warn!(pod = %name, error = %e, category = "delete_pod", "write failed");
                        false
                    }
                };
                (Some(name), ok)
            }
            _ => (None, true),
        }
    }

    async fn other_write(&self, write: Write) -> bool {
        let (what, result) = match write {
            Write::SessionStatus { name, status, .. } => {
                let mut value = serde_json::to_value(&*status).unwrap_or(Value::Null);
                if let Some(map) = value.as_object_mut() {
                    // A merge patch removes a field only when it is null.
                    for field in STATUS_FIELDS {
                        map.entry(field).or_insert(Value::Null);
                    }
                }
                let patch = json!({ "status": value });
                let r =
                    self.sessions.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                ("session_status", r.map(|_| ()))
            }
            Write::DeleteSession { name } => {
                let r = self.sessions.delete(&name, &DeleteParams::default()).await;
                (
                    "delete_session",
                    r.map(|_| ()).or_else(|e| if is_status(&e, 404) { Ok(()) } else { Err(e) }),
                )
            }
            Write::PoolStatus { name, status } => {
                let patch = json!({ "status": status });
                let r = self.pools.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                ("pool_status", r.map(|_| ()))
            }
            _ => return true,
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, category = what, "write failed");
        }
        result.is_ok()
    }
}
