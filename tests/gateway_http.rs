//! Plain HTTP through the gateway, over real sockets: the ticket exchange, what the desktop
//! sees and what the client sees, bodies streamed both ways, backpressure under a slow client,
//! 502 for a desktop that is down, session end and shutdown.

#[path = "common/gateway.rs"]
mod gateway;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use axum::http::{StatusCode, header};
use gateway::{GatewayUnderTest, Upstream, cookie_pair, dead_address};
use serde_json::Value;

async fn setup() -> (GatewayUnderTest, Upstream) {
    let upstream = Upstream::start().await;
    let gw = GatewayUnderTest::start(|_| {}).await;
    gw.sessions.add("s1", "alice", upstream.addr);
    (gw, upstream)
}

#[tokio::test]
async fn a_ticket_becomes_a_strict_session_cookie_and_the_desktop_never_sees_either() {
    let (gw, upstream) = setup().await;
    let ticket = gw.ticket("s1", "alice");
    let resp =
        gw.http.get(format!("{}/connect/s1/headers?a=1&ticket={ticket}", gw.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/connect/s1/headers?a=1");
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let set_cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["Path=/connect/s1/", "HttpOnly", "Secure", "SameSite=Strict", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing in {set_cookie}");
    }
    let cookie = cookie_pair(resp.headers());
    let resp = gw
        .http
        .get(format!("{}/connect/s1/headers?a=1", gw.base))
        .header(header::COOKIE, format!("desk=1; {cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["uri"], "/headers?a=1");
    let headers = &seen["headers"];
    assert_eq!(headers["cookie"], "desk=1", "the gateway cookie is not forwarded");
    assert_eq!(headers["host"], upstream.addr.to_string());
    assert_eq!(headers["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(headers["x-forwarded-prefix"], "/connect/s1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    // The same cookie keeps working; the ticket does not.
    let again = gw.http.get(format!("{}/connect/s1/headers", gw.base)).header(header::COOKIE, &cookie).send();
    assert_eq!(again.await.unwrap().status(), StatusCode::OK);
    let reused = gw.http.get(format!("{}/connect/s1/?ticket={ticket}", gw.base)).send().await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = reused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ticket_used");
    gw.stop().await;
}

#[tokio::test]
async fn tickets_and_cookies_of_another_session_or_user_get_403_and_bad_ones_401() {
    let (gw, upstream) = setup().await;
    gw.sessions.add("s2", "bob", upstream.addr);
    let code = |resp: reqwest::Response| async move {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        (status, body["error"]["code"].as_str().unwrap().to_owned())
    };
    let get = |path: String, cookie: Option<String>| {
        let mut req = gw.http.get(format!("{}{path}", gw.base));
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        req.send()
    };
    // Alice's ticket for her session, presented at Bob's.
    let alices = gw.ticket("s1", "alice");
    let resp = get(format!("/connect/s2/?ticket={alices}"), None).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::FORBIDDEN, "connect_forbidden".into()));
    // A ticket for Bob's session issued to Alice (not its owner).
    let now = jiff::Timestamp::now();
    let misissued = gw.signer.mint_ticket(&"s2".into(), &"alice".into(), now, Duration::from_secs(60));
    let resp = get(format!("/connect/s2/?ticket={misissued}"), None).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::FORBIDDEN, "connect_forbidden".into()));
    // Alice's cookie at Bob's session.
    let cookie = gw.cookie("s1", "alice").await;
    let resp = get("/connect/s2/headers".into(), Some(cookie)).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::FORBIDDEN, "connect_forbidden".into()));
    // Expired ticket and cookie, forged ones, none at all.
    let old = now - Duration::from_secs(120);
    let expired = gw.signer.mint_ticket(&"s1".into(), &"alice".into(), old, Duration::from_secs(60));
    let resp = get(format!("/connect/s1/?ticket={expired}"), None).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::UNAUTHORIZED, "ticket_expired".into()));
    let stale = gw.signer.mint_cookie(&"s1".into(), &"alice".into(), old, Duration::from_secs(60));
    let resp = get("/connect/s1/".into(), Some(format!("cadbroker_connect={stale}"))).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::UNAUTHORIZED, "cookie_expired".into()));
    let resp = get("/connect/s1/?ticket=abc.def".into(), None).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::UNAUTHORIZED, "ticket_invalid".into()));
    let resp = get("/connect/s1/".into(), Some("cadbroker_connect=abc.def".into())).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::UNAUTHORIZED, "connect_unauthenticated".into()));
    let resp = get("/connect/s1/".into(), None).await.unwrap();
    assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
    assert_eq!(code(resp).await, (StatusCode::UNAUTHORIZED, "connect_unauthenticated".into()));
    // A cookie can never stand in for a ticket, nor a ticket for a cookie.
    let as_cookie = gw.ticket("s1", "alice");
    let resp = get("/connect/s1/".into(), Some(format!("cadbroker_connect={as_cookie}"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A valid ticket for a session that does not exist.
    let ghost = gw.signer.mint_ticket(&"ghost".into(), &"alice".into(), now, Duration::from_secs(60));
    let resp = get(format!("/connect/ghost/?ticket={ghost}"), None).await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::NOT_FOUND, "session_not_found".into()));
    gw.stop().await;
}

