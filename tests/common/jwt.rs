//! Test-only JWT helpers: signing keys generated at test time (test keys only, never used
//! outside tests), hand-crafted tokens (any header, any claims bytes, any signature) and a
//! loopback OIDC provider (discovery + JWKS on 127.0.0.1:0) that counts its requests and can be
//! switched down or slow.
//!
//! Include with `#[path = "common/jwt.rs"] mod jwt;` (or `pub mod jwt;` from `common/mod.rs`).
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    rsa::KeySize,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use cadbroker::auth::{AuthConfig, AuthError, Authenticator, IssuerConfig, Principal};
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
use serde_json::{Value, json};

/// A signing key of the kind an IdP holds, with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK as published (no `alg` member, like Entra's).
    pub jwk: Value,
}

/// Shared RSA keys: RSA generation is the slowest step, so each test binary makes two.
pub static RSA_A: LazyLock<TestKey> = LazyLock::new(|| TestKey::rsa("rsa-a"));
pub static RSA_B: LazyLock<TestKey> = LazyLock::new(|| TestKey::rsa("rsa-b"));

impl TestKey {
    /// An RSA-2048 key for RS256.
    pub fn rsa(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa keygen");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("rsa pkcs8");
        let encoding =
            EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).expect("rsa pem");
        Self::from_encoding(kid, Algorithm::RS256, encoding)
    }

    /// A P-256 key for ES256.
    pub fn ec(kid: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        Self::from_encoding(kid, Algorithm::ES256, EncodingKey::from_ec_der(pkcs8.as_ref()))
    }

    /// An Ed25519 key for EdDSA.
    pub fn ed(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate().unwrap().to_pkcs8v1().unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"});
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk,
        }
    }

    fn from_encoding(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        let obj = jwk.as_object_mut().unwrap();
        obj.remove("alg");
        obj.insert("kid".into(), kid.into());
        obj.insert("use".into(), "sig".into());
        Self { kid: kid.to_owned(), alg, encoding, jwk }
    }

    /// The public JWK with extra members (e.g. Entra's per-key `issuer`).
    pub fn jwk_with(&self, extra: Value) -> Value {
        let mut jwk = self.jwk.clone();
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    /// A token with the usual header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": alg_name(self.alg), "typ": "JWT", "kid": self.kid}), claims)
    }

    /// A token with this exact header, signed with this key's own algorithm.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// A token from exact JSON bytes (duplicate members, odd encodings), signed with this key.
    pub fn sign_raw(&self, header: &str, claims: &str) -> String {
        self.sign_bytes_as(self.alg, header.as_bytes(), claims.as_bytes())
    }

    /// A token from exact bytes, signed by this key under another algorithm of its family
    /// (e.g. PS256 with an RSA key).
    pub fn sign_bytes_as(&self, alg: Algorithm, header: &[u8], claims: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, alg).unwrap();
        format!("{message}.{signature}")
    }
}

/// A PEM block.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// base64url without padding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn b64_decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// The JOSE name of an algorithm.
pub fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg).unwrap().as_str().unwrap().to_owned()
}

/// A token with the given header and claims and an arbitrary signature segment.
pub fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header.to_string()), b64(claims.to_string()))
}

/// A token MACed with `secret` under an HMAC algorithm (for algorithm-confusion tests).
pub fn hmac_sign(alg: Algorithm, secret: &[u8], header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg).unwrap();
    format!("{message}.{signature}")
}

/// A whole-second timestamp.
pub fn ts(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

/// Now, truncated to the second (token times are whole seconds).
pub fn now() -> Timestamp {
    ts(Timestamp::now().as_second())
}

/// Valid access-token claims: issued and valid from `now`, one hour of life.
pub fn claims(iss: &str, aud: &str, sub: &str, now: Timestamp) -> Value {
    let t = now.as_second();
    json!({"iss": iss, "aud": aud, "sub": sub, "iat": t, "nbf": t, "exp": t + 3600})
}

/// An `[auth]` config with the given issuers, admin group `cad-admins`, admin role
/// `Broker.Admin` and the defaults for everything else.
pub fn auth_config(issuers: Vec<IssuerConfig>) -> AuthConfig {
    AuthConfig {
        issuers,
        admin_groups: BTreeSet::from(["cad-admins".to_owned()]),
        admin_roles: BTreeSet::from(["Broker.Admin".to_owned()]),
        ..AuthConfig::default()
    }
}

/// How the test provider answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Serve normally.
    Up = 0,
    /// Answer every request with 503.
    Down = 1,
    /// Hold every request for 30 s before answering (longer than any test timeout).
    Slow = 2,
}

struct IdpState {
    base: String,
    jwks: Mutex<Value>,
    mode: AtomicU8,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
    attacker_hits: AtomicUsize,
}

/// An OIDC provider on loopback, shaped like Entra: per-tenant discovery documents
/// (`/{tenant}/v2.0/.well-known/openid-configuration`, where tenant `common` names the
/// `{tenantid}` template issuer) and one shared key set at `/keys`.
pub struct TestIdp {
    pub base: String,
    state: Arc<IdpState>,
}

