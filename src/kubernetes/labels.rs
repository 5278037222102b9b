//! Label and annotation keys cadbroker puts on the objects it owns, and the selectors that
//! scope its watches.

/// Every pod cadbroker creates carries `app.kubernetes.io/managed-by=cadbroker`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGER: &str = "cadbroker";
/// The pool a workstation pod belongs to.
pub const POOL: &str = "cadbroker.io/pool";
/// The session holding a workstation pod (absent while warm).
pub const SESSION: &str = "cadbroker.io/session";
/// Annotation on a WorkstationSession: last activity seen by any replica (RFC 3339).
pub const LAST_ACTIVITY: &str = "cadbroker.io/last-activity";
/// Annotation on a WorkstationSession: when its last desktop connection closed (RFC 3339),
/// for the reconnect grace; it counts while it is later than [`LAST_ACTIVITY`].
pub const DISCONNECTED_AT: &str = "cadbroker.io/disconnected-at";
/// What a pod is for, on pods that are not workstations: `placeholder`.
pub const ROLE: &str = "cadbroker.io/role";
/// Value of [`ROLE`] on placeholder pods.
pub const ROLE_PLACEHOLDER: &str = "placeholder";
/// The pool a placeholder pod holds room for. Placeholders deliberately do not carry [`POOL`],
/// so that nothing that reads workstations from pods can mistake one for a workstation.
pub const PLACEHOLDER_FOR: &str = "cadbroker.io/placeholder-for";
/// Label on the Events that record the autoscaler's and the culler's decisions: the pool
/// decided about, so that any replica lists a pool's decisions with one label selector.
pub const DECISION_POOL: &str = "cadbroker.io/decision-pool";
/// Annotation on those Events: the whole decision (kind, reason, inputs) as JSON.
pub const DECISION: &str = "cadbroker.io/decision";
/// GPU model node label set by NVIDIA GPU feature discovery.
pub const GPU_PRODUCT: &str = "nvidia.com/gpu.product";

/// Label selector of the pods cadbroker watches.
pub fn managed_pods() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}
