//! The gateway inside the whole broker on the embedded default: a session's connect URL leads
//! through `/connect/{id}/` to the simulated workstation's page and its WebSocket echo; links
//! are for the owner only; desktop traffic is activity; ending the session or stopping the
//! broker closes the desktop's WebSocket.

mod common;

use std::time::{Duration, Instant};

use common::{TestBroker, open_pool};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ready_session(broker: &TestBroker, user: &str) -> (String, Value) {
    broker.wait_warm("cad", 1).await;
    let token = broker.token(user, &[]);
    let (status, body) = broker.request(&token, "cad").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (token, body)
}

async fn websocket(broker: &TestBroker, id: &str, cookie: &str) -> Ws {
    let url = format!("{}/connect/{id}/websockify", broker.base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("origin", broker.base.parse().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("the desktop's WebSocket opens");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

async fn next(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer within 5 s") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn the_connect_url_leads_to_the_simulated_desktop_and_its_websocket() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 1)]).await;
    let (_, session) = ready_session(&broker, "alice").await;
    let id = session["id"].as_str().unwrap();
    let (cookie, page) = broker.open_desktop(session["connectUrl"].as_str().unwrap()).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains(session["workstation"].as_str().unwrap()));
    let mut ws = websocket(&broker, id, &cookie).await;
    ws.send(Message::text("through the gateway")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("through the gateway")));
    let frame: Vec<u8> = (0..1024 * 1024).map(|i| (i % 249) as u8).collect();
    ws.send(Message::binary(frame.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(frame)));
    drop(ws);
    broker.stop().await;
}

#[tokio::test]
async fn connect_urls_go_to_the_owner_only_each_with_a_fresh_ticket() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 1)]).await;
    let (token, session) = ready_session(&broker, "alice").await;
    let path = format!("/api/v1/sessions/{}", session["id"].as_str().unwrap());
    let (_, again) = broker.call(Method::GET, &path, Some(&token), None).await;
    assert_ne!(again["connectUrl"], session["connectUrl"], "a new ticket per answer");
    let (_, listed) = broker.call(Method::GET, "/api/v1/sessions", Some(&token), None).await;
    assert!(listed[0]["connectUrl"].is_string());
    let admin = broker.admin_token("root");
    let (status, seen) = broker.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen.get("connectUrl").is_none(), "an admin gets no link into someone's desktop: {seen}");
    // Each ticket opens the desktop once.
    let url = again["connectUrl"].as_str().unwrap();
    let (_, page) = broker.open_desktop(url).await;
    assert_eq!(page.status(), StatusCode::OK);
    let reuse = broker.http.get(url).send().await.unwrap();
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    broker.stop().await;
}

#[tokio::test]
async fn desktop_traffic_counts_as_activity() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 1)]).await;
    let (token, session) = ready_session(&broker, "alice").await;
    let id = session["id"].as_str().unwrap();
    let before = session["lastActivity"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (cookie, _) = broker.open_desktop(session["connectUrl"].as_str().unwrap()).await;
    let mut ws = websocket(&broker, id, &cookie).await;
    ws.send(Message::text("typing")).await.unwrap();
    next(&mut ws).await;
    let path = format!("/api/v1/sessions/{id}");
    let mut after = String::new();
    for _ in 0..50 {
        let (_, now) = broker.call(Method::GET, &path, Some(&token), None).await;
        after = now["lastActivity"].as_str().unwrap().to_owned();
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(after > before, "lastActivity {before} → {after}");
    broker.stop().await;
}

#[tokio::test]
async fn ending_the_session_closes_its_desktop_websocket_within_a_second() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 1)]).await;
    let (token, session) = ready_session(&broker, "alice").await;
    let id = session["id"].as_str().unwrap();
    let (cookie, _) = broker.open_desktop(session["connectUrl"].as_str().unwrap()).await;
    let mut ws = websocket(&broker, id, &cookie).await;
    let started = Instant::now();
    let (status, _) =
        broker.call(Method::DELETE, &format!("/api/v1/sessions/{id}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "closed after {:?}", started.elapsed());
    broker.stop().await;
}

#[tokio::test]
async fn stopping_the_broker_closes_desktop_websockets_for_a_reconnect() {
    let broker = TestBroker::start(|c| c.pools = vec![open_pool("cad", 0, 4, 1)]).await;
    let (_, session) = ready_session(&broker, "alice").await;
    let id = session["id"].as_str().unwrap().to_owned();
    let (cookie, _) = broker.open_desktop(session["connectUrl"].as_str().unwrap()).await;
    let mut ws = websocket(&broker, &id, &cookie).await;
    let started = Instant::now();
    let stopping = tokio::spawn(broker.stop());
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1012, "service restart"),
        other => panic!("expected close 1012, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("the broker stops").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
