//! Webhook endpoints (admin): register one for some change types and get its signing secret
//! once; list, read and delete them; read an endpoint's deliveries with their attempts. Delivery
//! itself runs in the background on every instance (`crate::webhooks`).

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Admin;
use super::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader};
use super::reply;
use crate::db::changes::{self, Position};
use crate::db::webhooks as rows;
use crate::domain::ValidationError;
use crate::error::Error;
use crate::pipeline::{self, views};
use crate::state::AppState;
use crate::webhooks::{sign, target};

/// The most change types one endpoint subscribes to (there are fewer kinds than this).
const MAX_EVENT_TYPES: usize = 64;
const MAX_DESCRIPTION: usize = 500;
/// How long registration waits for DNS before refusing the URL.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// Where to POST the events: an `https` URL whose host resolves only to public addresses
    /// (unless the instance allows private targets), without user info or fragment. Whether it
    /// resolves, and where to, is only known when asked: 422 WEBHOOK_TARGET_REFUSED if not.
    #[schema(max_length = 2048, pattern = r"^https?://[^\s#@]+$")]
    pub url: String,
    /// The change types to deliver (see `GET /v1/changes`), for example `["booking.confirmed"]`.
    #[schema(min_items = 1, max_items = 64)]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub description: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    summary = "Register a webhook endpoint; the answer holds its signing secret, shown once (admin)",
    params(crate::api::openapi::IdempotencyKeyParam),
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "Registered: events after this moment are delivered", body = crate::pipeline::views::WebhookCreatedView),
        (status = 422, description = "VALIDATION_FAILED, or WEBHOOK_TARGET_REFUSED: the URL is not https, does not resolve, or reaches a private, loopback or reserved address", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    Admin(caller): Admin,
    key: IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CreateWebhookBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let allow_private = state.config.webhooks.allow_private_targets;
    if body.url.chars().any(char::is_control) {
        return Err(ValidationError::new("url", "must not contain control characters").into());
    }
    let url = target::check_url(&body.url, allow_private).map_err(|reason| Error::WebhookTargetRefused { reason })?;
    let event_types = parse_event_types(&body.event_types)?;
    let description = body
        .description
        .as_deref()
        .map(|d| crate::domain::parse_name(d, "description", MAX_DESCRIPTION))
        .transpose()?;
    match tokio::time::timeout(RESOLVE_TIMEOUT, target::check_resolves(&url, allow_private)).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Err(Error::WebhookTargetRefused { reason }),
        Err(_) => return Err(Error::WebhookTargetRefused { reason: "host did not resolve in time".to_owned() }),
    }
    let secret = sign::new_secret();
    let command = pipeline::CreateWebhook { url: url.to_string(), description, event_types, secret };
    Ok(reply::render(pipeline::run(&state, caller, Some(idem), command).await?))
}

fn parse_event_types(list: &[String]) -> Result<Vec<String>, ValidationError> {
    if list.is_empty() || list.len() > MAX_EVENT_TYPES {
        return Err(ValidationError::new("event_types", format!("must list 1 to {MAX_EVENT_TYPES} change types")));
    }
    changes::known_types(list.iter().map(String::as_str)).ok_or_else(|| {
        ValidationError::new("event_types", format!("must be change types: {}", changes::TYPES.join(", ")))
    })
}

