//! The `[auth]` section of the broker's config: which token issuers are trusted and how their
//! tokens map to users, groups and admins. Plain serde types plus `validate()`, which explains
//! every bad field by its path; no IO and no key handling here.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub(crate) mod validate;

/// Default path of the development signing key, relative to the working directory.
pub const DEFAULT_DEV_KEY_FILE: &str = ".cadbroker/dev-signing-key.pem";
/// Default `iss` of the development issuer. `.invalid` can never resolve (RFC 2606).
pub const DEFAULT_DEV_ISSUER: &str = "https://cadbroker.invalid/dev";
/// Default audience of the development issuer.
pub const DEFAULT_DEV_AUDIENCE: &str = "cadbroker";
/// Placeholder in a multi-tenant issuer, as Entra's `common`/`organizations` discovery documents
/// write it (`https://login.microsoftonline.com/{tenantid}/v2.0`).
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// How the broker authenticates callers: the trusted issuers and the admin rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    /// Trusted token issuers. A token is checked against the one whose `issuer` equals its `iss`
    /// claim exactly; tokens from any other issuer are rejected. At least one is required.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Callers in any of these groups (values of the issuer's groups claim; for Entra these are
    /// group object ids) are broker admins.
    #[serde(default)]
    pub admin_groups: BTreeSet<String>,
    /// Callers holding any of these roles (values of the issuer's roles claim, e.g. Entra app
    /// roles) are broker admins.
    #[serde(default)]
    pub admin_roles: BTreeSet<String>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat` and `maxTokenAge`. Default 30 s, at most 5 min.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Reject tokens whose `iat` is older than this (then `iat` is required). Unset: no limit
    /// beyond `exp`.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_token_age: Option<Duration>,
    /// Longest token accepted, in bytes, checked before any parsing. Default 16 KiB: an Entra
    /// token with the maximum 200 group ids is about 12 KiB. Between 1 KiB and 64 KiB.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

/// One trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuerConfig {
    /// Short name for logs, metrics and the CLI (`[a-z0-9-]`, unique).
    pub name: String,
    /// Where the keys come from.
    pub kind: IssuerKind,
    /// The exact `iss` value of this issuer's tokens. An OIDC issuer may contain `{tenantid}`
    /// (multi-tenant Entra); then `allowedTenants` and `discoveryUrl` are required.
    pub issuer: String,
    /// Accepted `aud` values: one string or a list. A token must name at least one of them.
    pub audience: Audiences,
    /// With `true`, every `aud` value of a token must be one of ours (a token also meant for
    /// another API is rejected). Default `false`: ours among several is accepted (RFC 7519).
    #[serde(default)]
    pub exclusive_audience: bool,
    /// Signature algorithms accepted for this issuer; the token header never widens this list.
    /// Default `["RS256"]` for `oidc`, `["EdDSA"]` for `development` (the only one it supports).
    /// Symmetric (`HS*`) algorithms and `none` are never allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Claims that together form the stable user key. Default `["sub"]` (the key is then issuer +
    /// subject). For Entra use `["tid", "oid"]`. Never a mutable claim such as `email` or
    /// `preferred_username`. A `development` issuer always uses `["sub"]`.
    #[serde(default = "default_user_claims")]
    pub user_claims: Vec<String>,
    /// Claim holding the caller's groups (a list of strings). Absent claim = groups unknown.
    /// A dotted path (`realm_access.groups`) is followed when no claim has the literal name.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim holding the caller's roles (a list of strings); absent = no roles. Dotted paths as
    /// for `groupsClaim`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim shown as the caller's display name. Display only: never used to identify anyone.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// If set, the token's `scp` (space-separated) or `scope` claim must contain at least one of
    /// these. Entra access tokens for a delegated API carry `scp`; ID tokens never do, so this is
    /// the strongest guard against an ID token used as an access token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Tenant allow-list: if set, the token's `tid` claim must be one of these. Required for a
    /// multi-tenant (`{tenantid}`) issuer. `oidc` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tenants: Option<BTreeSet<String>>,
    /// `development` only: PKCS#8 PEM file of the Ed25519 signing key, created (mode 0600) on
    /// first use. Relative to the working directory. Default `.cadbroker/dev-signing-key.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// `oidc` only: the discovery document URL. Default `issuer` + `/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// `oidc` only: an unknown `kid` refetches the JWKS at most once per this interval. Default 60 s.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_min_interval: Option<Duration>,
    /// `oidc` only: keys older than this are refreshed in the background. Default 1 h.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub jwks_cache_ttl: Option<Duration>,
    /// `oidc` only: timeout of each discovery or JWKS request. Default 5 s.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub http_timeout: Option<Duration>,
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IssuerKind {
    /// A local Ed25519 key (`keyFile`), whose tokens `cadbroker token` mints. For development and
    /// trials; anyone who can read the key file can mint any identity.
    Development,
    /// An OpenID Connect provider: keys from the JWKS named by its discovery document.
    Oidc,
}

