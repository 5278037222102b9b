//! The portal's HTTP handlers: static files, what the page needs to know (`config`, `me`) and
//! the sign-in routes. Thin: the flow's rules live in `pkce`, `sessions`, `oidc` and `dev`.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{AppendHeaders, IntoResponse, Redirect, Response},
};
use jiff::Timestamp;
use serde::Serialize;

use super::{
    Portal, PortalError, assets,
    dev::DevLoginBody,
    oidc::id_token_nonce,
    pkce::{AuthorizationRequest, LOGIN_TTL, authorization_url},
    sessions::{self, LOGIN_COOKIE, PORTAL_COOKIE, SignIn},
};
use crate::{
    auth::Principal,
    http::{
        error::{ApiError, ApiJson},
        state::AppState,
    },
};

/// What the page shows about the signed-in person.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// Stable user key.
    pub user: String,
    /// Display name.
    pub name: Option<String>,
    /// Broker admin.
    pub admin: bool,
    /// Groups (`None`: unknown).
    pub groups: Option<Vec<String>>,
    /// The CSRF token to send in `X-CSRF-Token`.
    pub csrf: String,
    /// When the sign-in ends.
    pub expires_at: Timestamp,
}

/// How the page may sign in, and the language the browser prefers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortalInfo {
    /// The development sign-in is offered.
    pub dev_login: bool,
    /// Text of the OpenID Connect button, when that sign-in is configured.
    pub oidc: Option<String>,
    /// `en` or `nl`, from `Accept-Language`.
    pub language: &'static str,
}

/// `GET /` and `GET /portal`: to the portal.
pub async fn to_portal() -> Redirect {
    Redirect::to("/portal/")
}

/// `GET /portal/` and `GET /portal/{file}`.
pub async fn index() -> Response {
    assets::serve("")
}

/// A static file.
pub async fn file(Path(file): Path<String>) -> Response {
    assets::serve(&file)
}

/// `GET /portal/api/config`.
pub async fn info(State(state): State<AppState>, headers: HeaderMap) -> ApiJson<PortalInfo> {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    ApiJson(PortalInfo {
        dev_login: state.portal.dev_login_enabled(),
        oidc: state.portal.oidc.as_ref().map(|o| o.config.display_name.clone()),
        language: super::language(accept),
    })
}

/// `GET /portal/api/me`: the signed-in person, with the CSRF token; 401 when not signed in.
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<ApiJson<Me>, ApiError> {
    let id = sessions::cookie(&headers, PORTAL_COOKIE).ok_or(PortalError::NotSignedIn)?;
    let sign_in = state.portal.sign_ins.get(id, Timestamp::now()).ok_or(PortalError::NotSignedIn)?;
    let principal = state.auth.authenticate(&sign_in.token).await.map_err(|_| PortalError::NotSignedIn)?;
    Ok(ApiJson(me_of(&principal, &sign_in)))
}

fn me_of(principal: &Principal, sign_in: &SignIn) -> Me {
    Me {
        user: principal.user.to_string(),
        name: principal.name.clone(),
        admin: principal.admin,
        groups: principal.groups.as_ref().map(|g| g.iter().cloned().collect()),
        csrf: sign_in.csrf.clone(),
        expires_at: sign_in.expires_at,
    }
}

/// `POST /portal/dev-login`: signs in with a development token (only with a development issuer).
pub async fn dev_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DevLoginBody>,
) -> Result<Response, ApiError> {
    let portal = &state.portal;
    let dev = portal.dev.as_ref().ok_or(PortalError::DevLoginDisabled)?;
    portal.check_origin(&headers)?;
    let token = dev.mint(&body, portal.ttl, Timestamp::now())?;
    let principal = state.auth.authenticate(&token).await?;
    let (cookie, me) = sign_in(portal, token, &principal);
    Ok(([(header::SET_COOKIE, cookie)], ApiJson(me)).into_response())
}

