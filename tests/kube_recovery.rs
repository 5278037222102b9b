//! kill -9 recovery against the local control plane: a real `cadbroker serve` process is
//! paused right after a write (a request's claim of a warm pod by name, a cold start's pod
//! create, an end's pod delete) and before the write that would follow it, then killed with
//! SIGKILL. A new broker rebuilds
//! from the cluster alone; after its first passes there is no orphan pod, no lost session and
//! no workstation held by two sessions. Run by `make test` (`--features cluster-tests`, which
//! enables the pause points).
#![cfg(feature = "cluster-tests")]

mod common;

use std::{net::TcpListener, process::Stdio, time::Duration};

use cadbroker::{
    auth::{MintRequest, load_or_create_dev_key, mint_dev_token},
    config::{BackendKind, Config},
    crd::WorkstationSession,
};
use common::{
    cluster::{
        broker, broker_kubeconfig, client, create_pool, live_holders, pod_holders, pods, running_pods,
        temp_namespace, wait_until,
    },
    test_config,
};
use kube::{Api, Client};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A `cadbroker serve` process in cluster mode that stops at `pause_after`.
struct BrokerProcess {
    child: tokio::process::Child,
    config: Config,
    base: String,
    http: reqwest::Client,
    paused: tokio::sync::watch::Receiver<Option<String>>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl BrokerProcess {
    async fn start(namespace: &str, pause_after: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config: Config = test_config(dir.path());
        config.server.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        config.server.admin_listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        config.backend.kind = BackendKind::Kubernetes;
        config.backend.kubernetes.namespace = namespace.to_owned();
        config.backend.kubernetes.kubeconfig = Some(broker_kubeconfig());
        config.backend.kubernetes.lease_duration = Duration::from_secs(3);
        config.pools.clear();
        let path = dir.path().join("cadbroker.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cadbroker"))
            .arg("--config")
            .arg(&path)
            .args(["--log", "warn", "serve"])
            .env("CADBROKER_PAUSE_AFTER", pause_after)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cadbroker starts");
        let (tx, paused) = tokio::sync::watch::channel(None);
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(point) = line.strip_prefix("cadbroker-fault: paused after ") {
                    tx.send_replace(Some(point.to_owned()));
                } else {
                    eprintln!("[broker process] {line}");
                }
            }
        });
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let base = format!("http://{}", config.server.listen);
        let process = Self { child, config, base, http, paused, _dir: dir };
        let readyz = format!("http://{}/readyz", process.config.server.admin_listen);
        wait_until("the broker process is ready", async || {
            process.http.get(&readyz).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        process
    }

    fn token(&self, user: &str) -> String {
        let issuer = self.config.auth.development_issuer().unwrap();
        let key = load_or_create_dev_key(&issuer.effective_key_file()).unwrap();
        mint_dev_token(issuer, &key, &MintRequest::new(user), jiff::Timestamp::now()).unwrap()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("answered");
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the broker stopped at its pause point, then kills it with SIGKILL.
    async fn kill_when_paused(mut self) {
        let mut paused = self.paused.clone();
        tokio::time::timeout(Duration::from_secs(30), paused.wait_for(Option::is_some))
            .await
            .expect("the broker reached its pause point")
            .unwrap();
        self.child.kill().await.unwrap();
    }
}

async fn session(client: &Client, ns: &str, id: &str) -> WorkstationSession {
    Api::<WorkstationSession>::namespaced(client.clone(), ns).get(id).await.unwrap()
}

/// After recovery (once the new broker's writes settled): every pod is either warm
/// (unclaimed) or held by a live session, and no session holds two.
async fn assert_no_orphans(client: &Client, ns: &str) {
    let mut last = String::new();
    for _ in 0..100 {
        match orphans(client, ns).await {
            Ok(()) => return,
            Err(problem) => last = problem,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{last}");
}

async fn orphans(client: &Client, ns: &str) -> Result<(), String> {
    let sessions = Api::<WorkstationSession>::namespaced(client.clone(), ns).list(&Default::default()).await;
    let live: Vec<String> = sessions
        .unwrap()
        .items
        .iter()
        .filter(|s| s.status.as_ref().and_then(|st| st.phase).is_some_and(|p| p.is_live()))
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let pods = pod_holders(client, ns).await;
    for (pod, holder) in &pods {
        if let Some(s) = holder
            && !live.contains(s)
        {
            return Err(format!("pod {:?} is held by {s}, which is not live", pod.metadata.name));
        }
    }
    let mut held: Vec<String> = pods.into_iter().filter_map(|(_, h)| h).collect();
    held.sort();
    let before = held.len();
    held.dedup();
    if before != held.len() {
        return Err(format!("a session holds two pods: {held:?}"));
    }
    Ok(())
}

#[tokio::test]
async fn killed_between_a_warm_claim_and_its_status_the_session_keeps_that_pod() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 4, 1, 1, "0s").await;
    let first = BrokerProcess::start(&ns, "claim").await;
    wait_until("a warm pod runs", async || running_pods(&client, &ns).await == 1).await;
    let warm = pods(&client, &ns).await[0].metadata.name.clone().unwrap();
    // The request itself pauses (the claim is its create), so it is not awaited.
    let token = first.token("alice");
    let url = format!("{}/api/v1/sessions", first.base);
    let request = first.http.post(url).bearer_auth(token).json(&serde_json::json!({"pool": "cad"})).send();
    let pending = tokio::spawn(async move {
        // Killed mid-request: the answer is an error, and that is expected.
        let _ = tokio::time::timeout(Duration::from_secs(60), request).await;
    });
    first.kill_when_paused().await;
    pending.abort();
    // The claim landed (a session named after the warm pod), its status did not.
    let id = warm.clone();
    let claimed = session(&client, &ns, &id).await;
    assert_eq!(claimed.status.and_then(|s| s.phase), None);
    assert_eq!(live_holders(&client, &ns).await, std::slice::from_ref(&id));

    let second = broker(&ns).await;
    let ready = second.wait_phase(&second.token("alice", &[]), &id, "Ready").await;
    assert!(ready["node"].as_str().is_some(), "{ready}");
    wait_until("the session's status names the claimed pod", async || {
        session(&client, &ns, &id).await.status.and_then(|s| s.pod).as_deref() == Some(warm.as_str())
    })
    .await;
    // At least the pool's warm 1 (recent demand may raise it).
    wait_until("the warm buffer is back", async || running_pods(&client, &ns).await >= 2).await;
    assert_no_orphans(&client, &ns).await;
    second.stop().await;
}

#[tokio::test]
async fn killed_between_a_cold_create_and_its_status_the_session_gets_that_pod_not_a_second() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 2, 0, 1, "1s").await;
    let first = BrokerProcess::start(&ns, "create").await;
    let (status, body) = first
        .call(Method::POST, "/api/v1/sessions", &first.token("bob"), Some(serde_json::json!({"pool": "cad"})))
        .await;
    assert!(status.is_success(), "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    first.kill_when_paused().await;
    // Pods held by the session (the pool may also have started a warm one: demand raised it).
    let held = async || -> Vec<String> {
        let pods = pod_holders(&client, &ns).await;
        pods.into_iter()
            .filter(|(_, h)| h.as_deref() == Some(id.as_str()))
            .filter_map(|(p, _)| p.metadata.name)
            .collect()
    };
    let created = held().await;
    assert_eq!(created, [format!("ws-{id}")]);

    let second = broker(&ns).await;
    second.wait_phase(&second.token("bob", &[]), &id, "Ready").await;
    assert_eq!(held().await, created, "the pod created before the kill is the session's, and the only one");
    assert_no_orphans(&client, &ns).await;
    second.stop().await;
}

