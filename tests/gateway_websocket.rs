//! WebSocket through the gateway, over real sockets: the gateway on 127.0.0.1:0 in front of a
//! real WebSocket echo on 127.0.0.1:0. Messages both ways, binary and 1 MiB frames, close frames
//! in both directions, a greeting sent with the 101, refusals before 101 (the desktop never sees
//! a refused upgrade), backpressure from a client that stops reading, session end and shutdown
//! closing open connections, coalesced activity, disconnects reported for the reconnect grace.

#[path = "common/gateway.rs"]
mod gateway;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use futures::{SinkExt, StreamExt};
use gateway::{GatewayUnderTest, Upstream, dead_address, next_message, refused, round_trip};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

async fn setup() -> (GatewayUnderTest, Upstream) {
    let upstream = Upstream::start().await;
    let gw = GatewayUnderTest::start(|_| {}).await;
    gw.sessions.add("s1", "alice", upstream.addr);
    (gw, upstream)
}

#[tokio::test]
async fn text_binary_and_one_mebibyte_messages_pass_both_ways() {
    let (gw, _upstream) = setup().await;
    let mut ws = gw.ws("s1", "alice", "/ws").await;
    assert_eq!(round_trip(&mut ws, Message::text("hello")).await, Message::text("hello"));
    let binary: Vec<u8> = (0..=255u8).collect();
    assert_eq!(round_trip(&mut ws, Message::binary(binary.clone())).await, Message::binary(binary));
    let large: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut ws, Message::binary(large.clone())).await, Message::binary(large));
    // Many messages in flight at once arrive complete and in order.
    for i in 0..200 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..200 {
        assert_eq!(next_message(&mut ws).await, Some(Message::text(format!("m{i}"))));
    }
    // Pings pass to the desktop, whose pong comes back.
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Ok(Message::Pong(p))) = ws.next().await {
                return p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&pong[..], b"are you there");
    drop(ws);
    gw.stop().await;
}

#[tokio::test]
async fn close_frames_pass_in_both_directions() {
    let (gw, _upstream) = setup().await;
    // The client closes: the desktop's close reply comes back with the client's code.
    let mut ws = gw.ws("s1", "alice", "/ws").await;
    let frame = CloseFrame { code: CloseCode::Normal, reason: "user left".into() };
    ws.close(Some(frame)).await.unwrap();
    match next_message(&mut ws).await {
        Some(Message::Close(Some(reply))) => assert_eq!(reply.code, CloseCode::Normal),
        other => panic!("expected the desktop's close reply, got {other:?}"),
    }
    // The desktop closes: the client gets its code and reason.
    let mut ws = gw.ws("s1", "alice", "/ws").await;
    ws.send(Message::text("close:4001")).await.unwrap();
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4001, "desktop says bye"));
        }
        other => panic!("expected the desktop's close frame, got {other:?}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_greeting_sent_with_the_101_reaches_the_client_first() {
    let (gw, _upstream) = setup().await;
    let mut ws = gw.ws("s1", "alice", "/ws-greet").await;
    assert_eq!(next_message(&mut ws).await, Some(Message::text("hello from the desktop")));
    assert_eq!(round_trip(&mut ws, Message::text("and back")).await, Message::text("and back"));
    gw.stop().await;
}

