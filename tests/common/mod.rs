//! Shared test fixtures: a broker on loopback port 0 with a development issuer whose key lives
//! in a temporary directory, token minting, and a small HTTP client.
#![allow(dead_code)]

#[cfg(feature = "cluster-tests")]
pub mod cluster;

use std::{net::SocketAddr, time::Duration};

use cadbroker::{
    app::{self, Running},
    auth::{MintRequest, load_or_create_dev_key, mint_dev_token},
    config::{BackendKind, Config},
    domain::PoolSpec,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A broker running for one test.
pub struct TestBroker {
    pub running: Option<Running>,
    pub config: Config,
    pub base: String,
    pub admin: SocketAddr,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The built-in config, moved to port 0, a temporary key and a short start delay.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::load(None).expect("built-in config is valid");
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    // The API tests run on the simulated cluster whatever is installed on the host.
    config.backend.kind = BackendKind::Simulated;
    config.backend.simulated.start_delay = Duration::from_millis(300);
    config.broker.reconcile_interval = Duration::from_millis(100);
    for issuer in &mut config.auth.issuers {
        issuer.key_file = Some(dir.join("dev-key.pem"));
    }
    config
}

impl TestBroker {
    /// Starts the built-in config as adjusted by `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            cadbroker::telemetry::init(&filter, false);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        config.validate().expect("test config is valid");
        let running = app::start(config.clone()).await.expect("broker starts");
        let base = format!("http://{}", running.public_addr);
        let admin = running.admin_addr;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let broker = Self { running: Some(running), config, base, admin, http, _dir: dir };
        broker.wait_ready().await;
        broker
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            let url = format!("http://{}/readyz", self.admin);
            if self.http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("broker never became ready");
    }

    /// A token for `user` in `groups`, valid for an hour.
    pub fn token(&self, user: &str, groups: &[&str]) -> String {
        let mut req = MintRequest::new(user);
        req.groups = Some(groups.iter().map(|g| g.to_string()).collect());
        self.mint(&req, jiff::Timestamp::now())
    }

    /// A token for an admin.
    pub fn admin_token(&self, user: &str) -> String {
        self.token(user, &["cad-admins"])
    }

    /// Mints `req` as if at `now`.
    pub fn mint(&self, req: &MintRequest, now: jiff::Timestamp) -> String {
        let issuer = self.config.auth.development_issuer().unwrap();
        let key = load_or_create_dev_key(&issuer.effective_key_file()).unwrap();
        mint_dev_token(issuer, &key, req, now).unwrap()
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request is answered");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// Requests a workstation from `pool`.
    pub async fn request(&self, token: &str, pool: &str) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/sessions", Some(token), Some(serde_json::json!({ "pool": pool })))
            .await
    }

    /// Polls a session until `phase`, failing after 30 s (cluster tests share two cores with
    /// a control plane).
    pub async fn wait_phase(&self, token: &str, id: &str, phase: &str) -> Value {
        for _ in 0..600 {
            let (status, body) =
                self.call(Method::GET, &format!("/api/v1/sessions/{id}"), Some(token), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["phase"] == phase {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("session {id} never reached {phase}");
    }

    /// Waits until `pool` has `warm` warm workstations.
    pub async fn wait_warm(&self, pool: &str, warm: u64) {
        let token = self.admin_token("warm-watcher");
        for _ in 0..200 {
            let (_, pools) = self.call(Method::GET, "/api/v1/pools", Some(&token), None).await;
            let found = pools.as_array().unwrap().iter().find(|p| p["name"] == pool).cloned();
            if found.is_some_and(|p| p["availability"]["warm"].as_u64() == Some(warm)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pool {pool} never had {warm} warm workstations");
    }

    /// Opens a connect URL as a browser would: the ticket is exchanged for the session cookie
    /// (303), then the redirect is followed with it. Returns the cookie (`name=value`) and the page.
    pub async fn open_desktop(&self, connect_url: &str) -> (String, reqwest::Response) {
        let no_redirects = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let exchange = no_redirects.get(connect_url).send().await.expect("the gateway answers");
        assert_eq!(exchange.status(), StatusCode::SEE_OTHER, "ticket exchange");
        let set_cookie = exchange.headers()["set-cookie"].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let location = exchange.headers()["location"].to_str().unwrap();
        let page = no_redirects
            .get(format!("{}{location}", self.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("the desktop answers");
        (cookie, page)
    }

    /// Stops the broker and its workstations.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// A pool open to everyone with the given capacity, on the L4 nodes.
pub fn open_pool(name: &str, min: u32, max: u32, warm: u32) -> PoolSpec {
    let toml = format!(
        "name = \"{name}\"\ngpuModel = \"nvidia-l4\"\ncapacity = {{ min = {min}, max = {max}, warm = {warm} }}\naccess = {{ allAuthenticated = true }}\n"
    );
    toml::from_str(&toml).unwrap()
}