/// Stores a sign-in for `token`; the `Set-Cookie` and what the page shows.
fn sign_in(portal: &Portal, token: String, principal: &Principal) -> (axum::http::HeaderValue, Me) {
    let now = Timestamp::now();
    let left = principal.expires_at.as_second().saturating_sub(now.as_second()).max(0);
    let ttl = portal.ttl.min(Duration::from_secs(u64::try_from(left).unwrap_or(0)));
    let sign_in = SignIn { token, csrf: super::pkce::random_token(), expires_at: now + ttl };
    let id = portal.sign_ins.insert(sign_in.clone(), now);
    (sessions::set_portal_cookie(&id, ttl), me_of(principal, &sign_in))
}

/// `POST /portal/logout`: ends the sign-in (CSRF token required).
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let portal = &state.portal;
    portal.check_origin(&headers)?;
    if let Some(id) = sessions::cookie(&headers, PORTAL_COOKIE) {
        if let Some(sign_in) = portal.sign_ins.get(id, Timestamp::now()) {
            portal.check_csrf(&sign_in, &headers)?;
        }
        portal.sign_ins.remove(id);
    }
    let clear = sessions::clear_cookie(PORTAL_COOKIE, "/");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// `GET /portal/login`: starts the OpenID Connect sign-in.
pub async fn login(State(state): State<AppState>) -> Result<Response, ApiError> {
    let portal = &state.portal;
    let oidc = portal.oidc.as_ref().ok_or(PortalError::OidcNotConfigured)?;
    let endpoints = oidc.endpoints().await?;
    let (login_state, login) = portal.logins.begin(Timestamp::now());
    let url = authorization_url(&AuthorizationRequest {
        endpoint: &endpoints.authorization,
        client_id: &oidc.config.client_id,
        redirect_uri: &portal.redirect_uri(),
        scopes: &oidc.config.scopes,
        state: &login_state,
        login: &login,
    });
    let cookie = sessions::set_login_cookie(&login_state, LOGIN_TTL);
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())], [(header::SET_COOKIE, cookie)])
        .into_response())
}

/// `GET /portal/callback`: the provider sends the browser back here with `code` and `state`.
/// Success and failure both go back to the portal page (failure with `?error=<code>`).
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let clear = sessions::clear_cookie(LOGIN_COOKIE, "/portal/");
    match finish_login(&state, &headers, &query).await {
        Ok(cookie) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/portal/".to_owned())],
            AppendHeaders([(header::SET_COOKIE, cookie), (header::SET_COOKIE, clear)]),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e.message, code = e.code, "portal sign-in failed");
            let location = format!("/portal/?error={}", e.code);
            (StatusCode::SEE_OTHER, [(header::LOCATION, location)], [(header::SET_COOKIE, clear)])
                .into_response()
        }
    }
}

async fn finish_login(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<axum::http::HeaderValue, ApiError> {
    let portal = &state.portal;
    let oidc = portal.oidc.as_ref().ok_or(PortalError::OidcNotConfigured)?;
    if let Some(error) = query.get("error") {
        return Err(PortalError::Provider(format!("the provider refused: {error}")).into());
    }
    let (Some(code), Some(login_state)) = (query.get("code"), query.get("state")) else {
        return Err(PortalError::LoginState("code and state are required").into());
    };
    // The state must be the one this browser was given (login CSRF), and unused.
    if sessions::cookie(headers, LOGIN_COOKIE) != Some(login_state.as_str()) {
        return Err(PortalError::LoginState("it was started in another browser").into());
    }
    let login =
        portal.logins.take(login_state, Timestamp::now()).ok_or(PortalError::LoginState("no such state"))?;
    let answer = oidc.exchange(code, &login.verifier, &portal.redirect_uri()).await?;
    if let Some(id_token) = &answer.id_token
        && id_token_nonce(id_token).as_deref() != Some(login.nonce.as_str())
    {
        return Err(PortalError::LoginState("the ID token's nonce does not match").into());
    }
    let principal = state.auth.authenticate(&answer.access_token).await?;
    Ok(sign_in(portal, answer.access_token, &principal).0)
}
