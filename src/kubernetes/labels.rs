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
/// GPU model node label set by NVIDIA GPU feature discovery.
pub const GPU_PRODUCT: &str = "nvidia.com/gpu.product";
/// The GPU extended resource.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Label selector of the pods cadbroker watches.
pub fn managed_pods() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}
