//! SECURITY.md §1 attacks on token structure, headers and signatures against an OIDC issuer
//! whose discovery document and JWKS are served by a real HTTP server on 127.0.0.1:0, with RSA
//! and EC keys generated at test time: A1–A7, A22 (token types), A23–A26, and the parts of
//! A27/A28 that apply to this layer (the principal exposes `exp` so derived credentials cannot
//! outlive the token; errors never echo tokens, see also `auth_dev_token.rs`).
//!
//! Elsewhere: claims (A16–A22) in `auth_oidc_claims.rs`, time (A11–A15, A31, A32) and the
//! development key (A33) in `auth_dev_token.rs`, the key cache (A8–A10) in `auth_jwks_cache.rs`.
//!
//! Not applicable at this layer: A29/A30 (WebSocket `Origin` checks and authenticating the
//! upgrade belong to the HTTP gateway), the revocation part of A27 (re-checking the IdP at session
//! create and capping session and connect-ticket lifetimes is the session service's job) and the
//! transport part of A28 (connect tickets instead of JWTs in URLs, log scrubbing in middleware).

#[path = "common/jwt.rs"]
mod jwt;

use cadbroker::auth::{AuthError, CONNECT_TICKET_TYP, Invalid};
use jsonwebtoken::Algorithm;
use jwt::{OidcFixture as Fixture, RSA_A, TENANT_A, TestKey, alg_name, b64, forge, hmac_sign};
use serde_json::json;

#[tokio::test]
async fn valid_rs256_access_token_is_accepted() {
    let f = Fixture::new().await;
    let p = f.check(&RSA_A.sign(&f.claims())).await.unwrap();
    assert_eq!(p.issuer_name, "entra");
    assert_eq!(p.subject, "sub-alice");
    assert_eq!(p.user.as_str(), format!("{}#sub-alice", f.iss));
    assert_eq!(p.tenant.as_deref(), Some(TENANT_A));
    assert_eq!(
        p.expires_at.as_second(),
        f.now.as_second() + 3600,
        "A27: exp is exposed to cap derived credentials"
    );
}

#[tokio::test]
async fn tampered_claims_fail_the_signature_check() {
    let f = Fixture::new().await;
    let token = RSA_A.sign(&f.claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = f.claims();
    claims["sub"] = json!("sub-admin");
    parts[1] = b64(claims.to_string());
    f.rejects(&parts.join("."), Invalid::Signature, "claims swapped under a valid signature").await;
}

#[tokio::test]
async fn a1_alg_none_is_rejected_in_any_spelling_and_with_or_without_a_signature() {
    let f = Fixture::new().await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        f.rejects(&forge(&header, &f.claims(), ""), Invalid::Unsigned, alg).await;
        f.rejects(&forge(&header, &f.claims(), &b64("sig")), Invalid::Unsigned, alg).await;
    }
    let stripped = forge(&f.rsa_header(), &f.claims(), "");
    f.rejects(&stripped, Invalid::Unsigned, "RS256 header, empty signature").await;
}

