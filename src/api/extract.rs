//! Extractors whose rejections are problem+json like every other error.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::Caller;
use crate::domain::IdempotencyKey;
use crate::error::Error;
use crate::idempotency::{self, IdempotentRequest};

/// JSON body; unknown fields and wrong types are 422, broken JSON 400, wrong type 415, too big
/// 413, and a string holding a NUL character (which Postgres cannot store) 422.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(Self)
    }
}

/// A JSON body into `T`: NUL characters refused, and integers written with a zero fraction
/// (`3.0`, `1e3`) accepted as JSON Schema counts them integers. That second reading runs only
/// when the plain one failed on a floating-point number, so ordinary bodies are parsed once.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    refuse_nul_in_json(bytes)?;
    // Every body is an object. serde would also read a struct from an array of its fields in
    // order (`[null, null]` as a PATCH clearing both), which the documented schema does not admit.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde_json::Value>(bytes).is_ok()
    {
        return Err(Error::InvalidBody("the body must be a JSON object".into()));
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::JsonDataError(err)) if err.body_text().contains("floating point") => {
            let mut value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
            integral_floats_to_integers(&mut value);
            serde_json::from_value(value).map_err(|e| {
                Error::InvalidBody(format!("Failed to deserialize the JSON body into the target type: {e}"))
            })
        }
        Err(rejection) => Err(rejection.into()),
    }
}

fn integral_floats_to_integers(value: &mut serde_json::Value) {
    use serde_json::{Number, Value};
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 every integral f64 is exact; beyond that leave it (an int64 out of range).
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *value = Value::Number(Number::from(f as i64));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// For a nested object field (`#[serde(deserialize_with = "object")]`): refuses the array of its
/// fields that serde would also read into a struct (`"queue": [null, null]`), which the documented
/// schema does not admit. `null` stays `None` for an `Option`.
pub fn object<'de, T, D>(deserializer: D) -> Result<T, D::Error>
where
    T: DeserializeOwned,
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    if value.is_array() {
        return Err(D::Error::custom("expected an object, not an array"));
    }
    T::deserialize(value).map_err(D::Error::custom)
}

/// A body that could not be read: too large (413), or cut off (400).
fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge
    } else {
        Error::Malformed(rejection.body_text())
    }
}

/// `application/json` or any `application/*+json`, as `axum::Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Raw NUL bytes are not valid JSON; the escape `\u0000` is, and would reach Postgres, whose
/// text cannot hold it. The scan is a byte search; only a body that has the escape is parsed
/// twice, to tell a real NUL from an escaped backslash followed by `u0000`.
fn refuse_nul_in_json(bytes: &[u8]) -> Result<(), Error> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(()); // broken JSON: the typed parse reports it
    };
    match nul_path(&value, String::new()) {
        Some(path) => Err(Error::InvalidBody(format!("{path}: must not contain NUL characters (\\u0000)"))),
        None => Ok(()),
    }
}

/// Where a string (value or key) holds a NUL character, as a JSON path like `seats[2].row`.
fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let here = || if at.is_empty() { "body".to_owned() } else { at.clone() };
    match value {
        Value::String(s) if s.contains('\0') => Some(here()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_path(v, format!("{}[{i}]", here()))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            if k.contains('\0') { Some(here()) } else { nul_path(v, path) }
        }),
        _ => None,
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct ApiPath<T>(pub T);

/// Query parameters; wrong or unknown ones are 422, and so is a NUL character (`%00`).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(Error::InvalidBody("query parameters must not contain NUL characters (%00)".into()));
        }
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => Error::InvalidBody(err.body_text()),
            JsonRejection::JsonSyntaxError(err) => Error::Malformed(err.body_text()),
            JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
            other => Error::Malformed(other.body_text()),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(_: PathRejection) -> Self {
        // A path id that is not a UUID names nothing that exists.
        Error::NotFound("resource")
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::InvalidBody(rejection.body_text())
    }
}

/// A JSON body that may be left out entirely (no body and no Content-Type).
pub struct OptionalApiJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let typed = request.headers().contains_key(CONTENT_TYPE);
        if typed && !is_json(request.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        let blank = bytes.iter().all(u8::is_ascii_whitespace);
        match (typed, blank) {
            (_, true) => Ok(Self(None)),
            // JSON `null` is "no body" too, as the document's `oneOf: [body, null]` says.
            (true, false) if bytes.trim_ascii() == b"null" => Ok(Self(None)),
            (true, false) => parse_json(&bytes).map(|v| Self(Some(v))),
            (false, false) => Err(Error::UnsupportedMediaType),
        }
    }
}

/// A valid `Idempotency-Key` header and the request it came on (method and path), to be bound
/// to the caller and the parsed body with [`IdempotencyKeyHeader::bind`]. Required as itself
/// (400 IDEMPOTENCY_KEY_MISSING without it); `Option<IdempotencyKeyHeader>` where it may be
/// absent (DELETE is idempotent by itself).
pub struct IdempotencyKeyHeader {
    key: IdempotencyKey,
    method: Method,
    path: String,
}

impl IdempotencyKeyHeader {
    /// Binds the key to its caller and to exactly this request: method, path and canonical body.
    /// The body is the parsed request re-serialized, so whitespace and key order do not matter.
    pub fn bind(&self, caller: &Caller, body: &impl Serialize) -> Result<IdempotentRequest, Error> {
        let canonical = serde_json::to_vec(body).map_err(Error::internal)?;
        Ok(IdempotentRequest {
            user_id: caller.user_id.clone(),
            key: self.key.as_str().to_owned(),
            fingerprint: idempotency::fingerprint(self.method.as_str(), &self.path, &canonical),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        <Self as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await?
            .ok_or(Error::IdempotencyKeyMissing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(None);
        };
        let raw = value.to_str().map_err(|_| Error::IdempotencyKeyInvalid("Idempotency-Key must be ASCII"))?;
        let key = IdempotencyKey::parse(raw).map_err(Error::IdempotencyKeyInvalid)?;
        Ok(Some(IdempotencyKeyHeader { key, method: parts.method.clone(), path: parts.uri.path().to_owned() }))
    }
}
