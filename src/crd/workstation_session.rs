//! `WorkstationSession`: one drafter's request for a workstation (the intent, in `spec`) and
//! what became of it (`status`, written by the leader). Ended sessions are kept for the
//! retention period as the usage record.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::domain::{EndReason, SessionPhase, Warning};

/// A drafter's session on a GPU workstation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cadbroker.io",
    version = "v1alpha1",
    kind = "WorkstationSession",
    namespaced,
    status = "WorkstationSessionStatus",
    shortname = "wss",
    category = "cadbroker",
    doc = "A drafter's request for a workstation from a CapacityPool, and its state.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.user"),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.user",
    selectable = ".spec.pool"
)]
#[serde(rename_all = "camelCase")]
pub struct WorkstationSessionSpec {
    /// Stable user key (issuer + subject, or Entra tenant + object id); never an e-mail.
    #[x_kube(validation = Rule::new("self == oldSelf").message("user cannot change"))]
    pub user: String,
    /// The CapacityPool asked for.
    #[x_kube(validation = Rule::new("self == oldSelf").message("pool cannot change"))]
    pub pool: String,
    /// When the request was made (RFC 3339); orders the queue.
    #[x_kube(validation = Rule::new("self == oldSelf").message("requestedAt cannot change"))]
    pub requested_at: String,
    /// The client's Idempotency-Key, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// What became of the request: written by the leader, and the final status by the replica
/// that ends the session through the API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkstationSessionStatus {
    /// Queued, Starting, Ready, Ending, Ended or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// The workstation pod held or waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Node of that pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// 1-based position in the pool's queue while Queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// When it became Ready (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    /// Last recorded activity (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    /// A pending warning of a forced end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<Warning>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Detail, for example the scheduler's reason while a pod is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
