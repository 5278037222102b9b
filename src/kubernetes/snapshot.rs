//! What the watch caches hold, as one value the pure passes read: pools, sessions and the pods
//! cadbroker manages. The snapshot sorts those pods into workstations (through the workload
//! seam, [`super::workload`]) and placeholders; nothing else reads pod labels for that.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::{labels, workload::WorkstationObject};
use crate::crd::{CapacityPool, WorkstationSession};

/// Everything the watch caches hold, as one consistent-enough view.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// CapacityPool objects.
    pub pools: Vec<Arc<CapacityPool>>,
    /// WorkstationSession objects.
    pub sessions: Vec<Arc<WorkstationSession>>,
    /// Pods labelled as managed by cadbroker: workstations and placeholders.
    pub pods: Vec<Arc<Pod>>,
}

impl Snapshot {
    /// The objects that back workstations, of every workload kind.
    pub fn workstations(&self) -> impl Iterator<Item = WorkstationObject<'_>> {
        self.pods.iter().filter(|p| !is_placeholder(p)).map(|p| WorkstationObject::Pod(p))
    }

    /// The placeholder pods of every pool.
    pub fn placeholders(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().map(AsRef::as_ref).filter(|p| is_placeholder(p))
    }
}

/// Whether a pod is a placeholder (of any pool).
pub fn is_placeholder(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get(labels::ROLE).is_some_and(|r| r == labels::ROLE_PLACEHOLDER))
}
