//! `CapacityPool`: an admin's definition of one kind of workstation and its limits. Its fields
//! reuse the domain's pool types, so the config file, the admin API and the cluster agree.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::domain::{Access, Capacity, ConnectSpec, SessionLimits};

/// A pool of GPU workstations drafters can request from.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cadbroker.io",
    version = "v1alpha1",
    kind = "CapacityPool",
    namespaced,
    status = "CapacityPoolStatus",
    shortname = "cpool",
    category = "cadbroker",
    doc = "A pool of GPU workstations: pod template, size limits, warm buffer, access and session limits.",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.capacity.min"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.capacity.max"),
    printcolumn(name = "Warm", type_ = "integer", json_path = ".status.warm"),
    printcolumn(name = "InUse", type_ = "integer", json_path = ".status.inUse"),
    printcolumn(name = "Queued", type_ = "integer", json_path = ".status.queued"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.capacity.warm <= self.spec.capacity.max").message("capacity.warm must not exceed capacity.max"),
    validation = Rule::new("self.spec.capacity.min <= self.spec.capacity.max").message("capacity.min must not exceed capacity.max"),
    validation = Rule::new("!has(self.spec.placeholders) || self.spec.placeholders.count <= self.spec.capacity.max").message("placeholders.count must not exceed capacity.max"),
)]
#[serde(rename_all = "camelCase")]
pub struct CapacityPoolSpec {
    /// What the admin API manages too: names, capacity, access, limits, connect, schedules
    /// and autoscale tuning (one list of fields for the object and for the admin API's patch).
    #[serde(flatten)]
    pub managed: ManagedPoolSpec,
    /// The workstation pod: image, resources (`nvidia.com/gpu` or a MIG resource), node
    /// selector, tolerations, runtime class, env, volumes. cadbroker adds its labels, an owner
    /// reference, disables the service-account token and applies a restricted security context
    /// where the template leaves it open.
    #[schemars(schema_with = "preserve_unknown")]
    pub template: PodTemplateSpec,
    /// Low-priority placeholder pods that hold room for this pool's workstations on GPU nodes,
    /// so that the cluster autoscaler adds nodes ahead of demand. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholders: Option<PlaceholderSpec>,
}

/// The part of a pool's spec that the admin API manages as well as the cluster's own tools:
/// everything but the workload template and the placeholders. `PUT /api/v1/pools/{name}`
/// writes it as a merge patch (`crd::ManagedPoolSpec::merge_patch`); optional fields serialize
/// as `null` so that a patch clears them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedPoolSpec {
    /// Name shown to drafters.
    #[serde(default)]
    pub display_name: String,
    /// One or two sentences for the portal.
    #[serde(default)]
    pub description: String,
    /// GPU model the workstations need (the `nvidia.com/gpu.product` node label), if pinned.
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// Size limits and warm buffer.
    pub capacity: Capacity,
    /// Who may request workstations (admins always may).
    #[serde(default)]
    pub access: Access,
    /// Idle and lifetime limits of a session.
    #[serde(default)]
    pub limits: SessionLimits,
    /// Where the desktop listens inside a workstation pod.
    #[serde(default)]
    pub connect: ConnectSpec,
    /// Time-zone aware windows that override `capacity.warm` and `capacity.min` while they are
    /// open (correct across daylight-saving changes); the first open window wins.
    #[serde(default)]
    pub schedules: Vec<super::ScheduleWindowSpec>,
    /// How recent demand raises the warm buffer and how long a higher level is held.
    #[serde(default)]
    pub autoscale: Option<super::AutoscaleTuning>,
}

/// Placeholder pods of a pool. Each asks for what one workstation asks for (the template's
/// resources, node selector, tolerations, affinity and runtime class, and its image, so that a
/// new node pulls it ahead of the first workstation), runs nothing but `sleep`, and has a
/// PriorityClass below every real workload: a workstation that finds no room preempts one,
/// and the placeholder the pool then creates again stays Pending, which is what makes the
/// cluster autoscaler add a node. Workstations and placeholders together never exceed
/// `capacity.max`: placeholders give way as workstations fill the pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaceholderSpec {
    /// How many placeholder pods to keep (at most `capacity.max`; 0 keeps none).
    #[serde(default)]
    pub count: u32,
    /// PriorityClass of the placeholder pods: a negative value with `preemptionPolicy: Never`
    /// (the chart creates `cadbroker-placeholder`). Workstation templates set
    /// `priorityClassName` to a higher class (the chart's `cadbroker-workstation`).
    #[serde(default = "default_placeholder_class")]
    pub priority_class_name: String,
}

/// The PriorityClass the chart creates for placeholders (`priorityClasses.placeholder.name`).
pub const DEFAULT_PLACEHOLDER_CLASS: &str = "cadbroker-placeholder";

fn default_placeholder_class() -> String {
    DEFAULT_PLACEHOLDER_CLASS.into()
}

/// How the pool is used right now, written by the leader.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityPoolStatus {
    /// Ready, unclaimed workstations.
    #[serde(default)]
    pub warm: u32,
    /// Workstations starting.
    #[serde(default)]
    pub starting: u32,
    /// Workstations held by sessions.
    #[serde(default)]
    pub in_use: u32,
    /// Sessions waiting in the queue.
    #[serde(default)]
    pub queued: u32,
    /// Why the warm buffer has its size now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_warm_reason: Option<String>,
    /// When these counts were written (RFC 3339). They are refreshed at most every 10 seconds,
    /// so that a busy pool does not cost a status write per claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The autoscaler's memory: the warm target in force and its cooldown. Kept here because
    /// every allocator pass, and every restarted or newly elected broker, rebuilds its state
    /// from the cluster; without it a lower target would apply at once instead of after
    /// `scaleDownCooldown`. Written whenever it changes, not only every 10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerMemory>,
}

/// What the autoscaler remembers of one pool between passes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerMemory {
    /// The warm buffer target in force.
    #[serde(default)]
    pub warm: u32,
    /// Since when (RFC 3339) the computed target has been below `warm`; null while it is not.
    /// Written as null rather than left out, so that a merge patch clears it.
    #[serde(default)]
    pub below_since: Option<String>,
    /// The highest target computed since `belowSince` (what the buffer drops to when the
    /// cooldown has passed); null while the target is not below `warm`.
    #[serde(default)]
    pub below_peak: Option<u32>,
    /// Whether holding `warm` for the cooldown was already recorded as a decision (once per
    /// level).
    #[serde(default)]
    pub hold_recorded: bool,
}

/// The pod template schema is the largest part of the CRD; the API server validates pods
/// when they are created, so the CRD keeps the template's fields as given.
fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A PodTemplateSpec (metadata and spec), validated by the API server when workstation pods are created.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
