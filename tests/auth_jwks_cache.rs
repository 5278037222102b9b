//! The OIDC key cache against a real loopback provider (SECURITY.md A8–A10): key rollover, a
//! flood of random `kid`s, the provider down or slow at startup and later, background refresh
//! after the TTL. Time is injected through `authenticate_at`; nothing here sleeps to wait.

#[path = "common/jwt.rs"]
mod jwt;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cadbroker::auth::{AuthError, Authenticator, Invalid, IssuerConfig};
use jiff::{SignedDuration, Timestamp};
use jwt::{Mode, RSA_A, RSA_B, TestIdp, TestKey, auth_config, b64, claims, forge, jwks, now};
use serde_json::{Value, json};

const TENANT: &str = "tenant-a";
const MINUTE: SignedDuration = SignedDuration::from_secs(60);

fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap()
}

/// A whole second strictly after the startup fetch (which ran before this is called), so
/// "one interval after startup" is at least a full interval whatever the sub-second timing.
fn after_startup() -> Timestamp {
    plus(now(), SignedDuration::from_secs(1))
}

async fn start(idp: &TestIdp, tweak: impl FnOnce(&mut IssuerConfig)) -> Arc<Authenticator> {
    let mut issuer = idp.issuer_config(TENANT);
    tweak(&mut issuer);
    Arc::new(Authenticator::new(&auth_config(vec![issuer])).await.unwrap())
}

fn token(idp: &TestIdp, key: &TestKey, at: Timestamp) -> String {
    key.sign(&claims(&idp.issuer(TENANT), "api://cadbroker", "alice", at))
}

/// A token whose `kid` names no published key. The signature is junk: the key lookup (and any
/// refetch) happens before verification, which is exactly what a flood exploits.
fn token_with_kid(idp: &TestIdp, kid: &str, at: Timestamp) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    forge(&header, &claims(&idp.issuer(TENANT), "api://cadbroker", "alice", at), &b64("junk"))
}

#[tokio::test]
async fn startup_fetches_discovery_and_jwks_once() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |_| {}).await;
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
    let health = auth.health();
    assert_eq!((health[0].keys, health[0].last_error.clone()), (1, None));
    assert!(health[0].keys_fetched_at.is_some());
    assert!(auth.is_ready());
}

#[tokio::test]
async fn a8_rolled_over_key_is_accepted_after_one_refetch_per_interval() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |_| {}).await;
    let t0 = after_startup();
    idp.set_keys(&[&RSA_A, &RSA_B]);

    // Within the interval since the startup fetch: no refetch, the new kid is unknown.
    let early = auth.authenticate_at(&token(&idp, &RSA_B, t0), t0).await;
    assert_eq!(early.map(|p| p.subject), Err(Invalid::UnknownKey.into()));
    assert_eq!(idp.jwks_hits(), 1);

    // Once the interval has passed, the unknown kid triggers exactly one refetch and is accepted.
    let t1 = plus(t0, MINUTE);
    assert!(auth.authenticate_at(&token(&idp, &RSA_B, t1), t1).await.is_ok());
    assert_eq!(idp.jwks_hits(), 2);
    assert!(auth.authenticate_at(&token(&idp, &RSA_A, t1), t1).await.is_ok(), "old key still listed");
    assert_eq!(idp.jwks_hits(), 2, "known kids never fetch");
    assert_eq!(idp.discovery_hits(), 1, "jwks_uri is cached");
}

