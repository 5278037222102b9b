//! An OIDC issuer's signing keys: discovery document → `jwks_uri` → JWKS, cached.
//!
//! Refresh rules (SECURITY.md A8–A10):
//! - A token with an unknown `kid` triggers at most one refetch per `jwksRefreshMinInterval`
//!   (while no keys exist at all, at most one per 5 s). Refreshes are single-flight: concurrent
//!   misses wait for the one fetch in progress and do not start their own. Until the interval
//!   has passed every unknown `kid` is rejected without a fetch, which is the negative cache for
//!   a flood of random `kid`s.
//! - Keys older than `jwksCacheTtl` are refreshed in the background; requests keep using them.
//! - A failed or empty fetch keeps the last good keys. Only an issuer that never had keys fails
//!   closed (`auth_unavailable`), and the next request after the retry interval tries again.
//! - Each request has `httpTimeout`; bodies are capped; no redirects are followed.
//!
//! Time is the caller's `now` (so tests drive it without sleeping). A clock that jumps back by
//! more than one interval allows a refresh rather than freezing the cache.

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use jiff::Timestamp;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::{
    config::{IssuerConfig, IssuerKind, validate::check_url},
    error::{AuthError, Invalid},
    keys::{KeySet, VerifyKey, parse_jwks},
};

/// While an issuer has no keys, retry at least this often (still single-flight).
const NO_KEYS_RETRY: Duration = Duration::from_secs(5);
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Health of one issuer's keys, for `/readyz` and admin views. Contains no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerHealth {
    /// Configured issuer name.
    pub name: String,
    /// Kind of issuer.
    pub kind: IssuerKind,
    /// Number of usable keys held now.
    pub keys: usize,
    /// When the keys in use were fetched (`None` for a development issuer or before any fetch).
    pub keys_fetched_at: Option<Timestamp>,
    /// The last refresh error, cleared by the next success.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Snapshot {
    keys: KeySet,
    fetched_at: Option<Timestamp>,
}

#[derive(Default)]
struct Gate {
    last_attempt: Option<Timestamp>,
    jwks_uri: Option<Url>,
}

impl Gate {
    fn may_attempt(&self, now: Timestamp, interval: Duration) -> bool {
        let Some(last) = self.last_attempt else { return true };
        let elapsed_ms = now.as_millisecond().saturating_sub(last.as_millisecond());
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        elapsed_ms >= interval_ms || elapsed_ms <= -interval_ms
    }
}

/// The cached keys of one OIDC issuer.
pub(crate) struct OidcKeys {
    name: String,
    issuer: String,
    discovery_url: Url,
    pinned: Vec<Algorithm>,
    http: reqwest::Client,
    min_interval: Duration,
    ttl: Duration,
    timeout: Duration,
    current: RwLock<Arc<Snapshot>>,
    gate: Arc<AsyncMutex<Gate>>,
    last_error: Mutex<Option<String>>,
    /// Bumped on every key-set replacement, so caches of verified tokens can tell.
    generation: std::sync::atomic::AtomicU64,
}

impl OidcKeys {
    /// An empty cache for `cfg`; nothing is fetched yet.
    pub(crate) fn new(
        cfg: &IssuerConfig,
        pinned: Vec<Algorithm>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let discovery_url = check_url(&cfg.effective_discovery_url())?;
        Ok(Self {
            name: cfg.name.clone(),
            issuer: cfg.issuer.clone(),
            discovery_url,
            pinned,
            http,
            min_interval: cfg.effective_jwks_refresh_min_interval(),
            ttl: cfg.effective_jwks_cache_ttl(),
            timeout: cfg.effective_http_timeout(),
            current: RwLock::default(),
            gate: Arc::default(),
            last_error: Mutex::default(),
            generation: Default::default(),
        })
    }

    /// How many times the key set was replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Fetches the keys now (startup). Failure is logged and recorded, never returned: the
    /// broker starts without keys and retries on demand.
    pub(crate) async fn refresh_now(&self, now: Timestamp) {
        let mut gate = self.gate.lock().await;
        self.refresh_locked(&mut gate, now).await;
    }

