//! The Kubernetes backend against the local control plane (`tests/cluster/cluster.sh`):
//! warm claims, cold starts through the real scheduler, the pool maximum, exhausted GPUs,
//! recovery of a restarted broker, and two brokers racing. Each test uses its own namespace.
//! Run by `make test` with the cluster up (`--features cluster-tests`).
#![cfg(feature = "cluster-tests")]

mod common;

use std::time::Duration;

use cadbroker::{
    config::{BackendKind, Config},
    crd::{CapacityPool, WorkstationSession},
};
use common::TestBroker;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn kubeconfig() -> std::path::PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(Into::into)
        .expect("KUBECONFIG must point at the local test cluster: run these tests through `make test`")
}

/// The identity of the brokers under test: `CADBROKER_TEST_BROKER_KUBECONFIG` if set (the chart
/// tests put the Helm chart's ServiceAccount there, tests/charts/run.sh), else KUBECONFIG. The
/// tests' own setup and checks always use KUBECONFIG.
fn broker_kubeconfig() -> std::path::PathBuf {
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

async fn client() -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    Client::try_from(cfg).unwrap()
}

/// A fresh namespace, and the CRDs installed (server-side apply, idempotent).
async fn temp_namespace(client: &Client) -> String {
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
    bind_broker_role(client, &name).await;
    name
}

async fn create_pool(
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

async fn broker(ns: &str) -> TestBroker {
    let ns = ns.to_owned();
    TestBroker::start(move |c: &mut Config| {
        c.backend.kind = BackendKind::Kubernetes;
        c.backend.kubernetes.namespace = ns;
        c.backend.kubernetes.kubeconfig = Some(broker_kubeconfig());
        c.backend.kubernetes.lease_duration = Duration::from_secs(3);
        c.pools.clear();
    })
    .await
}

async fn pods(client: &Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn running_pods(client: &Client, ns: &str) -> usize {
    pods(client, ns)
        .await
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

#[tokio::test]
async fn a_warm_pod_is_claimed_and_the_session_is_ready_with_a_loopback_pod_ip() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 4, 1, 1, "0s").await;
    let broker = broker(&ns).await;
    wait_until("a warm pod runs", async || running_pods(&client, &ns).await == 1).await;
    let token = broker.token("alice", &[]);
    let (status, body) = broker.request(&token, "cad").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["phase"], "Ready");
    let node = body["node"].as_str().expect("a node");
    assert!(node.starts_with("gpu-node-"), "{node}");
    let sessions = Api::<WorkstationSession>::namespaced(client.clone(), &ns);
    let id = body["id"].as_str().unwrap().to_owned();
    wait_until("the session's status names its pod", async || {
        sessions.get(&id).await.ok().and_then(|c| c.status).and_then(|s| s.pod).is_some()
    })
    .await;
    let pod_name = sessions.get(&id).await.unwrap().status.unwrap().pod.unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), &ns).get(&pod_name).await.unwrap();
    assert!(pod.status.unwrap().pod_ip.unwrap().starts_with("127."));
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(labels["cadbroker.io/session"], body["id"].as_str().unwrap());
    assert_eq!(pod.metadata.owner_references.unwrap()[0].kind, "WorkstationSession");
    assert_eq!(pod.spec.unwrap().automount_service_account_token, Some(false));
    broker.stop().await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_cold_start_goes_through_the_scheduler_and_a_full_pool_queues_until_a_session_ends() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 1, 0, 1, "1s").await;
    let broker = broker(&ns).await;
    let (a, b) = (broker.token("a", &[]), broker.token("b", &[]));
    let (status, first) = broker.request(&a, "cad").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["phase"], "Starting");
    let (status, second) = broker.request(&b, "cad").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!((second["phase"].as_str(), second["queuePosition"].as_u64()), (Some("Queued"), Some(1)));
    let first_id = first["id"].as_str().unwrap();
    broker.wait_phase(&a, first_id, "Ready").await;
    broker.call(Method::DELETE, &format!("/api/v1/sessions/{first_id}"), Some(&a), None).await;
    broker.wait_phase(&a, first_id, "Ended").await;
    broker.wait_phase(&b, second["id"].as_str().unwrap(), "Ready").await;
    wait_until("only the second session's pod is left", async || pods(&client, &ns).await.len() == 1).await;
    broker.stop().await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn with_gpus_exhausted_a_session_stays_starting_with_the_schedulers_reason() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    // 8 GPUs per node: a 16-GPU workstation fits nowhere.
    create_pool(&client, &ns, "huge", 2, 0, 16, "0s").await;
    let broker = broker(&ns).await;
    let token = broker.token("alice", &[]);
    let (_, body) = broker.request(&token, "huge").await;
    let id = body["id"].as_str().unwrap().to_owned();
    let mut last = serde_json::Value::Null;
    wait_until("the scheduler's reason shows", async || {
        let (_, s) = broker.call(Method::GET, &format!("/api/v1/sessions/{id}"), Some(&token), None).await;
        last = s.clone();
        s["message"].as_str().is_some_and(|m| m.contains("Insufficient nvidia.com/gpu"))
    })
    .await;
    assert_eq!(last["phase"], "Starting");
    broker.stop().await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_restarted_broker_rebuilds_from_the_cluster_without_orphans_or_double_claims() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 6, 2, 1, "0s").await;
    let first = broker(&ns).await;
    wait_until("two warm pods run", async || running_pods(&client, &ns).await == 2).await;
    let tokens: Vec<String> = (0..3).map(|i| first.token(&format!("u{i}"), &[])).collect();
    let mut ids = Vec::new();
    for t in &tokens {
        let (_, s) = first.request(t, "cad").await;
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    // Stop abruptly in the middle of allocation: nothing is handed over in memory.
    drop(first);
    let second = broker(&ns).await;
    for (i, id) in ids.iter().enumerate() {
        // Each broker in these tests has its own development key: mint again for the same user.
        second.wait_phase(&second.token(&format!("u{i}"), &[]), id, "Ready").await;
    }
    wait_until("the warm buffer is back", async || running_pods(&client, &ns).await == 5).await;
    let pods = pods(&client, &ns).await;
    let mut holders: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get("cadbroker.io/session").cloned())
        .collect();
    holders.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(holders, expected, "each session holds exactly one pod");
    second.stop().await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn two_brokers_racing_give_exactly_one_pod_per_session() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 12, 2, 1, "0s").await;
    let (one, two) = (broker(&ns).await, broker(&ns).await);
    wait_until("warm pods run", async || running_pods(&client, &ns).await >= 2).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let b = if i % 2 == 0 { &one } else { &two };
        let t = b.token(&format!("racer{i}"), &[]);
        let (_, s) = b.request(&t, "cad").await;
        ids.push((t, s["id"].as_str().unwrap().to_owned()));
    }
    for (i, (_, id)) in ids.iter().enumerate() {
        one.wait_phase(&one.token(&format!("racer{i}"), &[]), id, "Ready").await;
    }
    let pods = pods(&client, &ns).await;
    for (_, id) in &ids {
        let n = pods
            .iter()
            .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get("cadbroker.io/session")) == Some(id))
            .count();
        assert_eq!(n, 1, "session {id} holds {n} pods");
    }
    one.stop().await;
    two.stop().await;
    Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await.unwrap();
}
