//! Structural checks on a compact JWS before any key is looked up: the length cap, exactly three
//! strict base64url segments, strict JSON objects, and the header rules that hold for every
//! issuer (no `alg: none`, no `jku`/`x5u`/`jwk`/`crit`/`cty`/JWE parameters, an accepted `typ`, a
//! sane `kid`). Nothing here trusts the content: it only decides whether to look further.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value};

use super::{
    error::{AuthError, Invalid},
    strict_json::{self, StrictError},
};

/// `typ` of the broker's own connect tickets, should they ever be JWTs. An API token with this
/// type is rejected, so a ticket can never be replayed as an API token (RFC 8725 §3.11).
pub const CONNECT_TICKET_TYP: &str = "cadbroker-connect+jwt";

/// Header parameters that are refused outright. `jku`/`x5u` would make us fetch keys the token
/// names (SSRF, attacker keys), `jwk` embeds an attacker key, `crit` names extensions we do not
/// understand (RFC 7515 §4.1.11), `cty` announces a nested token, the rest belong to JWE.
const FORBIDDEN_HEADERS: &[&str] = &[
    "jku", "x5u", "jwk", "crit", "cty", "b64", "enc", "zip", "epk", "apu", "apv", "p2c", "p2s", "iv", "tag",
];

/// Longest accepted `kid`; Entra's are 27 characters, thumbprints 43.
const MAX_KID_LEN: usize = 256;
/// Longest decoded signature: an RSA-8192 signature is 1024 bytes.
const MAX_SIGNATURE_BYTES: usize = 1024;

/// The parts of a token that passed the structural checks.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// `alg` from the header (only compared against the issuer's pinned list).
    pub alg: String,
    /// `kid` from the header.
    pub kid: Option<String>,
    /// The claims, parsed strictly.
    pub claims: Map<String, Value>,
}

/// Runs every check that needs no key: see the module docs.
pub(crate) fn parse(token: &str, max_bytes: usize) -> Result<Parsed, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    // The cap comes first: nothing of an oversized token is decoded (SECURITY.md A24).
    if token.len() > max_bytes {
        return Err(AuthError::TooLarge { limit: max_bytes });
    }
    if !token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(Invalid::Malformed.into());
    }
    let segments: Vec<&str> = token.split('.').collect();
    match segments.len() {
        3 => {}
        5 => return Err(Invalid::Encrypted.into()),
        _ => return Err(Invalid::Malformed.into()),
    }
    let (header_b64, payload_b64, signature) = (segments[0], segments[1], segments[2]);
    let header = decode_object(header_b64)?;
    let (alg, kid) = check_header(&header)?;
    if signature.is_empty() {
        return Err(Invalid::Unsigned.into());
    }
    let signature_bytes = URL_SAFE_NO_PAD.decode(signature).map_err(|_| Invalid::Malformed)?;
    if signature_bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(Invalid::Signature.into());
    }
    let claims = decode_object(payload_b64)?;
    Ok(Parsed { alg, kid, claims })
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    // URL_SAFE_NO_PAD rejects padding, the standard alphabet and non-canonical trailing bits.
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| Invalid::Malformed)?;
    strict_json::parse_object(&bytes).map_err(|e| match e {
        StrictError::Duplicate => Invalid::DuplicateMember.into(),
        StrictError::Syntax => Invalid::Malformed.into(),
    })
}

fn check_header(header: &Map<String, Value>) -> Result<(String, Option<String>), AuthError> {
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(Invalid::Malformed.into()),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(Invalid::Unsigned.into());
    }
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err(Invalid::ForbiddenHeader.into());
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if is_accepted_typ(typ) => {}
        Some(_) => return Err(Invalid::TokenType.into()),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if is_sane_kid(kid) => Some(kid.clone()),
        Some(_) => return Err(Invalid::KeyId.into()),
    };
    Ok((alg, kid))
}

/// `JWT` (RFC 7519) or `at+jwt` (RFC 9068), with or without `application/`, in any case
/// (RFC 7515 §4.1.9). Everything else, our connect tickets included, is another kind of token.
fn is_accepted_typ(typ: &str) -> bool {
    let lower = typ.to_ascii_lowercase();
    let bare = lower.strip_prefix("application/").unwrap_or(&lower);
    bare == "jwt" || bare == "at+jwt"
}

/// A `kid` is only ever a map key, but one that cannot be a path, a query or a flood of bytes
/// is also one that no later change can misuse (SECURITY.md A7).
fn is_sane_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && kid.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    fn invalid(token: &str) -> Invalid {
        match parse(token, 16 * 1024) {
            Err(AuthError::Invalid(reason)) => reason,
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    #[test]
    fn well_formed_token_yields_alg_kid_and_claims() {
        let t = token(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, r#"{"sub":"a"}"#);
        let parsed = parse(&t, 16 * 1024).unwrap();
        assert_eq!(parsed.alg, "RS256");
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "a");
    }

    #[test]
    fn length_cap_is_checked_before_anything_else() {
        let junk = "!".repeat(2000);
        assert_eq!(parse(&junk, 1024).unwrap_err(), AuthError::TooLarge { limit: 1024 });
    }

    #[test]
    fn empty_token_is_missing() {
        assert_eq!(parse("", 1024).unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn typ_values_accept_jwt_and_access_token_types_only() {
        for ok in ["JWT", "jwt", "at+jwt", "application/at+JWT", "application/jwt"] {
            assert!(is_accepted_typ(ok), "{ok}");
        }
        for bad in [CONNECT_TICKET_TYP, "JOSE", "id_token+jwt", "logout+jwt", "dpop+jwt", ""] {
            assert!(!is_accepted_typ(bad), "{bad}");
        }
    }

    #[test]
    fn non_string_typ_or_kid_is_rejected() {
        assert_eq!(invalid(&token(r#"{"alg":"RS256","typ":1}"#, "{}")), Invalid::TokenType);
        assert_eq!(invalid(&token(r#"{"alg":"RS256","kid":["a"]}"#, "{}")), Invalid::KeyId);
    }

    #[test]
    fn missing_alg_is_malformed() {
        assert_eq!(invalid(&token(r#"{"typ":"JWT"}"#, "{}")), Invalid::Malformed);
    }

    #[test]
    fn padded_or_standard_alphabet_base64_is_malformed() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        assert_eq!(invalid(&format!("{header}=.e30.c2ln")), Invalid::Malformed);
        assert_eq!(invalid(&format!("{header}.e30+.c2ln")), Invalid::Malformed);
    }
}