    /// The key for a token, refreshing the JWKS under the rules in the module docs.
    pub(crate) async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
        now: Timestamp,
    ) -> Result<Arc<VerifyKey>, AuthError> {
        let snapshot = self.snapshot();
        if let Some(key) = snapshot.keys.find(kid, alg) {
            if snapshot.fetched_at.is_some_and(|at| elapsed(at, now) >= self.ttl) {
                self.refresh_in_background(now);
            }
            return Ok(key);
        }
        let mut gate = self.gate.lock().await;
        // Whoever held the gate may just have fetched the key we need.
        let snapshot = self.snapshot();
        if let Some(key) = snapshot.keys.find(kid, alg) {
            return Ok(key);
        }
        let interval =
            if snapshot.keys.is_empty() { self.min_interval.min(NO_KEYS_RETRY) } else { self.min_interval };
        if gate.may_attempt(now, interval) {
            self.refresh_locked(&mut gate, now).await;
            if let Some(key) = self.snapshot().keys.find(kid, alg) {
                return Ok(key);
            }
        }
        if self.snapshot().keys.is_empty() {
            Err(AuthError::Unavailable { issuer: self.name.clone() })
        } else {
            Err(Invalid::UnknownKey.into())
        }
    }

    /// Starts a refresh of stale keys unless one is running or the interval has not passed.
    fn refresh_in_background(self: &Arc<Self>, now: Timestamp) {
        let Ok(mut gate): Result<OwnedMutexGuard<Gate>, _> = self.gate.clone().try_lock_owned() else {
            return;
        };
        if !gate.may_attempt(now, self.min_interval) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move { this.refresh_locked(&mut gate, now).await });
    }

    async fn refresh_locked(&self, gate: &mut Gate, now: Timestamp) {
        gate.last_attempt = Some(now);
        // Bound the whole refresh (discovery + JWKS), not only each request.
        let fetched = tokio::time::timeout(2 * self.timeout, self.fetch(gate)).await;
        let result = fetched.unwrap_or_else(|_| Err("timed out".to_owned())).and_then(|doc| {
            let (keys, skipped) = parse_jwks(&doc, &self.pinned)?;
            if keys.is_empty() {
                return Err(format!("the JWKS has no usable signing keys ({skipped} skipped)"));
            }
            Ok((keys, skipped))
        });
        let mut last_error = self.last_error.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok((keys, skipped)) => {
                tracing::info!(issuer = %self.name, keys = keys.len(), skipped, "fetched signing keys");
                let snapshot = Arc::new(Snapshot { keys, fetched_at: Some(now) });
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = snapshot;
                self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
                *last_error = None;
            }
            Err(error) => {
                let kept = self.snapshot().keys.len();
                tracing::warn!(issuer = %self.name, %error, kept, "signing key refresh failed; keeping last good keys");
                // Rediscover next time: the jwks_uri may have moved.
                gate.jwks_uri = None;
                *last_error = Some(error);
            }
        }
    }

    async fn fetch(&self, gate: &mut Gate) -> Result<Value, String> {
        let jwks_uri = match &gate.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                gate.jwks_uri = Some(uri.clone());
                uri
            }
        };
        self.get_json(&jwks_uri, MAX_JWKS_BYTES).await
    }

    async fn discover(&self) -> Result<Url, String> {
        let doc = self.get_json(&self.discovery_url, MAX_DISCOVERY_BYTES).await?;
        // OIDC Discovery §4.3: the document's issuer must be exactly the configured one.
        let issuer = doc.get("issuer").and_then(Value::as_str).ok_or("discovery document has no issuer")?;
        if issuer != self.issuer {
            return Err(format!("discovery document names issuer {issuer:?}, expected {:?}", self.issuer));
        }
        let uri = doc.get("jwks_uri").and_then(Value::as_str).ok_or("discovery document has no jwks_uri")?;
        check_url(uri).map_err(|e| format!("jwks_uri {e}"))
    }

    async fn get_json(&self, url: &Url, limit: usize) -> Result<Value, String> {
        let mut response = self
            .http
            .get(url.clone())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.describe(url, &e))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        if response.content_length().is_some_and(|len| len > limit as u64) {
            return Err(format!("GET {url}: body larger than {limit} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.describe(url, &e))? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Err(format!("GET {url}: body larger than {limit} bytes"));
            }
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: invalid JSON: {e}"))
    }

    /// A one-line description of a request error with its causes (reqwest's own Display omits
    /// them, e.g. "connection refused").
    fn describe(&self, url: &Url, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("GET {url}: timed out after {:?}", self.timeout);
        }
        let mut text = format!("GET {url}: {error}");
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    /// Current health, for readiness and admin views.
    pub(crate) fn health(&self) -> IssuerHealth {
        let snapshot = self.snapshot();
        IssuerHealth {
            name: self.name.clone(),
            kind: IssuerKind::Oidc,
            keys: snapshot.keys.len(),
            keys_fetched_at: snapshot.fetched_at,
            last_error: self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}

/// `now - then`, zero if the clock went backwards.
fn elapsed(then: Timestamp, now: Timestamp) -> Duration {
    let ms = now.as_millisecond().saturating_sub(then.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn gate_allows_the_first_attempt_then_one_per_interval() {
        let minute = Duration::from_secs(60);
        let mut gate = Gate::default();
        assert!(gate.may_attempt(at(0), minute));
        gate.last_attempt = Some(at(0));
        assert!(!gate.may_attempt(at(0), minute));
        assert!(!gate.may_attempt(at(59), minute));
        assert!(gate.may_attempt(at(60), minute));
    }

    #[test]
    fn gate_allows_an_attempt_after_the_clock_jumps_back_beyond_an_interval() {
        let minute = Duration::from_secs(60);
        let gate = Gate { last_attempt: Some(at(0)), jwks_uri: None };
        assert!(!gate.may_attempt(at(-30), minute), "small skew back: still rate limited");
        assert!(gate.may_attempt(at(-3600), minute), "a big jump back must not freeze the cache");
    }
}
