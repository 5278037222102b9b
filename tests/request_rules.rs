//! One table of requests through both session services: the embedded engine (simulated
//! backend) and cluster mode on the local control plane. Both ask the domain
//! (`domain::check_request`), so entitled, not entitled, unknown pool, over the user's cap,
//! pool full, repeated and idempotent requests must get the same answers from both.
//! Run by `make test` with the cluster up (`--features cluster-tests`).
#![cfg(feature = "cluster-tests")]

mod common;

use cadbroker::domain::{Access, PoolSpec};
use common::{
    TestBroker,
    cluster::{client, create_pool_spec, pool_with, temp_namespace},
    open_pool,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Who asks for which pool, with which Idempotency-Key.
struct Step {
    what: &'static str,
    user: &'static str,
    groups: &'static [&'static str],
    pool: &'static str,
    key: Option<&'static str>,
}

/// What a step got: the status, the error code (or the phase class of the session), and
/// whether it answered with the session of an earlier step.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: u16,
    answer: String,
    same_as: Option<usize>,
}

const TABLE: [Step; 9] = [
    Step { what: "entitled", user: "alice", groups: &[], pool: "open", key: Some("k1") },
    Step { what: "repeated", user: "alice", groups: &[], pool: "open", key: None },
    Step { what: "idempotent", user: "alice", groups: &[], pool: "open", key: Some("k1") },
    Step {
        what: "key reused for another pool",
        user: "alice",
        groups: &["gis"],
        pool: "gis",
        key: Some("k1"),
    },
    Step { what: "not entitled", user: "bob", groups: &[], pool: "gis", key: None },
    Step { what: "unknown pool", user: "bob", groups: &[], pool: "nosuch", key: None },
    Step { what: "second pool, at the cap", user: "alice", groups: &["gis"], pool: "gis", key: None },
    Step { what: "over the user cap", user: "alice", groups: &["gis"], pool: "third", key: None },
    Step { what: "pool full", user: "carol", groups: &[], pool: "open", key: None },
];

fn expected() -> Vec<Outcome> {
    let o = |status: u16, answer: &str, same_as: Option<usize>| Outcome {
        status,
        answer: answer.into(),
        same_as,
    };
    vec![
        o(0, "placed", None),
        o(200, "placed", Some(0)),
        o(200, "placed", Some(0)),
        o(409, "idempotency_conflict", None),
        o(403, "pool_forbidden", None),
        o(422, "unknown_pool", None),
        o(0, "placed", None),
        o(429, "user_session_limit", None),
        o(202, "Queued", None),
    ]
}

async fn run_table(broker: &TestBroker) -> Vec<Outcome> {
    let mut ids: Vec<Option<String>> = Vec::new();
    let mut outcomes = Vec::new();
    for step in &TABLE {
        let mut req = broker.http.post(format!("{}/api/v1/sessions", broker.base));
        req = req.bearer_auth(broker.token(step.user, step.groups)).json(&json!({ "pool": step.pool }));
        if let Some(key) = step.key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.expect("answered");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let id = body["id"].as_str().map(str::to_owned);
        let answer = match body["error"]["code"].as_str() {
            Some(code) => code.to_owned(),
            // Where a new session stands right after its create depends on the backend's
            // speed (Queued, Starting or Ready); at the pool's maximum it must queue.
            None if step.what == "pool full" => body["phase"].as_str().unwrap_or_default().to_owned(),
            None => "placed".to_owned(),
        };
        // 201 or 202 for a new session, by the backend's speed; the table compares "new".
        let status = match status {
            StatusCode::CREATED | StatusCode::ACCEPTED if step.what != "pool full" => 0,
            s => s.as_u16(),
        };
        let same_as = id.as_ref().and_then(|id| ids.iter().position(|x| x.as_ref() == Some(id)));
        outcomes.push(Outcome { status, answer, same_as });
        ids.push(id);
    }
    outcomes
}

fn embedded_pools() -> Vec<PoolSpec> {
    let mut open = open_pool("open", 0, 1, 0);
    open.gpu_model = None;
    let mut gis = open_pool("gis", 0, 2, 0);
    gis.gpu_model = None;
    gis.access = Access { groups: ["gis".to_owned()].into(), ..Access::default() };
    let mut third = open_pool("third", 0, 2, 0);
    third.gpu_model = None;
    vec![open, gis, third]
}

#[tokio::test]
async fn both_session_services_answer_one_table_of_requests_alike() {
    let embedded = TestBroker::start(|c| {
        c.pools = embedded_pools();
        c.broker.max_sessions_per_user = 2;
    })
    .await;
    let from_engine = run_table(&embedded).await;
    embedded.stop().await;

    let client = client().await;
    let ns = temp_namespace(&client).await;
    let gis = json!({ "groups": ["gis"] });
    let specs = [
        ("open", pool_with(json!({ "capacity": { "min": 0, "max": 1, "warm": 0 } }))),
        ("gis", pool_with(json!({ "capacity": { "min": 0, "max": 2, "warm": 0 }, "access": gis }))),
        ("third", pool_with(json!({ "capacity": { "min": 0, "max": 2, "warm": 0 } }))),
    ];
    for (name, spec) in specs {
        create_pool_spec(&client, &ns, name, spec).await;
    }
    let cluster = broker_with_cap(&ns, 2).await;
    let from_cluster = run_table(&cluster).await;
    cluster.stop().await;

    for (i, step) in TABLE.iter().enumerate() {
        assert_eq!(from_engine[i], expected()[i], "engine, step {i} ({})", step.what);
        assert_eq!(from_cluster[i], from_engine[i], "cluster vs engine, step {i} ({})", step.what);
    }
}

/// A cluster-mode broker in `ns` whose users may hold `cap` live sessions.
async fn broker_with_cap(ns: &str, cap: u32) -> TestBroker {
    let ns = ns.to_owned();
    TestBroker::start(move |c| {
        common::cluster::configure(c, &ns);
        c.broker.max_sessions_per_user = cap;
    })
    .await
}
