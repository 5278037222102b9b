//! Authentication: bearer JWTs from configured issuers → [`Principal`] → domain [`Caller`].
//!
//! This module owns token validation (SECURITY.md §1), the OIDC discovery/JWKS cache and the
//! development key used by `cadbroker token`. It knows nothing about HTTP frameworks: the HTTP
//! layer extracts the bearer token (see [`bearer_token`]), calls
//! [`Authenticator::authenticate`] and maps [`AuthError::http_status`] / [`AuthError::code`].
//!
//! ```text
//! AuthConfig ──validate()──► Authenticator::new ──► Authenticator (Arc, shared)
//!                                 │ dev issuer: dev_key::load_or_create_dev_key
//!                                 │ oidc issuer: jwks::OidcKeys (discovery → JWKS, cached)
//! "Bearer …" ─► token::parse ─► issuer by exact iss ─► pinned alg ─► key by kid
//!            ─► signature (jsonwebtoken) ─► claims (injected now) ─► Principal ─► Caller
//! ```
//!
//! Files: `config` (the `[auth]` section), `token` (structure and header rules),
//! `strict_json` (duplicate-member rejection), `keys` (JWK → key), `jwks` (OIDC key cache),
//! `issuer` (runtime issuer), `validate` (the pipeline), `claims` (claim checks), `principal`,
//! `dev_key` (development key and minting), `authenticator` (construction, self-test, health),
//! `error`.

mod authenticator;
mod claims;
mod config;
mod dev_key;
mod error;
mod issuer;
mod jwks;
mod keys;
mod principal;
mod strict_json;
mod token;
mod validate;
mod verified;

pub use authenticator::{Authenticator, crypto_self_test};
pub use config::{
    Audiences, AuthConfig, DEFAULT_DEV_AUDIENCE, DEFAULT_DEV_ISSUER, DEFAULT_DEV_KEY_FILE, IssuerConfig,
    IssuerKind, TENANT_PLACEHOLDER,
};
pub use dev_key::{DevKey, MAX_MINT_TTL, MintRequest, load_or_create_dev_key, mint_dev_token};
pub use error::{AuthError, AuthInitError, DevKeyError, Invalid, MintError};
pub use jwks::IssuerHealth;
pub use principal::Principal;
pub use token::CONNECT_TICKET_TYP;
pub use verified::VERIFIED_TTL;

#[cfg(doc)]
use crate::domain::Caller;

/// The token from an `Authorization` header value: `Bearer <token>` (scheme case-insensitive,
/// RFC 7235 §2.1). Anything else, or an empty token, is [`AuthError::Missing`].
pub fn bearer_token(authorization: &str) -> Result<&str, AuthError> {
    let (scheme, token) = authorization.split_once(' ').ok_or(AuthError::Missing)?;
    let token = token.trim_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        Ok(token)
    } else {
        Err(AuthError::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer  abc "), Ok("abc"));
        assert_eq!(bearer_token("Basic abc"), Err(AuthError::Missing));
        assert_eq!(bearer_token("Bearer "), Err(AuthError::Missing));
        assert_eq!(bearer_token("abc"), Err(AuthError::Missing));
    }

    #[test]
    fn only_unavailable_keys_map_to_503() {
        assert_eq!(AuthError::Unavailable { issuer: "x".into() }.http_status(), 503);
        assert_eq!(AuthError::Expired.http_status(), 401);
        assert_eq!(AuthError::Invalid(Invalid::Signature).code(), "token_invalid");
    }

    #[test]
    fn default_config_is_a_valid_development_setup() {
        let cfg = AuthConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.development_issuer().map(|i| i.issuer.as_str()), Some(DEFAULT_DEV_ISSUER));
    }

    #[test]
    fn crypto_backend_passes_the_self_test() {
        crypto_self_test().unwrap();
    }
}
