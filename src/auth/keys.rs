//! Verification keys: turning JWKS entries into keys (public RSA ≥ 2048 bits, P-256, P-384 and
//! Ed25519 only; never symmetric), a key set indexed by `kid`, and the rule deciding whether a key
//! fits an algorithm. The key set is only ever indexed by `kid`: no path, URL or query is built
//! from it.

use std::{collections::HashMap, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::config::TENANT_PLACEHOLDER;

const MIN_RSA_MODULUS_BYTES: usize = 256;
const MAX_RSA_MODULUS_BYTES: usize = 1024;
/// More keys than this in one JWKS is not a key set but an attack on memory.
pub(crate) const MAX_JWKS_KEYS: usize = 100;

/// The curve or key type, which decides the algorithms a key may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// One public verification key.
pub(crate) struct VerifyKey {
    /// The key's `kid`, if it has one.
    pub kid: Option<String>,
    key: DecodingKey,
    key_type: KeyType,
    /// The JWK's own `alg`, if it pins one.
    alg: Option<Algorithm>,
    /// Entra's per-key `issuer` (possibly with `{tenantid}`): the key only signs for it.
    issuer: Option<String>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("type", &self.key_type).finish()
    }
}

impl VerifyKey {
    /// An Ed25519 key from its 32 raw public bytes (the development issuer).
    pub(crate) fn ed25519(kid: String, public: &[u8]) -> Self {
        Self {
            kid: Some(kid),
            key: DecodingKey::from_ed_der(public),
            key_type: KeyType::Ed25519,
            alg: Some(Algorithm::EdDSA),
            issuer: None,
        }
    }

    /// The decoding key for `jsonwebtoken`.
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Whether this key may verify `alg`: same family, matching curve, and the JWK's own `alg`
    /// if it names one. Guards against algorithm confusion (SECURITY.md A2) independently of the
    /// issuer's pinned list.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        let type_fits = match self.key_type {
            KeyType::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyType::P256 => alg == Algorithm::ES256,
            KeyType::P384 => alg == Algorithm::ES384,
            KeyType::Ed25519 => alg == Algorithm::EdDSA,
        };
        type_fits && self.alg.is_none_or(|pinned| pinned == alg)
    }

    /// Whether the key's own `issuer` (Entra multi-tenant key sets) admits `iss` for `tid`.
    pub(crate) fn admits_issuer(&self, iss: &str, tid: Option<&str>) -> bool {
        match &self.issuer {
            None => true,
            Some(key_iss) if key_iss.contains(TENANT_PLACEHOLDER) => {
                tid.is_some_and(|tid| key_iss.replace(TENANT_PLACEHOLDER, tid) == iss)
            }
            Some(key_iss) => key_iss == iss,
        }
    }
}

/// An issuer's keys, by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    unnamed: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// A set of the given keys; a repeated `kid` keeps the first.
    pub(crate) fn new(keys: impl IntoIterator<Item = VerifyKey>) -> Self {
        let mut set = Self::default();
        for key in keys {
            match key.kid.clone() {
                Some(kid) => {
                    set.by_kid.entry(kid).or_insert_with(|| Arc::new(key));
                }
                None => set.unnamed.push(Arc::new(key)),
            }
        }
        set
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// Whether there are no keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for a token: by `kid` when the token names one (whether it fits `alg` is checked
    /// later, so a misfit is reported as an algorithm error); without a `kid`, the single key
    /// that fits `alg`, if there is exactly one.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => {
                let mut fitting = self.by_kid.values().chain(&self.unnamed).filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }
}

/// The JWK members we read; everything else (`x5c`, `x5t`, …) is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    issuer: Option<String>,
}

/// Parses a JWKS document's `keys`, keeping the usable signature keys whose `alg` (if any) is
/// pinned for the issuer. Returns the keys and how many entries were skipped.
pub(crate) fn parse_jwks(doc: &Value, pinned: &[Algorithm]) -> Result<(KeySet, usize), String> {
    let entries = doc.get("keys").and_then(Value::as_array).ok_or("the JWKS has no keys array")?;
    if entries.len() > MAX_JWKS_KEYS {
        return Err(format!("the JWKS has {} keys, more than {MAX_JWKS_KEYS}", entries.len()));
    }
    let mut keys = Vec::new();
    let mut skipped = 0;
    for entry in entries {
        match parse_jwk(entry, pinned) {
            Some(key) => keys.push(key),
            None => skipped += 1,
        }
    }
    Ok((KeySet::new(keys), skipped))
}