#[tokio::test]
async fn a9_flood_of_random_kids_causes_at_most_one_refetch_per_interval() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |_| {}).await;
    let t1 = plus(after_startup(), MINUTE);

    let flood = |at: Timestamp, n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let auth = auth.clone();
                let t = token_with_kid(&idp, &format!("random-{}-{i}", at.as_second()), at);
                tokio::spawn(async move { auth.authenticate_at(&t, at).await.map(|p| p.subject) })
            })
            .collect();
        futures::future::join_all(tasks)
    };
    for result in flood(t1, 300).await {
        assert_eq!(result.unwrap(), Err(Invalid::UnknownKey.into()));
    }
    assert_eq!(idp.jwks_hits(), 2, "300 concurrent unknown kids: one single-flight refetch");

    for result in flood(plus(t1, SignedDuration::from_secs(59)), 100).await {
        assert_eq!(result.unwrap(), Err(Invalid::UnknownKey.into()));
    }
    assert_eq!(idp.jwks_hits(), 2, "negative: no refetch before the interval has passed");

    let good = token(&idp, &RSA_A, t1);
    assert!(auth.authenticate_at(&good, t1).await.is_ok(), "valid tokens unaffected by the flood");

    flood(plus(t1, MINUTE), 100).await;
    assert_eq!(idp.jwks_hits(), 3, "one more refetch in the next interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a9_concurrent_misses_on_many_threads_share_one_fetch() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |_| {}).await;
    let t1 = plus(after_startup(), MINUTE);
    idp.set_keys(&[&RSA_A, &RSA_B]);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (auth, t) = (auth.clone(), token(&idp, &RSA_B, t1));
            tokio::spawn(async move { auth.authenticate_at(&t, t1).await.is_ok() })
        })
        .collect();
    let accepted =
        futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(accepted, 64, "every waiter sees the key the single fetch brought");
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn a10_provider_down_at_startup_fails_closed_then_recovers() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    idp.set_mode(Mode::Down);
    let auth = start(&idp, |_| {}).await; // must not fail
    assert!(!auth.is_ready());
    assert!(auth.health()[0].last_error.as_deref().unwrap_or_default().contains("503"));

    // Far from the startup attempt, so this call makes its own (failing) attempt.
    let t0 = plus(now(), SignedDuration::from_hours(1));
    let err = auth.authenticate_at(&token(&idp, &RSA_A, t0), t0).await.unwrap_err();
    assert_eq!(err, AuthError::Unavailable { issuer: "entra".into() });
    assert_eq!((err.code(), err.http_status()), ("auth_unavailable", 503));
    let hits = idp.discovery_hits();

    idp.set_mode(Mode::Up);
    let t1 = plus(t0, SignedDuration::from_secs(4));
    let still = auth.authenticate_at(&token(&idp, &RSA_A, t1), t1).await;
    assert_eq!(still.map(|p| p.subject), Err(AuthError::Unavailable { issuer: "entra".into() }));
    assert_eq!(idp.discovery_hits(), hits, "retries are rate limited (5 s without keys)");

    let t2 = plus(t0, SignedDuration::from_secs(5));
    assert!(auth.authenticate_at(&token(&idp, &RSA_A, t2), t2).await.is_ok(), "recovered");
    assert!(auth.is_ready());
    assert_eq!(auth.health()[0].last_error, None);
}

#[tokio::test]
async fn a10_provider_unreachable_at_startup_does_not_stop_the_broker() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let issuer = IssuerConfig::oidc("entra", &format!("http://{closed}/t/v2.0"), "api://cadbroker");
    let auth = Authenticator::new(&auth_config(vec![issuer])).await.unwrap();
    assert!(!auth.is_ready());
    assert!(auth.health()[0].last_error.is_some());
}

#[tokio::test]
async fn a10_slow_provider_is_bounded_by_the_http_timeout() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    idp.set_mode(Mode::Slow);
    let started = Instant::now();
    let auth = start(&idp, |i| i.http_timeout = Some(Duration::from_millis(200))).await;
    let t0 = now();
    let result = auth.authenticate_at(&token(&idp, &RSA_A, t0), t0).await;
    assert_eq!(result.map(|p| p.subject), Err(AuthError::Unavailable { issuer: "entra".into() }));
    // The provider holds requests for 30 s; the generous bound only shows it was not waited for.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(auth.health()[0].last_error.as_deref().unwrap_or_default().contains("timed out"));
}

