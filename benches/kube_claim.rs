//! Cluster-mode benchmark against the local control plane: time from a session request to
//! Ready through a warm claim (p50/p99 at 1 and 32 concurrent clients), and the Kubernetes API
//! writes each warm-claimed session costs from request to end, counted by the client layer that
//! also feeds `cadbroker_kube_writes_total`.
//!
//! Run: `tests/cluster/cluster.sh run -- cargo bench --features cluster-tests --bench kube_claim`
//! (`make bench-kube`). Bounded: a fixed number of rounds, each with a deadline.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use cadbroker::{
    app,
    auth::{MintRequest, load_or_create_dev_key, mint_dev_token},
    config::{BackendKind, Config},
    crd::CapacityPool,
};
use k8s_openapi::{
    api::core::v1::{Namespace, Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Sequential lifecycles at one client (also the write-count sample).
const ONE_CLIENT_SESSIONS: usize = 40;
/// Rounds of 32 concurrent requests.
const ROUNDS: usize = 5;
const CLIENTS: usize = 32;
/// Warm pods kept: enough for a whole round of 32 at once.
const WARM: u32 = 36;

struct Bench {
    client: Client,
    namespace: String,
    config: Config,
    base: String,
    admin: String,
    http: reqwest::Client,
}

impl Bench {
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

    /// Requests a session and waits until it is Ready: (time to Ready, session id, warm claim?).
    async fn ready(&self, user: &str) -> (Duration, String, bool) {
        let token = self.token(user);
        let started = Instant::now();
        let (status, body) =
            self.call(Method::POST, "/api/v1/sessions", &token, Some(json!({"pool": "bench"}))).await;
        let id = body["id"].as_str().unwrap_or_else(|| panic!("{status} {body}")).to_owned();
        let mut phase = body["phase"].as_str().unwrap_or_default().to_owned();
        let warm = status == StatusCode::CREATED;
        let deadline = started + Duration::from_secs(30);
        while phase != "Ready" {
            assert!(Instant::now() < deadline, "session {id} not Ready in 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
            let (_, s) = self.call(Method::GET, &format!("/api/v1/sessions/{id}"), &token, None).await;
            phase = s["phase"].as_str().unwrap_or_default().to_owned();
        }
        (started.elapsed(), id, warm)
    }

    async fn end(&self, user: &str, id: &str) {
        let token = self.token(user);
        self.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), &token, None).await;
    }

    async fn warm_pods(&self) -> usize {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list =
            pods.list(&ListParams::default().labels("app.kubernetes.io/managed-by=cadbroker")).await.unwrap();
        // A pod is held when labelled for a session (started for it) or when a session is named
        // after it (a request took it by name).
        let sessions: Api<cadbroker::crd::WorkstationSession> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let names: std::collections::HashSet<String> = sessions
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        list.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| !p.metadata.labels.as_ref().is_some_and(|l| l.contains_key("cadbroker.io/session")))
            .filter(|p| !p.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count()
    }

    async fn wait_warm(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.warm_pods().await < n {
            assert!(Instant::now() < deadline, "warm buffer never reached {n}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes counted so far, by `verb resource`.
    async fn writes(&self) -> BTreeMap<String, u64> {
        let text =
            self.http.get(format!("{}/metrics", self.admin)).send().await.unwrap().text().await.unwrap();
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("cadbroker_kube_writes_total{")) {
            let (labels, value) = line.rsplit_once(' ').unwrap();
            let get = |k: &str| {
                labels
                    .split(&format!("{k}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_owned()
            };
            out.insert(format!("{} {}", get("verb"), get("resource")), value.parse().unwrap());
        }
        out
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(label: &str, mut samples: Vec<Duration>, warm: usize) {
    samples.sort();
    println!(
        "{label:<12} n={:<4} warm claims={:<4} p50={:>7.1} ms  p99={:>7.1} ms  max={:>7.1} ms",
        samples.len(),
        warm,
        pct(&samples, 0.50),
        pct(&samples, 0.99),
        pct(&samples, 1.0)
    );
}

async fn setup() -> (Bench, app::Running, tempfile::TempDir) {
    let kubeconfig = std::env::var_os("KUBECONFIG").expect("run inside tests/cluster/cluster.sh run");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
            .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in cadbroker::crd::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &PatchParams::apply("cadbroker-bench").force(), &Patch::Apply(&crd)).await.unwrap();
    }
    let namespace = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(namespace.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // No GPU request: the benchmark measures the broker and the API server, not how many GPUs
    // the fake nodes have (32), which a round of 32 plus a warm buffer would exceed.
    let pool: CapacityPool = serde_json::from_value(json!({
        "apiVersion": "cadbroker.io/v1alpha1", "kind": "CapacityPool",
        "metadata": { "name": "bench", "namespace": namespace },
        "spec": {
            "displayName": "bench", "capacity": { "min": 0, "max": 200, "warm": WARM },
            "access": { "allAuthenticated": true }, "connect": { "port": 6080, "path": "/" },
            "template": {
                "metadata": { "annotations": { "test.cadbroker.io/start-delay": "0s" } },
                "spec": { "containers": [{ "name": "desktop", "image": "cadbroker.invalid/desktop:bench" }] }
            }
        }
    }))
    .unwrap();
    Api::<CapacityPool>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(None).unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.broker.max_sessions_per_user = 2;
    config.backend.kind = BackendKind::Kubernetes;
    config.backend.kubernetes.namespace = namespace.clone();
    config.backend.kubernetes.kubeconfig = Some(kubeconfig.into());
    config.pools.clear();
    for issuer in &mut config.auth.issuers {
        issuer.key_file = Some(dir.path().join("dev-key.pem"));
    }
    let running = app::start(config.clone()).await.expect("broker starts");
    let bench = Bench {
        client,
        namespace,
        config,
        base: format!("http://{}", running.public_addr),
        admin: format!("http://{}", running.admin_addr),
        http: reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().unwrap(),
    };
    (bench, running, dir)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (bench, running, _dir) = setup().await;
    let bench = Arc::new(bench);
    println!("cadbroker cluster-mode benchmark: namespace {}, warm buffer {WARM}", bench.namespace);
    bench.wait_warm(WARM as usize).await;

    // One client: sequential lifecycles; also the write count per lifecycle.
    let before = bench.writes().await;
    let (mut one, mut warm) = (Vec::new(), 0);
    for i in 0..ONE_CLIENT_SESSIONS {
        let user = format!("solo-{i}");
        let (took, id, was_warm) = bench.ready(&user).await;
        one.push(took);
        warm += usize::from(was_warm);
        bench.end(&user, &id).await;
    }
    bench.wait_warm(WARM as usize).await;
    // Let the last ends and status writes land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = bench.writes().await;
    report("1 client", one, warm);

    // 32 clients at once, in rounds; the buffer is refilled between rounds.
    let (mut many, mut warm) = (Vec::new(), 0);
    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let bench = bench.clone();
                tokio::spawn(async move {
                    let user = format!("r{round}-c{c}");
                    let (took, id, was_warm) = bench.ready(&user).await;
                    (took, user, id, was_warm)
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            let (took, user, id, was_warm) = t.await.unwrap();
            many.push(took);
            warm += usize::from(was_warm);
            done.push((user, id));
        }
        for (user, id) in done {
            bench.end(&user, &id).await;
        }
        bench.wait_warm(WARM as usize).await;
    }
    report("32 clients", many, warm);

    println!(
        "\nKubernetes API writes over {ONE_CLIENT_SESSIONS} sequential warm-claimed lifecycles (request to end):"
    );
    let mut per_session = 0.0;
    for (key, n) in &after {
        let delta = n - before.get(key).copied().unwrap_or(0);
        if delta == 0 {
            continue;
        }
        let each = delta as f64 / ONE_CLIENT_SESSIONS as f64;
        let kind = match key.as_str() {
            "create pods" => "refills the warm buffer (the pool's, not the session's)",
            k if k.starts_with("update leases") || k.starts_with("create events") => "background",
            k if k.contains("capacitypools") => "pool status counts",
            _ => {
                per_session += each;
                "the session's"
            }
        };
        println!("  {key:<34} {delta:>5}  {each:>5.2} per session  ({kind})");
    }
    println!("  per warm-claimed session, request to end: {per_session:.2} writes");

    running.stop().await;
    let _ =
        Api::<Namespace>::all(bench.client.clone()).delete(&bench.namespace, &DeleteParams::default()).await;
}
