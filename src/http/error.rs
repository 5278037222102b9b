//! The one error shape of the API, `{"error": {"code", "message", "details"?}}`, and the
//! mappings into it from service, auth and body errors. 5xx never carry internals.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

use crate::{auth::AuthError, domain::RequestError, service::ServiceError};

/// An API error: status, stable code, safe message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`pool_full`, `token_expired`, …).
    pub code: &'static str,
    /// Human-readable message; never internals.
    pub message: String,
    /// Field problems, for validation errors.
    pub details: Vec<FieldDetail>,
    /// `WWW-Authenticate` value for 401s.
    pub www_authenticate: Option<String>,
}

/// One field problem in an error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldDetail {
    /// Field path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorContent,
}

/// Code, message and details of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorContent {
    /// Stable code.
    pub code: String,
    /// Message for people.
    pub message: String,
    /// Field problems, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldDetail>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new(), www_authenticate: None }
    }

    /// 404 for an unknown route or resource.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 500 with a generic message; the cause is logged here, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Something went wrong on our side.")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorContent { code: self.code.to_owned(), message: self.message, details: self.details },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(value) = self.www_authenticate.and_then(|v| HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::Request(r) => r.into(),
            ServiceError::SessionNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "session_not_found", message)
            }
            ServiceError::PoolNotFound(_) => Self::new(StatusCode::NOT_FOUND, "pool_not_found", message),
            ServiceError::AdminOnly => Self::new(StatusCode::FORBIDDEN, "admin_only", message),
            ServiceError::SessionEnded(_) => Self::new(StatusCode::CONFLICT, "session_ended", message),
            ServiceError::InvalidPool(problems) => {
                let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_pool", message);
                err.details = problems
                    .into_iter()
                    .map(|p| FieldDetail { field: p.field.to_owned(), message: p.message })
                    .collect();
                err
            }
            ServiceError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The broker is starting; try again.",
            ),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            RequestError::UnknownPool(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_pool"),
            RequestError::PoolForbidden(_) => (StatusCode::FORBIDDEN, "pool_forbidden"),
            RequestError::IdempotencyConflict { .. } => (StatusCode::CONFLICT, "idempotency_conflict"),
            RequestError::UserLimit(_) => (StatusCode::TOO_MANY_REQUESTS, "user_session_limit"),
        };
        Self::new(status, code, message)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let mut err = Self::new(status, e.code(), e.to_string());
        if status == StatusCode::UNAUTHORIZED {
            err.www_authenticate = Some(e.www_authenticate());
        }
        err
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        // serde's messages name the field and position, never server internals.
        Self::new(status, code, rejection.body_text())
    }
}

/// `Json` whose rejections use the API's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}
