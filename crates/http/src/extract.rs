//! Axum's JSON, path and query extractors with their rejections turned into [`HttpError`], so
//! a malformed request gets the same JSON error body as every other failure.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::HttpError;

/// Defines a wrapper around an axum extractor whose rejection becomes a 400 [`HttpError`].
macro_rules! json_rejecting {
    ($name:ident, $inner:ident, parts) => {
        /// Like the axum extractor of the same name, rejecting with a JSON 400.
        pub(crate) struct $name<T>(pub T);

        impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for $name<T> {
            type Rejection = HttpError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
                axum::extract::$inner::<T>::from_request_parts(parts, state)
                    .await
                    .map(|axum::extract::$inner(v)| Self(v))
                    .map_err(|e| HttpError::BadRequest(e.body_text()))
            }
        }
    };
}

json_rejecting!(Path, Path, parts);
json_rejecting!(Query, Query, parts);

/// Like [`axum::Json`], rejecting with a JSON 400.
pub(crate) struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| Self(v))
            .map_err(|e| HttpError::BadRequest(e.body_text()))
    }
}
