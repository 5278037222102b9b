//! Pure checks on the claims of a token whose signature has been verified: times against an
//! injected `now`, audience, scopes, tenant, and the typed reading of identity, group and role
//! claims. Numbers must be JSON numbers (SECURITY.md A14: `"exp": "99999999999"` is rejected, not
//! skipped). No IO, no clock.

use std::{collections::BTreeSet, time::Duration};

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::error::{AuthError, Invalid};
use crate::domain::UserId;

type Claims = Map<String, Value>;

/// Latest NumericDate accepted (9999-12-31T23:59:59Z); anything beyond is a forged value.
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;
/// Longest user-key claim value.
const MAX_ID_LEN: usize = 1024;

/// The time rules of the `[auth]` section, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeRules {
    pub leeway: i64,
    pub max_age: Option<i64>,
}

impl TimeRules {
    pub(crate) fn new(leeway: Duration, max_age: Option<Duration>) -> Self {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self { leeway: secs(leeway), max_age: max_age.map(secs) }
    }
}

/// A required claim that must be a string.
pub(crate) fn required_str<'a>(claims: &'a Claims, name: &str) -> Result<&'a str, AuthError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(Invalid::Claims.into()),
    }
}

/// A NumericDate claim: absent is `None`, anything but a number in range is an error.
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<i64>, AuthError> {
    let Some(value) = claims.get(name) else { return Ok(None) };
    let Value::Number(n) = value else { return Err(Invalid::Claims.into()) };
    let secs = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i,
        // RFC 7519 allows fractions; the checks below work in whole seconds.
        (None, Some(f)) if f.is_finite() && f.abs() <= MAX_NUMERIC_DATE as f64 => f.floor() as i64,
        _ => return Err(Invalid::Claims.into()),
    };
    if (0..=MAX_NUMERIC_DATE).contains(&secs) { Ok(Some(secs)) } else { Err(Invalid::Claims.into()) }
}

/// Checks `exp`, `nbf` (both required), `iat` and the maximum age; returns `exp`.
///
/// Accepted iff `now < exp + leeway`, `now >= nbf - leeway`, `iat <= now + leeway` and, with a
/// maximum age, `now < iat + max_age + leeway`. `exp` is exclusive (RFC 7519 §4.1.4: the token
/// must not be accepted "on or after" it); `nbf` is inclusive (§4.1.5).
pub(crate) fn check_times(claims: &Claims, now: Timestamp, rules: TimeRules) -> Result<i64, AuthError> {
    let now = now.as_second();
    let exp = numeric_date(claims, "exp")?.ok_or(Invalid::Claims)?;
    let nbf = numeric_date(claims, "nbf")?.ok_or(Invalid::Claims)?;
    let iat = numeric_date(claims, "iat")?;
    if now >= exp.saturating_add(rules.leeway) {
        return Err(AuthError::Expired);
    }
    if now < nbf.saturating_sub(rules.leeway) {
        return Err(AuthError::NotYetValid);
    }
    if let Some(iat) = iat
        && iat > now.saturating_add(rules.leeway)
    {
        return Err(AuthError::NotYetValid);
    }
    if let Some(max_age) = rules.max_age {
        // Without iat the age is unknown: a policy that limits age must not guess.
        let iat = iat.ok_or(Invalid::Claims)?;
        if now >= iat.saturating_add(max_age).saturating_add(rules.leeway) {
            return Err(AuthError::Expired);
        }
    }
    Ok(exp)
}

/// `aud` must be present and name one of `accepted`; with `exclusive`, only ours.
pub(crate) fn check_audience(claims: &Claims, accepted: &[String], exclusive: bool) -> Result<(), AuthError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) if !many.is_empty() => {
            many.iter().map(|v| v.as_str().ok_or(AuthError::Audience)).collect::<Result<_, _>>()?
        }
        _ => return Err(AuthError::Audience),
    };
    let ours = |aud: &&str| accepted.iter().any(|a| a == aud);
    let ok = if exclusive { audiences.iter().all(ours) } else { audiences.iter().any(ours) };
    if ok { Ok(()) } else { Err(AuthError::Audience) }
}

/// With required scopes, `scp` (space-separated string or list) or `scope` must hold one of them.
pub(crate) fn check_scopes(claims: &Claims, required: &[String]) -> Result<(), AuthError> {
    if required.is_empty() {
        return Ok(());
    }
    let granted: Vec<&str> = ["scp", "scope"]
        .iter()
        .filter_map(|name| claims.get(*name))
        .flat_map(|value| match value {
            Value::String(s) => s.split(' ').collect::<Vec<_>>(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    if required.iter().any(|r| granted.contains(&r.as_str())) { Ok(()) } else { Err(AuthError::Scope) }
}

/// A claim by name, or by dotted path (`realm_access.roles`) when no claim has the literal name.
pub(crate) fn lookup<'a>(claims: &'a Claims, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |value, part| value.as_object()?.get(part))
    })
}

/// A list-of-strings claim: `None` if absent (groups: unknown), an error if of another type.
pub(crate) fn string_set(claims: &Claims, name: &str) -> Result<Option<BTreeSet<String>>, AuthError> {
    match lookup(claims, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(Invalid::Claims.into()))
            .collect::<Result<BTreeSet<_>, AuthError>>()
            .map(Some),
        Some(_) => Err(Invalid::Claims.into()),
    }
}

