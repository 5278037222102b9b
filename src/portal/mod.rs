//! The web portal: static pages under `/portal/` and the sign-in that lets a browser use the
//! API without ever holding a token. A sign-in (OpenID Connect code flow with PKCE, or the
//! development sign-in when a development issuer is configured) ends with the token stored
//! here and an HttpOnly cookie in the browser; the API accepts that cookie in place of a bearer
//! token, with a CSRF header required on every state-changing request (see `sessions`).
//!
//! ```text
//! GET  /portal/login ──► discovery ──► 303 provider ?code_challenge&state&nonce (+ login cookie)
//! GET  /portal/callback?code&state ──► state = login cookie, single use ──► token endpoint
//!      (code_verifier) ──► Authenticator checks the access token ──► portal cookie ──► /portal/
//! POST /portal/dev-login {user, groups, admin} ──► dev token ──► portal cookie
//! any /api/v1 call + portal cookie (+ X-CSRF-Token unless GET) ──► the stored token
//! ```

pub mod assets;
pub mod config;
pub mod dev;
pub mod handlers;
pub mod oidc;
pub mod pkce;
pub mod sessions;

use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use jiff::Timestamp;
use thiserror::Error;

pub use self::config::{PortalConfig, PortalOidcConfig};
use self::{
    dev::DevLogin,
    oidc::OidcClient,
    pkce::PendingLogins,
    sessions::{CSRF_HEADER, PORTAL_COOKIE, SignIn, SignIns},
};
use crate::{auth::AuthConfig, http::error::ApiError};

