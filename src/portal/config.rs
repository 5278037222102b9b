//! The `[portal]` section: how browsers sign in to the web portal. Plain serde types and
//! `validate()`; the portal itself is in the parent module.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::auth::{AuthConfig, IssuerKind};

/// Settings of the web portal (`/portal/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortalConfig {
    /// Offer the development sign-in (pick any user name and groups) when, and only when, a
    /// `development` issuer is configured in `[auth]`. Set `false` to hide it even then.
    pub dev_login: bool,
    /// Longest life of a portal sign-in; it never outlives the token it holds.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Sign-in with an OpenID Connect provider (authorization code flow with PKCE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<PortalOidcConfig>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self { dev_login: true, session_ttl: Duration::from_secs(12 * 3600), oidc: None }
    }
}

/// The OpenID Connect client the portal acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortalOidcConfig {
    /// Name of an `oidc` issuer in `[[auth.issuers]]`; its discovery document gives the
    /// authorization and token endpoints, and the access token must pass its validation.
    pub issuer: String,
    /// The portal's client id at the provider (a public client; PKCE protects the code).
    pub client_id: String,
    /// Scopes asked for. Include the API's scope, so that the access token is for cadbroker
    /// (for Entra: `api://cadbroker/Sessions.Use`). Default `["openid", "profile"]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// File holding a client secret, for providers that require a confidential client. The
    /// `CADBROKER_PORTAL_CLIENT_SECRET` environment variable wins over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Text of the sign-in button.
    #[serde(default = "default_button")]
    pub display_name: String,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

fn default_button() -> String {
    "Sign in with your organisation".into()
}

impl PortalConfig {
    /// Problems, each naming its field; `auth` is checked for the named issuer.
    pub fn validate(&self, auth: &AuthConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if self.session_ttl < Duration::from_secs(60) || self.session_ttl > Duration::from_secs(7 * 86_400) {
            problems.push("portal.sessionTtl: must be between 1m and 7d".to_owned());
        }
        let Some(oidc) = &self.oidc else { return problems };
        match auth.issuer(&oidc.issuer) {
            Some(i) if i.kind == IssuerKind::Oidc => {}
            Some(_) => problems.push(format!("portal.oidc.issuer: '{}' is not an oidc issuer", oidc.issuer)),
            None => problems.push(format!("portal.oidc.issuer: no issuer named '{}' in [auth]", oidc.issuer)),
        }
        if oidc.client_id.trim().is_empty() {
            problems.push("portal.oidc.clientId: must not be empty".to_owned());
        }
        if !oidc.scopes.iter().any(|s| s == "openid") {
            problems.push("portal.oidc.scopes: must include \"openid\"".to_owned());
        }
        problems
    }
}
