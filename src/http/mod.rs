//! HTTP: the public router (API v1, OpenAPI, the web portal) and the admin router (/livez,
//! /readyz, /metrics). Routers are functions of state, so tests drive them without sockets.

pub mod admin;
pub mod api;
pub mod error;
pub mod extract;
pub mod server;
pub mod state;

use std::time::{Duration, Instant};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use tower::ServiceBuilder;
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer, trace::TraceLayer};
use utoipa::OpenApi;

use self::{api::ApiDoc, error::ApiError, state::AppState};
use crate::{metrics::RequestLabels, portal::handlers as portal};

/// HTTP limits of the public router.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Timeout for ordinary requests (not event streams).
    pub request_timeout: Duration,
}

/// The public router: API v1 and the OpenAPI document.
pub fn router(state: AppState, limits: Limits) -> Router {
    let timed = Router::new()
        .route("/api/v1/sessions", post(api::sessions::create).get(api::sessions::list))
        .route("/api/v1/sessions/{id}", get(api::sessions::get).delete(api::sessions::end))
        .route("/api/v1/sessions/{id}/keepalive", post(api::sessions::keepalive))
        .route("/api/v1/pools", get(api::pools::list))
        .route("/api/v1/pools/{name}", put(api::pools::put).delete(api::pools::delete))
        .route("/api/v1/pools/{name}/decisions", get(api::pools::decisions))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/", get(portal::to_portal))
        .route("/portal", get(portal::to_portal))
        .route("/portal/", get(portal::index))
        .route("/portal/{file}", get(portal::file))
        .route("/portal/api/config", get(portal::info))
        .route("/portal/api/me", get(portal::me))
        .route("/portal/dev-login", post(portal::dev_login))
        .route("/portal/logout", post(portal::logout))
        .route("/portal/login", get(portal::login))
        .route("/portal/callback", get(portal::callback))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, limits.request_timeout));
    // Event streams live as long as the session; no timeout.
    let streams = Router::new().route("/api/v1/sessions/{id}/events", get(api::sessions::events));
    timed
        .merge(streams)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
                .layer(TraceLayer::new_for_http())
                .layer(middleware::from_fn_with_state(state.clone(), measure))
                .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
        .with_state(state)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Records each request's duration by method, route template and status.
async fn measure(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let mut response = next.run(req).await;
    let elapsed = started.elapsed();
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    // Server-Timing (W3C): the broker's own time, shown by browser dev tools and read by the
    // benchmark to separate broker overhead from client and network time.
    let timing = format!("app;dur={:.3}", elapsed.as_secs_f64() * 1000.0);
    if let Ok(value) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert(HeaderName::from_static("server-timing"), value);
    }
    response
}
