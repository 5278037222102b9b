//! The workstation seam of cluster mode: everything that depends on which kind of object
//! backs a workstation. Pods are the one kind today; a second kind (a virtual machine) adds a
//! variant to each enum here, its builder in [`super::build`] and its reading in a sibling of
//! [`pod`], and nothing else: the passes, the executor and the session service work on these
//! types and on the domain's `Workstation`.
//!
//! What a kind answers: how its object is built from the pool's template
//! ([`build_workstation`]), whether it is ready, why not, and where its desktop listens
//! ([`WorkstationObject::workstation`]), and how the executor creates and deletes it (by
//! [`WorkloadKind`]). A claim is the same for every kind: a request creates its session under
//! the workstation's name (docs/cluster-mode.md).

pub mod pod;

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use super::build::pod::{Owner, PodInput, build_workstation_pod};
use crate::{
    crd::CapacityPool,
    domain::{PoolSpec, Workstation},
};

/// The kinds of object that back workstations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// A pod built from the pool's pod template.
    Pod,
}

/// A cached object that backs a workstation.
#[derive(Debug, Clone, Copy)]
pub enum WorkstationObject<'a> {
    /// A workstation pod.
    Pod(&'a Pod),
}

impl<'a> WorkstationObject<'a> {
    /// Its kind.
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Self::Pod(_) => WorkloadKind::Pod,
        }
    }

    /// Its name (the workstation's id).
    pub fn name(&self) -> Option<&'a str> {
        match self {
            Self::Pod(p) => p.metadata.name.as_deref(),
        }
    }

    /// Its uid, the precondition of its delete.
    pub fn uid(&self) -> Option<&'a str> {
        match self {
            Self::Pod(p) => p.metadata.uid.as_deref(),
        }
    }

    /// Whether the cluster is already deleting it.
    pub fn deleting(&self) -> bool {
        match self {
            Self::Pod(p) => p.metadata.deletion_timestamp.is_some(),
        }
    }

    /// The workstation it stands for: phase, reason for waiting, node and endpoint; `None`
    /// for objects that carry no pool.
    pub fn workstation(&self, pools: &HashMap<String, PoolSpec>) -> Option<Workstation> {
        match self {
            Self::Pod(p) => pod::workstation_of(p, pools),
        }
    }
}

/// A workstation object to create.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkstationManifest {
    /// A workstation pod.
    Pod(Box<Pod>),
}

impl WorkstationManifest {
    /// Its kind.
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Self::Pod(_) => WorkloadKind::Pod,
        }
    }

    /// Its name.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Pod(p) => p.metadata.name.as_deref(),
        }
    }

    /// The value of one of its labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        match self {
            Self::Pod(p) => p.metadata.labels.as_ref()?.get(key).map(String::as_str),
        }
    }
}

/// What a workstation is built from, whatever its kind.
#[derive(Debug, Clone)]
pub struct WorkstationInput<'a> {
    /// Its name (the workstation id).
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Its pool, whose template it is built from.
    pub pool: &'a CapacityPool,
    /// The session it is started for, if any.
    pub session: Option<&'a str>,
    /// Its owner.
    pub owner: &'a Owner,
}

/// The kind of workstation `pool` runs.
pub fn kind_of(_pool: &CapacityPool) -> WorkloadKind {
    WorkloadKind::Pod
}

/// Builds the object of a new workstation of the pool's kind.
pub fn build_workstation(input: &WorkstationInput<'_>) -> WorkstationManifest {
    match kind_of(input.pool) {
        WorkloadKind::Pod => {
            let pool_name = input.pool.metadata.name.as_deref().unwrap_or_default();
            WorkstationManifest::Pod(Box::new(build_workstation_pod(&PodInput {
                name: input.name,
                namespace: input.namespace,
                pool: pool_name,
                template: &input.pool.spec.template,
                gpu_model: input.pool.spec.managed.gpu_model.as_deref(),
                session: input.session,
                owner: input.owner,
            })))
        }
    }
}
