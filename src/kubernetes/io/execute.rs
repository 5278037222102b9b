//! Carries out planned writes against the API server: workstation and placeholder writes
//! first (creates, deletes), then the status writes that depended on them. 404 on delete and
//! 409 on create count as done; a lost race is skipped and decided again next pass. Each
//! failure is counted under its category and reported as a Kubernetes Event on the object it
//! concerns (the session or the pool), so `kubectl describe` shows why a session is stuck.

use std::{collections::HashSet, sync::Arc};

use either::Either;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
};
use serde_json::{Value, json};

use super::{
    events::{self, Events},
    metrics::{Category, KubeMetrics},
    overlay::Written,
};
use crate::{
    crd::{CapacityPool, WorkstationSession, WorkstationSessionStatus},
    kubernetes::{
        labels,
        pass::write::Write,
        workload::{WorkloadKind, WorkstationManifest},
    },
};

/// Writes in flight at once.
const CONCURRENCY: usize = 32;

/// Outcome of one pass's writes.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Writes that succeeded.
    pub done: u64,
    /// Writes that failed (retried by a later pass).
    pub failed: u64,
    /// Writes skipped because the pod write they depended on failed.
    pub skipped: u64,
    /// What the successful writes left in the cluster (for the overlay).
    pub written: Vec<Written>,
}

/// The API handles writes need.
#[derive(Clone)]
pub struct Writer {
    pods: Api<Pod>,
    sessions: Api<WorkstationSession>,
    pools: Api<CapacityPool>,
    metrics: Arc<KubeMetrics>,
    events: Events,
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
    pub fn new(client: &Client, namespace: &str, metrics: Arc<KubeMetrics>, events: Events) -> Self {
        Self {
            pods: Api::namespaced(client.clone(), namespace),
            sessions: Api::namespaced(client.clone(), namespace),
            pools: Api::namespaced(client.clone(), namespace),
            metrics,
            events,
        }
    }

    /// Counts a failure and reports it on the object it concerns (a session, or a pool when
    /// `session` is `None` and `pool` is known).
    async fn failed(&self, category: Category, session: Option<&str>, pool: Option<&str>, e: &kube::Error) {
        self.metrics.error(category);
        tracing::warn!(error = %e, category = category.label(), session, pool, "write failed");
        let note = format!("{}: {}", category.label(), events::short(e));
        match (session, pool) {
            (Some(s), _) => self.events.warn_session(s, category.reason(), note).await,
            (None, Some(p)) => self.events.warn_pool(p, category.reason(), note).await,
            _ => {}
        }
    }

    /// Executes `writes` in two waves.
    pub async fn execute(&self, writes: Vec<Write>) -> Outcome {
        let (pod_writes, rest): (Vec<_>, Vec<_>) = writes.into_iter().partition(Write::is_object_write);
        let mut outcome = Outcome::default();
        let results: Vec<(Option<String>, bool, Option<Written>)> = stream::iter(pod_writes)
            .map(|w| self.object_write(w))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut failed_pods = HashSet::new();
        for (name, ok, written) in results {
            outcome.written.extend(written);
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
        let results: Vec<(bool, Option<Written>)> =
            stream::iter(rest).map(|w| self.other_write(w)).buffer_unordered(CONCURRENCY).collect().await;
        for (ok, written) in results {
            outcome.written.extend(written);
            if ok { outcome.done += 1 } else { outcome.failed += 1 }
        }
        outcome
    }

    async fn object_write(&self, write: Write) -> (Option<String>, bool, Option<Written>) {
        let point = fault::point_of(&write);
        let outcome = self.object_write_inner(write).await;
        if outcome.1 {
            fault::pause_after(point).await;
        }
        outcome
    }

    async fn object_write_inner(&self, write: Write) -> (Option<String>, bool, Option<Written>) {
        match write {
            Write::CreateWorkstation { manifest } => self.create_workstation(manifest).await,
            Write::DeleteWorkstation { kind: WorkloadKind::Pod, name, uid, session } => {
                self.delete_pod(name, uid, session).await
            }
            Write::CreatePlaceholder { pod } => self.create_pod(*pod).await,
            Write::DeletePlaceholder { name, uid } => self.delete_pod(name, uid, None).await,
            _ => (None, true, None),
        }
    }

    async fn create_workstation(
        &self,
        manifest: WorkstationManifest,
    ) -> (Option<String>, bool, Option<Written>) {
        match manifest {
            WorkstationManifest::Pod(pod) => self.create_pod(*pod).await,
        }
    }

    async fn create_pod(&self, pod: Pod) -> (Option<String>, bool, Option<Written>) {
        let name = pod.metadata.name.clone();
        let result = self.pods.create(&PostParams::default(), &pod).await;
        let ok = match &result {
            Ok(_) => true,
            // Already there: an earlier pass or another allocator created it.
            Err(e) if is_status(e, 409) => true,
            Err(e) => {
                let session = pod_label(&pod, labels::SESSION);
                // A placeholder's failure (say, its PriorityClass is missing) shows on its pool.
                let pool = pod_label(&pod, labels::POOL).or_else(|| pod_label(&pod, labels::PLACEHOLDER_FOR));
                self.failed(Category::CreatePod, session, pool, e).await;
                false
            }
        };
        (name, ok, result.ok().map(|p| Written::Pod(Box::new(p))))
    }

    async fn delete_pod(
        &self,
        name: String,
        uid: String,
        session: Option<String>,
    ) -> (Option<String>, bool, Option<Written>) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            ..Default::default()
        };
        let written = match self.pods.delete(&name, &dp).await {
            // Terminating (a grace period): the pod as it is now.
            Ok(Either::Left(pod)) => Written::Pod(Box::new(pod)),
            Ok(Either::Right(_)) => Written::PodGone(name.clone()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Written::PodGone(name.clone()),
            Err(e) => {
                self.failed(Category::DeletePod, session.as_deref(), None, &e).await;
                return (Some(name), false, None);
            }
        };
        (Some(name), true, Some(written))
    }