#[tokio::test]
async fn killed_right_after_an_ends_pod_delete_the_session_stays_ended_and_no_pod_is_left() {
    let client = client().await;
    let ns = temp_namespace(&client).await;
    create_pool(&client, &ns, "cad", 2, 0, 1, "0s").await;
    let first = BrokerProcess::start(&ns, "delete").await;
    let token = first.token("carol");
    let (_, body) =
        first.call(Method::POST, "/api/v1/sessions", &token, Some(serde_json::json!({"pool": "cad"}))).await;
    let id = body["id"].as_str().unwrap().to_owned();
    wait_until("the session is ready", async || {
        first.call(Method::GET, &format!("/api/v1/sessions/{id}"), &token, None).await.1["phase"] == "Ready"
    })
    .await;
    first.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), &token, None).await;
    first.kill_when_paused().await;

    let second = broker(&ns).await;
    let ended = second.wait_phase(&second.token("carol", &[]), &id, "Ended").await;
    assert_eq!(ended["endReason"], "UserEnded", "{ended}");
    // The pool may keep a warm pod (recent demand raises its buffer); none is the session's.
    wait_until("the session's pod is gone", async || {
        !pod_holders(&client, &ns).await.iter().any(|(_, h)| h.as_deref() == Some(id.as_str()))
    })
    .await;
    assert_no_orphans(&client, &ns).await;
    second.stop().await;
}
