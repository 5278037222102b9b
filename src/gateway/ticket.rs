//! Connect tickets and session cookies: small signed grants, verifiable by any replica that
//! holds the same key, and the per-replica set of used ticket ids.
//!
//! A grant is `base64url(json claims) "." base64url(HMAC-SHA256(key, first part))`. Claims name
//! their kind (`ticket` or `cookie`, so one can never stand in for the other), the session, the
//! user and the expiry in Unix milliseconds; tickets also carry a random 128-bit id (`jti`).
//! The key is at least 256 random bits (SECURITY.md A33), from `CADBROKER_GATEWAY_KEY`,
//! `gateway.keyFile`, or generated at start.
//!
//! Single use is enforced per replica: each replica remembers the ids it accepted until they
//! expire. With several replicas a ticket could be used once on each within its lifetime
//! (about 60 s); it is still bound to one session and its owner, so only the owner's browser
//! (which received it over the authenticated API) can use it. A shared store (or sticky
//! routing of `/connect/{id}`) would close that gap. Nothing here does IO except [`GatewayKey::load`].

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_lc_rs::{hmac, rand};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::KEY_ENV;
use crate::{
    clock::Clock,
    domain::{SessionId, UserId},
    service::ConnectLinks,
};

/// Shortest key accepted, in bytes (256 bits).
pub const MIN_KEY_BYTES: usize = 32;
/// Longest grant accepted, checked before any decoding.
const MAX_GRANT_BYTES: usize = 2048;

/// Why the gateway's key could not be had.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("failed to read gateway.keyFile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key is not base64 of at least 32 bytes.
    #[error("the gateway key from {origin} must be base64 of at least {MIN_KEY_BYTES} random bytes")]
    Invalid {
        /// Where it came from.
        origin: String,
    },
    /// The system random generator failed.
    #[error("failed to generate a random gateway key")]
    Random,
}

/// The secret that signs tickets and cookies.
#[derive(Clone)]
pub struct GatewayKey(hmac::Key);

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayKey(…)")
    }
}

impl GatewayKey {
    /// A key from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEY_BYTES).then(|| Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// A fresh random 256-bit key.
    pub fn random() -> Result<Self, KeyError> {
        let mut bytes = [0u8; MIN_KEY_BYTES];
        rand::fill(&mut bytes).map_err(|_| KeyError::Random)?;
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// The key from `CADBROKER_GATEWAY_KEY`, else from `file`, else a random one. The second
    /// value says where it came from, for the start-up log.
    pub fn load(file: Option<&Path>) -> Result<(Self, String), KeyError> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            let origin = format!("${KEY_ENV}");
            return Ok((Self::decode(&text).ok_or(KeyError::Invalid { origin: origin.clone() })?, origin));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
            let origin = path.display().to_string();
            return Ok((Self::decode(&text).ok_or(KeyError::Invalid { origin: origin.clone() })?, origin));
        }
        Ok((Self::random()?, "a random key (one replica only)".to_owned()))
    }

    /// Decodes base64 (standard or URL-safe, padded or not) of at least 32 bytes.
    pub fn decode(text: &str) -> Option<Self> {
        let text = text.trim();
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .and_then(|bytes| Self::from_bytes(&bytes))
    }
}

/// What a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantKind {
    /// A single-use ticket in a connect URL.
    Ticket,
    /// The session cookie a ticket is exchanged for.
    Cookie,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    kind: GrantKind,
    sid: String,
    sub: String,
    /// Expiry, Unix milliseconds.
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// A verified grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Kind.
    pub kind: GrantKind,
    /// The session it opens.
    pub session: SessionId,
    /// The user it was issued to.
    pub user: UserId,
    /// Expiry, Unix milliseconds.
    pub expires_ms: i64,
    /// Ticket id (tickets only).
    pub jti: Option<String>,
}

/// Why a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GrantError {
    /// Not a grant of ours, tampered with, or of the wrong kind.
    #[error("not a valid grant")]
    Invalid,
    /// Signed by us but past its expiry.
    #[error("expired")]
    Expired,
}

/// Signs and verifies grants.
#[derive(Debug, Clone)]
pub struct Signer {
    key: GatewayKey,
}

impl Signer {
    /// A signer with `key`.
    pub fn new(key: GatewayKey) -> Self {
        Self { key }
    }

    /// A single-use ticket for `user` to open `session`, valid `ttl` from `now`.
    pub fn mint_ticket(&self, session: &SessionId, user: &UserId, now: Timestamp, ttl: Duration) -> String {
        let mut jti = [0u8; 16];
        // The system generator does not fail on supported platforms; a zero id would only
        // make this ticket collide with another zero-id ticket (refused as used).
        let _ = rand::fill(&mut jti);
        self.sign(&Claims {
            kind: GrantKind::Ticket,
            sid: session.to_string(),
            sub: user.to_string(),
            exp: expiry(now, ttl),
            jti: Some(URL_SAFE_NO_PAD.encode(jti)),
        })
    }