    async fn other_write(&self, write: Write) -> (bool, Option<Written>) {
        let (category, session, pool, result) = match write {
            Write::SessionStatus { name, status, resource_version, .. } => {
                let r = write_status(&self.sessions, &name, &status, resource_version.as_deref()).await;
                if let Err(e) = &r
                    && is_status(e, 409)
                {
                    // Changed since this pass read it: the next pass decides from the new object.
                    self.metrics.error(Category::StatusConflict);
                    return (false, None);
                }
                (Category::SessionStatus, Some(name), None, r.map(|s| Some(Written::Session(Box::new(s)))))
            }
            Write::DeleteSession { name } => {
                let r = self.sessions.delete(&name, &DeleteParams::default()).await;
                let r = r.map(|_| None).or_else(|e| if is_status(&e, 404) { Ok(None) } else { Err(e) });
                (Category::DeleteSession, None, None, r)
            }
            Write::PoolStatus { name, status } => {
                let patch = json!({ "status": status });
                let r = self.pools.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                (Category::PoolStatus, None, Some(name), r.map(|p| Some(Written::Pool(Box::new(p)))))
            }
            _ => return (true, None),
        };
        match result {
            Ok(written) => (true, written),
            Err(e) => {
                self.failed(category, session.as_deref(), pool.as_deref(), &e).await;
                (false, None)
            }
        }
    }
}

/// Replaces a session's status with a merge patch, as a compare-and-swap when
/// `resource_version` is given (409 when the object changed since).
pub(in crate::kubernetes) async fn write_status(
    sessions: &Api<WorkstationSession>,
    name: &str,
    status: &WorkstationSessionStatus,
    resource_version: Option<&str>,
) -> Result<WorkstationSession, kube::Error> {
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        // A merge patch removes a field only when it is null.
        for field in STATUS_FIELDS {
            map.entry(field).or_insert(Value::Null);
        }
    }
    let mut patch = json!({ "status": value });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    sessions.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await
}

fn pod_label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Test-only pauses in the write sequence, so that a test can kill -9 the broker exactly
/// between a pod write and the status write that follows it.
pub(in crate::kubernetes) mod fault {
    use crate::kubernetes::{labels, pass::write::Write};

    /// The pause point of a write that concerns a session (warm-buffer writes have none).
    pub fn point_of(write: &Write) -> &'static str {
        match write {
            Write::CreateWorkstation { manifest } if manifest.label(labels::SESSION).is_some() => "create",
            Write::DeleteWorkstation { session: Some(_), .. } => "delete",
            _ => "",
        }
    }

    /// With `CADBROKER_PAUSE_AFTER=<point>`, announces the point on stderr and never returns.
    #[cfg(feature = "fault-injection")]
    pub(in crate::kubernetes) async fn pause_after(point: &str) {
        if std::env::var("CADBROKER_PAUSE_AFTER").is_ok_and(|p| p == point) {
            eprintln!("cadbroker-fault: paused after {point}");
            std::future::pending::<()>().await;
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    pub(in crate::kubernetes) async fn pause_after(_point: &str) {}
}