#[tokio::test]
async fn a2_hs256_signed_with_the_rsa_public_key_is_rejected() {
    let f = Fixture::new().await;
    let n = jwt::b64_decode(RSA_A.jwk["n"].as_str().unwrap());
    let secrets: Vec<Vec<u8>> =
        vec![n, RSA_A.jwk.to_string().into_bytes(), RSA_A.jwk["n"].as_str().unwrap().into()];
    for secret in secrets {
        for kid in [Some(RSA_A.kid.as_str()), None] {
            let mut header = json!({"alg": "HS256", "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let token = hmac_sign(Algorithm::HS256, &secret, &header, &f.claims());
            f.rejects(&token, Invalid::Algorithm, "HS256 with the public key as secret").await;
        }
    }
}

#[tokio::test]
async fn a3_psychic_es256_signature_is_rejected() {
    let f = Fixture::with(|i| i.algorithms = vec!["RS256".into(), "ES256".into()]).await;
    assert!(f.check(&f.ec.sign(&f.claims())).await.is_ok(), "a real ES256 token is accepted");
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": f.ec.kid});
    // r = s = 0 in the JOSE (fixed) encoding and in the DER encoding Java accepted.
    for signature in [b64([0u8; 64]), b64([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00])] {
        f.rejects(&forge(&header, &f.claims(), &signature), Invalid::Signature, "r = s = 0").await;
    }
}

#[tokio::test]
async fn a4_algorithms_outside_the_pinned_list_are_rejected() {
    let f = Fixture::new().await;
    let claims = f.claims();
    let raw = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string();
    for alg in [Algorithm::PS256, Algorithm::RS384, Algorithm::RS512] {
        let token = RSA_A.sign_bytes_as(
            alg,
            raw(&alg_name(alg), &RSA_A.kid).as_bytes(),
            claims.to_string().as_bytes(),
        );
        f.rejects(&token, Invalid::Algorithm, &alg_name(alg)).await;
    }
    f.rejects(&f.ec.sign(&claims), Invalid::Algorithm, "ES256 by a published EC key").await;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let header = json!({"alg": alg_name(alg), "kid": RSA_A.kid});
        f.rejects(&hmac_sign(alg, b"secret", &header, &claims), Invalid::Algorithm, &alg_name(alg)).await;
    }
    for alg in ["ES512", "rs256", "EdDSA", "RSA-OAEP", ""] {
        let header = json!({"alg": alg, "kid": RSA_A.kid});
        f.rejects(&forge(&header, &claims, &b64("sig")), Invalid::Algorithm, alg).await;
    }
}

#[tokio::test]
async fn a4_allowed_algorithm_with_a_key_of_another_type_is_rejected() {
    let f = Fixture::with(|i| i.algorithms = vec!["RS256".into(), "ES256".into()]).await;
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": RSA_A.kid});
    let token = f.ec.sign_with_header(&header, &f.claims());
    f.rejects(&token, Invalid::Algorithm, "ES256 naming an RSA kid").await;
}

#[tokio::test]
async fn a5_embedded_jwk_header_is_rejected_even_when_signed_by_a_trusted_key() {
    let f = Fixture::new().await;
    let attacker = TestKey::ec("attacker");
    let header = json!({"alg": "ES256", "typ": "JWT", "jwk": attacker.jwk});
    f.rejects(&attacker.sign_with_header(&header, &f.claims()), Invalid::ForbiddenHeader, "attacker jwk")
        .await;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": RSA_A.kid, "jwk": RSA_A.jwk});
    f.rejects(&RSA_A.sign_with_header(&header, &f.claims()), Invalid::ForbiddenHeader, "own jwk").await;
}

#[tokio::test]
async fn a6_jku_and_x5u_are_rejected_and_never_fetched() {
    let f = Fixture::new().await;
    let hits = f.idp.jwks_hits();
    for member in ["jku", "x5u"] {
        let mut header = f.rsa_header();
        header[member] = json!(f.idp.attacker_url());
        f.rejects(&RSA_A.sign_with_header(&header, &f.claims()), Invalid::ForbiddenHeader, member).await;
    }
    assert_eq!(f.idp.attacker_hits(), 0, "the token's URLs are never fetched");
    assert_eq!(f.idp.jwks_hits(), hits, "nor do they trigger a JWKS refresh");
}

#[tokio::test]
async fn a7_kid_injection_is_only_a_failed_map_lookup() {
    let f = Fixture::new().await;
    let hits = f.idp.jwks_hits();
    let unknown =
        ["../../dev/null", "/etc/passwd", "' OR '1'='1' --", "|cat /etc/shadow", "kid\\u0000", "%2e%2e"];
    for kid in unknown {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        f.rejects(&RSA_A.sign_with_header(&header, &f.claims()), Invalid::UnknownKey, kid).await;
    }
    for kid in ["k".repeat(10 * 1024), "ключ".to_owned(), "tab\tkid".to_owned(), String::new()] {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        f.rejects(&RSA_A.sign_with_header(&header, &f.claims()), Invalid::KeyId, "malformed kid").await;
    }
    assert!(f.idp.jwks_hits() <= hits + 1, "at most one refetch for all of them");
}

#[tokio::test]
async fn a22_token_types_other_than_jwt_and_at_jwt_are_rejected() {
    let f = Fixture::new().await;
    for typ in ["at+jwt", "application/at+jwt", "JWT"] {
        let mut header = f.rsa_header();
        header["typ"] = json!(typ);
        assert!(f.check(&RSA_A.sign_with_header(&header, &f.claims())).await.is_ok(), "{typ}");
    }
    for typ in [CONNECT_TICKET_TYP, "logout+jwt", "secevent+jwt", "JWE"] {
        let mut header = f.rsa_header();
        header["typ"] = json!(typ);
        f.rejects(&RSA_A.sign_with_header(&header, &f.claims()), Invalid::TokenType, typ).await;
    }
}

#[tokio::test]
async fn a23_crit_header_is_rejected() {
    let f = Fixture::new().await;
    for crit in [json!(["exp"]), json!(["b64"]), json!(["urn:unknown:ext"]), json!([])] {
        let mut header = f.rsa_header();
        header["crit"] = crit.clone();
        header["urn:unknown:ext"] = json!("x");
        f.rejects(&RSA_A.sign_with_header(&header, &f.claims()), Invalid::ForbiddenHeader, &crit.to_string())
            .await;
    }
}

#[tokio::test]
async fn a24_oversized_tokens_are_rejected_before_parsing() {
    let f = Fixture::new().await;
    let hits = f.idp.jwks_hits();
    for size in [64 * 1024, 1024 * 1024] {
        let mut header = f.rsa_header();
        header["pad"] = json!("p".repeat(size));
        let token = forge(&header, &f.claims(), &b64("sig"));
        f.rejects(&token, AuthError::TooLarge { limit: 16 * 1024 }, &format!("{size}-byte header")).await;
    }
    // A 21,830-character ES signature (the HAProxy overflow) is over the default cap, too.
    let header = json!({"alg": "ES256", "kid": f.ec.kid});
    let huge_sig = forge(&header, &f.claims(), &"A".repeat(21_830));
    f.rejects(&huge_sig, AuthError::TooLarge { limit: 16 * 1024 }, "huge signature").await;
    // Under the cap, an overlong signature is still refused without reaching the crypto.
    let long_sig = forge(&header, &f.claims(), &"A".repeat(12_000));
    f.rejects(&long_sig, Invalid::Signature, "long signature").await;
    assert_eq!(f.idp.jwks_hits(), hits);
}

#[tokio::test]
async fn a24_configured_cap_of_8_kib_rejects_an_8_kib_header() {
    let f = Fixture::with_config(|_| {}, |c| c.max_token_bytes = 8 * 1024).await;
    let mut header = f.rsa_header();
    header["pad"] = json!("p".repeat(8 * 1024));
    let token = RSA_A.sign_with_header(&header, &f.claims());
    f.rejects(&token, AuthError::TooLarge { limit: 8 * 1024 }, "8 KiB header").await;
    let err = f.check(&token).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("token_too_large", 401));
}

