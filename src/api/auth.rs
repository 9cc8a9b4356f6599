//! The extractors for the authenticated caller: the `Authorization: Bearer` header, verified
//! by [`crate::auth::JwtKeys`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::auth::JwtKeys;
use crate::domain::Caller;
use crate::error::Error;
use crate::state::AppState;

/// The caller named by a request's `Authorization: Bearer` header.
pub fn caller_of(keys: &JwtKeys, parts: &Parts) -> Result<Caller, Error> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(Error::Unauthenticated("An Authorization: Bearer token is required."))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .ok_or(Error::Unauthenticated("The Authorization header must be `Bearer <token>`."))?;
    let mut caller = keys.verify(token.trim())?;
    // Set by the request-id layer before any handler runs; recorded in the audit trail.
    caller.request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok(caller)
}

/// Extracts the authenticated caller, or answers 401.
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        caller_of(&state.jwt, parts).map(Auth)
    }
}

/// Extracts an admin caller: 401 without a valid token, 403 without the admin role.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = caller_of(&state.jwt, parts)?;
        if !caller.admin {
            return Err(Error::Forbidden);
        }
        Ok(Admin(caller))
    }
}
