//! Request extractors that answer bad input in the API's error format: a JSON body (415 for another
//! content type, 413 beyond the body limit, 400 naming the field), the caller's key (401), query
//! strings (400 naming the parameter) and job ids.

use std::collections::HashMap;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use errand_core::JobId;
use errand_protocol::code;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::{Caller, Scope, find_key};
use crate::error::ApiError;

/// A JSON request body.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        decode(&bytes).map(Json)
    }
}

/// Checks the content type and reads the body.
pub async fn json_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::TOO_LARGE,
                format!(
                    "the body is larger than the server's limit of {} bytes",
                    state.config.max_body_bytes
                ),
            )
        } else {
            ApiError::invalid("body", rej.body_text())
        }
    })
}

/// Decodes JSON, naming the field at fault (`jobs[3].priority`) when it does not fit `T`. The body
/// must be exactly one JSON value, whitespace aside: a reader that stopped after the first value took
/// `{"kind":"a"}{"kind":"b"}` as job "a" and dropped "b" without a word.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Almost every body is valid: it is decoded without tracking the path, which costs about as much
    // again as the decoding (a tenth of the server's work per acknowledgement, by callgrind). Only a
    // body that fails is decoded a second time, by the same `Deserialize`, to name the field at fault.
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(&mut *de)
        && de.end().is_ok()
    {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = deserialize_fields(de)?;
    de.end().map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the body must be exactly one JSON value: {e}"),
        )
    })?;
    Ok(value)
}

/// Deserializes one value, naming the field at fault.
fn deserialize_fields<'de, T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde names a missing or unknown field in its message, with the path ending at its parent.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), named) {
            // An unknown field is already the last segment of the path; a missing one is not.
            (p, Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
            (".", Some(f)) => f.to_string(),
            (p, Some(f)) => format!("{p}.{f}"),
            (".", None) => "body".to_string(),
            (p, None) => p.to_string(),
        };
        ApiError::invalid(field, message)
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.keys.is_empty() {
            return Ok(Caller::Open);
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing_key",
                "an API key is required: send Authorization: Bearer <key>",
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, secret) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(secret)
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "malformed_header",
                    "the Authorization header must be Bearer <key>",
                )
            })?;
        let key = find_key(&state.config.keys, secret)
            .ok_or_else(|| ApiError::unauthorized("unknown_key", "unknown API key"))?;
        if let Some(rate) = key.rate
            && let Err(wait_ms) = state.key_buckets.take(&key.name, rate, state.engine.now())
        {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                code::RATE_LIMITED,
                format!(
                    "key {:?} is over its {} requests per second",
                    key.name, rate.per_second
                ),
            );
            e.retry_after = Some(wait_ms.div_ceil(1_000).max(1));
            return Err(e);
        }
        Ok(Caller::Key(key.clone()))
    }
}

/// Scope markers for [`Authorized`], one type per [`Scope`]; a tuple of them (`(scope::Read,
/// scope::Produce)`) accepts any of its scopes, named in that order in a refusal.
pub mod scope {
    use crate::auth::Scope;

    /// A marker type naming one scope.
    pub trait One {
        const SCOPE: Scope;
    }

    macro_rules! markers {
        ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;

            impl One for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )*};
    }

    markers!(
        /// `produce`.
        Produce,
        /// `work`.
        Work,
        /// `read`.
        Read,
        /// `admin`.
        Admin,
    );
}

/// The scopes a route accepts, any one of them enough: a [`scope`] marker or a tuple of them.
pub trait Scopes {
    /// In the order a refusal names them.
    const WANTED: &'static [Scope];
}

impl<A: scope::One> Scopes for A {
    const WANTED: &'static [Scope] = &[A::SCOPE];
}

impl<A: scope::One, B: scope::One> Scopes for (A, B) {
    const WANTED: &'static [Scope] = &[A::SCOPE, B::SCOPE];
}

impl<A: scope::One, B: scope::One, C: scope::One> Scopes for (A, B, C) {
    const WANTED: &'static [Scope] = &[A::SCOPE, B::SCOPE, C::SCOPE];
}

