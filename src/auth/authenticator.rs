//! `Authenticator`: built once from `AuthConfig` at startup, then shared (`Arc<Authenticator>`)
//! by every request. Construction validates the config, runs the crypto self-test, loads (or
//! creates) development keys and makes a first attempt at every OIDC issuer's keys; an
//! unreachable IdP does not stop the broker from starting (SECURITY.md A10).

use std::{collections::BTreeSet, fmt, panic, sync::Arc, time::Duration};

use crate::clock::{Clock, SystemClock};
use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;

use super::{
    config::{AuthConfig, IssuerKind},
    dev_key::load_or_create_dev_key,
    error::AuthInitError,
    issuer::{Issuer, KeySource},
    jwks::{IssuerHealth, OidcKeys},
    keys::KeySet,
};

/// Verifies bearer tokens against the configured issuers. Cheap to share in an `Arc`.
pub struct Authenticator {
    pub(super) issuers: Vec<Issuer>,
    pub(super) admin_groups: BTreeSet<String>,
    pub(super) admin_roles: BTreeSet<String>,
    pub(super) leeway: Duration,
    pub(super) max_token_age: Option<Duration>,
    pub(super) max_token_bytes: usize,
    pub(super) verified: super::verified::VerifiedTokens,
    /// Where `authenticate` reads the time.
    pub(super) clock: Arc<dyn Clock>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.issuers.iter().map(|i| i.cfg.name.as_str()).collect();
        f.debug_struct("Authenticator").field("issuers", &names).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the authenticator. Fails on an invalid config, a broken crypto backend or an
    /// unusable development key file, never because an OIDC provider is unreachable.
    pub async fn new(config: &AuthConfig) -> Result<Self, AuthInitError> {
        Self::with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`new`](Self::new), reading the time from `clock`.
    pub async fn with_clock(config: &AuthConfig, clock: Arc<dyn Clock>) -> Result<Self, AuthInitError> {
        config.validate().map_err(AuthInitError::Config)?;
        crypto_self_test()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cadbroker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthInitError::HttpClient(e.to_string()))?;
        let mut issuers = Vec::with_capacity(config.issuers.len());
        let mut caches = Vec::new();
        for cfg in &config.issuers {
            let keys = match cfg.kind {
                IssuerKind::Development => {
                    let key = load_or_create_dev_key(&cfg.effective_key_file())
                        .map_err(|source| AuthInitError::DevKey { issuer: cfg.name.clone(), source })?;
                    tracing::warn!(issuer = %cfg.name, kid = key.kid(), path = %key.path().display(),
                        "development issuer enabled: whoever can read its key file can mint any identity");
                    KeySource::Static(KeySet::new([key.verify_key()]))
                }
                IssuerKind::Oidc => {
                    let pinned =
                        Issuer::pinned_algorithms(cfg).map_err(|e| AuthInitError::Config(vec![e]))?;
                    let cache = Arc::new(OidcKeys::new(cfg, pinned, http.clone()).map_err(|e| {
                        AuthInitError::Config(vec![format!("auth.issuers {}: {e}", cfg.name)])
                    })?);
                    caches.push(cache.clone());
                    KeySource::Oidc(cache)
                }
            };
            issuers.push(Issuer::new(cfg.clone(), keys).map_err(|e| AuthInitError::Config(vec![e]))?);
        }
        let now = clock.now();
        futures::future::join_all(caches.iter().map(|c| c.refresh_now(now))).await;
        Ok(Self {
            issuers,
            admin_groups: config.admin_groups.clone(),
            admin_roles: config.admin_roles.clone(),
            leeway: config.leeway,
            max_token_age: config.max_token_age,
            max_token_bytes: config.max_token_bytes,
            verified: Default::default(),
            clock,
        })
    }

    /// Health of every issuer's keys (count, last fetch, last error). No key material.
    pub fn health(&self) -> Vec<IssuerHealth> {
        self.issuers.iter().map(Issuer::health).collect()
    }

    /// Whether every issuer has at least one key (a readiness signal).
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.health().keys > 0)
    }
}

/// Signs and verifies one Ed25519 and one ES256 token through `jsonwebtoken`, and checks that a
/// tampered token fails. `jsonwebtoken` 10 panics on first use when no crypto backend (or two)
/// is selected; this turns that into a startup error instead of a failure at the first request.
pub fn crypto_self_test() -> Result<(), AuthInitError> {
    let outcome = panic::catch_unwind(|| -> Result<(), String> {
        let ed = Ed25519KeyPair::generate().and_then(|k| k.to_pkcs8v1()).map_err(|_| "ed25519 keygen")?;
        let ed_pair = Ed25519KeyPair::from_pkcs8(ed.as_ref()).map_err(|_| "ed25519 parse")?;
        let ed_public = aws_lc_rs::signature::KeyPair::public_key(&ed_pair).as_ref().to_vec();
        round_trip(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(ed.as_ref()),
            &DecodingKey::from_ed_der(&ed_public),
        )?;

        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| "p-256 keygen")?;
        let ec_pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref()).map_err(|_| "p-256")?;
        let ec_public = aws_lc_rs::signature::KeyPair::public_key(&ec_pair).as_ref().to_vec();
        round_trip(
            Algorithm::ES256,
            &EncodingKey::from_ec_der(ec.as_ref()),
            &DecodingKey::from_ec_der(&ec_public),
        )
    });
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AuthInitError::SelfTest(e)),
        Err(_) => {
            Err(AuthInitError::SelfTest("the JWT crypto backend panicked (none or two selected?)".into()))
        }
    }
}

fn round_trip(alg: Algorithm, sign: &EncodingKey, verify: &DecodingKey) -> Result<(), String> {
    // A signature check only: the system clock is as good as any.
    let exp = SystemClock.now().as_second() + 60;
    let claims = json!({"sub": "self-test", "aud": "self-test", "exp": exp});
    let token =
        jsonwebtoken::encode(&Header::new(alg), &claims, sign).map_err(|e| format!("{alg:?} sign: {e}"))?;
    let mut validation = Validation::new(alg);
    validation.set_audience(&["self-test"]);
    jsonwebtoken::decode::<serde_json::Value>(&token, verify, &validation)
        .map_err(|e| format!("{alg:?} verify: {e}"))?;
    // Flip one bit of the signature's first byte: a backend that accepts this verifies nothing.
    let (message, signature) = token.rsplit_once('.').ok_or("no signature")?;
    let mut bytes = signature.as_bytes().to_vec();
    bytes[0] = if bytes[0] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{message}.{}", String::from_utf8_lossy(&bytes));
    match jsonwebtoken::decode::<serde_json::Value>(&tampered, verify, &validation) {
        Ok(_) => Err(format!("{alg:?} accepted a tampered signature")),
        Err(_) => Ok(()),
    }
}
