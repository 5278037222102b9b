//! End-to-end session flows over real sockets on the embedded default: warm claim, cold start,
//! queue, idempotency, ending, events and the admin listener.

mod common;

use std::time::Duration;

use common::{TestBroker, open_pool};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_warm_workstation_is_claimed_at_once_and_its_connect_url_answers() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 1)]).await;
    broker.wait_warm("cad", 1).await;
    let token = broker.token("alice", &[]);
    let (status, body) = broker.request(&token, "cad").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["phase"], "Ready");
    let url = body["connectUrl"].as_str().expect("a connect URL when Ready");
    // Through the gateway, with a single-use ticket: never the workstation's own address.
    let gateway = format!("{}/connect/{}/?ticket=", broker.base, body["id"].as_str().unwrap());
    assert!(url.starts_with(&gateway), "{url}");
    let (_cookie, page) = broker.open_desktop(url).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains(body["workstation"].as_str().unwrap()));
    broker.stop().await;
}

#[tokio::test]
async fn without_a_warm_workstation_the_request_is_starting_then_ready() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 0)]).await;
    let token = broker.token("alice", &[]);
    let (status, body) = broker.request(&token, "cad").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["phase"], "Starting");
    assert!(body.get("connectUrl").is_none());
    let ready = broker.wait_phase(&token, body["id"].as_str().unwrap(), "Ready").await;
    assert!(ready["connectUrl"].is_string());
    assert!(ready["node"].as_str().unwrap().starts_with("gpu-l4-"));
    broker.stop().await;
}

#[tokio::test]
async fn a_full_pool_queues_with_a_position_and_serves_the_queue_when_a_session_ends() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 1, 0)]).await;
    let (a, b, c) = (broker.token("a", &[]), broker.token("b", &[]), broker.token("c", &[]));
    let (_, first) = broker.request(&a, "cad").await;
    let (status, second) = broker.request(&b, "cad").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!((second["phase"].as_str(), second["queuePosition"].as_u64()), (Some("Queued"), Some(1)));
    let (_, third) = broker.request(&c, "cad").await;
    assert_eq!(third["queuePosition"], 2);
    let first_id = first["id"].as_str().unwrap();
    broker.wait_phase(&a, first_id, "Ready").await;
    let (status, ended) =
        broker.call(Method::DELETE, &format!("/api/v1/sessions/{first_id}"), Some(&a), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ended["endReason"], "UserEnded");
    broker.wait_phase(&b, second["id"].as_str().unwrap(), "Ready").await;
    let third_now = broker.wait_phase(&c, third["id"].as_str().unwrap(), "Queued").await;
    assert_eq!(third_now["queuePosition"], 1, "the queue moved up");
    broker.stop().await;
}

#[tokio::test]
async fn a_repeated_request_or_idempotency_key_returns_the_same_session() {
    let broker =
        TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 0), open_pool("gis", 0, 4, 0)]).await;
    let token = broker.token("alice", &[]);
    let (_, first) = broker.request(&token, "cad").await;
    let (status, again) = broker.request(&token, "cad").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    let keyed = |pool: &str| {
        broker
            .http
            .post(format!("{}/api/v1/sessions", broker.base))
            .bearer_auth(&token)
            .header("Idempotency-Key", "retry-42")
            .json(&json!({ "pool": pool }))
            .send()
    };
    let created = keyed("gis").await.unwrap();
    assert_eq!(created.status(), StatusCode::ACCEPTED);
    let created: serde_json::Value = created.json().await.unwrap();
    let retried: serde_json::Value = keyed("gis").await.unwrap().json().await.unwrap();
    assert_eq!(retried["id"], created["id"]);
    let conflict = keyed("cad").await.unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let (_, list) = broker.call(Method::GET, "/api/v1/sessions", Some(&token), None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    broker.stop().await;
}

#[tokio::test]
async fn users_see_only_their_own_sessions_and_admins_see_and_end_all() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 0)]).await;
    let (alice, bob, admin) =
        (broker.token("alice", &[]), broker.token("bob", &[]), broker.admin_token("root"));
    let (_, session) = broker.request(&alice, "cad").await;
    let path = format!("/api/v1/sessions/{}", session["id"].as_str().unwrap());
    let (status, err) = broker.call(Method::GET, &path, Some(&bob), None).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("session_not_found")));
    let (status, _) = broker.call(Method::DELETE, &path, Some(&bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, all) = broker.call(Method::GET, "/api/v1/sessions", Some(&admin), None).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (status, ended) = broker.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!((status, ended["endReason"].as_str()), (StatusCode::OK, Some("AdminEnded")));
    broker.stop().await;
}