/// The caller, refused (403) unless it has one of the scopes `S` ([`Scopes`]) and, on a route with a
/// `{queue}`, the key may use that queue. Every route that needs a scope takes one; `whoami`, which
/// needs a key but no scope, takes the bare [`Caller`].
///
/// The checks run in this order: the key (401), then the extractors `E` (say a path and a query,
/// answered 400 when they do not parse), then the scope and the queue (403). `E` exists to keep the
/// answers routes have always given: those that read their path or query before the scope keep doing
/// so. With `E = ()`, as an extractor before the body's, it checks before the body is read: a caller
/// without the right learns nothing of what the body should be.
#[derive(Debug, Clone)]
pub struct Authorized<S, E = ()> {
    pub caller: Caller,
    /// What `E` extracted.
    pub parts: E,
    scopes: PhantomData<fn() -> S>,
}

impl<S, E> FromRequestParts<AppState> for Authorized<S, E>
where
    S: Scopes,
    E: FromRequestParts<AppState> + Send,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let caller = Caller::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let extracted = E::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        caller
            .require(S::WANTED)
            .map_err(IntoResponse::into_response)?;
        // A route's `{queue}` is checked against the key's prefixes here too, before the body.
        if let Ok(params) = axum::extract::RawPathParams::from_request_parts(parts, state).await
            && let Some((_, queue)) = params.iter().find(|(name, _)| *name == "queue")
        {
            caller
                .require_queue(queue)
                .map_err(IntoResponse::into_response)?;
        }
        Ok(Authorized {
            caller,
            parts: extracted,
            scopes: PhantomData,
        })
    }
}

impl Caller {
    /// 403 unless the caller has one of `scopes`.
    pub fn require(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        if scopes.iter().any(|s| self.allows(*s)) {
            return Ok(());
        }
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        Err(ApiError::forbidden(
            self.name(),
            "scope",
            format!(
                "key {:?} lacks the scope for this (needs one of: {})",
                self.name(),
                names.join(", ")
            ),
        ))
    }

    /// 403 for a key limited to queue prefixes: what it asks for spans every queue (metrics, the
    /// audit log).
    pub fn require_every_queue(&self) -> Result<(), ApiError> {
        match self {
            Caller::Key(k) if !k.queue_prefixes.is_empty() => Err(ApiError::forbidden(
                &k.name,
                "every_queue",
                format!(
                    "key {:?} is limited to some queues; this shows every queue",
                    self.name()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// 403 unless the caller may touch `queue`.
    pub fn require_queue(&self, queue: &str) -> Result<(), ApiError> {
        if self.allows_queue(queue) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            self.name(),
            "queue",
            format!("key {:?} may not use queue {queue:?}", self.name()),
        ))
    }
}

/// A path parameter, refused in the API's error format when it is not valid text.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|rej| ApiError::invalid("path", rej.body_text()))
    }
}

/// A query string as name → value, refusing parameters the route does not know.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        if let Some(q) = parts.uri.query() {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
                .map_err(|e| ApiError::invalid("query", e.to_string()))?;
            for (k, v) in pairs {
                if map.insert(k.clone(), v).is_some() {
                    return Err(ApiError::invalid(k, "given more than once"));
                }
            }
        }
        Ok(Params(map))
    }
}

impl Params {
    /// Refuses any parameter not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k.clone(),
                format!("unknown query parameter; known: {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// A text parameter.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// A number parameter.
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::invalid(name, format!("{v:?} is not a whole number")))
            })
            .transpose()
    }

    /// A job-id parameter (a cursor).
    pub fn job_id(&self, name: &str) -> Result<Option<JobId>, ApiError> {
        self.0.get(name).map(|v| parse_id(name, v)).transpose()
    }
}

/// Parses a job id, naming `field` when it is not one.
pub fn parse_id(field: &str, s: &str) -> Result<JobId, ApiError> {
    s.parse()
        .map_err(|e: errand_core::id::ParseJobIdError| ApiError::invalid(field, e.to_string()))
}