    /// A cookie value for `user` on `session`, valid `ttl` from `now`.
    pub fn mint_cookie(&self, session: &SessionId, user: &UserId, now: Timestamp, ttl: Duration) -> String {
        self.sign(&Claims {
            kind: GrantKind::Cookie,
            sid: session.to_string(),
            sub: user.to_string(),
            exp: expiry(now, ttl),
            jti: None,
        })
    }

    fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).expect("claims serialise");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.key.0, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies `grant` as a `kind` at `now`: signature first, then kind, then expiry.
    pub fn verify(&self, grant: &str, kind: GrantKind, now: Timestamp) -> Result<Grant, GrantError> {
        if grant.len() > MAX_GRANT_BYTES {
            return Err(GrantError::Invalid);
        }
        let (payload, tag) = grant.split_once('.').ok_or(GrantError::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| GrantError::Invalid)?;
        hmac::verify(&self.key.0, payload.as_bytes(), &tag).map_err(|_| GrantError::Invalid)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| GrantError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| GrantError::Invalid)?;
        if claims.kind != kind || (kind == GrantKind::Ticket) != claims.jti.is_some() {
            return Err(GrantError::Invalid);
        }
        if now.as_millisecond() >= claims.exp {
            return Err(GrantError::Expired);
        }
        Ok(Grant {
            kind,
            session: SessionId(claims.sid),
            user: UserId(claims.sub),
            expires_ms: claims.exp,
            jti: claims.jti,
        })
    }
}

fn expiry(now: Timestamp, ttl: Duration) -> i64 {
    now.as_millisecond().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// Ticket ids this replica has accepted, each kept until its ticket expires.
#[derive(Debug, Default)]
pub struct UsedTickets {
    inner: Mutex<UsedInner>,
}

#[derive(Debug, Default)]
struct UsedInner {
    seen: HashMap<String, i64>,
    next_prune_ms: i64,
}

impl UsedTickets {
    /// Records `grant`'s id; `false` when it was used before.
    pub fn consume(&self, grant: &Grant, now: Timestamp) -> bool {
        let Some(jti) = &grant.jti else { return false };
        let now_ms = now.as_millisecond();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Expired tickets fail verification anyway, so their ids can go (at most once a second).
        if now_ms >= inner.next_prune_ms {
            inner.seen.retain(|_, exp| *exp > now_ms);
            inner.next_prune_ms = now_ms + 1000;
        }
        inner.seen.insert(jti.clone(), grant.expires_ms).is_none()
    }

    /// How many ids are remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).seen.len()
    }

    /// Whether none are remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cookies this replica has verified, so a desktop's many requests and reconnects cost one
/// signature check, not one each. Only the signature and decoding are skipped: kind, session,
/// user and expiry are checked on every use. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct VerifiedCookies {
    cache: Mutex<HashMap<String, Grant>>,
}

/// Cookies remembered before the cache starts over.
const MAX_VERIFIED_COOKIES: usize = 16_384;

impl VerifiedCookies {
    /// Verifies `cookie` as a cookie grant at `now`, from the cache when it was verified before.
    pub fn verify(&self, signer: &Signer, cookie: &str, now: Timestamp) -> Result<Grant, GrantError> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(cookie).cloned();
        if let Some(grant) = cached {
            return if now.as_millisecond() >= grant.expires_ms {
                Err(GrantError::Expired)
            } else {
                Ok(grant)
            };
        }
        let grant = signer.verify(cookie, GrantKind::Cookie, now)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_VERIFIED_COOKIES {
            cache.clear();
        }
        cache.insert(cookie.to_owned(), grant.clone());
        Ok(grant)
    }
}

/// Builds connect URLs: `<publicUrl>/connect/<session><entry path>?ticket=<ticket>`.
pub struct TicketLinks {
    /// Signs the tickets.
    pub signer: Arc<Signer>,
    /// The broker's public URL, without a trailing slash.
    pub public_url: String,
    /// Ticket lifetime.
    pub ttl: Duration,
    /// Time source.
    pub clock: Arc<dyn Clock>,
}

impl ConnectLinks for TicketLinks {
    fn connect_url(&self, session: &SessionId, user: &UserId, entry_path: &str) -> String {
        let ticket = self.signer.mint_ticket(session, user, self.clock.now(), self.ttl);
        let path = if entry_path.starts_with('/') { entry_path } else { "/" };
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{}/connect/{session}{path}{separator}ticket={ticket}", self.public_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(GatewayKey::from_bytes(&[7; 32]).unwrap())
    }

