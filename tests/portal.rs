//! The web portal over HTTP: static files with a strict CSP, the development sign-in (and that
//! it exists only with a development issuer), the portal cookie standing in for a bearer token
//! with CSRF protection, sign-out, and the OpenID Connect code flow with PKCE and `state`
//! against a fake provider on 127.0.0.1:0.

mod common;
#[path = "common/jwt.rs"]
mod jwt;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Form, Json, Router,
    extract::State,
    http::StatusCode as AxStatus,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use cadbroker::auth::IssuerConfig;
use common::TestBroker;
use jwt::{TestKey, jwks};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `name=value` part of a `Set-Cookie` named `name`.
fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers().get_all(header::SET_COOKIE).iter().find_map(|v| {
        let text = v.to_str().ok()?;
        let pair = text.split(';').next()?.trim();
        pair.starts_with(&format!("{name}=")).then(|| (pair.to_owned(), text.to_owned()))
    })
}

async fn dev_login(broker: &TestBroker, body: Value) -> (String, Value) {
    let resp = client().post(format!("{}/portal/dev-login", broker.base)).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (cookie, full) = cookie_of(&resp, "cadbroker_portal").expect("a portal cookie");
    assert!(
        full.contains("HttpOnly") && full.contains("Secure") && full.contains("SameSite=Strict"),
        "{full}"
    );
    (cookie, resp.json().await.unwrap())
}

