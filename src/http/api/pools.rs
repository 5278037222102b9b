//! Pool handlers: the pools a caller may use with availability, and admin put/delete.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::{
    domain::{Decision, PoolName, PoolSpec},
    http::{
        error::{ApiError, ApiJson, ErrorBody},
        extract::Authenticated,
        state::AppState,
    },
    service::PoolView,
};

/// Pools the caller may use (all pools for admins), with what is free now.
#[utoipa::path(get, path = "/api/v1/pools", tag = "pools",
    responses((status = 200, body = [PoolView]), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<ApiJson<Vec<PoolView>>, ApiError> {
    Ok(ApiJson(state.sessions.pools(&caller).await?))
}

/// Create or replace a pool (admins). The body is a pool spec; `name` may be left out and
/// must match the path when given.
#[utoipa::path(put, path = "/api/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name")),
    request_body = PoolSpec,
    responses((status = 201, body = PoolView), (status = 200, body = PoolView),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let object = body.as_object_mut().ok_or_else(|| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "the body must be a JSON object")
    })?;
    match object.get("name") {
        None => {
            object.insert("name".into(), Value::String(name.clone()));
        }
        Some(Value::String(n)) if *n == name => {}
        Some(_) => {
            let msg = format!("the body's name must be \"{name}\", as in the path");
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "name_mismatch", msg));
        }
    }
    let spec: PoolSpec = serde_json::from_value(body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", e.to_string()))?;
    let (view, created) = state.sessions.put_pool(&caller, spec).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, ApiJson(view)).into_response())
}

/// Delete a pool (admins); its sessions end with reason PoolDeleted.
#[utoipa::path(delete, path = "/api/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sessions.delete_pool(&caller, &PoolName(name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The pool's recent scaling and culling decisions, newest first (admins): each with its
/// kind, a one-line reason ("warm 2 -> 5: schedule window …") and the inputs it was taken on.
#[utoipa::path(get, path = "/api/v1/pools/{name}/decisions", tag = "pools",
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 200, body = [Decision]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decisions(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<ApiJson<Vec<Decision>>, ApiError> {
    Ok(ApiJson(state.sessions.decisions(&caller, &PoolName(name)).await?))
}
