//! The one translation between a CapacityPool's spec and the domain's pool, both ways: the
//! domain pool a CapacityPool stands for, the problems of the parts the domain cannot read, and
//! the merge patch that writes a domain pool back into an existing CapacityPool (its
//! [`ManagedPoolSpec`], the very fields the object's spec flattens in). Both
//! directions destructure their source without `..`, so a field added to either type fails to
//! compile here until it is carried across (or deliberately left out, with the reason).

use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::{AutoscaleTuning, CapacityPool, CapacityPoolSpec, ManagedPoolSpec, ScheduleWindowSpec};
use crate::domain::{PoolName, PoolSpec};

/// The GPU extended resource workstation templates ask for.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

impl From<&CapacityPool> for PoolSpec {
    /// Unusable schedule windows and tuning are left out here and reported by
    /// [`CapacityPool::spec_problems`].
    fn from(pool: &CapacityPool) -> Self {
        let CapacityPoolSpec {
            managed,
            template,
            placeholders: _, // cluster-only: the allocator reads them from the object
        } = &pool.spec;
        let ManagedPoolSpec {
            display_name,
            description,
            gpu_model,
            capacity,
            access,
            limits,
            connect,
            schedules,
            autoscale,
        } = managed;
        PoolSpec {
            name: PoolName(pool.metadata.name.clone().unwrap_or_default()),
            display_name: display_name.clone(),
            description: description.clone(),
            gpus_per_workstation: gpus_of(template),
            gpu_model: gpu_model.clone(),
            capacity: *capacity,
            access: access.clone(),
            limits: *limits,
            connect: connect.clone(),
            schedules: schedules.iter().filter_map(|w| w.to_domain().ok()).collect(),
            autoscale: autoscale.as_ref().and_then(|a| a.to_domain().ok()).unwrap_or_default(),
        }
    }
}

impl CapacityPool {
    /// Why parts of the spec are ignored: schedule windows or autoscale tuning whose values
    /// the domain cannot read (a misspelt time zone, a time like `7h30`, a duration like `15x`).
    pub fn spec_problems(&self) -> Vec<String> {
        let managed = &self.spec.managed;
        let windows = managed.schedules.iter().filter_map(|w| w.to_domain().err());
        let tuning = managed.autoscale.as_ref().and_then(|a| a.to_domain().err());
        windows.chain(tuning).collect()
    }
}

impl From<&PoolSpec> for ManagedPoolSpec {
    fn from(spec: &PoolSpec) -> Self {
        let PoolSpec {
            name: _,                 // the object's name, not part of its spec
            gpus_per_workstation: _, // read from the template's resources
            display_name,
            description,
            gpu_model,
            capacity,
            access,
            limits,
            connect,
            schedules,
            autoscale,
        } = spec;
        Self {
            display_name: display_name.clone(),
            description: description.clone(),
            gpu_model: gpu_model.clone(),
            capacity: *capacity,
            access: access.clone(),
            limits: *limits,
            connect: connect.clone(),
            schedules: schedules.iter().map(ScheduleWindowSpec::of).collect(),
            autoscale: Some(AutoscaleTuning::of(autoscale)),
        }
    }
}

impl ManagedPoolSpec {
    /// The JSON merge patch that writes these fields into a CapacityPool.
    pub fn merge_patch(&self) -> serde_json::Value {
        serde_json::json!({ "spec": self })
    }
}

/// Whole GPUs a pod template asks for (limits, else requests, of `nvidia.com/gpu`).
pub fn gpus_of(template: &PodTemplateSpec) -> u32 {
    let Some(spec) = &template.spec else { return 0 };
    spec.containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .filter_map(|r| {
            r.limits
                .as_ref()
                .and_then(|l| l.get(GPU_RESOURCE))
                .or_else(|| r.requests.as_ref().and_then(|q| q.get(GPU_RESOURCE)))
        })
        .filter_map(|q| q.0.parse::<u32>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;

    fn pool() -> CapacityPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cadbroker.io/v1alpha1", "kind": "CapacityPool",
            "metadata": { "name": "cad" },
            "spec": {
                "displayName": "CAD", "gpuModel": "NVIDIA-A10",
                "capacity": { "min": 0, "max": 4, "warm": 1 },
                "schedules": [{ "name": "peak", "days": ["Mon"], "start": "07:30", "end": "18:00",
                                "timeZone": "Europe/Amsterdam", "warm": 3 }],
                "template": { "spec": { "containers": [{ "name": "desktop", "image": "cad:1",
                    "resources": { "limits": { "nvidia.com/gpu": "2" } } }] } }
            }
        }))
        .unwrap()
    }

    #[test]
    fn gpus_are_read_from_the_template() {
        assert_eq!(gpus_of(&pool().spec.template), 2);
        assert_eq!(gpus_of(&PodTemplateSpec { spec: Some(PodSpec::default()), ..Default::default() }), 0);
    }

    #[test]
    fn a_pool_patch_round_trips_every_managed_field() {
        let cr = pool();
        let domain = PoolSpec::from(&cr);
        assert_eq!(domain.gpus_per_workstation, 2);
        assert_eq!(domain.schedules.len(), 1);
        let mut merged = serde_json::to_value(&cr).unwrap();
        json_patch_merge(&mut merged, &ManagedPoolSpec::from(&domain).merge_patch());
        let back: CapacityPool = serde_json::from_value(merged).unwrap();
        assert_eq!(PoolSpec::from(&back), domain);
        assert_eq!(back.spec.template, cr.spec.template, "the template is left alone");
    }

    /// RFC 7386 merge, as the API server applies it.
    fn json_patch_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        json_patch_merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p.clone(),
        }
    }
}
