//! Fixtures for tests against the local Kubernetes control plane: a client from KUBECONFIG,
//! a namespace per test (deleted even when the test fails), pools, and polling helpers.
#![cfg(feature = "cluster-tests")]

use std::time::Duration;

use cadbroker::{
    config::{BackendKind, Config},
    crd::{CapacityPool, WorkstationSession},
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::TestBroker;

pub fn kubeconfig() -> std::path::PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(Into::into)
        .expect("KUBECONFIG must point at the local test cluster: run these tests through `make test`")
}

/// The identity of the brokers under test: `CADBROKER_TEST_BROKER_KUBECONFIG` if set (the chart
/// tests put the Helm chart's ServiceAccount there, tests/charts/run.sh), else KUBECONFIG. The
/// tests' own setup and checks always use KUBECONFIG.
pub fn broker_kubeconfig() -> std::path::PathBuf {
    std::env::var_os("CADBROKER_TEST_BROKER_KUBECONFIG").map_or_else(kubeconfig, Into::into)
}

/// With `CADBROKER_TEST_BROKER_SUBJECT=namespace/serviceaccount` and
/// `CADBROKER_TEST_BROKER_CLUSTERROLE=name`, binds that ClusterRole to that ServiceAccount in
/// the test's namespace, as the chart does in its workstations namespace.
async fn bind_broker_role(client: &Client, ns: &str) {
    let (Ok(subject), Ok(role)) =
        (std::env::var("CADBROKER_TEST_BROKER_SUBJECT"), std::env::var("CADBROKER_TEST_BROKER_CLUSTERROLE"))
    else {
        return;
    };
    let (sa_ns, sa) = subject.split_once('/').expect("CADBROKER_TEST_BROKER_SUBJECT is namespace/name");
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "cadbroker-under-test", "namespace": ns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "namespace": sa_ns, "name": sa }],
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

pub async fn client() -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    Client::try_from(cfg).unwrap()
}

/// A test's own namespace, deleted when the test ends, also when it fails (a failed test must
/// not leave pods holding the cluster's GPUs for the tests after it).
pub struct TempNamespace(pub String);

impl std::ops::Deref for TempNamespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let name = self.0.clone();
        // The test's runtime may be unwinding: delete from a runtime of our own.
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let _ = Api::<Namespace>::all(client().await).delete(&name, &DeleteParams::default()).await;
            });
        });
        let _ = deleted.join();
    }
}

/// A fresh namespace, and the CRDs installed (server-side apply, idempotent).
pub async fn temp_namespace(client: &Client) -> TempNamespace {
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    for crd in cadbroker::crd::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &PatchParams::apply("cadbroker-tests").force(), &Patch::Apply(&crd)).await.unwrap();
    }
    for _ in 0..50 {
        let ok = crds
            .get("workstationsessions.cadbroker.io")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let ns = TempNamespace(name);
    bind_broker_role(client, &ns).await;
    ns
}

pub async fn create_pool(
    client: &Client,
    ns: &str,
    name: &str,
    max: u32,
    warm: u32,
    gpus: u32,
    start_delay: &str,
) {
    let pool: CapacityPool = serde_json::from_value(json!({
        "apiVersion": "cadbroker.io/v1alpha1", "kind": "CapacityPool",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "displayName": name, "capacity": { "min": 0, "max": max, "warm": warm },
            "access": { "allAuthenticated": true }, "connect": { "port": 6080, "path": "/" },
            "template": {
                "metadata": { "annotations": { "test.cadbroker.io/start-delay": start_delay } },
                "spec": { "containers": [{ "name": "desktop", "image": "cadbroker.invalid/desktop:test",
                    "resources": { "limits": { "nvidia.com/gpu": gpus.to_string() } } }] }
            }
        }
    }))
    .unwrap();
    Api::<CapacityPool>::namespaced(client.clone(), ns).create(&PostParams::default(), &pool).await.unwrap();
}

pub async fn broker(ns: &str) -> TestBroker {
    let ns = ns.to_owned();
    TestBroker::start(move |c: &mut Config| configure(c, &ns)).await
}

/// `c` as a cluster-mode broker in `ns`, with the broker's own identity and a short lease.
pub fn configure(c: &mut Config, ns: &str) {
    c.backend.kind = BackendKind::Kubernetes;
    c.backend.kubernetes.namespace = ns.to_owned();
    c.backend.kubernetes.kubeconfig = Some(broker_kubeconfig());
    c.backend.kubernetes.lease_duration = Duration::from_secs(3);
    c.pools.clear();
}

