//! The verified-token cache never admits what a full check would refuse: an expired token, or
//! a token that differs from a verified one in any byte.

use std::time::Duration;

use cadbroker::auth::{
    AuthConfig, AuthError, Authenticator, MintRequest, load_or_create_dev_key, mint_dev_token,
};
use jiff::{SignedDuration, Timestamp};

async fn setup(dir: &std::path::Path) -> (Authenticator, AuthConfig) {
    let mut config = AuthConfig::default();
    config.issuers[0].key_file = Some(dir.join("k.pem"));
    (Authenticator::new(&config).await.unwrap(), config)
}

fn mint(config: &AuthConfig, ttl: Duration, now: Timestamp) -> String {
    let issuer = config.development_issuer().unwrap();
    let key = load_or_create_dev_key(&issuer.effective_key_file()).unwrap();
    let mut req = MintRequest::new("alice");
    req.ttl = ttl;
    mint_dev_token(issuer, &key, &req, now).unwrap()
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, config) = setup(dir.path()).await;
    let now = Timestamp::now();
    let token = mint(&config, Duration::from_secs(10), now);
    auth.authenticate_at(&token, now).await.unwrap();
    let later = now + SignedDuration::from_secs(10 + 31);
    assert_eq!(auth.authenticate_at(&token, later).await.unwrap_err(), AuthError::Expired);
}

#[tokio::test]
async fn a_token_differing_from_a_cached_one_is_checked_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, config) = setup(dir.path()).await;
    let now = Timestamp::now();
    let token = mint(&config, Duration::from_secs(600), now);
    auth.authenticate_at(&token, now).await.unwrap();
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let err = auth.authenticate_at(&tampered, now).await.unwrap_err();
    assert_eq!(err.code(), "token_invalid");
    assert_eq!(auth.authenticate_at(&token, now).await.unwrap().subject, "alice");
}