/// One audience or several (`audience = "api://x"` or `audience = ["a", "b"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audiences {
    /// A single accepted audience.
    One(String),
    /// Several accepted audiences.
    Many(Vec<String>),
}

impl Audiences {
    /// The accepted audiences as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        }
    }
}

const DEFAULT_JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_JWKS_CACHE_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_max_token_bytes() -> usize {
    16 * 1024
}

fn default_user_claims() -> Vec<String> {
    vec!["sub".to_owned()]
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

fn default_name_claim() -> String {
    "name".to_owned()
}

impl Default for AuthConfig {
    /// The development setup: one `development` issuer with its key under `.cadbroker/`, so a
    /// fresh broker accepts tokens from `cadbroker token`. Production configs replace it.
    fn default() -> Self {
        Self {
            issuers: vec![IssuerConfig::development("dev")],
            admin_groups: BTreeSet::new(),
            admin_roles: BTreeSet::new(),
            leeway: default_leeway(),
            max_token_age: None,
            max_token_bytes: default_max_token_bytes(),
        }
    }
}

impl AuthConfig {
    /// The issuer with this `name`.
    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|i| i.name == name)
    }

    /// The first `development` issuer, which `cadbroker token` mints for by default.
    pub fn development_issuer(&self) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|i| i.kind == IssuerKind::Development)
    }

    /// Checks every field; each error names the field by path (`auth.issuers[1].algorithms: …`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let errors = validate::validate(self);
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

impl IssuerConfig {
    /// A `development` issuer with the default issuer, audience and key file.
    pub fn development(name: &str) -> Self {
        Self::new(name, IssuerKind::Development, DEFAULT_DEV_ISSUER, DEFAULT_DEV_AUDIENCE)
    }

    /// An `oidc` issuer with defaults for everything but the issuer and audience.
    pub fn oidc(name: &str, issuer: &str, audience: &str) -> Self {
        Self::new(name, IssuerKind::Oidc, issuer, audience)
    }

    fn new(name: &str, kind: IssuerKind, issuer: &str, audience: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            issuer: issuer.to_owned(),
            audience: Audiences::One(audience.to_owned()),
            exclusive_audience: false,
            algorithms: Vec::new(),
            user_claims: default_user_claims(),
            groups_claim: default_groups_claim(),
            roles_claim: default_roles_claim(),
            name_claim: default_name_claim(),
            required_scopes: Vec::new(),
            allowed_tenants: None,
            key_file: None,
            discovery_url: None,
            jwks_refresh_min_interval: None,
            jwks_cache_ttl: None,
            http_timeout: None,
        }
    }

    /// The configured algorithms, or the default for the issuer's kind.
    pub fn effective_algorithms(&self) -> Vec<String> {
        if !self.algorithms.is_empty() {
            return self.algorithms.clone();
        }
        let default = match self.kind {
            IssuerKind::Development => "EdDSA",
            IssuerKind::Oidc => "RS256",
        };
        vec![default.to_owned()]
    }

    /// The development key file, or its default.
    pub fn effective_key_file(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DEV_KEY_FILE))
    }

    /// The discovery URL, or `issuer` + `/.well-known/openid-configuration`.
    pub fn effective_discovery_url(&self) -> String {
        match &self.discovery_url {
            Some(url) => url.clone(),
            None => format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/')),
        }
    }

    /// Minimum interval between JWKS refetches for unknown `kid`s.
    pub fn effective_jwks_refresh_min_interval(&self) -> Duration {
        self.jwks_refresh_min_interval.unwrap_or(DEFAULT_JWKS_REFRESH_MIN_INTERVAL)
    }

    /// Age after which cached keys are refreshed in the background.
    pub fn effective_jwks_cache_ttl(&self) -> Duration {
        self.jwks_cache_ttl.unwrap_or(DEFAULT_JWKS_CACHE_TTL)
    }

    /// Timeout of each discovery or JWKS request.
    pub fn effective_http_timeout(&self) -> Duration {
        self.http_timeout.unwrap_or(DEFAULT_HTTP_TIMEOUT)
    }

    /// Whether `issuer` contains the `{tenantid}` placeholder.
    pub fn is_multi_tenant(&self) -> bool {
        self.issuer.contains(TENANT_PLACEHOLDER)
    }
}