#[tokio::test]
async fn without_a_trailing_slash_the_path_is_completed() {
    let (gw, _upstream) = setup().await;
    let resp = gw.http.get(format!("{}/connect/s1?ticket=t", gw.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()[header::LOCATION], "/connect/s1/?ticket=t");
    let resp = gw.http.get(format!("{}/connect/no%20such/", gw.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let (gw, _upstream) = setup().await;
    let cookie = gw.cookie("s1", "alice").await;
    let upload: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let sum: u64 = upload.iter().map(|b| u64::from(*b)).sum();
    let resp = gw
        .http
        .post(format!("{}/connect/s1/upload", gw.base))
        .header(header::COOKIE, &cookie)
        .body(upload)
        .send()
        .await
        .unwrap();
    let counted: Value = resp.json().await.unwrap();
    assert_eq!((counted["bytes"].as_u64(), counted["sum"].as_u64()), (Some(8 * 1024 * 1024), Some(sum)));
    let resp = gw
        .http
        .get(format!("{}/connect/s1/stream?chunks=64&size=131072", gw.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), 8 * 1024 * 1024);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "content intact");
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_client_holds_the_desktop_back() {
    let (gw, upstream) = setup().await;
    let cookie = gw.cookie("s1", "alice").await;
    // Up to 6 GiB offered; a client that stops reading must stop the desktop long before that.
    let mut resp = gw
        .http
        .get(format!("{}/connect/s1/stream?chunks=100000&size=65536", gw.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let mut read = 0;
    while read < 1024 * 1024 {
        read += resp.chunk().await.unwrap().unwrap().len();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stalled_at = upstream.stats.produced.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = upstream.stats.produced.load(Ordering::Relaxed);
    // Socket buffers on two loopback hops and hyper's write buffers hold a few MiB at most.
    assert!(stalled_at < 48 * 1024 * 1024, "the desktop produced {stalled_at} bytes for a stalled client");
    assert!(later - stalled_at <= 1024 * 1024, "still producing: {stalled_at} then {later}");
    // Reading again resumes the stream.
    let mut more = 0;
    while more < 4 * 1024 * 1024 {
        more += resp.chunk().await.unwrap().unwrap().len();
    }
    drop(resp);
    gw.stop().await;
}

#[tokio::test]
async fn the_desktop_cannot_redirect_out_of_its_session_or_plant_the_gateway_cookie() {
    let (gw, _upstream) = setup().await;
    let cookie = gw.cookie("s1", "alice").await;
    let resp = gw.http.get(format!("{}/connect/s1/redirect", gw.base)).header(header::COOKIE, &cookie).send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()[header::LOCATION], "/connect/s1/landing");
    let cookies: Vec<_> = resp.headers().get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(cookies, ["desk=1; Path=/"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_desktop_that_is_down_gets_502_json_without_internals() {
    let (gw, _upstream) = setup().await;
    let dead = dead_address().await;
    gw.sessions.add("down", "alice", dead);
    let cookie = gw.cookie("down", "alice").await;
    let resp = gw.http.get(format!("{}/connect/down/", gw.base)).header(header::COOKIE, &cookie).send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert!(!text.contains(&dead.port().to_string()) && !text.contains("127.0.0.1"), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn ending_a_session_cuts_its_streaming_answer() {
    let (gw, _upstream) = setup().await;
    let cookie = gw.cookie("s1", "alice").await;
    let mut resp = gw
        .http
        .get(format!("{}/connect/s1/stream?chunks=100000&size=65536", gw.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap().unwrap();
    let started = Instant::now();
    gw.sessions.end("s1");
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    })
    .await
    .expect("the answer ends");
    assert!(ended, "the answer is cut, not completed");
    assert!(started.elapsed() < Duration::from_secs(1), "cut after {:?}", started.elapsed());
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_answer_in_flight_finish() {
    let (mut gw, _upstream) = setup().await;
    let cookie = gw.cookie("s1", "alice").await;
    let mut resp = gw
        .http
        .get(format!("{}/connect/s1/slow", gw.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
    gw.begin_stop();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body, b"01234");
    let took = gw.stop().await;
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");
}

#[tokio::test]
async fn http_traffic_records_activity_coalesced() {
    let (gw, _upstream) = setup().await;
    let cookie = gw.cookie("s1", "alice").await;
    for _ in 0..50 {
        let resp =
            gw.http.get(format!("{}/connect/s1/headers", gw.base)).header(header::COOKIE, &cookie).send();
        assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(gw.sessions.touches_of("s1"), 1, "one touch per 30 s interval");
    gw.stop().await;
}
