//! Renders [`Error`] as RFC 9457 problem+json: the status, the document, `Retry-After`, and for a
//! 500 the real cause in a response extension, logged by `log_internal_errors` inside the request
//! span and never serialized to the client.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::Error;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The real cause of a 500, for the logging middleware; never serialized to the client.
#[derive(Clone, Debug)]
pub struct InternalErrorDetail(pub Arc<String>);

/// Renders a JSON body with the right content type: problem+json for errors.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status.is_client_error() || status.is_server_error() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let status = StatusCode::from_u16(kind.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(status, &self.body());
        if let Some(secs) = kind.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Error::Internal(cause) = self {
            response.extensions_mut().insert(InternalErrorDetail(Arc::new(cause)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_in_the_table_is_a_real_status() {
        let samples = [Error::NotFound("x"), Error::MethodNotAllowed, Error::internal("x"), Error::Timeout];
        for err in samples {
            let status = err.status();
            assert_eq!(err.into_response().status().as_u16(), status);
        }
    }
}
