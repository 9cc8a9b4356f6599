//! Extractors whose rejections are problem+json like every other error.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::IdempotencyKey;
use crate::idempotency::{self, IdempotentRequest};
use crate::pipeline::Caller;

/// JSON body; unknown fields and wrong types are 422, broken JSON 400, wrong type 415, too big 413.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => ApiError::InvalidBody(err.body_text()),
            JsonRejection::JsonSyntaxError(err) => ApiError::Malformed(err.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            other => ApiError::Malformed(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        // A path id that is not a UUID names nothing that exists.
        ApiError::NotFound("resource")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidBody(rejection.body_text())
    }
}

/// A JSON body that may be left out entirely (no body and no Content-Type).
pub struct OptionalApiJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if request.headers().contains_key(CONTENT_TYPE) {
            let ApiJson(value) = ApiJson::<T>::from_request(request, state).await?;
            return Ok(Self(Some(value)));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Malformed(rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) { Ok(Self(None)) } else { Err(ApiError::UnsupportedMediaType) }
    }
}

/// A valid `Idempotency-Key` header and the request it came on (method and path), to be bound
/// to the caller and the parsed body with [`KeyedRequest::bind`].
pub struct KeyedRequest {
    key: IdempotencyKey,
    method: Method,
    path: String,
}

impl KeyedRequest {
    /// Binds the key to its caller and to exactly this request: method, path and canonical body.
    /// The body is the parsed request re-serialized, so whitespace and key order do not matter.
    pub fn bind(&self, caller: &Caller, body: &impl Serialize) -> Result<IdempotentRequest, ApiError> {
        let canonical = serde_json::to_vec(body).map_err(ApiError::internal)?;
        Ok(IdempotentRequest {
            user_id: caller.user_id.clone(),
            key: self.key.as_str().to_owned(),
            fingerprint: idempotency::fingerprint(self.method.as_str(), &self.path, &canonical),
        })
    }
}

/// The required `Idempotency-Key` header.
pub struct IdemKey(pub KeyedRequest);

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match OptionalIdemKey::from_request_parts(parts, &()).await?.0 {
            Some(key) => Ok(IdemKey(key)),
            None => Err(ApiError::IdempotencyKeyMissing),
        }
    }
}

/// An `Idempotency-Key` header that may be absent (DELETE is idempotent by itself).
pub struct OptionalIdemKey(pub Option<KeyedRequest>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalIdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(OptionalIdemKey(None));
        };
        let raw = value.to_str().map_err(|_| ApiError::IdempotencyKeyInvalid("Idempotency-Key must be ASCII"))?;
        let key = IdempotencyKey::parse(raw).map_err(ApiError::IdempotencyKeyInvalid)?;
        Ok(OptionalIdemKey(Some(KeyedRequest { key, method: parts.method.clone(), path: parts.uri.path().to_owned() })))
    }
}
