//! Every failed request answers with a JSON `ApiError` body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleet_common::api::ApiError;

use crate::error::CoordinatorError;

#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
}

impl ApiFailure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<CoordinatorError> for ApiFailure {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::Invalid(m) => Self::bad_request(m),
            CoordinatorError::NotFound => Self::not_found("not found"),
            CoordinatorError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            other => {
                // Details stay in the log; callers get a stable message.
                tracing::error!(error = %other, "request failed");
                let what = match other {
                    CoordinatorError::Postgres(_) => "postgres is unavailable",
                    CoordinatorError::Redis(_) => "redis is unavailable",
                    _ => "internal error",
                };
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{what}; retry later"),
                )
            }
        }
    }
}

impl From<sqlx::Error> for ApiFailure {
    fn from(e: sqlx::Error) -> Self {
        CoordinatorError::from(e).into()
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiError {
                error: self.message,
            }),
        )
            .into_response()
    }
}
