//! One configured issuer at run time: its pinned algorithms, its key source (the development
//! key or an OIDC key cache) and how a token's `iss` selects it. An issuer is chosen by exact
//! `iss` match only; a multi-tenant template matches `{tenantid}` to a single path segment.

use std::sync::Arc;

use jiff::Timestamp;
use jsonwebtoken::Algorithm;

use super::{
    config::{IssuerConfig, IssuerKind, TENANT_PLACEHOLDER, validate::parse_algorithm},
    error::{AuthError, Invalid},
    jwks::{IssuerHealth, OidcKeys},
    keys::{KeySet, VerifyKey},
};

/// Where an issuer's keys come from.
pub(crate) enum KeySource {
    /// The development key, loaded at startup.
    Static(KeySet),
    /// An OIDC issuer's cached JWKS.
    Oidc(Arc<OidcKeys>),
}

/// A configured issuer, ready to verify tokens.
pub(crate) struct Issuer {
    pub cfg: IssuerConfig,
    pinned: Vec<Algorithm>,
    pub keys: KeySource,
    /// For `{tenantid}` issuers: the text before and after the placeholder.
    template: Option<(String, String)>,
}

impl Issuer {
    /// Changes whenever this issuer's key set is replaced (always 0 for a static key).
    pub(crate) fn key_generation(&self) -> u64 {
        match &self.keys {
            KeySource::Static(_) => 0,
            KeySource::Oidc(cache) => cache.generation(),
        }
    }

    /// Builds the runtime issuer; `cfg` must have passed validation.
    pub(crate) fn new(cfg: IssuerConfig, keys: KeySource) -> Result<Self, String> {
        let pinned = Self::pinned_algorithms(&cfg)?;
        let template = cfg
            .issuer
            .split_once(TENANT_PLACEHOLDER)
            .filter(|_| cfg.kind == IssuerKind::Oidc)
            .map(|(pre, post)| (pre.to_owned(), post.to_owned()));
        Ok(Self { cfg, pinned, keys, template })
    }

    /// The issuer's algorithm allow-list as typed values.
    pub(crate) fn pinned_algorithms(cfg: &IssuerConfig) -> Result<Vec<Algorithm>, String> {
        cfg.effective_algorithms().iter().map(|a| parse_algorithm(a, cfg.kind)).collect()
    }

    /// If `iss` belongs to this issuer: `Some(None)` for an exact match, `Some(Some(tenant))` for
    /// a template match.
    pub(crate) fn matches(&self, iss: &str) -> Option<Option<String>> {
        match &self.template {
            None => (self.cfg.issuer == iss).then_some(None),
            Some((pre, post)) => {
                let tenant = iss.strip_prefix(pre.as_str())?.strip_suffix(post.as_str())?;
                let plausible = !tenant.is_empty()
                    && tenant.len() <= 64
                    && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                plausible.then(|| Some(tenant.to_owned()))
            }
        }
    }

    /// The header's `alg`, if pinned for this issuer. The header never widens the list.
    pub(crate) fn pinned_alg(&self, alg: &str) -> Result<Algorithm, AuthError> {
        let alg: Algorithm = alg.parse().map_err(|_| Invalid::Algorithm)?;
        if self.pinned.contains(&alg) { Ok(alg) } else { Err(Invalid::Algorithm.into()) }
    }

    /// The key for `kid` (see `KeySet::find` and `OidcKeys::key_for`).
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: Timestamp,
    ) -> Result<Arc<VerifyKey>, AuthError> {
        match &self.keys {
            KeySource::Static(set) => set.find(kid, alg).ok_or(Invalid::UnknownKey.into()),
            KeySource::Oidc(cache) => cache.key_for(kid, alg, now).await,
        }
    }

    /// Health of the issuer's keys.
    pub(crate) fn health(&self) -> IssuerHealth {
        match &self.keys {
            KeySource::Static(set) => IssuerHealth {
                name: self.cfg.name.clone(),
                kind: self.cfg.kind,
                keys: set.len(),
                keys_fetched_at: None,
                last_error: None,
            },
            KeySource::Oidc(cache) => cache.health(),
        }
    }
}
