//! Turning replies into HTTP responses, the same way for fresh answers and replays.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::problem::json_response;
use crate::error::Error;
use crate::pipeline::Reply;

pub const REPLAYED: &str = "idempotent-replayed";

pub fn render(reply: Reply) -> Response {
    let Ok(status) = StatusCode::from_u16(reply.status) else {
        return Error::internal(format!("a reply with status {}", reply.status)).into_response();
    };
    let mut response = if status == StatusCode::NO_CONTENT {
        StatusCode::NO_CONTENT.into_response()
    } else {
        json_response(status, &reply.body)
    };
    if reply.replayed {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

pub fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}
