//! The pure parts of the authorization code flow with PKCE (RFC 7636) and `state`: random
//! values, the S256 challenge, the authorization URL, and the store of sign-ins in progress
//! (single use, bounded, expiring). No network here.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use aws_lc_rs::{
    digest,
    rand::{SecureRandom, SystemRandom},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::Timestamp;
use reqwest::Url;

/// How long a sign-in may take at the provider.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Most sign-ins in progress at once; the oldest are dropped beyond it.
const MAX_PENDING: usize = 10_000;

/// 32 random bytes, base64url: 43 characters, as RFC 7636 §4.1 recommends for the verifier.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 code challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// A sign-in in progress, stored under its `state`. Its `Debug` leaves out the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// PKCE code verifier (sent to the token endpoint only).
    pub verifier: String,
    /// OIDC nonce, checked in the ID token.
    pub nonce: String,
    /// When it was started.
    pub started: Timestamp,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin").field("started", &self.started).finish_non_exhaustive()
    }
}

/// What the authorization request carries.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest<'a> {
    /// The provider's authorization endpoint.
    pub endpoint: &'a Url,
    /// Our client id.
    pub client_id: &'a str,
    /// Where the provider sends the browser back.
    pub redirect_uri: &'a str,
    /// Scopes.
    pub scopes: &'a [String],
    /// The `state`.
    pub state: &'a str,
    /// The login's secrets.
    pub login: &'a PendingLogin,
}

/// The URL the browser is sent to.
pub fn authorization_url(req: &AuthorizationRequest<'_>) -> Url {
    let mut url = req.endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", req.client_id)
        .append_pair("redirect_uri", req.redirect_uri)
        .append_pair("scope", &req.scopes.join(" "))
        .append_pair("state", req.state)
        .append_pair("nonce", &req.login.nonce)
        .append_pair("code_challenge", &challenge(&req.login.verifier))
        .append_pair("code_challenge_method", "S256");
    url
}

/// Sign-ins in progress by `state`.
#[derive(Default)]
pub struct PendingLogins {
    by_state: Mutex<HashMap<String, PendingLogin>>,
}

impl PendingLogins {
    /// Starts a sign-in at `now`; returns its `state`.
    pub fn begin(&self, now: Timestamp) -> (String, PendingLogin) {
        let state = random_token();
        let login = PendingLogin { verifier: random_token(), nonce: random_token(), started: now };
        let mut map = self.by_state.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| !expired(l, now));
        if map.len() >= MAX_PENDING
            && let Some(oldest) = map.iter().min_by_key(|(_, l)| l.started).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(state.clone(), login.clone());
        (state, login)
    }

    /// Takes the sign-in of `state` (single use); `None` when unknown, used or expired.
    pub fn take(&self, state: &str, now: Timestamp) -> Option<PendingLogin> {
        let login = self.by_state.lock().unwrap_or_else(|p| p.into_inner()).remove(state)?;
        (!expired(&login, now)).then_some(login)
    }
}

fn expired(login: &PendingLogin, now: Timestamp) -> bool {
    let age = now.as_millisecond().saturating_sub(login.started.as_millisecond());
    age < 0 || age > i64::try_from(LOGIN_TTL.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636_s256() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(challenge(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(random_token().len(), 43);
        assert_ne!(random_token(), random_token());
    }

    #[test]
    fn a_state_is_used_once_and_expires() {
        let logins = PendingLogins::default();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (state, login) = logins.begin(now);
        assert_eq!(logins.take(&state, now), Some(login));
        assert_eq!(logins.take(&state, now), None, "single use");
        let (state, _) = logins.begin(now);
        assert_eq!(logins.take(&state, now + LOGIN_TTL + Duration::from_secs(1)), None, "expired");
        assert_eq!(logins.take("forged", now), None);
    }

    #[test]
    fn the_authorization_url_carries_challenge_state_and_nonce() {
        let endpoint = Url::parse("https://idp.example/authorize?tenant=x").unwrap();
        let login = PendingLogin { verifier: "v".into(), nonce: "n".into(), started: Timestamp::UNIX_EPOCH };
        let scopes = vec!["openid".to_owned(), "api://cadbroker/use".to_owned()];
        let url = authorization_url(&AuthorizationRequest {
            endpoint: &endpoint,
            client_id: "portal",
            redirect_uri: "http://127.0.0.1:8080/portal/callback",
            scopes: &scopes,
            state: "s",
            login: &login,
        });
        let pairs: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["tenant"], "x");
        assert_eq!(pairs["code_challenge"], challenge("v"));
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert_eq!(pairs["state"], "s");
        assert_eq!(pairs["nonce"], "n");
        assert_eq!(pairs["scope"], "openid api://cadbroker/use");
        assert!(!url.as_str().contains("verifier"));
    }
}
