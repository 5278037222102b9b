//! Bad input never gets a 5xx and never changes anything: every case below answers 4xx with
//! the one JSON error shape, and afterwards no session exists and the pools are unchanged.

mod common;

use std::time::Duration;

use cadbroker::auth::{MintRequest, load_or_create_dev_key, mint_dev_token};
use common::{TestBroker, open_pool};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    status: StatusCode,
    code: &'static str,
}

fn case(
    name: &'static str,
    token: Option<String>,
    body: &str,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case {
        name,
        method: Method::POST,
        path: "/api/v1/sessions",
        token,
        content_type: Some("application/json"),
        body: Some(body.as_bytes().to_vec()),
        headers: Vec::new(),
        status,
        code,
    }
}

async fn send(broker: &TestBroker, c: &Case) -> (StatusCode, Value) {
    let mut req = broker.http.request(c.method.clone(), format!("{}{}", broker.base, c.path));
    if let Some(t) = &c.token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = c.content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in &c.headers {
        req = req.header(*k, v);
    }
    if let Some(b) = &c.body {
        req = req.body(b.clone());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn forged_token(broker: &TestBroker, dir: &std::path::Path) -> String {
    let issuer = broker.config.auth.development_issuer().unwrap();
    let other_key = load_or_create_dev_key(&dir.join("attacker.pem")).unwrap();
    mint_dev_token(issuer, &other_key, &MintRequest::new("alice"), jiff::Timestamp::now()).unwrap()
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    let broker = TestBroker::start(|c| {
        c.pools.push(open_pool("cad", 0, 2, 1));
    })
    .await;
    broker.wait_warm("cad", 1).await;
    broker.wait_warm("drafting-2d", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = broker.token("alice", &["drafters"]);
    let admin = broker.admin_token("root");
    let expired = {
        let mut req = MintRequest::new("alice");
        req.ttl = Duration::from_secs(600);
        broker.mint(&req, jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1))
    };
    let no_groups = {
        let mut req = MintRequest::new("carol");
        req.groups = None;
        broker.mint(&req, jiff::Timestamp::now())
    };
    let ok = |p: &str| format!("{{\"pool\":\"{p}\"}}");
    let big = format!("{{\"pool\":\"{}\"}}", "x".repeat(100_000));
    let mut cases = vec![
        case("malformed JSON", Some(alice.clone()), "{\"pool\":", StatusCode::BAD_REQUEST, "invalid_json"),
        case("not an object", Some(alice.clone()), "[1,2]", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        case("missing pool", Some(alice.clone()), "{}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        case(
            "unknown field",
            Some(alice.clone()),
            "{\"pool\":\"cad\",\"gpus\":8}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        case(
            "unknown pool",
            Some(alice.clone()),
            &ok("nope"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_pool",
        ),
        case(
            "pool not allowed",
            Some(alice.clone()),
            &ok("visualisation-3d"),
            StatusCode::FORBIDDEN,
            "pool_forbidden",
        ),
        case("groups unknown", Some(no_groups), &ok("drafting-2d"), StatusCode::FORBIDDEN, "pool_forbidden"),
        case("missing token", None, &ok("cad"), StatusCode::UNAUTHORIZED, "token_missing"),
        case("expired token", Some(expired), &ok("cad"), StatusCode::UNAUTHORIZED, "token_expired"),
        case(
            "forged token",
            Some(forged_token(&broker, dir.path())),
            &ok("cad"),
            StatusCode::UNAUTHORIZED,
            "token_invalid",
        ),
        case("garbage token", Some("a.b.c".into()), &ok("cad"), StatusCode::UNAUTHORIZED, "token_invalid"),
        case(
            "oversized token",
            Some("a".repeat(64 * 1024)),
            &ok("cad"),
            StatusCode::UNAUTHORIZED,
            "token_too_large",
        ),
        case("oversized body", Some(alice.clone()), &big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
    ];
    let mut wrong_type = case(
        "wrong content type",
        Some(alice.clone()),
        &ok("cad"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    wrong_type.content_type = Some("text/plain");
    let mut bad_key = case(
        "bad idempotency key",
        Some(alice.clone()),
        &ok("cad"),
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    );
    bad_key.headers.push(("idempotency-key", "x".repeat(300)));
    let mut bad_pool = case(
        "invalid pool spec",
        Some(admin.clone()),
        r#"{"capacity":{"max":2,"warm":5}}"#,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_pool",
    );
    (bad_pool.method, bad_pool.path) = (Method::PUT, "/api/v1/pools/cad");
    let mut bad_name = case(
        "pool name mismatch",
        Some(admin.clone()),
        r#"{"name":"other","capacity":{"max":2}}"#,
        StatusCode::UNPROCESSABLE_ENTITY,
        "name_mismatch",
    );
    (bad_name.method, bad_name.path) = (Method::PUT, "/api/v1/pools/cad");
    let mut bad_label = case(
        "pool name not a DNS label",
        Some(admin.clone()),
        r#"{"capacity":{"max":2}}"#,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_pool",
    );
    (bad_label.method, bad_label.path) = (Method::PUT, "/api/v1/pools/Bad_Name");
    let mut not_admin = case(
        "pool put by a drafter",
        Some(alice.clone()),
        r#"{"capacity":{"max":9}}"#,
        StatusCode::FORBIDDEN,
        "admin_only",
    );
    (not_admin.method, not_admin.path) = (Method::PUT, "/api/v1/pools/cad");
    let mut delete_unknown =
        case("delete unknown pool", Some(admin.clone()), "", StatusCode::NOT_FOUND, "pool_not_found");
    (delete_unknown.method, delete_unknown.path, delete_unknown.body) =
        (Method::DELETE, "/api/v1/pools/nope", None);
    let mut unknown_session =
        case("unknown session", Some(alice.clone()), "", StatusCode::NOT_FOUND, "session_not_found");
    (unknown_session.method, unknown_session.path, unknown_session.body) =
        (Method::DELETE, "/api/v1/sessions/nope", None);
    let mut no_route = case("unknown route", Some(alice.clone()), "", StatusCode::NOT_FOUND, "not_found");
    (no_route.method, no_route.path) = (Method::GET, "/api/v2/things");
    let mut no_method =
        case("wrong method", Some(alice.clone()), "", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    (no_method.method, no_method.path) = (Method::PATCH, "/api/v1/sessions");
    cases.extend([
        wrong_type,
        bad_key,
        bad_pool,
        bad_name,
        bad_label,
        not_admin,
        delete_unknown,
        unknown_session,
        no_route,
        no_method,
    ]);

    let (_, pools_before) = broker.call(Method::GET, "/api/v1/pools", Some(&admin), None).await;
    for c in &cases {
        let (status, body) = send(&broker, c).await;
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(body["error"]["code"], c.code, "{}: {body}", c.name);
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: {body}", c.name);
    }
    let (_, sessions) = broker.call(Method::GET, "/api/v1/sessions", Some(&admin), None).await;
    assert_eq!(sessions, json!([]), "bad input created sessions");
    let (_, pools_after) = broker.call(Method::GET, "/api/v1/pools", Some(&admin), None).await;
    assert_eq!(pools_after, pools_before, "bad input changed pools");
    let metrics = broker
        .http
        .get(format!("http://{}/metrics", broker.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("status=\"5"), "a 5xx was answered:\n{metrics}");
    broker.stop().await;
}

#[tokio::test]
async fn a_megabyte_header_is_refused_before_it_reaches_the_api() {
    let broker = TestBroker::start(|_| {}).await;
    let resp = broker
        .http
        .get(format!("{}/api/v1/sessions", broker.base))
        .header("authorization", format!("Bearer {}", "a".repeat(1 << 20)))
        .send()
        .await;
    // hyper answers 431 or closes the connection; never a 5xx, never a parsed token.
    if let Ok(resp) = resp {
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    broker.stop().await;
}

#[tokio::test]
async fn the_per_user_cap_answers_429() {
    let broker = TestBroker::start(|c| {
        c.broker.max_sessions_per_user = 1;
        c.pools = vec![open_pool("a", 0, 2, 0), open_pool("b", 0, 2, 0)];
    })
    .await;
    let token = broker.token("alice", &[]);
    assert_eq!(broker.request(&token, "a").await.0, StatusCode::ACCEPTED);
    let (status, body) = broker.request(&token, "b").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("user_session_limit"))
    );
    broker.stop().await;
}
