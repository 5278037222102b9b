//! The gateway's session cookie on the wire: the `Set-Cookie` it sends after a ticket exchange
//! (HttpOnly, Secure, SameSite=Strict, scoped to `/connect/<id>/`), reading it from `Cookie`
//! headers, and keeping it away from the workstation, which is treated as hostile: it never
//! sees the cookie, and cannot set one of that name. The value itself is a signed grant (`ticket`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

use crate::domain::SessionId;

/// Name of the cookie. One per session, told apart by its path.
pub const COOKIE_NAME: &str = "cadbroker_connect";
/// Cookies of the broker that a workstation must never see or set: the gateway's own and the
/// web portal's sign-in (whose `Path=/` covers `/connect/` too).
const BROKER_COOKIES: [&str; 3] =
    [COOKIE_NAME, crate::portal::sessions::PORTAL_COOKIE, crate::portal::sessions::LOGIN_COOKIE];

/// The `Set-Cookie` value for `grant` on `session`, living `ttl`.
pub fn set_cookie(grant: &str, session: &SessionId, ttl: Duration) -> HeaderValue {
    let value = format!(
        "{COOKIE_NAME}={grant}; Path=/connect/{session}/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        ttl.as_secs()
    );
    // Grants are base64url and dots, session ids are checked by the router: always valid.
    HeaderValue::from_str(&value).expect("cookie is a valid header value")
}

/// Every value of our cookie in the request's `Cookie` headers (a browser may send several
/// when paths overlap).
pub fn values(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim_matches('"'))
        .collect()
}

/// Removes the broker's cookies from the `Cookie` headers before they go to the workstation.
pub fn strip_request(headers: &mut HeaderMap) {
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split_once('=').is_none_or(|(name, _)| !BROKER_COOKIES.contains(&name))
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Drops any `Set-Cookie` of our name from the workstation's answer, so a desktop cannot
/// overwrite (or plant) the gateway cookie of this or another session.
pub fn strip_response(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            text.split_once('=').is_none_or(|(name, _)| !BROKER_COOKIES.contains(&name.trim()))
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_scoped_to_its_session() {
        let value = set_cookie("abc.def", &SessionId::from("s1"), Duration::from_secs(3600));
        assert_eq!(
            value,
            "cadbroker_connect=abc.def; Path=/connect/s1/; Max-Age=3600; HttpOnly; Secure; SameSite=Strict"
        );
    }

    #[test]
    fn our_cookie_is_read_and_never_forwarded() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; cadbroker_connect=x.y; b=2; cadbroker_portal=p"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("cadbroker_connect=\"z.w\""));
        assert_eq!(values(&headers), ["x.y", "z.w"]);
        strip_request(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("cadbroker_connect=x.y"));
        strip_request(&mut only_ours);
        assert!(only_ours.get(header::COOKIE).is_none());
    }

    #[test]
    fn a_desktop_cannot_set_our_cookie() {
        let mut headers = HeaderMap::new();
        headers.append(header::SET_COOKIE, HeaderValue::from_static("cadbroker_connect=evil; Path=/"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("novnc=1; Path=/"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("cadbroker_portal=evil; Path=/"));
        strip_response(&mut headers);
        assert_eq!(headers.get_all(header::SET_COOKIE).iter().collect::<Vec<_>>(), ["novnc=1; Path=/"]);
    }
}