/// What the portal refuses; one API error each.
#[derive(Debug, Error)]
pub enum PortalError {
    /// No development issuer is configured (or the portal turned it off).
    #[error("the development sign-in is not enabled on this broker")]
    DevLoginDisabled,
    /// No OpenID Connect sign-in is configured.
    #[error("no OpenID Connect sign-in is configured")]
    OidcNotConfigured,
    /// The request has no (live) portal sign-in.
    #[error("not signed in")]
    NotSignedIn,
    /// A state-changing request without the sign-in's CSRF token.
    #[error("missing or wrong X-CSRF-Token header")]
    Csrf,
    /// A sign-in request from a page of another origin.
    #[error("requests must come from the portal's own origin")]
    ForeignOrigin,
    /// The provider's redirect back does not belong to a sign-in this browser started.
    #[error("this sign-in is unknown, used or expired: {0}")]
    LoginState(&'static str),
    /// The identity provider failed or refused.
    #[error("the identity provider: {0}")]
    Provider(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// A development token could not be made.
    #[error("failed to mint a development token: {0}")]
    Mint(String),
}

impl From<PortalError> for ApiError {
    fn from(e: PortalError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            PortalError::DevLoginDisabled => (StatusCode::NOT_FOUND, "dev_login_disabled"),
            PortalError::OidcNotConfigured => (StatusCode::NOT_FOUND, "oidc_not_configured"),
            PortalError::NotSignedIn => (StatusCode::UNAUTHORIZED, "not_signed_in"),
            PortalError::Csrf => (StatusCode::FORBIDDEN, "csrf_failed"),
            PortalError::ForeignOrigin => (StatusCode::FORBIDDEN, "origin_refused"),
            PortalError::LoginState(_) => (StatusCode::BAD_REQUEST, "login_state_invalid"),
            PortalError::Provider(_) => (StatusCode::BAD_GATEWAY, "identity_provider_failed"),
            PortalError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            PortalError::Mint(_) => return ApiError::internal(message),
        };
        ApiError::new(status, code, message)
    }
}

/// Why the portal could not be set up.
#[derive(Debug, Error)]
#[error("portal: {0}")]
pub struct PortalInitError(String);

/// The portal's state: sign-in methods, sign-ins in progress and signed-in browsers.
pub struct Portal {
    pub(crate) dev: Option<DevLogin>,
    pub(crate) oidc: Option<OidcClient>,
    pub(crate) sign_ins: SignIns,
    pub(crate) logins: PendingLogins,
    pub(crate) ttl: Duration,
    pub(crate) public_url: String,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("dev_login", &self.dev.is_some())
            .field("oidc", &self.oidc)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Portal {
    /// The portal for `config`, with the issuers of `auth`, reached by browsers at `public_url`.
    pub fn new(config: &PortalConfig, auth: &AuthConfig, public_url: &str) -> Result<Self, PortalInitError> {
        let problems = config.validate(auth);
        if !problems.is_empty() {
            return Err(PortalInitError(problems.join("; ")));
        }
        let dev = if config.dev_login { DevLogin::from_auth(auth).map_err(PortalInitError)? } else { None };
        let oidc = match &config.oidc {
            Some(oidc) => {
                let issuer =
                    auth.issuer(&oidc.issuer).ok_or_else(|| PortalInitError("no such issuer".into()))?;
                Some(OidcClient::new(oidc.clone(), issuer).map_err(PortalInitError)?)
            }
            None => None,
        };
        if dev.is_some() {
            tracing::warn!(
                "portal: development sign-in enabled (anyone can sign in as anyone): remove the development issuer in production"
            );
        }
        Ok(Self {
            dev,
            oidc,
            sign_ins: SignIns::default(),
            logins: PendingLogins::default(),
            ttl: config.session_ttl,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Whether the development sign-in is offered.
    pub fn dev_login_enabled(&self) -> bool {
        self.dev.is_some()
    }

    /// The stored token of the request's portal cookie, for the API's extractor. `Ok(None)`
    /// without a cookie; `NotSignedIn` for an unknown or expired one; `Csrf` when a method
    /// other than GET/HEAD comes without the sign-in's CSRF token.
    pub fn token_for(&self, method: &Method, headers: &HeaderMap) -> Result<Option<String>, PortalError> {
        let Some(id) = sessions::cookie(headers, PORTAL_COOKIE) else { return Ok(None) };
        let sign_in = self.sign_ins.get(id, Timestamp::now()).ok_or(PortalError::NotSignedIn)?;
        if !matches!(*method, Method::GET | Method::HEAD) {
            self.check_csrf(&sign_in, headers)?;
        }
        Ok(Some(sign_in.token))
    }

    fn check_csrf(&self, sign_in: &SignIn, headers: &HeaderMap) -> Result<(), PortalError> {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if sessions::csrf_matches(sign_in, sent) { Ok(()) } else { Err(PortalError::Csrf) }
    }

    /// Refuses a request whose `Origin` (when the browser sends one) is not ours.
    pub(crate) fn check_origin(&self, headers: &HeaderMap) -> Result<(), PortalError> {
        match headers.get("origin").map(|o| o.to_str().unwrap_or("")) {
            Some(origin) if origin != self.public_url => Err(PortalError::ForeignOrigin),
            _ => Ok(()),
        }
    }

    /// The provider's redirect target.
    pub(crate) fn redirect_uri(&self) -> String {
        format!("{}/portal/callback", self.public_url)
    }
}

/// The portal's language for an `Accept-Language` header: `nl` when Dutch is preferred over
/// English, else `en`.
pub fn language(accept_language: Option<&str>) -> &'static str {
    let Some(header) = accept_language else { return "en" };
    let mut best = ("en", -1.0_f32);
    for item in header.split(',') {
        let mut parts = item.trim().split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
            .unwrap_or(1.0);
        let lang = match tag.split('-').next() {
            Some("nl") => "nl",
            Some("en") => "en",
            _ => continue,
        };
        if q > best.1 {
            best = (lang, q);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dutch_is_chosen_when_preferred() {
        assert_eq!(language(None), "en");
        assert_eq!(language(Some("nl-NL,nl;q=0.9,en;q=0.8")), "nl");
        assert_eq!(language(Some("en-GB,en;q=0.9,nl;q=0.8")), "en");
        assert_eq!(language(Some("de-DE,nl;q=0.5")), "nl");
        assert_eq!(language(Some("fr")), "en");
    }
}