#[tokio::test]
async fn the_upgrade_is_authorised_before_101_like_http() {
    let (gw, _upstream) = setup().await;
    // No cookie: 401 JSON, no 101 (SECURITY.md A30).
    let err = tokio_tungstenite::connect_async(gw.ws_request("s1", "/ws", None)).await.unwrap_err();
    assert_eq!(refused(err), (StatusCode::UNAUTHORIZED, "connect_unauthenticated".into()));
    // A forged cookie: 401.
    let forged = "cadbroker_connect=eyJraW5kIjoiY29va2llIn0.AAAA";
    let err = tokio_tungstenite::connect_async(gw.ws_request("s1", "/ws", Some(forged))).await.unwrap_err();
    assert_eq!(refused(err).0, StatusCode::UNAUTHORIZED);
    // Another session's cookie: 403.
    gw.sessions.add("s2", "bob", _upstream.addr);
    let bobs = gw.cookie("s2", "bob").await;
    let err = tokio_tungstenite::connect_async(gw.ws_request("s1", "/ws", Some(&bobs))).await.unwrap_err();
    assert_eq!(refused(err), (StatusCode::FORBIDDEN, "connect_forbidden".into()));
    // Bob's ticket at Alice's session: 403.
    let bobs_ticket = gw.ticket("s2", "bob");
    let at_alices = gw.ws_request("s1", &format!("/ws?ticket={bobs_ticket}"), None);
    let err = tokio_tungstenite::connect_async(at_alices).await.unwrap_err();
    assert_eq!(refused(err), (StatusCode::FORBIDDEN, "connect_forbidden".into()));
    // None of the refused upgrades reached the desktop.
    assert_eq!(_upstream.stats.upgrades.load(Ordering::Relaxed), 0, "a refused upgrade reached the desktop");
    // A ticket in the WebSocket URL works once (A28: single use), then 401.
    let ticket = gw.ticket("s1", "alice");
    let request = || gw.ws_request("s1", &format!("/ws?ticket={ticket}"), None);
    let (mut ws, _) = tokio_tungstenite::connect_async(request()).await.unwrap();
    assert_eq!(round_trip(&mut ws, Message::text("once")).await, Message::text("once"));
    let err = tokio_tungstenite::connect_async(request()).await.unwrap_err();
    assert_eq!(refused(err), (StatusCode::UNAUTHORIZED, "ticket_used".into()));
    gw.stop().await;
}

#[tokio::test]
async fn a_foreign_or_missing_origin_is_refused_with_403() {
    let (gw, _upstream) = setup().await;
    let cookie = gw.cookie("s1", "alice").await;
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let mut req = gw.ws_request("s1", "/ws", Some(&cookie));
        match origin {
            Some(o) => req.headers_mut().insert("origin", o.parse().unwrap()),
            None => req.headers_mut().remove("origin"),
        };
        let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
        assert_eq!(refused(err), (StatusCode::FORBIDDEN, "origin_forbidden".into()), "{origin:?}");
    }
    assert_eq!(_upstream.stats.upgrades.load(Ordering::Relaxed), 0);
    // A refused origin does not spend a ticket.
    let ticket = gw.ticket("s1", "alice");
    let mut req = gw.ws_request("s1", &format!("/ws?ticket={ticket}"), None);
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let req = gw.ws_request("s1", &format!("/ws?ticket={ticket}"), None);
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    gw.stop().await;
}

