//! A short-lived cache of tokens that passed every check, keyed by the SHA-256 of the whole
//! token, so that a client sending the same token on every request pays for one signature
//! verification per [`VERIFIED_TTL`], not one per request. Only successes are cached; an entry
//! never outlives the token's `exp` (or `iat` + `maxTokenAge`). A signing key removed from an
//! issuer's JWKS stops admitting tokens within `VERIFIED_TTL`.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use aws_lc_rs::digest::{SHA256, digest};
use jiff::Timestamp;

use super::Principal;

/// How long a verified token is trusted without verifying it again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(30);
/// Most entries kept; past this, expired entries are dropped, then everything.
const MAX_ENTRIES: usize = 50_000;

type Digest = [u8; 32];

/// Verified tokens and until when each may be trusted.
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Digest, Entry>>,
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    /// When the full check passed; an earlier `now` (a clock stepped back) misses.
    verified_at: Timestamp,
    until: Timestamp,
    /// The issuers' key generation when verified: any key-set change (a key retired) misses.
    generation: u64,
}

fn key(token: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

impl VerifiedTokens {
    /// The principal of `token` if it was verified recently and is still within its limits.
    pub fn get(&self, token: &str, now: Timestamp, generation: u64) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(&key(token))?;
        let fresh = entry.generation == generation && entry.verified_at <= now && now < entry.until;
        fresh.then(|| entry.principal.clone())
    }

    /// Remembers a verified token until `until` (already bounded by its own limits) or
    /// `now + VERIFIED_TTL`, whichever comes first.
    pub fn put(&self, token: &str, principal: &Principal, until: Timestamp, now: Timestamp, generation: u64) {
        let ttl_end = crate::domain::time::after(now, VERIFIED_TTL);
        let until = until.min(ttl_end);
        if until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries
            .insert(key(token), Entry { principal: principal.clone(), verified_at: now, until, generation });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn principal() -> Principal {
        Principal {
            issuer_name: "dev".into(),
            issuer: "https://cadbroker.invalid/dev".into(),
            subject: "alice".into(),
            user: UserId::from("https://cadbroker.invalid/dev#alice"),
            name: None,
            tenant: None,
            groups: None,
            roles: Default::default(),
            admin: false,
            expires_at: Timestamp::from_second(2_000_000_000).unwrap(),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_900_000_000 + s).unwrap()
    }

    #[test]
    fn an_entry_lives_at_most_the_ttl_and_never_past_the_token_expiry() {
        let cache = VerifiedTokens::default();
        cache.put("tok", &principal(), t(10), t(0), 1);
        assert!(cache.get("tok", t(9), 1).is_some());
        assert!(cache.get("tok", t(-1), 1).is_none(), "a clock stepped back checks in full");
        assert!(cache.get("tok", t(1), 2).is_none(), "a changed key set checks in full");
        assert!(cache.get("tok", t(10), 1).is_none(), "not past exp");
        cache.put("long", &principal(), t(3600), t(0), 1);
        assert!(cache.get("long", t(29), 1).is_some());
        assert!(cache.get("long", t(30), 1).is_none(), "not past the TTL");
    }

    #[test]
    fn only_the_exact_token_hits() {
        let cache = VerifiedTokens::default();
        cache.put("header.claims.sig", &principal(), t(100), t(0), 1);
        assert!(cache.get("header.claims.sig2", t(1), 1).is_none());
        assert!(cache.get("header.claims.si", t(1), 1).is_none());
    }
}
