//! Turning replies into HTTP responses, the same way for fresh answers and replays.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::json_response;
use crate::pipeline::Reply;

pub const REPLAYED: &str = "idempotent-replayed";

pub fn render(reply: Reply) -> Response {
    let mut response = if reply.status == StatusCode::NO_CONTENT {
        StatusCode::NO_CONTENT.into_response()
    } else {
        json_response(reply.status, &reply.body)
    };
    if reply.replayed {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

pub fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}
