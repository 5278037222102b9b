//! Request extractors: the authenticated caller (a bearer token, or the web portal's cookie
//! standing for the token it holds, checked by the `Authenticator` in state) and validated
//! headers.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, StatusCode, header, request::Parts},
};

use super::{error::ApiError, state::AppState};
use crate::{auth::AuthError, domain::Caller};

/// The caller, authenticated from `Authorization: Bearer <token>` or, without that header, from
/// the portal's cookie (which needs `X-CSRF-Token` on anything but GET and HEAD).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let portal_token;
        let token = if parts.headers.contains_key(header::AUTHORIZATION) {
            bearer_token(&parts.headers)?
        } else {
            portal_token = state.portal.token_for(&parts.method, &parts.headers).map_err(|e| match e {
                // An unknown or expired portal cookie is the same as no credentials at all.
                crate::portal::PortalError::NotSignedIn => ApiError::from(AuthError::Missing),
                other => ApiError::from(other),
            })?;
            portal_token.as_deref().ok_or_else(|| ApiError::from(AuthError::Missing))?
        };
        let principal = state.auth.authenticate(token).await.map_err(ApiError::from)?;
        Ok(Self(principal.caller()))
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || ApiError::from(AuthError::Missing);
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

/// Longest Idempotency-Key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The optional `Idempotency-Key` header: visible ASCII, at most 255 characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !visible {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}
