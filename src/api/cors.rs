//! CORS, for pages on other origins (`CORS_ALLOWED_ORIGINS`), by tower-http's `CorsLayer`. It
//! wraps the whole router, outside every other layer: a preflight is answered before routing,
//! rate limits or authentication (it carries no credentials), and every answer to an allowed
//! origin, a refusal included, carries the headers a browser needs to let the page read it.
//! Tokens travel in `Authorization`, never in cookies, so credentials are not allowed.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::REQUEST_ID;
use super::reply::REPLAYED;
use crate::config::CorsOrigins;

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layer for the configured origins; none when CORS is off.
pub fn layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow_origin = match origins {
        CorsOrigins::Off => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            // Each entry was checked as an origin when the settings were read.
            list.iter().map(|o| HeaderValue::from_str(o).expect("a checked origin is a header value")),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static(crate::queue::ADMISSION_HEADER),
                REQUEST_ID,
            ])
            .expose_headers([HeaderName::from_static(REPLAYED), header::RETRY_AFTER, REQUEST_ID, header::LOCATION])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}