pub async fn pods(client: &Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

pub async fn running_pods(client: &Client, ns: &str) -> usize {
    pods(client, ns)
        .await
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

/// Each pod with the session it belongs to: the one it was started for (its label), or the
/// one named after it (a request took that buffer pod by name); `None` for buffer pods.
pub async fn pod_holders(client: &Client, ns: &str) -> Vec<(Pod, Option<String>)> {
    let sessions = Api::<WorkstationSession>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let names: std::collections::HashSet<String> =
        sessions.into_iter().filter_map(|s| s.metadata.name).collect();
    pods(client, ns)
        .await
        .into_iter()
        .map(|pod| {
            let label = pod.metadata.labels.as_ref().and_then(|l| l.get("cadbroker.io/session").cloned());
            let named = pod.metadata.name.clone().filter(|n| names.contains(n));
            let holder = label.or(named);
            (pod, holder)
        })
        .collect()
}

/// The sessions holding live (not terminating) pods, sorted, one entry per pod.
pub async fn live_holders(client: &Client, ns: &str) -> Vec<String> {
    let mut held: Vec<String> = pod_holders(client, ns)
        .await
        .into_iter()
        .filter(|(p, _)| p.metadata.deletion_timestamp.is_none())
        .filter_map(|(_, h)| h)
        .collect();
    held.sort();
    held
}

/// Creates a CapacityPool from its spec.
pub async fn create_pool_spec(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let pool: CapacityPool = serde_json::from_value(json!({
        "apiVersion": "cadbroker.io/v1alpha1", "kind": "CapacityPool",
        "metadata": { "name": name, "namespace": ns }, "spec": spec
    }))
    .unwrap();
    Api::<CapacityPool>::namespaced(client.clone(), ns).create(&PostParams::default(), &pool).await.unwrap();
}

/// The chart's two PriorityClasses, created for the test if the cluster lacks them (the chart
/// tests install them with the chart) and deleted again with the guard, so that a later
/// `helm install` of the chart does not find objects it does not own.
pub struct PriorityClasses(Vec<String>);

pub async fn priority_classes(client: &Client) -> PriorityClasses {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let api = Api::<PriorityClass>::all(client.clone());
    let mut created = Vec::new();
    for (name, value, preemption) in
        [("cadbroker-workstation", 1000, "PreemptLowerPriority"), ("cadbroker-placeholder", -5, "Never")]
    {
        if api.get_opt(name).await.unwrap().is_some() {
            continue;
        }
        let class: PriorityClass = serde_json::from_value(json!({
            "metadata": { "name": name }, "value": value, "preemptionPolicy": preemption,
            "description": "created by cadbroker's cluster tests"
        }))
        .unwrap();
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => created.push(name.to_owned()),
            // Another test created it meanwhile.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating PriorityClass {name}: {e}"),
        }
    }
    PriorityClasses(created)
}

impl Drop for PriorityClasses {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        if names.is_empty() {
            return;
        }
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let api = Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(client().await);
                for name in names {
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                }
            });
        });
        let _ = deleted.join();
    }
}

/// The namespace's placeholder pods.
pub async fn placeholder_pods(client: &Client, ns: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels("cadbroker.io/role=placeholder");
    Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await.unwrap().items
}

/// Running, or refused by the scheduler for want of room.
pub fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Pending with the scheduler's verdict `Unschedulable`: what the cluster autoscaler acts on.
pub fn is_unschedulable(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
}

/// A desktop stand-in listening where a workstation pod's desktop would (the pod's loopback IP
/// and the pool's connect port): `/` answers, `/websockify` echoes. Stops when dropped.
pub struct FakeDesktop(tokio::task::JoinHandle<()>);

impl Drop for FakeDesktop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn fake_desktop(addr: std::net::SocketAddr) -> FakeDesktop {
    use axum::{
        Router,
        extract::ws::{Message, WebSocketUpgrade},
        routing::get,
    };
    assert!(addr.ip().is_loopback(), "tests send traffic to loopback only: {addr}");
    let app = Router::new().route("/", get(|| async { "desktop" })).route(
        "/websockify",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(m)) = socket.recv().await {
                    if matches!(m, Message::Close(_)) || socket.send(m).await.is_err() {
                        break;
                    }
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.expect("the pod's address is free on loopback");
    FakeDesktop(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// A CapacityPool spec for the tests: pool `cad` (max 2, warm 1), open to everyone, one GPU per
/// workstation that starts at once; `extra`'s top-level fields replace or add to it.
pub fn pool_with(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "displayName": "cad", "capacity": { "min": 0, "max": 2, "warm": 1 },
        "access": { "allAuthenticated": true }, "connect": { "port": 6080, "path": "/" },
        "template": {
            "metadata": { "annotations": { "test.cadbroker.io/start-delay": "0s" } },
            "spec": { "containers": [{ "name": "desktop", "image": "cadbroker.invalid/desktop:test",
                "resources": { "limits": { "nvidia.com/gpu": "1" } } }] } }
    });
    if let (Some(base), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    spec
}
