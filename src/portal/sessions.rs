//! Portal sign-ins: the broker keeps the caller's token server-side and hands the browser only
//! an opaque random id in an HttpOnly, Secure, SameSite=Strict cookie, plus a CSRF token that
//! the page must echo in `X-CSRF-Token` on every state-changing request. Scripts never see the
//! token, and another site can neither read the CSRF token nor make the browser send the cookie.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::http::{HeaderMap, HeaderValue, header};
use jiff::Timestamp;

use super::pkce::random_token;

/// Name of the portal's cookie.
pub const PORTAL_COOKIE: &str = "cadbroker_portal";
/// Name of the cookie that binds a sign-in in progress to the browser that started it.
pub const LOGIN_COOKIE: &str = "cadbroker_login";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Most portal sign-ins held at once; the soonest to expire are dropped beyond it.
const MAX_SIGN_INS: usize = 50_000;

/// One signed-in browser. Its `Debug` leaves out the token and the CSRF token.
#[derive(Clone)]
pub struct SignIn {
    /// The bearer token the portal acts with (checked again on every request).
    pub token: String,
    /// The CSRF token of this sign-in.
    pub csrf: String,
    /// When it ends (never after the token's `exp`).
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// The portal's sign-ins by cookie id.
#[derive(Default)]
pub struct SignIns {
    by_id: Mutex<HashMap<String, SignIn>>,
}

impl SignIns {
    /// Stores a sign-in; returns its cookie id.
    pub fn insert(&self, sign_in: SignIn, now: Timestamp) -> String {
        let id = random_token();
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires_at > now);
        if map.len() >= MAX_SIGN_INS
            && let Some(first) = map.iter().min_by_key(|(_, s)| s.expires_at).map(|(k, _)| k.clone())
        {
            map.remove(&first);
        }
        map.insert(id.clone(), sign_in);
        id
    }

    /// The live sign-in of cookie id `id`.
    pub fn get(&self, id: &str, now: Timestamp) -> Option<SignIn> {
        let map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).filter(|s| s.expires_at > now).cloned()
    }

    /// Ends a sign-in.
    pub fn remove(&self, id: &str) {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Whether `sent` is the sign-in's CSRF token (compared in constant time).
pub fn csrf_matches(sign_in: &SignIn, sent: Option<&str>) -> bool {
    sent.is_some_and(|s| verify_slices_are_equal(s.as_bytes(), sign_in.csrf.as_bytes()).is_ok())
}

/// The value of cookie `name` in the request, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// `Set-Cookie` for the portal cookie (`Path=/`: the API needs it too), living `ttl`.
pub fn set_portal_cookie(id: &str, ttl: Duration) -> HeaderValue {
    let value =
        format!("{PORTAL_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict", ttl.as_secs());
    HeaderValue::from_str(&value).expect("random ids are valid cookie values")
}

/// `Set-Cookie` that deletes cookie `name` at `path`.
pub fn clear_cookie(name: &str, path: &str) -> HeaderValue {
    let value = format!("{name}=; Path={path}; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    HeaderValue::from_str(&value).expect("constant cookie")
}

/// `Set-Cookie` binding a sign-in's `state` to this browser. SameSite=Lax, because the
/// provider's redirect back is a cross-site top-level navigation (Strict would not be sent).
pub fn set_login_cookie(state: &str, ttl: Duration) -> HeaderValue {
    let value = format!(
        "{LOGIN_COOKIE}={state}; Path=/portal/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        ttl.as_secs()
    );
    HeaderValue::from_str(&value).expect("random states are valid cookie values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_in(expires_at: Timestamp) -> SignIn {
        SignIn { token: "t".into(), csrf: "c".repeat(43), expires_at }
    }

    #[test]
    fn a_sign_in_lives_until_it_expires_or_is_removed() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let store = SignIns::default();
        let id = store.insert(sign_in(now + Duration::from_secs(60)), now);
        assert!(store.get(&id, now).is_some());
        assert!(store.get(&id, now + Duration::from_secs(60)).is_none(), "expired");
        let id = store.insert(sign_in(now + Duration::from_secs(60)), now);
        store.remove(&id);
        assert!(store.get(&id, now).is_none());
        assert!(store.get("guessed", now).is_none());
    }

    #[test]
    fn csrf_must_be_sent_and_equal() {
        let s = sign_in(Timestamp::UNIX_EPOCH);
        assert!(csrf_matches(&s, Some(&"c".repeat(43))));
        assert!(!csrf_matches(&s, Some("c")));
        assert!(!csrf_matches(&s, None));
    }

    #[test]
    fn cookies_are_http_only_secure_and_read_back() {
        let set = set_portal_cookie("abc", Duration::from_secs(60));
        assert_eq!(set, "cadbroker_portal=abc; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Strict");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; cadbroker_portal=abc"));
        assert_eq!(cookie(&headers, PORTAL_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }
}
