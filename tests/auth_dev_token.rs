//! The development issuer end to end: key file creation (A33), minting, and the claim rules that
//! do not depend on where keys come from: time boundaries (A11–A15, A31, A32), identity (A20),
//! groups (A21) and token-kind confusion with connect tickets (A22).

#[path = "common/jwt.rs"]
mod jwt;

use std::{collections::BTreeSet, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use cadbroker::auth::{
    AuthConfig, AuthError, Authenticator, CONNECT_TICKET_TYP, DEFAULT_DEV_ISSUER, DevKey, DevKeyError,
    Invalid, IssuerConfig, MintError, MintRequest, Principal, load_or_create_dev_key, mint_dev_token,
};
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jwt::{TestKey, auth_config, b64, now, ts};
use serde_json::{Value, json};

/// A development issuer with its key in a temp dir, plus the key's private half so tests can
/// sign arbitrary claims with it.
struct Dev {
    _dir: tempfile::TempDir,
    issuer: IssuerConfig,
    key: DevKey,
    private: EncodingKey,
    auth: Authenticator,
}

impl Dev {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut AuthConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut issuer = IssuerConfig::development("dev");
        issuer.key_file = Some(dir.path().join(".cadbroker/dev-signing-key.pem"));
        let mut cfg = auth_config(vec![issuer.clone()]);
        tweak(&mut cfg);
        let auth = Authenticator::new(&cfg).await.unwrap();
        let key_file = issuer.key_file.clone().unwrap();
        let key = load_or_create_dev_key(&key_file).unwrap();
        let private = EncodingKey::from_ed_pem(&std::fs::read(&key_file).unwrap()).unwrap();
        Self { _dir: dir, issuer, key, private, auth }
    }

    fn mint(&self, req: &MintRequest, at: Timestamp) -> String {
        mint_dev_token(&self.issuer, &self.key, req, at).unwrap()
    }

    /// Arbitrary claims signed with the development key.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &self.private).unwrap()
    }

    /// Standard claims for this issuer with `exp`/`nbf`/`iat` given explicitly.
    fn claims(&self, iat: i64, nbf: i64, exp: i64) -> Value {
        json!({"iss": DEFAULT_DEV_ISSUER, "aud": "cadbroker", "sub": "alice", "iat": iat, "nbf": nbf, "exp": exp})
    }

    async fn check(&self, token: &str, at: i64) -> Result<Principal, AuthError> {
        self.auth.authenticate_at(token, ts(at)).await
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const T: i64 = 1_750_000_000;

// === key file (A33) ===

#[test]
fn dev_key_is_created_0600_in_a_0700_directory_and_reloads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/keys/dev-signing-key.pem");
    let created = load_or_create_dev_key(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8 PEM: {pem}");
    let reloaded = load_or_create_dev_key(&path).unwrap();
    assert_eq!(created.kid(), reloaded.kid());
    assert_eq!(created.kid().len(), 43, "SHA-256 thumbprint, base64url");
}

#[test]
fn dev_key_is_asymmetric_and_its_public_jwk_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = load_or_create_dev_key(&dir.path().join("k.pem")).unwrap();
    let jwk = key.public_jwk();
    assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    assert!(jwk.get("d").is_none());
    assert!(!format!("{key:?}").contains("PRIVATE"), "Debug shows no key material");
}

#[test]
fn dev_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    load_or_create_dev_key(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(load_or_create_dev_key(&path), Err(DevKeyError::Permissions { mode: 0o644, .. })));
}

#[test]
fn corrupt_dev_key_file_is_an_error_and_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, "not a key").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(load_or_create_dev_key(&path), Err(DevKeyError::Format { .. })));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
}

#[test]
fn concurrent_creators_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race/k.pem");
    let kids: BTreeSet<String> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..8).map(|_| s.spawn(|| load_or_create_dev_key(&path).unwrap().kid().to_owned())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(kids.len(), 1);
    let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(leftovers, 1, "temp files are cleaned up");
}

// === minting ===

