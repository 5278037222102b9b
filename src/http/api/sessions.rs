//! Session handlers: thin, they validate input, call the service and shape the answer.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use utoipa::ToSchema;

use crate::{
    domain::{PoolName, SessionId},
    http::{
        error::{ApiError, ApiJson, ErrorBody},
        extract::{Authenticated, idempotency_key},
        state::AppState,
    },
    service::{CreateSession, SessionView},
};

/// Body of `POST /api/v1/sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionBody {
    /// Pool to request a workstation from.
    pub pool: String,
}

/// Request a workstation.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions",
    request_body = CreateSessionBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the same session")),
    responses(
        (status = 201, description = "Ready: a warm workstation was claimed", body = SessionView),
        (status = 202, description = "Starting, or Queued with a queue position", body = SessionView),
        (status = 200, description = "The caller's existing live session in this pool", body = SessionView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, description = "Per-user session cap reached", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateSessionBody>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let req = CreateSession { pool: PoolName(body.pool), idempotency_key };
    let created = state.sessions.create(&caller, req).await?;
    let status = match (created.created, created.session.phase.as_str()) {
        (false, _) => StatusCode::OK,
        (true, "Ready") => StatusCode::CREATED,
        (true, _) => StatusCode::ACCEPTED,
    };
    let location = format!("/api/v1/sessions/{}", created.session.id);
    Ok((status, [(header::LOCATION, location)], ApiJson(created.session)).into_response())
}

/// The caller's sessions (all sessions for admins), newest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions",
    responses((status = 200, body = [SessionView]), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<ApiJson<Vec<SessionView>>, ApiError> {
    Ok(ApiJson(state.sessions.list(&caller).await?))
}

/// One session.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session name")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<SessionView>, ApiError> {
    Ok(ApiJson(state.sessions.get(&caller, &SessionId(id)).await?))
}

/// End a session (own, or any for admins).
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session name")),
    responses((status = 200, description = "Ending or already ended", body = SessionView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn end(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<SessionView>, ApiError> {
    Ok(ApiJson(state.sessions.end(&caller, &SessionId(id)).await?))
}

/// Record activity (lifts an idle warning).
#[utoipa::path(post, path = "/api/v1/sessions/{id}/keepalive", tag = "sessions",
    params(("id" = String, Path, description = "Session name")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn keepalive(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<SessionView>, ApiError> {
    Ok(ApiJson(state.sessions.keepalive(&caller, &SessionId(id)).await?))
}

/// Server-sent events: `phase` on every phase change, `warning` when a forced end is announced.
/// The first event is the current state; the stream ends after a terminal phase.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path, description = "Session name")),
    responses((status = 200, description = "text/event-stream of SessionView", content_type = "text/event-stream"),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = SessionId(id);
    let (now, rx) = state.sessions.watch(&caller, &id).await?;
    let mut shutdown = state.shutdown.clone();
    let changes = BroadcastStream::new(rx).filter_map(move |msg| {
        let id = id.clone();
        async move {
            match msg {
                Ok(event) if event.session.id == id.as_str() => Some((*event.session).clone()),
                Ok(_) | Err(BroadcastStreamRecvError::Lagged(_)) => None,
            }
        }
    });
    let stream = futures::stream::once(async move { now })
        .chain(changes)
        .scan(None, |last: &mut Option<SessionView>, view| {
            let event = to_event(last.as_ref(), &view);
            let terminal = matches!(view.phase.as_str(), "Ended" | "Failed");
            *last = Some(view);
            // A terminal phase is followed by an end marker, so the stream closes at once.
            let items = event.map(Some).into_iter().chain(terminal.then_some(None));
            async move { Some(futures::stream::iter(items)) }
        })
        .flatten()
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(|item| std::future::ready(item.map(Ok)))
        .take_until(async move { shutdown.wait().await });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The event for `view`, or `None` when nothing a client cares about changed since `last`.
fn to_event(last: Option<&SessionView>, view: &SessionView) -> Option<Event> {
    let name = match last {
        None => "phase",
        Some(l) if l.phase != view.phase => "phase",
        Some(l) if l.warning != view.warning && view.warning.is_some() => "warning",
        // A lifted warning is news too: the portal takes its banner down.
        Some(l)
            if l.queue_position != view.queue_position
                || l.message != view.message
                || l.warning != view.warning =>
        {
            "update"
        }
        Some(_) => return None,
    };
    Event::default().event(name).json_data(view).ok()
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::domain::{EndReason, SessionPhase, Warning};

    fn view(warning: Option<Warning>) -> SessionView {
        SessionView {
            id: "s1".into(),
            user: "u".into(),
            pool: "p".into(),
            phase: SessionPhase::Ready,
            queue_position: None,
            estimated_wait_seconds: None,
            requested_at: Timestamp::UNIX_EPOCH,
            ready_at: None,
            last_activity: None,
            warning,
            ended_at: None,
            end_reason: None,
            connect_url: None,
            workstation: None,
            node: None,
            message: None,
        }
    }

    #[test]
    fn a_warning_and_its_lifting_are_both_sent_and_nothing_else_is_repeated() {
        let at = Timestamp::UNIX_EPOCH;
        let warned = view(Some(Warning { reason: EndReason::IdleTimeout, at, ends_at: at }));
        let quiet = view(None);
        assert!(to_event(None, &quiet).is_some(), "the first event is always sent");
        assert!(to_event(Some(&quiet), &warned).is_some(), "the warning");
        assert!(to_event(Some(&warned), &quiet).is_some(), "the warning lifted");
        assert!(to_event(Some(&quiet), &quiet).is_none(), "no change, no event");
    }
}
