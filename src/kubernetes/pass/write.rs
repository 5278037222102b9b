//! The writes a pass asks for: what the executor ([`crate::kubernetes::io::execute`]) carries
//! out against the API server. Workstation writes come first and carry what they guard.

use k8s_openapi::api::core::v1::Pod;

use crate::{
    crd::{CapacityPoolStatus, WorkstationSessionStatus},
    kubernetes::workload::{WorkloadKind, WorkstationManifest},
};

/// One write to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create a workstation's object.
    CreateWorkstation { manifest: WorkstationManifest },
    /// Delete a workstation's object (if its uid is still `uid`); `session` is the one it
    /// was started for or taken by.
    DeleteWorkstation { kind: WorkloadKind, name: String, uid: String, session: Option<String> },
    /// Create a placeholder pod.
    CreatePlaceholder { pod: Box<Pod> },
    /// Delete a placeholder pod (if its uid is still `uid`).
    DeletePlaceholder { name: String, uid: String },
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

impl Write {
    /// Whether it writes a workstation or placeholder object (the executor's first wave).
    pub fn is_object_write(&self) -> bool {
        matches!(
            self,
            Self::CreateWorkstation { .. }
                | Self::DeleteWorkstation { .. }
                | Self::CreatePlaceholder { .. }
                | Self::DeletePlaceholder { .. }
        )
    }
}
