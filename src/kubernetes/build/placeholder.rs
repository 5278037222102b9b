//! Placeholder pods as objects, pure: the pod a placeholder of a pool is.
//!
//! A placeholder holds room for one workstation on a GPU node at a PriorityClass below every
//! real workload (see [`crate::kubernetes::pass::placeholders`] for how many a pool keeps).
//! Placeholders are never workstations: they carry `cadbroker.io/role=placeholder` and
//! `cadbroker.io/placeholder-for` instead of `cadbroker.io/pool`, and restore skips them.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};

use super::pod::{Owner, PodInput, build_workstation_pod};
use crate::{crd::CapacityPool, kubernetes::labels};

/// Name of a pool's `n`-th placeholder.
pub fn placeholder_name(pool: &str, n: u32) -> String {
    format!("{pool}-placeholder-{n}")
}

/// Builds placeholder pod `name` of `pool`: the template's scheduling constraints and
/// resources, its images running `sleep infinity` (an image without `sleep` restarts, yet the
/// pod keeps its node and its resources, which is all a placeholder is for), nothing else of
/// the template (no env, volumes or init containers: it runs nothing, so it must not check out
/// licences or mount home volumes), the placeholder PriorityClass, no grace period (so a
/// preempting workstation waits as little as possible), and the pool as its owner.
pub fn build_placeholder_pod(pool: &CapacityPool, name: &str, namespace: &str, priority_class: &str) -> Pod {
    let pool_name = pool.metadata.name.clone().unwrap_or_default();
    let template = &pool.spec.template;
    let src = template.spec.clone().unwrap_or_default();
    let containers = src
        .containers
        .iter()
        .map(|c| Container {
            name: c.name.clone(),
            image: c.image.clone(),
            image_pull_policy: c.image_pull_policy.clone(),
            command: Some(vec!["sleep".into(), "infinity".into()]),
            resources: c.resources.clone(),
            security_context: c.security_context.clone(),
            ..Default::default()
        })
        .collect();
    let spec = PodSpec {
        containers,
        node_selector: src.node_selector,
        tolerations: src.tolerations,
        affinity: src.affinity,
        topology_spread_constraints: src.topology_spread_constraints,
        runtime_class_name: src.runtime_class_name,
        scheduler_name: src.scheduler_name,
        image_pull_secrets: src.image_pull_secrets,
        resource_claims: src.resource_claims,
        security_context: src.security_context,
        priority_class_name: Some(priority_class.to_owned()),
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(0),
        ..Default::default()
    };
    let reduced = PodTemplateSpec { metadata: template.metadata.clone(), spec: Some(spec) };
    let owner = Owner {
        kind: "CapacityPool",
        name: pool_name.clone(),
        uid: pool.metadata.uid.clone().unwrap_or_default(),
    };
    // The workstation builder adds cadbroker's labels and the restricted security context the
    // workstations namespace enforces; then the pool label gives way to the placeholder's own.
    let mut pod = build_workstation_pod(&PodInput {
        name,
        namespace,
        pool: &pool_name,
        template: &reduced,
        gpu_model: pool.spec.managed.gpu_model.as_deref(),
        session: None,
        owner: &owner,
    });
    let meta_labels = pod.metadata.labels.get_or_insert_with(Default::default);
    meta_labels.remove(labels::POOL);
    meta_labels.remove(labels::SESSION);
    meta_labels.insert(labels::ROLE.into(), labels::ROLE_PLACEHOLDER.into());
    meta_labels.insert(labels::PLACEHOLDER_FOR.into(), pool_name);
    pod
}