impl TestIdp {
    /// Starts the provider serving `keys`.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState {
            base: base.clone(),
            jwks: Mutex::new(jwks(keys)),
            mode: AtomicU8::new(Mode::Up as u8),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
            attacker_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/{tenant}/v2.0/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(keys_handler))
            .route("/attacker/keys", get(attacker))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, state }
    }

    /// The v2 issuer of `tenant`.
    pub fn issuer(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0", self.base)
    }

    /// An `oidc` issuer config for `tenant` with audience `api://cadbroker`.
    pub fn issuer_config(&self, tenant: &str) -> IssuerConfig {
        IssuerConfig::oidc("entra", &self.issuer(tenant), "api://cadbroker")
    }

    /// Replaces the published keys.
    pub fn set_keys(&self, keys: &[&TestKey]) {
        self.set_jwks(jwks(keys));
    }

    /// Replaces the published JWKS document verbatim.
    pub fn set_jwks(&self, doc: Value) {
        *self.state.jwks.lock().unwrap() = doc;
    }

    /// Switches how the provider answers.
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests to the JWKS so far.
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Requests to any discovery document so far.
    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// A URL an attacker would put in `jku`/`x5u`; it counts requests and serves keys.
    pub fn attacker_url(&self) -> String {
        format!("{}/attacker/keys", self.base)
    }

    /// Requests to the attacker URL so far (must stay 0).
    pub fn attacker_hits(&self) -> usize {
        self.state.attacker_hits.load(Ordering::SeqCst)
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

async fn gate(state: &IdpState) -> Option<Response> {
    match state.mode.load(Ordering::SeqCst) {
        1 => Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
        2 => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            None
        }
        _ => None,
    }
}

async fn discovery(State(state): State<Arc<IdpState>>, Path(tenant): Path<String>) -> Response {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = gate(&state).await {
        return refusal;
    }
    let issuer_tenant = if tenant == "common" { "{tenantid}" } else { tenant.as_str() };
    Json(json!({
        "issuer": format!("{}/{issuer_tenant}/v2.0", state.base),
        "jwks_uri": format!("{}/keys", state.base),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn keys_handler(State(state): State<Arc<IdpState>>) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = gate(&state).await {
        return refusal;
    }
    let doc = state.jwks.lock().unwrap().clone();
    Json(doc).into_response()
}

async fn attacker(State(state): State<Arc<IdpState>>) -> Response {
    state.attacker_hits.fetch_add(1, Ordering::SeqCst);
    let doc = state.jwks.lock().unwrap().clone();
    Json(doc).into_response()
}

/// Tenant of the fixture's issuer.
pub const TENANT_A: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
/// Another tenant whose tokens the shared keys also sign.
pub const TENANT_B: &str = "bbbbbbbb-0000-0000-0000-00000000000b";

/// An Entra-like OIDC issuer for tenant A on a loopback provider publishing `RSA_A` and an EC
/// key, an authenticator trusting it (RS256 only, audience `api://cadbroker`), and a fixed `now`.
pub struct OidcFixture {
    pub idp: TestIdp,
    pub ec: TestKey,
    pub auth: Authenticator,
    pub iss: String,
    pub now: Timestamp,
}

impl OidcFixture {
    /// The default fixture.
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// As `new`, with the issuer config adjusted.
    pub async fn with(tweak: impl FnOnce(&mut IssuerConfig)) -> Self {
        Self::with_config(tweak, |_| {}).await
    }

    /// As `new`, with the issuer and the `[auth]` config adjusted.
    pub async fn with_config(
        tweak: impl FnOnce(&mut IssuerConfig),
        global: impl FnOnce(&mut AuthConfig),
    ) -> Self {
        let ec = TestKey::ec("ec-1");
        let idp = TestIdp::start(&[&RSA_A, &ec]).await;
        let mut issuer = idp.issuer_config(TENANT_A);
        tweak(&mut issuer);
        let mut cfg = auth_config(vec![issuer]);
        global(&mut cfg);
        let auth = Authenticator::new(&cfg).await.unwrap();
        assert!(auth.is_ready(), "{:?}", auth.health());
        let iss = idp.issuer(TENANT_A);
        Self { idp, ec, auth, iss, now: now() }
    }

    /// Valid Entra-like access-token claims for tenant A.
    pub fn claims(&self) -> Value {
        let mut c = claims(&self.iss, "api://cadbroker", "sub-alice", self.now);
        c["tid"] = json!(TENANT_A);
        c["oid"] = json!("11111111-2222-3333-4444-555555555555");
        c
    }

    /// The usual header for RSA_A.
    pub fn rsa_header(&self) -> Value {
        json!({"alg": "RS256", "typ": "JWT", "kid": RSA_A.kid})
    }

    /// Authenticates at the fixture's `now`.
    pub async fn check(&self, token: &str) -> Result<Principal, AuthError> {
        self.auth.authenticate_at(token, self.now).await
    }

    /// Asserts the exact rejection.
    pub async fn rejects(&self, token: &str, expected: impl Into<AuthError>, case: &str) {
        assert_eq!(self.check(token).await.map(|p| p.subject), Err(expected.into()), "{case}");
    }
}

/// `http://127.0.0.1:port` from an issuer URL.
pub fn base_of(issuer: &str) -> String {
    issuer.split('/').take(3).collect::<Vec<_>>().join("/")
}
