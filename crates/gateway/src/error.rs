//! API errors: an HTTP status, a stable code and a human message, as JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use guildhall_proto::access::Denied;
use guildhall_proto::error::AuthError;
use guildhall_proto::guild::InsertError;
use guildhall_proto::op::OpError;
use guildhall_store::StoreError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds until a rate-limited request may be retried.
    pub retry_after: Option<f64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The caller lacks a permission the node checks itself (reads, typing, listings).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "missing_permission", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a valid bearer token is required",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn rate_limited(retry_after: f64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry later",
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(r) = self.retry_after {
            body["retry_after"] = json!(r);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(r) = self.retry_after {
            let secs = r.ceil().max(1.0).to_string();
            if let Ok(v) = secs.parse() {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::UnknownRole
            | AuthError::UnknownChannel
            | AuthError::UnknownMember
            | AuthError::UnknownInvite
            | AuthError::UnknownOverwrite
            | AuthError::UnknownMessage => StatusCode::NOT_FOUND,
            AuthError::BadRequest(_) | AuthError::BadMetaChange(_) => StatusCode::BAD_REQUEST,
            AuthError::AlreadyMember | AuthError::NotBanned | AuthError::RoleNotHeld => {
                StatusCode::CONFLICT
            }
            AuthError::GuildDeleted => StatusCode::GONE,
            AuthError::GuildStateRate(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::FORBIDDEN,
        };
        let retry_after = match e {
            AuthError::GuildStateRate(ms) => Some(ms as f64 / 1000.0),
            _ => None,
        };
        ApiError {
            retry_after,
            ..ApiError::new(status, e.code(), e.to_string())
        }
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        let status = match e {
            Denied::NotMember | Denied::UnknownChannel | Denied::NotVoice => StatusCode::NOT_FOUND,
            Denied::GuildDeleted => StatusCode::GONE,
            Denied::Banned | Denied::CannotRead | Denied::CannotSend | Denied::CannotConnect => {
                StatusCode::FORBIDDEN
            }
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        ApiError::bad_request(e.code(), e.to_string())
    }
}

impl From<InsertError> for ApiError {
    fn from(e: InsertError) -> Self {
        ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => {
                ApiError::new(StatusCode::CONFLICT, "username_taken", e.to_string())
            }
            StoreError::DuplicateDm => ApiError::new(
                StatusCode::CONFLICT,
                "dm_replayed",
                "this DM was sent already",
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}
