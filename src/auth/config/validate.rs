//! `AuthConfig::validate`: every rule on the `[auth]` section, each failure a readable message
//! naming the field by path. Pure: no IO, no clock.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use jsonwebtoken::Algorithm;
use reqwest::Url;

use super::{AuthConfig, IssuerConfig, IssuerKind, TENANT_PLACEHOLDER};

/// Claims that a user can change or that an IdP does not verify (nOAuth, SECURITY.md A20): never
/// part of the user key.
const MUTABLE_CLAIMS: &[&str] =
    &["email", "preferred_username", "upn", "unique_name", "name", "given_name", "family_name", "nickname"];

const MAX_LEEWAY: Duration = Duration::from_secs(300);
const MIN_TOKEN_BYTES: usize = 1024;
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Parses an algorithm name from the config. `HS*` and `none` are refused: a shared secret
/// cannot come from a public JWKS, and the development key is Ed25519.
pub(crate) fn parse_algorithm(name: &str, kind: IssuerKind) -> Result<Algorithm, String> {
    let kind_name = match kind {
        IssuerKind::Development => "a development",
        IssuerKind::Oidc => "an oidc",
    };
    if name.eq_ignore_ascii_case("none") {
        return Err("none is never allowed".to_owned());
    }
    let alg: Algorithm = name.parse().map_err(|_| format!("{name} is not a supported algorithm"))?;
    match (kind, alg) {
        (_, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
            Err(format!("{name} is not allowed for {kind_name} issuer"))
        }
        (IssuerKind::Development, Algorithm::EdDSA) | (IssuerKind::Oidc, _) => Ok(alg),
        (IssuerKind::Development, _) => Err(format!("{name}: a development issuer signs with EdDSA only")),
    }
}

pub(super) fn validate(cfg: &AuthConfig) -> Vec<String> {
    let mut errors = Vec::new();
    if cfg.issuers.is_empty() {
        errors.push("auth.issuers: at least one issuer is required".to_owned());
    }
    if cfg.leeway > MAX_LEEWAY {
        errors.push("auth.leeway: must be at most 5m".to_owned());
    }
    if cfg.max_token_age == Some(Duration::ZERO) {
        errors.push("auth.maxTokenAge: must be positive (omit it for no limit)".to_owned());
    }
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&cfg.max_token_bytes) {
        errors.push(format!("auth.maxTokenBytes: must be between {MIN_TOKEN_BYTES} and {MAX_TOKEN_BYTES}"));
    }
    check_names("auth.adminGroups", &cfg.admin_groups, &mut errors);
    check_names("auth.adminRoles", &cfg.admin_roles, &mut errors);

    let mut names = BTreeSet::new();
    let mut issuers = BTreeSet::new();
    for (i, issuer) in cfg.issuers.iter().enumerate() {
        let at = format!("auth.issuers[{i}]");
        if !names.insert(issuer.name.as_str()) {
            errors.push(format!("{at}.name: {:?} is used by another issuer", issuer.name));
        }
        if !issuers.insert(issuer.issuer.as_str()) {
            errors.push(format!("{at}.issuer: {:?} is configured twice", issuer.issuer));
        }
        validate_issuer(&at, issuer, &mut errors);
    }
    errors
}

fn validate_issuer(at: &str, cfg: &IssuerConfig, errors: &mut Vec<String>) {
    let name_ok = !cfg.name.is_empty()
        && cfg.name.len() <= 63
        && cfg.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        errors.push(format!("{at}.name: must be 1-63 characters of a-z, 0-9 and -"));
    }
    if cfg.issuer.trim().is_empty() || cfg.issuer.trim() != cfg.issuer {
        errors.push(format!("{at}.issuer: must be non-empty without surrounding spaces"));
    }
    let audiences = cfg.audience.as_slice();
    if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
        errors.push(format!("{at}.audience: must be one or more non-empty strings"));
    }
    if cfg.algorithms.iter().collect::<BTreeSet<_>>().len() != cfg.algorithms.len() {
        errors.push(format!("{at}.algorithms: lists an algorithm twice"));
    }
    for alg in &cfg.algorithms {
        if let Err(e) = parse_algorithm(alg, cfg.kind) {
            errors.push(format!("{at}.algorithms: {e}"));
        }
    }
    validate_claims(at, cfg, errors);
    match cfg.kind {
        IssuerKind::Development => validate_development(at, cfg, errors),
        IssuerKind::Oidc => validate_oidc(at, cfg, errors),
    }
}