#[tokio::test]
async fn minted_token_is_accepted_with_identity_groups_roles_and_admin() {
    let dev = Dev::start().await;
    let req = MintRequest {
        name: Some("Alice Drafter".into()),
        groups: Some(BTreeSet::from(["cad-admins".to_owned(), "planning".to_owned()])),
        roles: BTreeSet::from(["Drafter".to_owned()]),
        ..MintRequest::new("alice")
    };
    let token = dev.mint(&req, ts(T));
    let p = dev.check(&token, T + 10).await.unwrap();
    assert_eq!(p.issuer_name, "dev");
    assert_eq!(p.issuer, DEFAULT_DEV_ISSUER);
    assert_eq!(p.subject, "alice");
    assert_eq!(p.user.as_str(), "https://cadbroker.invalid/dev#alice");
    assert_eq!(p.name.as_deref(), Some("Alice Drafter"));
    assert_eq!(p.groups, req.groups);
    assert_eq!(p.roles, req.roles);
    assert!(p.admin, "member of the configured admin group");
    assert_eq!(p.expires_at, ts(T + 3600));
    let caller = p.caller();
    assert_eq!((caller.user, caller.groups, caller.admin), (p.user.clone(), p.groups.clone(), true));
}

#[tokio::test]
async fn token_minted_before_the_broker_starts_validates_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = IssuerConfig::development("dev");
    issuer.key_file = Some(dir.path().join("k.pem"));
    // `cadbroker token` runs first and creates the key …
    let key = load_or_create_dev_key(issuer.key_file.as_ref().unwrap()).unwrap();
    let token = mint_dev_token(&issuer, &key, &MintRequest::new("bob"), now()).unwrap();
    // … then `serve` starts and loads the same key.
    let auth = Authenticator::new(&auth_config(vec![issuer])).await.unwrap();
    assert_eq!(auth.authenticate(&token).await.unwrap().subject, "bob");
    assert!(auth.is_ready());
}

#[tokio::test]
async fn dev_token_header_is_eddsa_jwt_with_the_key_thumbprint_as_kid() {
    let dev = Dev::start().await;
    let token = dev.mint(&MintRequest::new("alice"), ts(T));
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), Some(dev.key.kid()));
}

#[tokio::test]
async fn token_signed_by_another_key_is_rejected_even_with_our_kid() {
    let dev = Dev::start().await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = load_or_create_dev_key(&other_dir.path().join("k.pem")).unwrap();
    let foreign = mint_dev_token(&dev.issuer, &other, &MintRequest::new("mallory"), ts(T)).unwrap();
    assert_eq!(dev.check(&foreign, T).await, Err(Invalid::UnknownKey.into()));

    let attacker = TestKey::ed(dev.key.kid());
    let forged = attacker.sign(&dev.claims(T, T, T + 60));
    assert_eq!(dev.check(&forged, T).await, Err(Invalid::Signature.into()));
}

#[test]
fn minting_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let key = load_or_create_dev_key(&dir.path().join("k.pem")).unwrap();
    let dev = IssuerConfig::development("dev");
    let oidc = IssuerConfig::oidc("entra", "https://login.microsoftonline.com/t/v2.0", "api://x");
    let mint = |issuer: &IssuerConfig, req: MintRequest| mint_dev_token(issuer, &key, &req, ts(T));
    assert!(matches!(mint(&oidc, MintRequest::new("a")), Err(MintError::NotDevelopment(_))));
    assert!(matches!(mint(&dev, MintRequest::new("")), Err(MintError::EmptySubject)));
    let forever = MintRequest { ttl: Duration::from_secs(31 * 86_400), ..MintRequest::new("a") };
    assert!(matches!(mint(&dev, forever), Err(MintError::Lifetime { .. })));
    let zero = MintRequest { ttl: Duration::ZERO, ..MintRequest::new("a") };
    assert!(matches!(mint(&dev, zero), Err(MintError::Lifetime { .. })));
}

// === time boundaries (A11–A15, A31, A32) ===

#[tokio::test]
async fn a31_token_at_exp_minus_one_second_with_nbf_now_is_accepted_without_leeway() {
    let dev = Dev::start_with(|c| c.leeway = Duration::ZERO).await;
    let token = dev.sign(&dev.claims(T, T, T + 1));
    assert!(dev.check(&token, T).await.is_ok(), "exp - 1 s, nbf = now");
    assert_eq!(dev.check(&token, T + 1).await, Err(AuthError::Expired), "at exp");
    assert_eq!(dev.check(&token, T - 1).await, Err(AuthError::NotYetValid), "before nbf");
}