#[tokio::test]
async fn extra_allowed_origins_are_accepted() {
    let upstream = Upstream::start().await;
    let gw = GatewayUnderTest::start(|c| c.allowed_origins = vec!["https://portal.example.org".into()]).await;
    gw.sessions.add("s1", "alice", upstream.addr);
    let cookie = gw.cookie("s1", "alice").await;
    let mut req = gw.ws_request("s1", "/ws", Some(&cookie));
    req.headers_mut().insert("origin", "https://portal.example.org".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(round_trip(&mut ws, Message::text("hi")).await, Message::text("hi"));
    gw.stop().await;
}

#[tokio::test]
async fn a_desktop_that_is_down_gets_502_json_and_a_refused_upgrade_is_passed_on() {
    let (gw, _upstream) = setup().await;
    gw.sessions.add("down", "alice", dead_address().await);
    let cookie = gw.cookie("down", "alice").await;
    let err =
        tokio_tungstenite::connect_async(gw.ws_request("down", "/ws", Some(&cookie))).await.unwrap_err();
    assert_eq!(refused(err), (StatusCode::BAD_GATEWAY, "upstream_unavailable".into()));
    // The desktop answers the upgrade with 404 (no WebSocket there): the client gets that 404.
    let cookie = gw.cookie("s1", "alice").await;
    let err =
        tokio_tungstenite::connect_async(gw.ws_request("s1", "/nothing", Some(&cookie))).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), StatusCode::NOT_FOUND),
        other => panic!("expected 404, got {other}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn ending_a_session_closes_its_websockets_within_a_second() {
    let upstream = Upstream::start().await;
    let gw = GatewayUnderTest::start(|_| {}).await;
    gw.sessions.add("s1", "alice", upstream.addr);
    gw.sessions.add("s2", "bob", upstream.addr);
    let mut first = gw.ws("s1", "alice", "/ws").await;
    let mut second = gw.ws("s1", "alice", "/ws").await;
    let mut other = gw.ws("s2", "bob", "/ws").await;
    assert_eq!(round_trip(&mut first, Message::text("a")).await, Message::text("a"));
    let cookie = gw.cookie("s1", "alice").await;
    let started = Instant::now();
    gw.sessions.end("s1");
    for ws in [&mut first, &mut second] {
        match next_message(ws).await {
            Some(Message::Close(Some(frame))) => {
                assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Normal, "session ended"));
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert_eq!(next_message(ws).await, None, "then the connection ends");
    }
    assert!(started.elapsed() < Duration::from_secs(1), "closed in {:?}", started.elapsed());
    // Another session's connection is untouched.
    assert_eq!(round_trip(&mut other, Message::text("still here")).await, Message::text("still here"));
    // And the ended session cannot be entered again, even with its cookie.
    let again =
        gw.http.get(format!("{}/connect/s1/headers", gw.base)).header("cookie", cookie).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let err = tokio_tungstenite::connect_async(gw.ws_request("s1", "/ws", None)).await.unwrap_err();
    assert_eq!(refused(err).0, StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_service_restart_and_drains() {
    let (mut gw, _upstream) = setup().await;
    let mut ws = gw.ws("s1", "alice", "/ws").await;
    assert_eq!(round_trip(&mut ws, Message::text("a")).await, Message::text("a"));
    assert_eq!(gw.gateway.connections(), 1);
    gw.begin_stop();
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1012),
        other => panic!("expected close 1012, got {other:?}"),
    }
    let took = gw.stop().await;
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");
}

