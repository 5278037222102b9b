//! The token pipeline, cheapest and least trusting first:
//!
//! 1. length cap, structure, strict JSON, issuer-independent header rules (`token.rs`);
//! 2. select the issuer by exact `iss` (unverified, used only to pick keys and rules);
//! 3. the header `alg` must be pinned for that issuer; only then may a key lookup (and possibly
//!    a JWKS refetch) happen, by `kid` as a map key;
//! 4. the key must fit the algorithm; `jsonwebtoken::decode` verifies the signature and
//!    re-checks `iss`, `aud` and the presence and type of `exp`, `nbf`, `iss`, `aud`, `sub`;
//! 5. our own claim checks against the injected `now`: times, audience, scopes, tenant, then the
//!    identity, groups and roles.

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::{
    Authenticator, Principal,
    claims::{self, TimeRules},
    error::{AuthError, Invalid},
    issuer::Issuer,
    keys::VerifyKey,
    token,
};

impl Authenticator {
    /// Verifies a bearer token (without the `Bearer ` prefix) against the configured issuers.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        self.authenticate_at(token, self.clock.now()).await
    }

    /// As [`authenticate`](Self::authenticate), at the given time. `now` drives every time check
    /// and the JWKS refresh rate limit, so tests cover boundaries without sleeping.
    pub async fn authenticate_at(&self, token: &str, now: Timestamp) -> Result<Principal, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge { limit: self.max_token_bytes });
        }
        let generation = self.key_generation();
        if let Some(principal) = self.verified.get(token, now, generation) {
            return Ok(principal);
        }
        let principal = self.verify_at(token, now).await?;
        // With a maximum token age the limit depends on `iat`, which the cache does not track:
        // such tokens are verified every time.
        if self.max_token_age.is_none() {
            // Read again: a refresh during verification must not be masked by the old number.
            let generation = generation.min(self.key_generation());
            self.verified.put(token, &principal, principal.expires_at, now, generation);
        }
        Ok(principal)
    }

    /// Every check of [`authenticate_at`](Self::authenticate_at), without the cache.
    async fn verify_at(&self, token: &str, now: Timestamp) -> Result<Principal, AuthError> {
        let parsed = token::parse(token, self.max_token_bytes)?;
        let iss = claims::required_str(&parsed.claims, "iss").map_err(|_| AuthError::Issuer)?;
        let (issuer, template_tenant) = self.select_issuer(iss)?;
        let alg = issuer.pinned_alg(&parsed.alg)?;
        let key = issuer.key_for(parsed.kid.as_deref(), alg, now).await?;
        if !key.fits(alg) {
            return Err(Invalid::Algorithm.into());
        }
        verify_signature(token, &key, alg, iss, issuer)?;
        let tenant = check_tenant(&parsed.claims, issuer, template_tenant.as_deref())?;
        if !key.admits_issuer(iss, tenant.as_deref()) {
            return Err(AuthError::Issuer);
        }
        self.principal(&parsed.claims, issuer, iss, tenant, now)
    }

    fn key_generation(&self) -> u64 {
        self.issuers.iter().map(Issuer::key_generation).sum()
    }

    fn select_issuer(&self, iss: &str) -> Result<(&Issuer, Option<String>), AuthError> {
        // Exact matches win over templates, so a tenant-specific issuer keeps its own rules.
        let exact = self.issuers.iter().find_map(|i| i.matches(iss).filter(Option::is_none).map(|t| (i, t)));
        exact
            .or_else(|| self.issuers.iter().find_map(|i| i.matches(iss).map(|t| (i, t))))
            .ok_or(AuthError::Issuer)
    }

    fn principal(
        &self,
        claims: &Map<String, Value>,
        issuer: &Issuer,
        iss: &str,
        tenant: Option<String>,
        now: Timestamp,
    ) -> Result<Principal, AuthError> {
        let cfg = &issuer.cfg;
        let exp = claims::check_times(claims, now, TimeRules::new(self.leeway, self.max_token_age))?;
        claims::check_audience(claims, cfg.audience.as_slice(), cfg.exclusive_audience)?;
        claims::check_scopes(claims, &cfg.required_scopes)?;
        let subject = claims::required_str(claims, "sub")?.to_owned();
        let user = claims::user_key(claims, iss, &cfg.user_claims)?;
        let groups = claims::string_set(claims, &cfg.groups_claim)?;
        let roles = claims::string_set(claims, &cfg.roles_claim)?.unwrap_or_default();
        let admin = groups.as_ref().is_some_and(|g| !g.is_disjoint(&self.admin_groups))
            || !roles.is_disjoint(&self.admin_roles);
        let name = [cfg.name_claim.as_str(), "preferred_username"]
            .iter()
            .find_map(|c| claims::lookup(claims, c).and_then(Value::as_str))
            .map(str::to_owned);
        Ok(Principal {
            issuer_name: cfg.name.clone(),
            issuer: iss.to_owned(),
            subject,
            user,
            name,
            tenant,
            groups,
            roles,
            admin,
            expires_at: Timestamp::from_second(exp).map_err(|_| Invalid::Claims)?,
        })
    }
}

/// The tenant rules (SECURITY.md A18): a template issuer's tenant must equal `tid` and be
/// allow-listed; an exact issuer with an allow-list needs an allow-listed `tid`.
fn check_tenant(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    template_tenant: Option<&str>,
) -> Result<Option<String>, AuthError> {
    let tid = match claims.get("tid") {
        None => None,
        Some(Value::String(tid)) => Some(tid.as_str()),
        Some(_) => return Err(Invalid::Claims.into()),
    };
    if let Some(from_iss) = template_tenant
        && tid != Some(from_iss)
    {
        return Err(AuthError::Issuer);
    }
    if let Some(allowed) = &issuer.cfg.allowed_tenants
        && !tid.is_some_and(|t| allowed.contains(t))
    {
        return Err(AuthError::Issuer);
    }
    Ok(tid.map(str::to_owned))
}

/// Verifies the signature with `jsonwebtoken`, which also re-checks `iss`, `aud` and that the
/// registered claims are present with the right types. Its own clock is not used (`exp`/`nbf`
/// are checked against the injected `now` afterwards).
fn verify_signature(
    token: &str,
    key: &VerifyKey,
    alg: Algorithm,
    iss: &str,
    issuer: &Issuer,
) -> Result<(), AuthError> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.set_issuer(&[iss]);
    validation.set_audience(issuer.cfg.audience.as_slice());
    match jsonwebtoken::decode::<Value>(token, key.decoding_key(), &validation) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => Invalid::Signature.into(),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Invalid::Algorithm.into(),
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => Invalid::Claims.into(),
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => {
                tracing::warn!(issuer = %issuer.cfg.name, kid = ?key.kid, "a published key cannot verify");
                Invalid::Signature.into()
            }
            _ => Invalid::Malformed.into(),
        }),
    }
}
