//! One error type for every route, mapped to a status code and a JSON body
//! `{"status":"error","message":...}`. Internal causes are logged, not sent: a message that
//! leaves the service never carries a token, a signature, a database path, an SQL text, an
//! object key, a bucket or an endpoint. Server-side failures carry a `correlation_id` that
//! is also on the log line with the full cause, so an operator can find it.
//!
//! The domain's errors become `AppError`s here, and only here (`From` impls below): the
//! domain knows nothing of status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::config::NotConfigured;
use crate::connect::ConnectError;
use crate::facebook::deletion::DeletionError;
use crate::jobs::IntakeError;
use crate::oauth_state::StateError;
use crate::objects::ObjectError;
use crate::store::events::EnqueueError;
use crate::store::StoreError;
use crate::telemetry::correlation_id;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// An integration that is not configured; the message names the variables to set.
    #[error("{0}")]
    NotConfigured(String),
    /// Temporarily unable (queue full, store down): the client should retry.
    #[error("{0}")]
    Unavailable(String),
    /// A client over its rate limit.
    #[error("{0}")]
    TooManyRequests(String),
    /// A platform (Shopify, Meta) answered with an error.
    #[error("{0}")]
    Upstream(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::NotConfigured(_) | AppError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Upstream(_) => StatusCode::BAD_GATEWAY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> AppError {
        AppError::Internal(e.into())
    }
}

/// What an error answer says, kept in the response's extensions for the layer that shows
/// browsers a page instead (`web::errors`).
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub message: String,
    /// Server-side failures: the id on the log line with the cause.
    pub correlation_id: Option<String>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let mut body = json!({"status": "error", "message": message});
        let mut reference = None;
        if status.is_server_error() {
            let id = correlation_id();
            if let AppError::Internal(e) = &self {
                tracing::error!(correlation_id = %id, error = format!("{e:#}"), "request failed");
            } else {
                tracing::warn!(correlation_id = %id, error = %self, "request failed");
            }
            body["correlation_id"] = Value::String(id.clone());
            reference = Some(id);
        }
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorReport {
            message,
            correlation_id: reference,
        });
        response
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Internal(e.into())
    }
}

impl From<ObjectError> for AppError {
    fn from(e: ObjectError) -> Self {
        AppError::Internal(e.into())
    }
}

impl From<EnqueueError> for AppError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::Busy => AppError::Unavailable(e.to_string()),
            EnqueueError::Store(s) => s.into(),
        }
    }
}

impl From<NotConfigured> for AppError {
    fn from(e: NotConfigured) -> Self {
        AppError::NotConfigured(e.to_string())
    }
}

/// A state that cannot be checked (its store is down) is worth retrying; any other problem
/// with it is the request's.
impl From<StateError> for AppError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Store => AppError::Unavailable(e.to_string()),
            _ => AppError::BadRequest(e.to_string()),
        }
    }
}

impl From<ConnectError> for AppError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::NotConfigured(e) => e.into(),
            ConnectError::Refused(m) => AppError::BadRequest(m),
            ConnectError::Unsigned(m) => AppError::Unauthorized(m),
            ConnectError::State(e) => e.into(),
            ConnectError::Upstream(m) => AppError::Upstream(m),
            ConnectError::Store(e) => e.into(),
            ConnectError::Enqueue(e) => e.into(),
            ConnectError::Internal(e) => AppError::Internal(e),
        }
    }
}

impl From<DeletionError> for AppError {
    fn from(e: DeletionError) -> Self {
        match e {
            DeletionError::Unsigned => AppError::Unauthorized(e.to_string()),
            DeletionError::Refused(m) => AppError::BadRequest(m),
            DeletionError::Store(e) => e.into(),
            DeletionError::Enqueue(e) => e.into(),
        }
    }
}

impl From<IntakeError> for AppError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Refused(m) => AppError::BadRequest(m),
            IntakeError::Store(e) => e.into(),
            IntakeError::Enqueue(e) => e.into(),
        }
    }
}