#[tokio::test]
async fn websocket_traffic_records_activity_at_most_once_per_interval() {
    let upstream = Upstream::start().await;
    let gw = GatewayUnderTest::start(|c| c.activity_interval = Duration::from_secs(1)).await;
    gw.sessions.add("s1", "alice", upstream.addr);
    let mut ws = gw.ws("s1", "alice", "/ws").await;
    let started = Instant::now();
    let mut frames = 0;
    while started.elapsed() < Duration::from_millis(2200) {
        round_trip(&mut ws, Message::binary(vec![1u8; 512])).await;
        frames += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let touches = gw.sessions.touches_of("s1");
    assert!(frames >= 50, "{frames} frames");
    assert!((1..=3).contains(&touches), "{touches} touches for {frames} round trips in 2.2 s");
    gw.stop().await;
}

#[tokio::test]
async fn a_websocket_client_that_stops_reading_holds_the_desktop_back() {
    let (gw, upstream) = setup().await;
    // The desktop sends 64 KiB frames as fast as they are taken (up to 6 GiB).
    let mut ws = gw.ws("s1", "alice", "/ws-flood").await;
    let mut read = 0;
    while read < 1024 * 1024 {
        match next_message(&mut ws).await {
            Some(Message::Binary(frame)) => read += frame.len(),
            other => panic!("expected binary frames, got {other:?}"),
        }
    }
    // Stop reading: the socket buffers on both loopback hops fill, then the desktop waits.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stalled_at = upstream.stats.flooded.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = upstream.stats.flooded.load(Ordering::Relaxed);
    assert!(
        stalled_at < 48 * 1024 * 1024,
        "the desktop sent {stalled_at} bytes to a client that stopped reading"
    );
    assert!(later - stalled_at <= 1024 * 1024, "still sending: {stalled_at} then {later}");
    // Reading again resumes it: more than was buffered on the way means the desktop sent again.
    let buffered = usize::try_from(later).unwrap() - read;
    let mut more = 0;
    while more < buffered + 4 * 1024 * 1024 {
        match next_message(&mut ws).await {
            Some(Message::Binary(frame)) => more += frame.len(),
            other => panic!("expected binary frames, got {other:?}"),
        }
    }
    assert!(upstream.stats.flooded.load(Ordering::Relaxed) > later, "the desktop sends again");
    drop(ws);
    gw.stop().await;
}

/// Waits up to `limit` for `done`.
async fn eventually(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// Closes `ws` from the client side and waits for the connection to end.
async fn close(mut ws: gateway::Ws) {
    ws.close(None).await.unwrap();
    while next_message(&mut ws).await.is_some() {}
}

#[tokio::test]
async fn the_last_desktop_connection_closing_is_reported_and_a_reconnect_clears_it_at_once() {
    let upstream = Upstream::start().await;
    // A long interval: every touch after the first is coalesced unless forced.
    let gw = GatewayUnderTest::start(|c| c.activity_interval = Duration::from_secs(600)).await;
    gw.sessions.add("s1", "alice", upstream.addr);
    let mut first = gw.ws("s1", "alice", "/ws").await;
    let mut second = gw.ws("s1", "alice", "/ws").await;
    assert_eq!(round_trip(&mut first, Message::text("a")).await, Message::text("a"));
    assert_eq!(round_trip(&mut second, Message::text("b")).await, Message::text("b"));
    // One of two desktop connections closes: the desktop is still connected.
    close(first).await;
    // Plain HTTP requests come and go without counting as the desktop.
    let cookie = gw.cookie("s1", "alice").await;
    let resp = gw.http.get(format!("{}/connect/s1/headers", gw.base)).header("cookie", &cookie).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.sessions.disconnects_of("s1"), 0, "a desktop connection is still open");
    // The last one closes: the service hears of it (its reconnect grace starts).
    let started = Instant::now();
    close(second).await;
    assert!(eventually(Duration::from_secs(1), || gw.sessions.disconnects_of("s1") == 1).await);
    assert!(started.elapsed() < Duration::from_secs(1), "reported after {:?}", started.elapsed());
    // A reconnect records activity at once, despite the coalescing interval (it clears the
    // disconnect in the service).
    let touches = gw.sessions.touches_of("s1");
    let mut again = gw.ws("s1", "alice", "/ws").await;
    assert_eq!(round_trip(&mut again, Message::text("back")).await, Message::text("back"));
    assert!(eventually(Duration::from_secs(1), || gw.sessions.touches_of("s1") > touches).await);
    let disconnect = gw.sessions.disconnects.lock().unwrap()[0].1;
    let last_touch = gw.sessions.touches.lock().unwrap().last().unwrap().1;
    assert!(last_touch > disconnect, "the reconnect is recorded after the disconnect");
    // Connections closed because the session ended are not a disconnect.
    gw.sessions.end("s1");
    assert!(matches!(next_message(&mut again).await, Some(Message::Close(_))));
    assert_eq!(next_message(&mut again).await, None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.sessions.disconnects_of("s1"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn connections_closed_by_a_broker_restart_are_not_reported_as_disconnects() {
    let (mut gw, _upstream) = setup().await;
    let mut ws = gw.ws("s1", "alice", "/ws").await;
    assert_eq!(round_trip(&mut ws, Message::text("a")).await, Message::text("a"));
    gw.begin_stop();
    assert!(matches!(next_message(&mut ws).await, Some(Message::Close(_))));
    let sessions = gw.sessions.clone();
    gw.stop().await;
    assert_eq!(sessions.disconnects_of("s1"), 0, "the client reconnects (1012); no grace starts");
}