#[tokio::test]
async fn the_event_stream_reports_starting_then_ready_then_ended() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 0)]).await;
    let token = broker.token("alice", &[]);
    let (_, session) = broker.request(&token, "cad").await;
    let id = session["id"].as_str().unwrap().to_owned();
    let resp = broker
        .http
        .get(format!("{}/api/v1/sessions/{id}/events", broker.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut resp = resp;
    let mut text = String::new();
    let mut ended_sent = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("\"phase\":\"Ready\"") && !ended_sent {
            ended_sent = true;
            broker.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), Some(&token), None).await;
        }
    }
    let phases: Vec<&str> = ["Starting", "Ready", "Ending", "Ended"]
        .into_iter()
        .filter(|p| text.contains(&format!("\"phase\":\"{p}\"")))
        .collect();
    assert_eq!(phases, ["Starting", "Ready", "Ending", "Ended"], "{text}");
    assert!(text.contains("event: phase"));
    broker.stop().await;
}

#[tokio::test]
async fn keepalive_records_activity_and_refuses_ended_sessions() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 1)]).await;
    broker.wait_warm("cad", 1).await;
    let token = broker.token("alice", &[]);
    let (_, s) = broker.request(&token, "cad").await;
    let id = s["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, touched) =
        broker.call(Method::POST, &format!("/api/v1/sessions/{id}/keepalive"), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(touched["lastActivity"].as_str().unwrap() > s["lastActivity"].as_str().unwrap());
    broker.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), Some(&token), None).await;
    let (status, err) =
        broker.call(Method::POST, &format!("/api/v1/sessions/{id}/keepalive"), Some(&token), None).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("session_ended")));
    broker.stop().await;
}

#[tokio::test]
async fn pools_are_listed_by_access_and_managed_by_admins() {
    let broker = TestBroker::start(|_| {}).await;
    let drafter = broker.token("d", &["drafters"]);
    let admin = broker.admin_token("root");
    let (_, pools) = broker.call(Method::GET, "/api/v1/pools", Some(&drafter), None).await;
    let names: Vec<_> = pools.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["drafting-2d"]);
    assert!(pools[0].get("spec").is_none(), "the full spec is for admins");
    let spec = json!({ "capacity": { "max": 3, "warm": 1 }, "gpuModel": "nvidia-l4", "access": { "groups": ["drafters"] } });
    let (status, err) =
        broker.call(Method::PUT, "/api/v1/pools/survey", Some(&drafter), Some(spec.clone())).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    let (status, created) =
        broker.call(Method::PUT, "/api/v1/pools/survey", Some(&admin), Some(spec.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = broker.call(Method::PUT, "/api/v1/pools/survey", Some(&admin), Some(spec)).await;
    assert_eq!(status, StatusCode::OK);
    broker.wait_warm("survey", 1).await;
    let (_, session) = broker.request(&drafter, "survey").await;
    assert_eq!(session["phase"], "Ready");
    let (status, _) = broker.call(Method::DELETE, "/api/v1/pools/survey", Some(&admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = session["id"].as_str().unwrap();
    let (_, ended) = broker.call(Method::GET, &format!("/api/v1/sessions/{id}"), Some(&drafter), None).await;
    assert_eq!(ended["endReason"], "PoolDeleted");
    broker.stop().await;
}

#[tokio::test]
async fn the_admin_listener_serves_health_and_metrics_and_the_api_serves_openapi() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 2, 0)]).await;
    let token = broker.token("alice", &[]);
    broker.request(&token, "cad").await;
    let admin = |path: &str| broker.http.get(format!("http://{}{path}", broker.admin)).send();
    assert_eq!(admin("/livez").await.unwrap().status(), StatusCode::OK);
    assert_eq!(admin("/readyz").await.unwrap().status(), StatusCode::OK);
    let metrics = admin("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"cadbroker_sessions{pool="cad",phase="Starting"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"cadbroker_queue_length{pool="cad"} 0"#));
    assert!(metrics.contains(r#"cadbroker_http_request_duration_seconds_count{method="POST",route="/api/v1/sessions",status="202"} 1"#));
    let (status, _) = broker.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "metrics are not on the public listener");
    let (status, doc) = broker.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/api/v1/sessions", "/api/v1/sessions/{id}/events", "/api/v1/pools/{name}"] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"].get("SessionView").is_some());
    broker.stop().await;
}