#[tokio::test]
async fn a25_encrypted_tokens_and_jwe_parameters_are_rejected() {
    let f = Fixture::new().await;
    let jwe_header =
        b64(json!({"alg": "PBES2-HS256+A128KW", "enc": "A128GCM", "p2c": 2_000_000_000u64, "zip": "DEF"})
            .to_string());
    let jwe = format!("{jwe_header}.{}.{}.{}.{}", b64("k"), b64("iv"), b64("ct"), b64("tag"));
    f.rejects(&jwe, Invalid::Encrypted, "five segments").await;
    for (member, value) in
        [("zip", json!("DEF")), ("enc", json!("A128GCM")), ("p2c", json!(1_000_000_000u64))]
    {
        let mut header = f.rsa_header();
        header[member] = value;
        f.rejects(&RSA_A.sign_with_header(&header, &f.claims()), Invalid::ForbiddenHeader, member).await;
    }
}

#[tokio::test]
async fn a26_malformed_encodings_and_extra_segments_are_rejected() {
    let f = Fixture::new().await;
    let good = RSA_A.sign(&f.claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let cases = [
        (format!("{h}=.{p}.{s}"), "padding"),
        (format!("{h}.{p}.{s}.{s}"), "four segments"),
        (format!("{h}.{p}"), "two segments"),
        (format!("{h}.{p}.{s}.{s}.{s}.{s}"), "six segments"),
        (format!("{h}.{p}+.{s}"), "standard alphabet"),
        (format!(" {good}"), "leading space"),
        (format!("{h}.{p}\n.{s}"), "newline"),
        (format!("{h}.{p}.{s}!"), "bad signature character"),
        (format!("{}.{p}.{s}", b64("[\"alg\",\"RS256\"]")), "header not an object"),
        (format!("{}.{p}.{s}", b64("{\"alg\":\"RS256\"} trailing")), "trailing data"),
    ];
    for (token, case) in cases {
        f.rejects(&token, Invalid::Malformed, case).await;
    }
    // A non-canonical final base64 character (spare bits set) is not a second spelling.
    let tweaked = format!("{h}.{p}.{}", bump_last_char(s));
    assert!(f.check(&tweaked).await.is_err());
}

fn bump_last_char(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let last = chars.last_mut().unwrap();
    *last = if *last == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn a26_duplicate_json_members_are_rejected_even_when_validly_signed() {
    let f = Fixture::new().await;
    let claims = f.claims().to_string();
    let header = f.rsa_header().to_string();
    let dup_header = format!(r#"{{"alg":"none","alg":"RS256","typ":"JWT","kid":"{}"}}"#, RSA_A.kid);
    f.rejects(&RSA_A.sign_raw(&dup_header, &claims), Invalid::DuplicateMember, "alg twice").await;
    let inner = claims.trim_start_matches('{').trim_end_matches('}');
    for extra in [r#""sub":"sub-admin""#, r#""aud":"api://other""#, r#""exp":1"#] {
        let dup = format!("{{{inner},{extra}}}");
        f.rejects(&RSA_A.sign_raw(&header, &dup), Invalid::DuplicateMember, extra).await;
    }
    let nested = format!(r#"{{{inner},"groups":["a"],"x":{{"k":1,"k":2}}}}"#);
    f.rejects(&RSA_A.sign_raw(&header, &nested), Invalid::DuplicateMember, "nested duplicate").await;
}

#[tokio::test]
async fn a26_non_utf8_claims_are_rejected() {
    let f = Fixture::new().await;
    let mut bytes = f.claims().to_string().into_bytes();
    let at = bytes.iter().position(|b| *b == b'a').unwrap();
    bytes[at] = 0xff;
    let token = RSA_A.sign_bytes_as(Algorithm::RS256, f.rsa_header().to_string().as_bytes(), &bytes);
    f.rejects(&token, Invalid::Malformed, "0xff in the claims").await;
}

#[tokio::test]
async fn errors_carry_stable_codes_and_401_or_503_statuses() {
    let f = Fixture::new().await;
    let err = f.check(&forge(&json!({"alg": "none"}), &f.claims(), "")).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("token_invalid", 401));
    assert!(err.www_authenticate().starts_with("Bearer error=\"invalid_token\""));
    assert_eq!(f.check("").await.unwrap_err().code(), "token_missing");
}