async fn with_cookie(
    broker: &TestBroker,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client().request(method, format!("{}{path}", broker.base)).header(header::COOKIE, cookie);
    if let Some(csrf) = csrf {
        req = req.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn the_portal_is_served_with_a_strict_policy_and_the_root_leads_there() {
    let broker = TestBroker::start(|_| {}).await;
    let root = client().get(format!("{}/", broker.base)).send().await.unwrap();
    assert!(root.status().is_redirection());
    assert_eq!(root.headers()[header::LOCATION], "/portal/");
    let page = client().get(format!("{}/portal/", broker.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/portal/app.js"));
    for file in ["app.js", "i18n.js", "style.css"] {
        let resp = client().get(format!("{}/portal/{file}", broker.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
    }
    let (status, body) = broker.call(Method::GET, "/portal/secrets.txt", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    broker.stop().await;
}

#[tokio::test]
async fn the_page_learns_the_sign_in_methods_and_the_browser_language() {
    let broker = TestBroker::start(|_| {}).await;
    let info: Value = client()
        .get(format!("{}/portal/api/config", broker.base))
        .header(header::ACCEPT_LANGUAGE, "nl-NL,nl;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info, json!({"devLogin": true, "oidc": null, "language": "nl"}));
    broker.stop().await;
}

#[tokio::test]
async fn the_portal_cookie_works_like_a_token_and_writes_need_the_csrf_token() {
    let broker = TestBroker::start(|_| {}).await;
    let (cookie, me) = dev_login(&broker, json!({"user": "alice", "groups": ["drafters"]})).await;
    assert_eq!(me["admin"], false);
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let (status, again) = with_cookie(&broker, Method::GET, "/portal/api/me", &cookie, None, None).await;
    assert_eq!((status, &again["csrf"]), (StatusCode::OK, &me["csrf"]));
    assert!(again["user"].as_str().unwrap().ends_with("alice"), "{again}");

    let (status, pools) = with_cookie(&broker, Method::GET, "/api/v1/pools", &cookie, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pools[0]["name"], "drafting-2d");

    let body = json!({"pool": "drafting-2d"});
    let (status, err) =
        with_cookie(&broker, Method::POST, "/api/v1/sessions", &cookie, None, Some(body.clone())).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf_failed")));
    let (status, _) =
        with_cookie(&broker, Method::POST, "/api/v1/sessions", &cookie, Some("wrong"), Some(body.clone()))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, session) =
        with_cookie(&broker, Method::POST, "/api/v1/sessions", &cookie, Some(&csrf), Some(body)).await;
    assert!(status == StatusCode::CREATED || status == StatusCode::ACCEPTED, "{status} {session}");
    let id = session["id"].as_str().unwrap();

    // The bearer token API is unchanged beside it.
    let token = broker.token("alice", &["drafters"]);
    let (status, _) = broker.call(Method::GET, &format!("/api/v1/sessions/{id}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);

    let path = format!("/api/v1/sessions/{id}");
    let (status, _) = with_cookie(&broker, Method::DELETE, &path, &cookie, Some(&csrf), None).await;
    assert_eq!(status, StatusCode::OK);

    // Sign-out needs the CSRF token too, then the cookie is worthless.
    let (status, _) = with_cookie(&broker, Method::POST, "/portal/logout", &cookie, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = with_cookie(&broker, Method::POST, "/portal/logout", &cookie, Some(&csrf), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = with_cookie(&broker, Method::GET, "/api/v1/pools", &cookie, None, None).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("token_missing")));
    let (status, _) = with_cookie(&broker, Method::GET, "/portal/api/me", &cookie, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    broker.stop().await;
}

#[tokio::test]
async fn the_development_sign_in_makes_admins_and_refuses_bad_input_and_foreign_pages() {
    let broker = TestBroker::start(|_| {}).await;
    let (cookie, me) = dev_login(&broker, json!({"user": "root", "admin": true})).await;
    assert_eq!(me["admin"], true);
    let (status, decisions) =
        with_cookie(&broker, Method::GET, "/api/v1/pools/drafting-2d/decisions", &cookie, None, None).await;
    assert_eq!(status, StatusCode::OK, "{decisions}");

    let url = format!("{}/portal/dev-login", broker.base);
    let foreign = client()
        .post(&url)
        .header("origin", "https://evil.example")
        .json(&json!({"user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    for body in [json!({"user": ""}), json!({"user": "a b"}), json!({"user": "x", "groups": ["<script>"]})] {
        let resp = client().post(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid_body");
    }
    let unknown = client().post(&url).json(&json!({"user": "x", "role": "god"})).send().await.unwrap();
    assert!(unknown.status().is_client_error());
    let form = client().post(&url).body("user=alice").send().await.unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    broker.stop().await;
}

#[tokio::test]
async fn without_a_development_issuer_there_is_no_development_sign_in() {
    let idp = FakeIdp::start().await;
    let broker = TestBroker::start(|c| {
        c.auth.issuers = vec![idp.issuer_config()];
        c.portal.oidc = Some(idp.portal_config());
    })
    .await;
    let resp = client()
        .post(format!("{}/portal/dev-login", broker.base))
        .json(&json!({"user": "mallory", "admin": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "dev_login_disabled");
    let (_, info) = broker.call(Method::GET, "/portal/api/config", None, None).await;
    assert_eq!(info["devLogin"], false);
    assert_eq!(info["oidc"], "Sign in with the test provider");
    broker.stop().await;

    let broker = TestBroker::start(|c| c.portal.dev_login = false).await;
    let (status, err) =
        broker.call(Method::POST, "/portal/dev-login", None, Some(json!({"user": "mallory"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("dev_login_disabled")));
    broker.stop().await;
}

#[tokio::test]
async fn oidc_sign_in_uses_pkce_and_a_state_bound_to_the_browser() {
    let idp = FakeIdp::start().await;
    let broker = TestBroker::start(|c| {
        c.auth.issuers.push(idp.issuer_config());
        c.portal.oidc = Some(idp.portal_config());
    })
    .await;
    // A full sign-in.
    let login = Login::begin(&broker).await;
    assert_eq!(login.query["code_challenge_method"], "S256");
    assert_eq!(login.query["redirect_uri"], format!("{}/portal/callback", broker.base));
    assert_eq!(login.query["client_id"], "portal-client");
    assert!(!login.query.contains_key("code_verifier"));
    let code = idp.authorize(&login.query, "carol", &["drafters"]);
    let resp = login.callback(&broker, &code, &login.state, true).await;
    assert_eq!(resp.headers()[header::LOCATION], "/portal/");
    let (cookie, _) = cookie_of(&resp, "cadbroker_portal").expect("signed in");
    let (status, me) = with_cookie(&broker, Method::GET, "/portal/api/me", &cookie, None, None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert!(me["user"].as_str().unwrap().contains("carol"), "{me}");
    assert_eq!(idp.verifier_checks(), 1, "the token endpoint saw the right code_verifier");

    // The state is single use.
    let again = login.callback(&broker, &code, &login.state, true).await;
    assert_eq!(again.headers()[header::LOCATION], "/portal/?error=login_state_invalid");

    // A state this browser was not given (login CSRF) is refused before the code is redeemed.
    let victim = Login::begin(&broker).await;
    let code = idp.authorize(&victim.query, "mallory", &["drafters"]);
    let forged = victim.callback(&broker, &code, &victim.state, false).await;
    assert_eq!(forged.headers()[header::LOCATION], "/portal/?error=login_state_invalid");
    assert!(cookie_of(&forged, "cadbroker_portal").is_none());

    // A code redeemed with another login's verifier is refused by the provider.
    let first = Login::begin(&broker).await;
    let second = Login::begin(&broker).await;
    let code = idp.authorize(&first.query, "carol", &["drafters"]);
    let mixed = second.callback(&broker, &code, &second.state, true).await;
    assert_eq!(mixed.headers()[header::LOCATION], "/portal/?error=identity_provider_failed");

    // The provider's own refusal comes back as an error code for the page.
    let denied = client()
        .get(format!("{}/portal/callback?error=access_denied&state={}", broker.base, first.state))
        .header(header::COOKIE, &first.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.headers()[header::LOCATION], "/portal/?error=identity_provider_failed");
    broker.stop().await;
}

#[tokio::test]
async fn a_session_requested_through_the_portal_opens_through_the_gateway() {
    let broker = TestBroker::start(|_| {}).await;
    let (cookie, me) = dev_login(&broker, json!({"user": "alice", "groups": ["drafters"]})).await;
    let csrf = me["csrf"].as_str().unwrap();
    broker.wait_warm("drafting-2d", 2).await;
    let (_, session) = with_cookie(
        &broker,
        Method::POST,
        "/api/v1/sessions",
        &cookie,
        Some(csrf),
        Some(json!({"pool": "drafting-2d"})),
    )
    .await;
    let url = session["connectUrl"].as_str().expect("a warm claim is Ready with a link").to_owned();
    let exchange = client().get(&url).header(header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(exchange.status(), StatusCode::SEE_OTHER);
    // The portal cookie rides along (Path=/) and is stripped before the workstation; that is
    // checked at the header level in gateway::cookie's unit tests.
    assert!(cookie_of(&exchange, "cadbroker_connect").is_some());
    broker.stop().await;
}

/// One sign-in started at the broker: the provider URL's query, its state and login cookie.
struct Login {
    query: HashMap<String, String>,
    state: String,
    cookie: String,
}

impl Login {
    async fn begin(broker: &TestBroker) -> Self {
        let resp = client().get(format!("{}/portal/login", broker.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let location = reqwest::Url::parse(resp.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
        let (cookie, full) = cookie_of(&resp, "cadbroker_login").expect("a login cookie");
        assert!(full.contains("HttpOnly") && full.contains("SameSite=Lax"), "{full}");
        Self { state: query["state"].clone(), query, cookie }
    }

    async fn callback(
        &self,
        broker: &TestBroker,
        code: &str,
        state: &str,
        with_cookie: bool,
    ) -> reqwest::Response {
        let mut req = client().get(format!("{}/portal/callback?code={code}&state={state}", broker.base));
        if with_cookie {
            req = req.header(header::COOKIE, &self.cookie);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        resp
    }
}

/// A provider on 127.0.0.1:0 with discovery, JWKS, and a token endpoint that checks PKCE.
struct FakeIdp {
    base: String,
    state: Arc<IdpState>,
}

/// An authorization code's sign-in: the S256 challenge and nonce it was asked with, and who.
struct Grant {
    challenge: String,
    nonce: String,
    user: String,
    groups: Vec<String>,
}

struct IdpState {
    base: String,
    key: TestKey,
    /// What each issued code stands for.
    codes: Mutex<HashMap<String, Grant>>,
    checks: Mutex<usize>,
}

impl FakeIdp {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState {
            base: base.clone(),
            key: TestKey::ec("idp-key"),
            codes: Mutex::default(),
            checks: Mutex::default(),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(|State(s): State<Arc<IdpState>>| async move { Json(jwks(&[&s.key])) }))
            .route("/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, state }
    }

    fn issuer_config(&self) -> IssuerConfig {
        let mut issuer = IssuerConfig::oidc("test-idp", &self.base, "cadbroker-api");
        issuer.algorithms = vec!["ES256".into()];
        issuer
    }

    fn portal_config(&self) -> cadbroker::portal::PortalOidcConfig {
        toml::from_str(
            "issuer = \"test-idp\"\nclientId = \"portal-client\"\ndisplayName = \"Sign in with the test provider\"\n",
        )
        .unwrap()
    }

    /// What the provider does when the user signs in: remembers the challenge, returns a code.
    fn authorize(&self, query: &HashMap<String, String>, user: &str, groups: &[&str]) -> String {
        let code = format!("code-{}", uuid::Uuid::new_v4());
        let entry = Grant {
            challenge: query["code_challenge"].clone(),
            nonce: query["nonce"].clone(),
            user: user.to_owned(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        self.state.codes.lock().unwrap().insert(code.clone(), entry);
        code
    }

    fn verifier_checks(&self) -> usize {
        *self.state.checks.lock().unwrap()
    }
}

async fn discovery(State(s): State<Arc<IdpState>>) -> Json<Value> {
    Json(json!({
        "issuer": s.base,
        "authorization_endpoint": format!("{}/authorize", s.base),
        "token_endpoint": format!("{}/token", s.base),
        "jwks_uri": format!("{}/keys", s.base),
    }))
}

async fn token(State(s): State<Arc<IdpState>>, Form(form): Form<HashMap<String, String>>) -> Response {
    let refuse = |error: &str| (AxStatus::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    if form.get("grant_type").map(String::as_str) != Some("authorization_code")
        || form.get("client_id").map(String::as_str) != Some("portal-client")
    {
        return refuse("invalid_request");
    }
    let Some(Grant { challenge, nonce, user, groups }) =
        form.get("code").and_then(|c| s.codes.lock().unwrap().remove(c))
    else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if cadbroker::portal::pkce::challenge(&verifier) != challenge {
        return refuse("invalid_grant");
    }
    *s.checks.lock().unwrap() += 1;
    let now = jwt::now();
    let mut access = jwt::claims(&s.base, "cadbroker-api", &user, now);
    access["groups"] = json!(groups);
    let id = jwt::claims(&s.base, "portal-client", &user, now);
    let mut id = id;
    id["nonce"] = json!(nonce);
    Json(json!({"access_token": s.key.sign(&access), "id_token": s.key.sign(&id), "token_type": "Bearer"}))
        .into_response()
}