    fn ids() -> (SessionId, UserId) {
        (SessionId::from("s1"), UserId::from("dev|alice"))
    }

    #[test]
    fn a_ticket_verifies_once_per_replica_until_it_expires() {
        let (s, u) = ids();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ticket = signer().mint_ticket(&s, &u, now, Duration::from_secs(60));
        let grant = signer().verify(&ticket, GrantKind::Ticket, now).unwrap();
        assert_eq!((grant.session, grant.user), (s, u));
        let used = UsedTickets::default();
        let grant = signer().verify(&ticket, GrantKind::Ticket, now).unwrap();
        assert!(used.consume(&grant, now));
        assert!(!used.consume(&grant, now), "a second use is refused");
        let later = now + Duration::from_secs(60);
        assert_eq!(signer().verify(&ticket, GrantKind::Ticket, later), Err(GrantError::Expired));
        used.consume(
            &signer()
                .verify(
                    &signer().mint_ticket(&ids().0, &ids().1, later, Duration::from_secs(5)),
                    GrantKind::Ticket,
                    later,
                )
                .unwrap(),
            later,
        );
        assert_eq!(used.len(), 1, "the expired id was pruned");
    }

    #[test]
    fn tampered_foreign_or_wrong_kind_grants_are_invalid() {
        let (s, u) = ids();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ticket = signer().mint_ticket(&s, &u, now, Duration::from_secs(60));
        let cookie = signer().mint_cookie(&s, &u, now, Duration::from_secs(60));
        assert_eq!(signer().verify(&cookie, GrantKind::Ticket, now), Err(GrantError::Invalid));
        assert_eq!(signer().verify(&ticket, GrantKind::Cookie, now), Err(GrantError::Invalid));
        let other = Signer::new(GatewayKey::from_bytes(&[8; 32]).unwrap());
        assert_eq!(other.verify(&ticket, GrantKind::Ticket, now), Err(GrantError::Invalid));
        let (payload, tag) = ticket.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap().replace("alice", "mallo"),
        );
        assert_eq!(
            signer().verify(&format!("{forged}.{tag}"), GrantKind::Ticket, now),
            Err(GrantError::Invalid)
        );
        for junk in ["", ".", "a.b", &"x".repeat(4096)] {
            assert_eq!(signer().verify(junk, GrantKind::Ticket, now), Err(GrantError::Invalid));
        }
    }

    #[test]
    fn verified_cookies_are_remembered_but_still_expire() {
        let (s, u) = ids();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let cookie = signer().mint_cookie(&s, &u, now, Duration::from_secs(60));
        let cache = VerifiedCookies::default();
        assert_eq!(cache.verify(&signer(), &cookie, now).unwrap().user, u);
        let other = Signer::new(GatewayKey::from_bytes(&[9; 32]).unwrap());
        assert!(cache.verify(&other, &cookie, now).is_ok(), "served from the cache");
        assert_eq!(cache.verify(&signer(), &cookie, now + Duration::from_secs(60)), Err(GrantError::Expired));
        let ticket = signer().mint_ticket(&s, &u, now, Duration::from_secs(60));
        assert_eq!(cache.verify(&signer(), &ticket, now), Err(GrantError::Invalid), "a ticket is no cookie");
    }

    #[test]
    fn keys_are_at_least_256_bits_of_base64() {
        assert!(GatewayKey::decode(&STANDARD.encode([1u8; 32])).is_some());
        assert!(GatewayKey::decode(&URL_SAFE_NO_PAD.encode([1u8; 48])).is_some());
        assert!(GatewayKey::decode(&STANDARD.encode([1u8; 31])).is_none());
        assert!(GatewayKey::decode("not base64!").is_none());
    }

    #[test]
    fn links_carry_the_entry_path_and_a_ticket() {
        struct Fixed;
        impl Clock for Fixed {
            fn now(&self) -> Timestamp {
                Timestamp::from_second(1_800_000_000).unwrap()
            }
        }
        let links = TicketLinks {
            signer: Arc::new(signer()),
            public_url: "https://cad.example.org".into(),
            ttl: Duration::from_secs(60),
            clock: Arc::new(Fixed),
        };
        let (s, u) = ids();
        let url = links.connect_url(&s, &u, "/");
        assert!(url.starts_with("https://cad.example.org/connect/s1/?ticket="), "{url}");
        let url = links.connect_url(&s, &u, "/vnc.html?autoconnect=1");
        assert!(
            url.starts_with("https://cad.example.org/connect/s1/vnc.html?autoconnect=1&ticket="),
            "{url}"
        );
    }
}
