//! The Kubernetes backend against the local control plane (`tests/cluster/cluster.sh`):
//! warm claims, cold starts through the real scheduler, the pool maximum, exhausted GPUs,
//! recovery of a restarted broker, and two brokers racing. Each test uses its own namespace.
//! Run by `make test` with the cluster up (`--features cluster-tests`).
#![cfg(feature = "cluster-tests")]

mod common;

use cadbroker::crd::WorkstationSession;
use common::cluster::{
    broker, client, create_pool, live_holders, pods, running_pods, temp_namespace, wait_until,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use reqwest::{Method, StatusCode};

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
    // Taken by name: the session is named after the warm pod, and the pod was not written.
    assert_eq!(pod_name, id, "the request took the warm pod by naming its session after it");
    assert_eq!(pod.metadata.owner_references.unwrap()[0].kind, "CapacityPool");
    assert_eq!(pod.spec.unwrap().automount_service_account_token, Some(false));
    broker.stop().await;
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
    // Cluster mode estimates waits like the embedded default does.
    assert!(first["estimatedWaitSeconds"].is_u64(), "{first}");
    assert!(second["estimatedWaitSeconds"].is_u64(), "{second}");
    let first_id = first["id"].as_str().unwrap();
    broker.wait_phase(&a, first_id, "Ready").await;
    broker.call(Method::DELETE, &format!("/api/v1/sessions/{first_id}"), Some(&a), None).await;
    broker.wait_phase(&a, first_id, "Ended").await;
    broker.wait_phase(&b, second["id"].as_str().unwrap(), "Ready").await;
    wait_until("only the second session's pod is left", async || pods(&client, &ns).await.len() == 1).await;
    broker.stop().await;
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
    // At least the pool's warm 2 (recent demand may raise it).
    wait_until("the warm buffer is back", async || running_pods(&client, &ns).await >= 5).await;
    let holders = live_holders(&client, &ns).await;
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(holders, expected, "each session holds exactly one pod");
    second.stop().await;
}

#[tokio::test]
async fn two_brokers_racing_give_exactly_one_pod_per_session() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 12, 2, 1, "0s").await;
    let (one, two) = (broker(&ns).await, broker(&ns).await);
    wait_until("warm pods run", async || running_pods(&client, &ns).await >= 2).await;
    // All at once through both replicas: they race for the same warm pods by name.
    let requests = (0..8).map(|i| {
        let b = if i % 2 == 0 { &one } else { &two };
        let t = b.token(&format!("racer{i}"), &[]);
        async move {
            let (_, s) = b.request(&t, "cad").await;
            (t, s["id"].as_str().unwrap().to_owned())
        }
    });
    let ids: Vec<(String, String)> = futures::future::join_all(requests).await;
    for (i, (_, id)) in ids.iter().enumerate() {
        one.wait_phase(&one.token(&format!("racer{i}"), &[]), id, "Ready").await;
    }
    // Two replicas: both take warm pods by name (a name exists once, so no pod is taken
    // twice), one holds the Lease. Should two allocators ever both lead (a lease is not a
    // fence), a session that got two pods keeps one after the next pass (a unit test in
    // restore covers that rule).
    let mut expected: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
    expected.sort();
    let unique: std::collections::BTreeSet<&String> = expected.iter().collect();
    assert_eq!(unique.len(), expected.len(), "eight distinct sessions");
    wait_until("each session holds exactly one pod", async || live_holders(&client, &ns).await == expected)
        .await;
    one.stop().await;
    two.stop().await;
}