#[tokio::test]
async fn a10_provider_down_later_keeps_the_last_good_keys() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |_| {}).await;
    idp.set_mode(Mode::Down);
    let t1 = plus(after_startup(), MINUTE);

    let unknown = auth.authenticate_at(&token_with_kid(&idp, "new-kid", t1), t1).await;
    assert_eq!(unknown.map(|p| p.subject), Err(Invalid::UnknownKey.into()), "401, not 503: keys exist");
    assert_eq!(idp.jwks_hits(), 2, "the refetch was attempted");
    assert!(auth.authenticate_at(&token(&idp, &RSA_A, t1), t1).await.is_ok(), "last good key still works");
    let health = auth.health();
    assert_eq!(health[0].keys, 1);
    assert!(health[0].last_error.is_some());
    assert!(auth.is_ready());
}

#[tokio::test]
async fn a10_empty_or_garbage_jwks_keeps_the_last_good_keys() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |_| {}).await;
    let mut at = after_startup();
    let too_many: Vec<Value> = (0..101).map(|i| RSA_B.jwk_with(json!({"kid": format!("k{i}")}))).collect();
    let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]});
    for doc in [json!({"keys": []}), json!({"nokeys": 1}), json!("text"), json!({"keys": too_many}), oct] {
        idp.set_jwks(doc.clone());
        at = plus(at, MINUTE);
        let unknown = auth.authenticate_at(&token_with_kid(&idp, "other", at), at).await;
        assert_eq!(unknown.map(|p| p.subject), Err(Invalid::UnknownKey.into()), "{doc}");
        assert!(auth.authenticate_at(&token(&idp, &RSA_A, at), at).await.is_ok(), "{doc}");
    }
}

#[tokio::test]
async fn stale_keys_are_refreshed_in_the_background_and_removed_keys_stop_working() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |i| i.jwks_cache_ttl = Some(Duration::from_secs(120))).await;
    idp.set_keys(&[&RSA_B]); // the provider retired A
    let t1 = plus(after_startup(), SignedDuration::from_secs(120));

    // A is still cached: accepted at once, and the stale cache starts a background refresh.
    assert!(auth.authenticate_at(&token(&idp, &RSA_A, t1), t1).await.is_ok());
    // An unknown kid now waits for that refresh (single flight) instead of fetching again.
    assert!(auth.authenticate_at(&token(&idp, &RSA_B, t1), t1).await.is_ok());
    assert_eq!(idp.jwks_hits(), 2);
    let retired = auth.authenticate_at(&token(&idp, &RSA_A, t1), t1).await;
    assert_eq!(retired.map(|p| p.subject), Err(Invalid::UnknownKey.into()));
}

#[tokio::test]
async fn discovery_document_naming_another_issuer_is_not_trusted() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let mut issuer = idp.issuer_config(TENANT);
    // The document served there names tenant-b as its issuer.
    issuer.discovery_url = Some(format!("{}/tenant-b/v2.0/.well-known/openid-configuration", idp.base));
    let auth = Authenticator::new(&auth_config(vec![issuer])).await.unwrap();
    assert_eq!(idp.jwks_hits(), 0);
    assert!(auth.health()[0].last_error.as_deref().unwrap_or_default().contains("names issuer"));
}

#[tokio::test]
async fn jwks_uri_is_rediscovered_after_a_failed_fetch() {
    let idp = TestIdp::start(&[&RSA_A]).await;
    let auth = start(&idp, |_| {}).await;
    idp.set_mode(Mode::Down);
    let t1 = plus(after_startup(), MINUTE);
    let _ = auth.authenticate_at(&token_with_kid(&idp, "x", t1), t1).await;
    idp.set_mode(Mode::Up);
    idp.set_jwks(jwks(&[&RSA_A, &RSA_B]));
    let t2 = plus(t1, MINUTE);
    assert!(auth.authenticate_at(&token(&idp, &RSA_B, t2), t2).await.is_ok());
    assert_eq!(idp.discovery_hits(), 2, "discovery again after the failure");
}
