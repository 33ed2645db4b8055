//! The one mapping from failures to HTTP responses: a status code and a JSON body
//! `{"error": "<message>", "code": "<machine-readable code>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use streamhouse_kafka::ApiError;

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The broker refused or failed the operation.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The request could not be decoded (body, path or query).
    #[error("{0}")]
    BadRequest(String),
    /// The request carries no valid credentials (sent with a `WWW-Authenticate` challenge).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's ACLs do not allow the operation.
    #[error("{0}")]
    Forbidden(String),
    /// The Host header names a host this listener does not serve (DNS rebinding).
    #[error("this server does not serve the host {0:?}")]
    MisdirectedHost(String),
    /// The server is misconfigured (a bug, never the client's fault).
    #[error("{0}")]
    Internal(String),
    /// Nothing is served at this path.
    #[error("{message}")]
    NotFound {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable message.
        message: String,
    },
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
    /// With `not_coordinator`: the HTTP address (`host:port`) of the group's coordinator, where
    /// clients resend the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    coordinator: Option<String>,
}

impl HttpError {
    /// Status code and machine-readable code.
    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "authorization_failed"),
            Self::MisdirectedHost(_) => (StatusCode::MISDIRECTED_REQUEST, "misdirected_request"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            Self::Api(e) => match e {
                ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                ApiError::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
                ApiError::UnknownPartition { .. } => (StatusCode::NOT_FOUND, "unknown_partition"),
                ApiError::TopicExists(_) => (StatusCode::CONFLICT, "topic_exists"),
                ApiError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
                ApiError::UnknownUser { .. } => (StatusCode::NOT_FOUND, "unknown_user"),
                ApiError::GroupConflict(_) => (StatusCode::CONFLICT, "group_conflict"),
                ApiError::OffsetOutOfRange { .. } => {
                    (StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range")
                }
                ApiError::NotOwner(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_owner"),
                ApiError::NotCoordinator { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "not_coordinator")
                }
                ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                ApiError::Metadata(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metadata_error"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
            },
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code) = self.classify();
        if status.is_server_error() {
            tracing::warn!(code, "HTTP request failed: {self}");
        }
        let coordinator = match &self {
            Self::Api(ApiError::NotCoordinator {
                coordinator_http, ..
            }) => coordinator_http.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            code,
            coordinator,
        };
        (status, Json(body)).into_response()
    }
}

/// Result of a handler.
pub(crate) type HttpResult<T> = Result<T, HttpError>;
