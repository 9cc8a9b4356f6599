//! Bearer JWTs (HS256): `sub` is the caller, `role: "admin"` grants admin, `exp` is required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::pipeline::Caller;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: u64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Mints a token (for `holdfast token` and tests).
    pub fn mint(&self, sub: &str, admin: bool, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
        let claims = Claims { sub: sub.to_owned(), role: admin.then(|| "admin".to_owned()), exp: exp.as_secs() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::Unauthenticated("The bearer token is invalid or expired."))?;
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > 255 {
            return Err(ApiError::Unauthenticated("The token's subject must be 1 to 255 characters."));
        }
        Ok(Caller { user_id: sub, admin: data.claims.role.as_deref() == Some("admin"), request_id: None })
    }

    /// The caller named by a request's `Authorization: Bearer` header.
    pub fn caller_of(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated("An Authorization: Bearer token is required."))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or(ApiError::Unauthenticated("The Authorization header must be `Bearer <token>`."))?;
        let mut caller = self.verify(token.trim())?;
        // Set by the request-id layer before any handler runs; recorded in the audit trail.
        caller.request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(caller)
    }
}

/// Extracts the authenticated caller, or answers 401.
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.jwt.caller_of(parts).map(Auth)
    }
}

/// Extracts an admin caller: 401 without a valid token, 403 without the admin role.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = state.jwt.caller_of(parts)?;
        if !caller.admin {
            return Err(ApiError::Forbidden);
        }
        Ok(Admin(caller))
    }
}