/// States in the OpenAPI document that `event_types` takes the change types of
/// [`changes::TYPES`], the list the handler checks against.
pub fn document_event_types(doc: &mut serde_json::Value) {
    let items = &mut doc["components"]["schemas"]["CreateWebhookBody"]["properties"]["event_types"]["items"];
    if items.is_object() {
        items["enum"] = serde_json::json!(changes::TYPES);
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WebhookListQuery {
    /// `next_cursor` of the previous page.
    pub after: Option<Uuid>,
    /// Endpoints per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, ValidationError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ValidationError::new("limit", format!("must be between 1 and {MAX_PAGE}")))
    }
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    summary = "Webhook endpoints, oldest first (admin)",
    params(WebhookListQuery),
    responses((status = 200, description = "A page of endpoints (without secrets)", body = crate::pipeline::views::WebhookPage),
        crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiQuery(query): ApiQuery<WebhookListQuery>,
) -> Result<Response, Error> {
    let limit = page_limit(query.limit)?;
    let mut found = rows::list(&state.db, query.after, limit + 1).await?;
    let next = (found.len() as i64 > limit).then(|| {
        found.truncate(limit as usize);
        found.last().map(|r| r.id)
    });
    Ok(reply::ok(views::webhook_page(&found, next.flatten())))
}

#[utoipa::path(
    get, path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    summary = "A webhook endpoint, with its status and backlog (admin)",
    params(("webhook_id" = Uuid, Path, description = "Webhook endpoint id")),
    responses((status = 200, description = "The endpoint (without its secret)", body = crate::pipeline::views::WebhookView),
        crate::api::openapi::NotFound, crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiPath(webhook_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let row = rows::find(&state.db, webhook_id).await?.ok_or(Error::NotFound("webhook"))?;
    let backlog = rows::backlog(&state.db, webhook_id).await?;
    Ok(reply::ok(views::webhook(&row, Some(&backlog))))
}

#[utoipa::path(
    delete, path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    summary = "Delete a webhook endpoint and its deliveries (admin; the key is optional)",
    params(("webhook_id" = Uuid, Path, description = "Webhook endpoint id"), crate::api::openapi::OptionalIdempotencyKeyParam),
    responses((status = 204, description = "Deleted: nothing more is sent to it"),
        crate::api::openapi::NotFound, crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Admin(caller): Admin,
    key: Option<IdempotencyKeyHeader>,
    ApiPath(webhook_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let idem = key.map(|k| k.bind(&caller, &())).transpose()?;
    let reply = pipeline::run(&state, caller, idem, pipeline::DeleteWebhook { webhook_id }).await?;
    Ok(reply::render(reply))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `next_cursor` of the previous page: older deliveries than it.
    #[param(pattern = r"^[0-9]{1,18}-[0-9]{1,18}$")]
    pub before: Option<String>,
    /// Deliveries per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[utoipa::path(
    get, path = "/v1/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    summary = "An endpoint's deliveries, newest change first, with every attempt (admin)",
    params(("webhook_id" = Uuid, Path, description = "Webhook endpoint id"), DeliveryQuery),
    responses((status = 200, description = "A page of deliveries", body = crate::pipeline::views::DeliveryPage),
        crate::api::openapi::NotFound, crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiPath(webhook_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Response, Error> {
    let limit = page_limit(query.limit)?;
    let before = query
        .before
        .as_deref()
        .map(|b| b.parse::<Position>())
        .transpose()
        .map_err(|()| ValidationError::new("before", "must be a cursor from this list"))?;
    rows::find(&state.db, webhook_id).await?.ok_or(Error::NotFound("webhook"))?;
    let (mut deliveries, attempts) = rows::deliveries(&state.db, webhook_id, before, limit + 1).await?;
    let next = if deliveries.len() as i64 > limit {
        deliveries.truncate(limit as usize);
        deliveries.last().map(|d| Position { txid: d.txid, id: d.change_id })
    } else {
        None
    };
    Ok(reply::ok(views::delivery_page(&deliveries, &attempts, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_the_change_types_and_the_url_rule() {
        let doc = crate::api::openapi_document();
        let body = &doc["components"]["schemas"]["CreateWebhookBody"]["properties"];
        assert_eq!(body["event_types"]["items"]["enum"], serde_json::json!(changes::TYPES));
        let url = regex::Regex::new(body["url"]["pattern"].as_str().unwrap()).unwrap();
        assert!(url.is_match("https://hooks.example.com/x?y=1") && url.is_match("http://127.0.0.1:9000/hook"));
        for bad in ["", "ftp://x", "https://u@x", "https://x/#f", "https://x y"] {
            assert!(!url.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn event_types_are_known_deduplicated_and_bounded() {
        let list = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_event_types(&list(&["booking.confirmed", "hold.created", "booking.confirmed"])).unwrap(),
            ["booking.confirmed", "hold.created"]
        );
        assert!(parse_event_types(&[]).is_err());
        assert!(parse_event_types(&list(&["booking.confirmed", "booking.*"])).is_err());
        assert!(parse_event_types(&vec!["hold.created".to_owned(); MAX_EVENT_TYPES + 1]).is_err());
    }
}
