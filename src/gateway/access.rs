//! Who may use `/connect/{id}/…`. One code path decides for plain HTTP and for WebSocket
//! upgrades (SECURITY.md A30, CVE-2024-28179), before anything reaches the workstation: a
//! ticket or a cookie, signed, unexpired, for this session, issued to the session's owner, on a
//! Ready session. WebSocket upgrades must also come from an allowed `Origin` (A29).
//!
//! Answers: 401 without a usable credential (and for a reused or expired ticket), 403 for a
//! credential of another session or user or a foreign origin, 404 for an unknown session, 409
//! for a session that is not Ready. No workstation address or internal detail is ever shown.

use axum::http::{HeaderMap, StatusCode, header};

use super::{
    Gateway, cookie,
    ticket::{Grant, GrantError, GrantKind},
};
use crate::{
    domain::{Endpoint, SessionId, SessionPhase, UserId},
    http::error::ApiError,
    service::ServiceError,
};

/// How the caller proved access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A connect ticket (now used up): answer HTTP with a cookie and a redirect.
    Ticket,
    /// The session cookie.
    Cookie,
}

/// A caller allowed into a session's desktop.
#[derive(Debug, Clone)]
pub struct Access {
    /// The session's owner.
    pub user: UserId,
    /// Where the desktop listens.
    pub endpoint: Endpoint,
    /// How access was proved.
    pub via: Via,
}

fn unauthenticated(code: &'static str, message: &str) -> ApiError {
    let mut err = ApiError::new(StatusCode::UNAUTHORIZED, code, message);
    err.www_authenticate = Some("ConnectTicket realm=\"cadbroker\"".to_owned());
    err
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "connect_forbidden", message)
}

const FRESH_URL: &str = "get a fresh connect URL from GET /api/v1/sessions/{id}";

/// Refuses a WebSocket upgrade whose `Origin` is missing or not allowed (403).
pub fn check_origin(gateway: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    // Browsers send origins already normalised; normalise only what does not match as sent.
    let allowed = origin.is_some_and(|o| {
        gateway.allowed_origins.contains(o)
            || super::config::normalise_origin(o).is_ok_and(|o| gateway.allowed_origins.contains(&o))
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_forbidden",
            "WebSocket connections to a desktop are accepted only from the broker's own pages (Origin not allowed).",
        ))
    }
}

/// Decides whether the request may reach `session`'s desktop, consuming a ticket if it
/// carries one (`ticket` from the query wins over cookies).
pub async fn authorise(
    gateway: &Gateway,
    session: &SessionId,
    ticket: Option<&str>,
    headers: &HeaderMap,
) -> Result<Access, ApiError> {
    let now = gateway.clock.now();
    let (grant, via) = match ticket {
        Some(ticket) => {
            let grant = match gateway.signer.verify(ticket, GrantKind::Ticket, now) {
                Ok(grant) => grant,
                Err(GrantError::Expired) => {
                    return Err(unauthenticated(
                        "ticket_expired",
                        &format!("The connect ticket has expired; {FRESH_URL}."),
                    ));
                }
                Err(GrantError::Invalid) => {
                    return Err(unauthenticated("ticket_invalid", "The connect ticket is not valid."));
                }
            };
            if &grant.session != session {
                return Err(forbidden("This connect ticket is for another session."));
            }
            if !gateway.used.consume(&grant, now) {
                return Err(unauthenticated(
                    "ticket_used",
                    &format!("The connect ticket was already used; {FRESH_URL}."),
                ));
            }
            (grant, Via::Ticket)
        }
        None => (cookie_grant(gateway, session, headers, now)?, Via::Cookie),
    };
    // The service's errors map to the API's safe shapes (404 session_not_found, 503 unavailable).
    let target = gateway.service.connect_target(session).await.map_err(ApiError::from)?;
    if target.user != grant.user {
        return Err(forbidden("This connect ticket or cookie belongs to another user."));
    }
    match (target.phase, target.endpoint) {
        (SessionPhase::Ready, Some(endpoint)) => Ok(Access { user: target.user, endpoint, via }),
        (SessionPhase::Queued | SessionPhase::Starting | SessionPhase::Ready, _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "session_not_ready",
            "The session's workstation is not ready yet.",
        )),
        _ => Err(ApiError::from(ServiceError::SessionEnded(session.clone()))),
    }
}

/// The first of the request's cookies that grants `session`, or the most telling refusal.
fn cookie_grant(
    gateway: &Gateway,
    session: &SessionId,
    headers: &HeaderMap,
    now: jiff::Timestamp,
) -> Result<Grant, ApiError> {
    let mut refusal = unauthenticated(
        "connect_unauthenticated",
        &format!("Open this desktop from its connect URL; {FRESH_URL}."),
    );
    for value in cookie::values(headers) {
        match gateway.cookies.verify(&gateway.signer, value, now) {
            Ok(grant) if &grant.session == session => return Ok(grant),
            Ok(_) => refusal = forbidden("This cookie is for another session."),
            Err(GrantError::Expired) if refusal.status != StatusCode::FORBIDDEN => {
                refusal = unauthenticated(
                    "cookie_expired",
                    &format!("The desktop cookie has expired; {FRESH_URL}."),
                );
            }
            Err(_) => {}
        }
    }
    Err(refusal)
}