fn parse_jwk(entry: &Value, pinned: &[Algorithm]) -> Option<VerifyKey> {
    let raw = RawJwk::deserialize(entry).ok()?;
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if raw.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify")) {
        return None;
    }
    let alg = match &raw.alg {
        None => None,
        Some(name) => Some(name.parse::<Algorithm>().ok().filter(|a| pinned.contains(a))?),
    };
    let (key, key_type) = match raw.kty.as_str() {
        "RSA" => (rsa_key(raw.n.as_deref()?, raw.e.as_deref()?)?, KeyType::Rsa),
        "EC" => ec_key(raw.crv.as_deref()?, raw.x.as_deref()?, raw.y.as_deref()?)?,
        "OKP" if raw.crv.as_deref() == Some("Ed25519") => {
            let x = b64(raw.x.as_deref()?, 32..=32)?;
            (DecodingKey::from_ed_der(&x), KeyType::Ed25519)
        }
        // "oct" (a shared secret published as a key) and anything unknown: never.
        _ => return None,
    };
    let key = VerifyKey { kid: raw.kid, key, key_type, alg, issuer: raw.issuer };
    // A key whose own alg contradicts its type is broken; drop it rather than guess.
    alg.is_none_or(|a| key.fits(a)).then_some(key)
}

fn rsa_key(n: &str, e: &str) -> Option<DecodingKey> {
    let n = b64(n, 1..=MAX_RSA_MODULUS_BYTES + 1)?;
    let e = b64(e, 1..=8)?;
    let significant = n.iter().skip_while(|b| **b == 0).count();
    (MIN_RSA_MODULUS_BYTES..=MAX_RSA_MODULUS_BYTES)
        .contains(&significant)
        .then(|| DecodingKey::from_rsa_raw_components(&n, &e))
}

fn ec_key(crv: &str, x: &str, y: &str) -> Option<(DecodingKey, KeyType)> {
    let (len, key_type) = match crv {
        "P-256" => (32, KeyType::P256),
        "P-384" => (48, KeyType::P384),
        _ => return None,
    };
    let x = b64(x, len..=len)?;
    let y = b64(y, len..=len)?;
    let point: Vec<u8> = [&[0x04][..], &x, &y].concat();
    Some((DecodingKey::from_ec_der(&point), key_type))
}

fn b64(value: &str, len: std::ops::RangeInclusive<usize>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value).ok().filter(|bytes| len.contains(&bytes.len()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn n_2048() -> String {
        URL_SAFE_NO_PAD.encode([0xc5u8; 256])
    }

    #[test]
    fn symmetric_and_unknown_keys_are_skipped() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "s"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "k"},
            {"kty": "RSA", "n": n_2048(), "e": "AQAB", "kid": "r", "use": "enc"},
        ]});
        let (set, skipped) = parse_jwks(&doc, &[Algorithm::RS256]).unwrap();
        assert!(set.is_empty());
        assert_eq!(skipped, 3);
    }

    #[test]
    fn rsa_keys_below_2048_bits_are_skipped() {
        let short = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        let doc = json!({"keys": [{"kty": "RSA", "n": short, "e": "AQAB", "kid": "r"}]});
        assert!(parse_jwks(&doc, &[Algorithm::RS256]).unwrap().0.is_empty());
    }

    #[test]
    fn key_alg_outside_the_pinned_list_is_skipped() {
        let doc = json!({"keys": [{"kty": "RSA", "n": n_2048(), "e": "AQAB", "kid": "r", "alg": "PS256"}]});
        assert!(parse_jwks(&doc, &[Algorithm::RS256]).unwrap().0.is_empty());
    }

    #[test]
    fn rsa_key_fits_rsa_algorithms_only() {
        let doc = json!({"keys": [{"kty": "RSA", "n": n_2048(), "e": "AQAB", "kid": "r"}]});
        let (set, _) = parse_jwks(&doc, &[Algorithm::RS256]).unwrap();
        let key = set.find(Some("r"), Algorithm::RS256).unwrap();
        assert!(key.fits(Algorithm::RS256));
        assert!(!key.fits(Algorithm::HS256));
        assert!(!key.fits(Algorithm::ES256));
    }

    #[test]
    fn token_without_kid_uses_the_only_fitting_key() {
        let doc = json!({"keys": [
            {"kty": "RSA", "n": n_2048(), "e": "AQAB", "kid": "a"},
            {"kty": "RSA", "n": n_2048(), "e": "AQAB", "kid": "b"},
        ]});
        let (set, _) = parse_jwks(&doc, &[Algorithm::RS256]).unwrap();
        assert!(set.find(None, Algorithm::RS256).is_none(), "two candidates: refuse to guess");
        assert!(set.find(Some("c"), Algorithm::RS256).is_none());
    }

    #[test]
    fn per_key_issuer_admits_only_its_tenant() {
        let key = VerifyKey {
            issuer: Some("https://login.microsoftonline.com/{tenantid}/v2.0".into()),
            ..VerifyKey::ed25519("k".into(), &[0; 32])
        };
        let iss = "https://login.microsoftonline.com/t1/v2.0";
        assert!(key.admits_issuer(iss, Some("t1")));
        assert!(!key.admits_issuer(iss, Some("t2")));
        assert!(!key.admits_issuer(iss, None));
    }

    #[test]
    fn too_many_keys_is_an_error() {
        let keys: Vec<_> = (0..=MAX_JWKS_KEYS).map(|i| json!({"kty": "RSA", "kid": i.to_string()})).collect();
        assert!(parse_jwks(&json!({"keys": keys}), &[Algorithm::RS256]).is_err());
    }
}