fn validate_claims(at: &str, cfg: &IssuerConfig, errors: &mut Vec<String>) {
    if cfg.user_claims.is_empty() {
        errors.push(format!("{at}.userClaims: must name at least one claim"));
    }
    if cfg.user_claims.iter().collect::<BTreeSet<_>>().len() != cfg.user_claims.len() {
        errors.push(format!("{at}.userClaims: lists a claim twice"));
    }
    for claim in &cfg.user_claims {
        if MUTABLE_CLAIMS.contains(&claim.as_str()) {
            errors.push(format!(
                "{at}.userClaims: {claim} is mutable or unverified and must never identify a user; \
                 use sub, or tid and oid"
            ));
        } else if claim.trim().is_empty() {
            errors.push(format!("{at}.userClaims: claim names must be non-empty"));
        }
    }
    for (field, value) in
        [("groupsClaim", &cfg.groups_claim), ("rolesClaim", &cfg.roles_claim), ("nameClaim", &cfg.name_claim)]
    {
        if value.trim().is_empty() {
            errors.push(format!("{at}.{field}: must be non-empty"));
        }
    }
    if cfg.required_scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
        errors.push(format!("{at}.requiredScopes: scopes must be non-empty and contain no spaces"));
    }
}

fn validate_development(at: &str, cfg: &IssuerConfig, errors: &mut Vec<String>) {
    if cfg.user_claims != ["sub"] {
        errors.push(format!(
            "{at}.userClaims: a development issuer always keys users by sub; it must not mint \
             tenant identities"
        ));
    }
    let oidc_only = [
        ("discoveryUrl", cfg.discovery_url.is_some()),
        ("allowedTenants", cfg.allowed_tenants.is_some()),
        ("jwksRefreshMinInterval", cfg.jwks_refresh_min_interval.is_some()),
        ("jwksCacheTtl", cfg.jwks_cache_ttl.is_some()),
        ("httpTimeout", cfg.http_timeout.is_some()),
    ];
    for (field, set) in oidc_only {
        if set {
            errors.push(format!("{at}.{field}: only applies to an oidc issuer"));
        }
    }
    if cfg.is_multi_tenant() {
        errors.push(format!("{at}.issuer: {TENANT_PLACEHOLDER} only applies to an oidc issuer"));
    }
    if cfg.key_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        errors.push(format!("{at}.keyFile: must be a non-empty path"));
    }
}

fn validate_oidc(at: &str, cfg: &IssuerConfig, errors: &mut Vec<String>) {
    if cfg.key_file.is_some() {
        errors.push(format!("{at}.keyFile: only applies to a development issuer"));
    }
    if cfg.is_multi_tenant() {
        if cfg.issuer.matches(TENANT_PLACEHOLDER).count() != 1 {
            errors.push(format!("{at}.issuer: {TENANT_PLACEHOLDER} may appear once"));
        }
        if cfg.discovery_url.is_none() {
            errors.push(format!(
                "{at}.discoveryUrl: required for a multi-tenant ({TENANT_PLACEHOLDER}) issuer"
            ));
        }
        if cfg.allowed_tenants.is_none() {
            errors.push(format!(
                "{at}.allowedTenants: required for a multi-tenant ({TENANT_PLACEHOLDER}) issuer: \
                 a valid signature from the shared keys proves nothing about the tenant"
            ));
        }
    } else if let Err(e) = check_url(&cfg.issuer) {
        errors.push(format!("{at}.issuer: {e}"));
    }
    if let Some(url) = &cfg.discovery_url
        && let Err(e) = check_url(url)
    {
        errors.push(format!("{at}.discoveryUrl: {e}"));
    }
    if let Some(tenants) = &cfg.allowed_tenants
        && (tenants.is_empty() || tenants.iter().any(|t| t.trim().is_empty()))
    {
        errors.push(format!("{at}.allowedTenants: must list one or more non-empty tenant ids"));
    }
    let interval = cfg.effective_jwks_refresh_min_interval();
    if interval < Duration::from_secs(1) {
        errors.push(format!("{at}.jwksRefreshMinInterval: must be at least 1s"));
    }
    if cfg.effective_jwks_cache_ttl() < interval {
        errors.push(format!("{at}.jwksCacheTtl: must be at least jwksRefreshMinInterval"));
    }
    let timeout = cfg.effective_http_timeout();
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
        errors.push(format!("{at}.httpTimeout: must be between 100ms and 60s"));
    }
}

fn check_names(field: &str, names: &BTreeSet<String>, errors: &mut Vec<String>) {
    if names.iter().any(|n| n.trim().is_empty()) {
        errors.push(format!("{field}: entries must be non-empty"));
    }
}

/// An issuer or key URL must be `https`, or `http` to a loopback host (tests and local IdPs).
pub(crate) fn check_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!("{raw:?} must use https (http only for a loopback host)")),
        other => Err(format!("{raw:?} has unsupported scheme {other}")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
