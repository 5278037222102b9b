//! What cluster mode costs the API server and what went wrong: every write request the
//! client sends, by verb and resource (counted in a layer of the client itself, so nothing can
//! write uncounted), and failures by a fixed category. The write-count benchmark and the
//! integration tests read the same counters that /metrics exposes.

use std::sync::Arc;

use kube::client::Body;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Labels of a write request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    /// The resource, with its subresource: `pods`, `workstationsessions/status`, `events`, ….
    pub resource: String,
}

/// Labels of a failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// One of [`Category`]'s names.
    pub category: &'static str,
}

/// The fixed set of failure categories (bounded label values; each also names the Kubernetes
/// Event reason, in PascalCase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Creating a workstation pod failed.
    CreatePod,
    /// A request named its session after a buffer pod another request took first (expected
    /// under concurrent requests; the request takes another).
    ClaimConflict,
    /// A session changed between the allocator's read and its status write (an API replica
    /// ended it or recorded activity; decided again from the fresh object).
    StatusConflict,
    /// Deleting a pod failed.
    DeletePod,
    /// Writing a session's status failed.
    SessionStatus,
    /// Deleting an expired session record failed.
    DeleteSession,
    /// Writing a pool's status failed.
    PoolStatus,
    /// Taking or renewing the lease failed.
    Lease,
}

impl Category {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::CreatePod => "create_pod",
            Self::ClaimConflict => "claim_conflict",
            Self::StatusConflict => "status_conflict",
            Self::DeletePod => "delete_pod",
            Self::SessionStatus => "session_status",
            Self::DeleteSession => "delete_session",
            Self::PoolStatus => "pool_status",
            Self::Lease => "lease",
        }
    }

    /// The Kubernetes Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::CreatePod => "CreatePodFailed",
            Self::ClaimConflict => "ClaimConflict",
            Self::StatusConflict => "StatusConflict",
            Self::DeletePod => "DeletePodFailed",
            Self::SessionStatus => "SessionStatusFailed",
            Self::DeleteSession => "DeleteSessionFailed",
            Self::PoolStatus => "PoolStatusFailed",
            Self::Lease => "LeaseFailed",
        }
    }
}

/// Cluster-mode counters.
#[derive(Debug, Clone, Default)]
pub struct KubeMetrics {
    writes: Family<WriteLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
}

impl KubeMetrics {
    /// Registers the counters under `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("kube_writes", "Write requests sent to the Kubernetes API", self.writes.clone());
        registry.register("kube_errors", "Failed Kubernetes operations by category", self.errors.clone());
    }

    /// Counts one failure.
    pub fn error(&self, category: Category) {
        self.errors.get_or_create(&ErrorLabels { category: category.label() }).inc();
    }

    /// Write requests sent so far for `resource` (all verbs).
    pub fn writes_to(&self, resource: &str) -> u64 {
        let mut total = 0;
        for verb in ["create", "update", "patch", "delete"] {
            let labels = WriteLabels { verb, resource: resource.to_owned() };
            total += self.writes.get(&labels).map_or(0, |c| c.get());
        }
        total
    }

    /// Failures so far in `category`.
    pub fn errors_in(&self, category: Category) -> u64 {
        self.errors.get(&ErrorLabels { category: category.label() }).map_or(0, |c| c.get())
    }

    fn count(&self, request: &http::Request<Body>) {
        let verb = match *request.method() {
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE => "delete",
            _ => return,
        };
        let resource = resource_of(request.uri().path());
        self.writes.get_or_create(&WriteLabels { verb, resource }).inc();
    }

    /// A client layer that counts every write request.
    pub fn layer(
        self: &Arc<Self>,
    ) -> tower::util::MapRequestLayer<impl Fn(http::Request<Body>) -> http::Request<Body> + Clone + use<>>
    {
        let metrics = self.clone();
        tower::util::MapRequestLayer::new(move |request: http::Request<Body>| {
            metrics.count(&request);
            request
        })
    }
}

/// `pods`, `pods/status`, `workstationsessions`, … from an API path. Paths look like
/// `/api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]` or `/apis/{group}/{version}/…`.
fn resource_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.first() {
        Some(&"api") => parts.get(2..),
        Some(&"apis") => parts.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    match rest {
        [resource, _name, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] => (*resource).to_owned(),
        [] => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_resource_and_subresource() {
        let cases = [
            ("/api/v1/namespaces/ns/pods", "pods"),
            ("/api/v1/namespaces/ns/pods/ws-1", "pods"),
            (
                "/apis/cadbroker.io/v1alpha1/namespaces/ns/workstationsessions/s1/status",
                "workstationsessions/status",
            ),
            ("/apis/events.k8s.io/v1/namespaces/ns/events", "events"),
            ("/apis/coordination.k8s.io/v1/namespaces/ns/leases/cadbroker", "leases"),
            ("/api/v1/namespaces", "namespaces"),
            ("/api/v1/namespaces/ns", "namespaces"),
            ("/version", "unknown"),
        ];
        for (path, want) in cases {
            assert_eq!(resource_of(path), want, "{path}");
        }
    }

    #[test]
    fn only_writes_are_counted() {
        let metrics = Arc::new(KubeMetrics::default());
        for method in [http::Method::GET, http::Method::POST, http::Method::PATCH, http::Method::DELETE] {
            let request = http::Request::builder()
                .method(method)
                .uri("/api/v1/namespaces/ns/pods/p")
                .body(Body::empty())
                .unwrap();
            metrics.count(&request);
        }
        assert_eq!(metrics.writes_to("pods"), 3);
    }
}