#[tokio::test]
async fn a31_leeway_extends_both_ends_by_exactly_the_configured_amount() {
    let dev = Dev::start().await; // leeway 30 s
    let token = dev.sign(&dev.claims(T, T, T + 60));
    assert!(dev.check(&token, T - 30).await.is_ok());
    assert_eq!(dev.check(&token, T - 31).await, Err(AuthError::NotYetValid));
    assert!(dev.check(&token, T + 60 + 29).await.is_ok());
    assert_eq!(dev.check(&token, T + 60 + 30).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn a11_token_expired_beyond_leeway_is_rejected_as_expired() {
    let dev = Dev::start().await;
    let token = dev.sign(&dev.claims(T - 7200, T - 7200, T - 3600));
    let err = dev.check(&token, T).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("token_expired", 401));
}

#[tokio::test]
async fn a12_tokens_missing_exp_nbf_sub_aud_or_iss_are_rejected() {
    let dev = Dev::start().await;
    let cases = [
        ("exp", AuthError::Invalid(Invalid::Claims)),
        ("nbf", AuthError::Invalid(Invalid::Claims)),
        ("sub", AuthError::Invalid(Invalid::Claims)),
        ("aud", AuthError::Audience),
        ("iss", AuthError::Issuer),
    ];
    for (claim, expected) in cases {
        let mut claims = dev.claims(T, T, T + 60);
        claims.as_object_mut().unwrap().remove(claim);
        assert_eq!(dev.check(&dev.sign(&claims), T).await, Err(expected), "without {claim}");
    }
}

#[tokio::test]
async fn a13_nbf_in_the_future_beyond_leeway_is_rejected() {
    let dev = Dev::start().await;
    let token = dev.sign(&dev.claims(T, T + 600, T + 3600));
    let err = dev.check(&token, T).await.unwrap_err();
    assert_eq!(err.code(), "token_not_yet_valid");
}

#[tokio::test]
async fn a14_exp_or_nbf_sent_as_strings_are_rejected_not_skipped() {
    let dev = Dev::start().await;
    for (claim, value) in [("nbf", json!("99999999999")), ("exp", json!("99999999999")), ("exp", json!("1"))]
    {
        let mut claims = dev.claims(T, T, T + 60);
        claims[claim] = value.clone();
        assert_eq!(dev.check(&dev.sign(&claims), T).await, Err(Invalid::Claims.into()), "{claim}={value}");
    }
    let mut claims = dev.claims(T, T, T + 60);
    claims["iat"] = json!("0");
    assert_eq!(dev.check(&dev.sign(&claims), T).await, Err(Invalid::Claims.into()), "iat as string");
}

#[tokio::test]
async fn a15_iat_far_in_the_future_is_rejected() {
    let dev = Dev::start().await;
    let token = dev.sign(&dev.claims(T + 86_400, T, T + 3600));
    assert_eq!(dev.check(&token, T).await, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn a15_token_older_than_max_token_age_is_rejected_at_the_boundary() {
    let dev = Dev::start_with(|c| c.max_token_age = Some(Duration::from_secs(12 * 3600))).await;
    let iat = T - 12 * 3600 - 30;
    let token = dev.sign(&dev.claims(iat, iat, T + 86_400));
    assert_eq!(dev.check(&token, T).await, Err(AuthError::Expired), "age = 12 h + leeway");
    assert!(dev.check(&token, T - 1).await.is_ok(), "one second younger");

    let mut no_iat = dev.claims(T, T, T + 60);
    no_iat.as_object_mut().unwrap().remove("iat");
    assert_eq!(dev.check(&dev.sign(&no_iat), T).await, Err(Invalid::Claims.into()), "age unknown");
}

#[tokio::test]
async fn a32_broker_clock_five_minutes_ahead_accepts_fresh_tokens_and_expires_ending_ones() {
    let dev = Dev::start().await;
    let skew = 5 * 60;
    let fresh = dev.sign(&dev.claims(T, T, T + 3600));
    assert!(dev.check(&fresh, T + skew).await.is_ok());
    let ending = dev.sign(&dev.claims(T - 3000, T - 3000, T + 240));
    assert_eq!(dev.check(&ending, T + skew).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn a32_broker_clock_five_minutes_behind_rejects_fresh_tokens_as_not_yet_valid() {
    // Defined behaviour: the broker trusts its own clock plus the leeway (30 s). A skew beyond
    // that is an operations alarm (NTP), not something validation papers over.
    let dev = Dev::start().await;
    let fresh = dev.sign(&dev.claims(T, T, T + 3600));
    assert_eq!(dev.check(&fresh, T - 5 * 60).await, Err(AuthError::NotYetValid));
    assert!(dev.check(&fresh, T - 30).await.is_ok(), "within leeway");
}

// === identity, groups, token kinds (A20, A21, A22) ===

#[tokio::test]
async fn a20_identity_is_never_taken_from_email_or_preferred_username() {
    let dev = Dev::start().await;
    let mut claims = dev.claims(T, T, T + 60);
    claims["sub"] = json!("mallory");
    claims["email"] = json!("admin@example.org");
    claims["preferred_username"] = json!("admin@example.org");
    claims["upn"] = json!("admin@example.org");
    let p = dev.check(&dev.sign(&claims), T).await.unwrap();
    assert_eq!(p.user.as_str(), "https://cadbroker.invalid/dev#mallory");
    assert_eq!(p.subject, "mallory");
    assert_eq!(p.name.as_deref(), Some("admin@example.org"), "display only");
}

#[tokio::test]
async fn a21_missing_groups_claim_means_unknown_groups_and_never_admin_by_group() {
    let dev = Dev::start().await;
    let unknown = MintRequest { groups: None, ..MintRequest::new("alice") };
    let p = dev.check(&dev.mint(&unknown, ts(T)), T).await.unwrap();
    assert_eq!(p.groups, None);
    assert_eq!(p.caller().groups, None);
    assert!(!p.admin);

    let by_role = MintRequest {
        groups: None,
        roles: BTreeSet::from(["Broker.Admin".to_owned()]),
        ..MintRequest::new("a")
    };
    assert!(dev.check(&dev.mint(&by_role, ts(T)), T).await.unwrap().admin, "admin by role still works");

    let none = MintRequest { groups: Some(BTreeSet::new()), ..MintRequest::new("alice") };
    assert_eq!(dev.check(&dev.mint(&none, ts(T)), T).await.unwrap().groups, Some(BTreeSet::new()));
}

#[tokio::test]
async fn groups_claim_of_the_wrong_type_is_rejected_rather_than_guessed() {
    let dev = Dev::start().await;
    for groups in [json!("cad-admins"), json!([1, 2]), json!({"a": 1})] {
        let mut claims = dev.claims(T, T, T + 60);
        claims["groups"] = groups.clone();
        assert_eq!(dev.check(&dev.sign(&claims), T).await, Err(Invalid::Claims.into()), "{groups}");
    }
}

#[tokio::test]
async fn a22_connect_ticket_type_is_rejected_as_an_api_token_even_when_validly_signed() {
    let dev = Dev::start().await;
    let claims = dev.claims(T, T, T + 60);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(dev.key.kid().to_owned());
    header.typ = Some(CONNECT_TICKET_TYP.to_owned());
    let ticket = jsonwebtoken::encode(&header, &claims, &dev.private).unwrap();
    assert_eq!(dev.check(&ticket, T).await, Err(Invalid::TokenType.into()));
}

#[tokio::test]
async fn a28_errors_never_echo_the_token_or_its_claims() {
    let dev = Dev::start().await;
    let secretish = "s3cr3t-marker";
    let mut claims = dev.claims(T - 7200, T - 7200, T - 3600);
    claims["sub"] = json!(secretish);
    let token = dev.sign(&claims);
    let garbage = format!("{}.{}.{}", b64(format!("{{\"alg\":\"{secretish}\"}}")), b64("{}"), b64("x"));
    for t in [token.clone(), garbage, format!("{token}x"), token.replace('.', "..")] {
        let err = dev.check(&t, T).await.unwrap_err();
        let shown = format!("{err} {err:?} {}", err.www_authenticate());
        assert!(!shown.contains(secretish) && !shown.contains(&t), "{shown}");
    }
}
