//! The change feed: every change event, oldest first, in an order no consumer can fall through
//! (see `crate::db::changes`). Admins only: events name who acted.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::auth::Admin;
use super::extract::ApiQuery;
use super::reply;
use crate::db::changes::{self, Position, Read};
use crate::domain::ValidationError;
use crate::error::Error;
use crate::pipeline::views;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// A cursor from an earlier page (`next_cursor`) or event (`cursor`): read what came after
    /// it. Without it, from the oldest event kept.
    #[param(pattern = r"^[0-9]{1,18}-[0-9]{1,18}$")]
    pub after: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only these types, comma-separated (for example `hold.created,booking.confirmed`).
    #[param(
        pattern = r"^(hold\.(created|extended|released|expired|confirmed|rescheduled)|booking\.(confirmed|cancelled|rescheduled)|(seats|nights|slots)\.changed|inventory\.nights_changed|(event|inventory|resource)\.created|event\.updated)(,(hold\.(created|extended|released|expired|confirmed|rescheduled)|booking\.(confirmed|cancelled|rescheduled)|(seats|nights|slots)\.changed|inventory\.nights_changed|(event|inventory|resource)\.created|event\.updated))*$"
    )]
    pub types: Option<String>,
}

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// Changes after a cursor, oldest first. The feed never passes over a change whose transaction
/// has not committed yet: a consumer that keeps the cursor sees every change exactly once.
#[utoipa::path(
    get, path = "/v1/changes", tag = "changes",
    summary = "Every change after a cursor, oldest first (admin)",
    params(ChangesQuery),
    responses(
        (status = 200, description = "A page of changes and the cursor to read on with", body = crate::pipeline::views::ChangePage),
        (status = 410, description = "CURSOR_EXPIRED: changes after the cursor were purged (OUTBOX_RETENTION_HOURS), or the cursor lies ahead of the feed (not issued by this database: say, one restored from a logical dump); `oldest_cursor` says where the feed starts now", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn list_changes(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Response, Error> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ValidationError::new("limit", format!("must be between 1 and {MAX_PAGE}")).into());
    }
    let after = query
        .after
        .as_deref()
        .map(|after| after.parse::<Position>())
        .transpose()
        .map_err(|()| ValidationError::new("after", "must be a cursor from the feed"))?;
    let types = query.types.as_deref().map(parse_types).transpose()?;
    match changes::read(&state.db, after, types.as_deref(), limit).await? {
        Read::Page(page) => Ok(reply::ok(views::change_page(&page))),
        Read::Expired { oldest } => Err(Error::CursorExpired { oldest: oldest.to_string(), ahead: false }),
        Read::Ahead { oldest } => Err(Error::CursorExpired { oldest: oldest.to_string(), ahead: true }),
    }
}

fn parse_types(list: &str) -> Result<Vec<String>, ValidationError> {
    changes::known_types(list.split(',')).ok_or_else(|| {
        ValidationError::new("types", format!("must be a comma-separated list of: {}", changes::TYPES.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_pattern_accepts_exactly_what_the_handler_does() {
        let doc = crate::api::openapi_document();
        let params = doc["paths"]["/v1/changes"]["get"]["parameters"].as_array().unwrap();
        let schema = |name: &str| params.iter().find(|p| p["name"] == name).unwrap()["schema"]["pattern"].clone();
        let types = regex::Regex::new(schema("types").as_str().unwrap()).unwrap();
        for name in changes::TYPES {
            assert!(types.is_match(name), "{name}");
            assert!(parse_types(name).is_ok(), "{name}");
        }
        let all = changes::TYPES.join(",");
        assert!(types.is_match(&all) && parse_types(&all).is_ok());
        for bad in ["", "hold.created,", "hold", "hold.created,nope", ",seats.changed", "seats.changed "] {
            assert!(!types.is_match(bad) && parse_types(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_types("hold.created,hold.created,seats.changed").unwrap(), ["hold.created", "seats.changed"]);
        let after = regex::Regex::new(schema("after").as_str().unwrap()).unwrap();
        for cursor in ["0-0", "999999999999999999-999999999999999999"] {
            assert!(after.is_match(cursor) && cursor.parse::<Position>().is_ok(), "{cursor}");
        }
    }
}
