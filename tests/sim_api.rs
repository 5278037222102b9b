//! The autoscaling and lifecycle policy through the API of a running broker: decisions for
//! admins, estimated waits, and an idle session warned on its event stream, then ended.

mod common;

use std::time::Duration;

use common::{TestBroker, open_pool};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn admins_read_a_pools_decisions_with_reasons_and_others_may_not() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 2)]).await;
    broker.wait_warm("cad", 2).await;
    let admin = broker.admin_token("root");
    let (status, body) = broker.call(Method::GET, "/api/v1/pools/cad/decisions", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body.as_array().unwrap().last().expect("the buffer was raised at start").clone();
    assert_eq!(first["kind"], "ScaleUp", "{body}");
    assert_eq!(first["reason"], "warm 0 -> 2: default buffer (capacity.warm 2)");
    assert_eq!(first["inputs"]["warmTo"], 2);
    assert_eq!(first["inputs"]["max"], 4);
    let drafter = broker.token("alice", &["drafters"]);
    let (status, body) = broker.call(Method::GET, "/api/v1/pools/cad/decisions", Some(&drafter), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    let (status, body) = broker.call(Method::GET, "/api/v1/pools/gis/decisions", Some(&admin), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("pool_not_found")));
    let (_, doc) = broker.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert!(doc["paths"]["/api/v1/pools/{name}/decisions"]["get"].is_object());
    assert!(doc["components"]["schemas"]["SessionView"]["properties"]["estimatedWaitSeconds"].is_object());
    broker.stop().await;
}

#[tokio::test]
async fn starting_and_queued_sessions_carry_an_estimated_wait() {
    let broker = TestBroker::start(|c| {
        c.backend.simulated.start_delay = Duration::from_secs(5);
        c.pools = vec![open_pool("cad", 0, 1, 0)];
    })
    .await;
    let (alice, bob) = (broker.token("alice", &[]), broker.token("bob", &[]));
    let (status, starting) = broker.request(&alice, "cad").await;
    assert_eq!((status, starting["phase"].as_str()), (StatusCode::ACCEPTED, Some("Starting")), "{starting}");
    // No start observed yet: a start is assumed to take 2 minutes.
    let wait = starting["estimatedWaitSeconds"].as_u64().expect("an estimate");
    assert!((115..=120).contains(&wait), "{starting}");
    let (_, queued) = broker.request(&bob, "cad").await;
    assert_eq!((queued["phase"].as_str(), queued["queuePosition"].as_u64()), (Some("Queued"), Some(1)));
    // Alice's session has no history to go by: half of the 10 h lifetime, then a start.
    let wait = queued["estimatedWaitSeconds"].as_u64().expect("an estimate");
    assert!(wait > 4 * 3600, "{queued}");
    let ready = broker.wait_phase(&alice, starting["id"].as_str().unwrap(), "Ready").await;
    assert!(ready.get("estimatedWaitSeconds").is_none(), "{ready}");
    broker.stop().await;
}

#[tokio::test]
async fn an_idle_session_gets_a_warning_event_then_ends_with_its_reason() {
    let broker = TestBroker::start(|c| {
        c.pools = vec![open_pool("cad", 0, 2, 1)];
        c.pools[0].limits.idle_timeout = Duration::from_secs(3);
        c.pools[0].limits.warn_before = Duration::from_secs(2);
    })
    .await;
    broker.wait_warm("cad", 1).await;
    let token = broker.token("alice", &[]);
    let (status, s) = broker.request(&token, "cad").await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap();
    let mut resp = broker
        .http
        .get(format!("{}/api/v1/sessions/{id}/events", broker.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let warning = text.find("event: warning").expect("a warning event");
    let ended = text.find("\"phase\":\"Ended\"").expect("the session ended");
    assert!(warning < ended, "{text}");
    assert!(text.contains("\"reason\":\"IdleTimeout\""), "{text}");
    assert!(text.contains("\"endReason\":\"IdleTimeout\""), "{text}");
    let admin = broker.admin_token("root");
    let (_, decisions) = broker.call(Method::GET, "/api/v1/pools/cad/decisions", Some(&admin), None).await;
    let kinds: Vec<_> = decisions.as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"Warn") && kinds.contains(&"End"), "{decisions}");
    broker.stop().await;
}