/// The stable user key (SECURITY.md A20: never from `email` or `preferred_username`).
///
/// - `userClaims = ["sub"]` (default): `"{iss}#{sub}"`; subjects are only unique per issuer.
/// - claims including `tid`: `"tid:{tid}/oid:{oid}"`, independent of the issuer URL, so Entra v1
///   and v2 tokens of one user map to one key.
/// - other claims: `"{iss}#"` followed by the `claim:value` pairs.
///
/// Values must be non-empty strings without `/` (and, for all but the last, without `#`), so
/// the key cannot be forged by a value that imitates the separators.
pub(crate) fn user_key(claims: &Claims, iss: &str, user_claims: &[String]) -> Result<UserId, AuthError> {
    if let [only] = user_claims
        && only == "sub"
    {
        let sub = required_str(claims, "sub")?;
        check_id(sub)?;
        return Ok(UserId(format!("{iss}#{sub}")));
    }
    let mut parts = Vec::with_capacity(user_claims.len());
    for name in user_claims {
        let value = required_str(claims, name)?;
        check_id(value)?;
        if value.contains('/') || value.contains('#') {
            return Err(Invalid::Claims.into());
        }
        parts.push(format!("{name}:{value}"));
    }
    let joined = parts.join("/");
    if user_claims.iter().any(|c| c == "tid") {
        Ok(UserId(joined))
    } else {
        Ok(UserId(format!("{iss}#{joined}")))
    }
}

fn check_id(value: &str) -> Result<(), AuthError> {
    if value.len() <= MAX_ID_LEN && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Invalid::Claims.into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const T: i64 = 1_700_000_000;
    const RULES: TimeRules = TimeRules { leeway: 30, max_age: None };

    #[test]
    fn exp_is_exclusive_and_nbf_inclusive_within_leeway() {
        let c = claims(json!({"exp": T, "nbf": T - 100}));
        assert!(check_times(&c, at(T + 29), RULES).is_ok());
        assert_eq!(check_times(&c, at(T + 30), RULES), Err(AuthError::Expired));
        let c = claims(json!({"exp": T + 100, "nbf": T}));
        assert!(check_times(&c, at(T - 30), RULES).is_ok());
        assert_eq!(check_times(&c, at(T - 31), RULES), Err(AuthError::NotYetValid));
    }

    #[test]
    fn fractional_dates_are_floored_and_strings_rejected() {
        let c = claims(json!({"exp": T as f64 + 0.9, "nbf": T - 10}));
        assert_eq!(check_times(&c, at(T), RULES), Ok(T));
        let c = claims(json!({"exp": T.to_string(), "nbf": T - 10}));
        assert_eq!(check_times(&c, at(T), RULES), Err(Invalid::Claims.into()));
    }

    #[test]
    fn absurd_dates_are_rejected() {
        for exp in [json!(-1), json!(1e300), json!(u64::MAX), json!(true), json!(null)] {
            let c = claims(json!({"exp": exp, "nbf": 0}));
            assert_eq!(check_times(&c, at(T), RULES), Err(Invalid::Claims.into()), "{exp}");
        }
    }

    #[test]
    fn audience_array_must_be_strings() {
        let c = claims(json!({"aud": ["a", 1]}));
        assert_eq!(check_audience(&c, &["a".into()], false), Err(AuthError::Audience));
        let c = claims(json!({"aud": []}));
        assert_eq!(check_audience(&c, &["a".into()], false), Err(AuthError::Audience));
    }

    #[test]
    fn scopes_are_read_from_scp_string_scp_list_or_scope() {
        let required = vec!["access_as_user".to_owned()];
        for c in [
            json!({"scp": "openid access_as_user"}),
            json!({"scp": ["access_as_user"]}),
            json!({"scope": "access_as_user profile"}),
        ] {
            assert!(check_scopes(&claims(c), &required).is_ok());
        }
        assert_eq!(
            check_scopes(&claims(json!({"scp": "access_as_user2"})), &required),
            Err(AuthError::Scope)
        );
    }

    #[test]
    fn dotted_claim_paths_are_followed_when_no_literal_claim_exists() {
        let c = claims(json!({"realm_access": {"roles": ["r"]}, "https://x.io/roles": ["literal"]}));
        assert_eq!(string_set(&c, "realm_access.roles").unwrap(), Some(BTreeSet::from(["r".to_owned()])));
        assert_eq!(
            string_set(&c, "https://x.io/roles").unwrap(),
            Some(BTreeSet::from(["literal".to_owned()]))
        );
        assert_eq!(string_set(&c, "missing.path").unwrap(), None);
    }

    #[test]
    fn user_key_with_tid_is_independent_of_the_issuer_url() {
        let c = claims(json!({"tid": "t", "oid": "o", "sub": "s"}));
        let claims_list = ["tid".to_owned(), "oid".to_owned()];
        let v1 = user_key(&c, "https://sts.windows.net/t/", &claims_list).unwrap();
        let v2 = user_key(&c, "https://login.microsoftonline.com/t/v2.0", &claims_list).unwrap();
        assert_eq!(v1, v2);
        assert_eq!(v1.as_str(), "tid:t/oid:o");
    }

    #[test]
    fn user_key_values_cannot_imitate_separators() {
        let c = claims(json!({"tid": "t/oid:x", "oid": "o"}));
        assert!(user_key(&c, "i", &["tid".to_owned(), "oid".to_owned()]).is_err());
        let c = claims(json!({"sub": "a\u{0}b"}));
        assert!(user_key(&c, "i", &["sub".to_owned()]).is_err());
    }
}
