//! Pure builder of workstation pods from a CapacityPool's template: no client required.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Capabilities, Pod, PodSecurityContext, SeccompProfile, SecurityContext},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use crate::kubernetes::labels;

/// Who owns a new pod: its session (started for it) or its pool (warm).
#[derive(Debug, Clone)]
pub struct Owner {
    /// `CapacityPool` or `WorkstationSession`.
    pub kind: &'static str,
    /// Object name.
    pub name: String,
    /// Object uid.
    pub uid: String,
}

impl Owner {
    /// The controller owner reference to this owner.
    pub fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "cadbroker.io/v1alpha1".into(),
            kind: self.kind.into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// What a workstation pod is built from.
#[derive(Debug, Clone)]
pub struct PodInput<'a> {
    /// Pod name (the workstation id).
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Pool name.
    pub pool: &'a str,
    /// The pool's pod template.
    pub template: &'a k8s_openapi::api::core::v1::PodTemplateSpec,
    /// The pool's GPU model, if pinned.
    pub gpu_model: Option<&'a str>,
    /// The session it is started for, if any.
    pub session: Option<&'a str>,
    /// Its owner.
    pub owner: &'a Owner,
}

/// Builds the pod: the template plus cadbroker's labels and owner, no service-account token,
/// no user-supplied `NVIDIA_*` variables (they could widen GPU access past the device plugin),
/// and the restricted Pod Security settings wherever the template leaves them open.
pub fn build_workstation_pod(input: &PodInput<'_>) -> Pod {
    let mut spec = input.template.spec.clone().unwrap_or_default();
    let mut meta_labels: BTreeMap<String, String> =
        input.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    meta_labels.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
    meta_labels.insert(labels::POOL.into(), input.pool.into());
    if let Some(session) = input.session {
        meta_labels.insert(labels::SESSION.into(), session.into());
    }
    spec.automount_service_account_token = Some(false);
    spec.restart_policy.get_or_insert_with(|| "Never".into());
    if let Some(model) = input.gpu_model {
        spec.node_selector
            .get_or_insert_with(Default::default)
            .entry(labels::GPU_PRODUCT.into())
            .or_insert(model.into());
    }
    let pod_sc = spec.security_context.get_or_insert_with(PodSecurityContext::default);
    pod_sc.run_as_non_root.get_or_insert(true);
    pod_sc
        .seccomp_profile
        .get_or_insert_with(|| SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() });
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        let sc = c.security_context.get_or_insert_with(SecurityContext::default);
        sc.allow_privilege_escalation.get_or_insert(false);
        sc.capabilities.get_or_insert_with(|| Capabilities { drop: Some(vec!["ALL".into()]), add: None });
        if let Some(env) = c.env.as_mut() {
            env.retain(|e| !e.name.starts_with("NVIDIA_"));
        }
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(input.name.into()),
            namespace: Some(input.namespace.into()),
            labels: Some(meta_labels),
            annotations: input.template.metadata.as_ref().and_then(|m| m.annotations.clone()),
            owner_references: Some(vec![input.owner.reference()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};

    use super::*;

    fn template() -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "spec": { "containers": [{ "name": "desktop", "image": "cad:1",
                "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}, {"name": "LANG", "value": "nl_NL"}],
                "resources": { "limits": { "nvidia.com/gpu": "2" } } }] }
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_is_locked_down_where_the_template_leaves_it_open() {
        let owner = Owner { kind: "CapacityPool", name: "cad".into(), uid: "u1".into() };
        let t = template();
        let pod = build_workstation_pod(&PodInput {
            name: "cad-ws-1",
            namespace: "ns",
            pool: "cad",
            template: &t,
            gpu_model: Some("NVIDIA-A10"),
            session: None,
            owner: &owner,
        });
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        let c: &Container = &spec.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_owned()]));
        let env: Vec<&EnvVar> = c.env.as_ref().unwrap().iter().collect();
        assert_eq!(env.len(), 1, "NVIDIA_* variables are stripped");
        assert_eq!(spec.node_selector.unwrap()["nvidia.com/gpu.product"], "NVIDIA-A10");
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "cadbroker");
        assert!(!labels.contains_key("cadbroker.io/session"));
        assert_eq!(pod.metadata.owner_references.unwrap()[0].kind, "CapacityPool");
    }
}
