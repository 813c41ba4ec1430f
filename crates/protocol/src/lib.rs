//! The wire types of Errand's HTTP API (`/v1`), shared by the server and the Rust client so that a client
//! never compiles the engine. `docs/API.md` shows each route with a curl example; the server derives
//! `/openapi.json` from these types.
//!
//! Conventions: every instant is milliseconds since the Unix epoch (`*_at`), every duration is in
//! milliseconds (`*_ms`), JSON documents a producer or worker sends (payload, result, progress) are passed
//! through as they are. Requests refuse unknown fields, so that a misspelt option is an error rather than
//! silently ignored. Errors are always [`ErrorBody`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The path prefix of every API route.
pub const API_PREFIX: &str = "/v1";

/// Integers in requests. JSON has one kind of number, and the JSON Schema of `/openapi.json` counts `2.0`
/// as the integer 2, so a whole number written with a fraction or an exponent (`2.0`, `3e3`) is taken as
/// that integer; `2.5`, or a number out of the field's range, is still refused.
mod whole {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

    pub(crate) trait Int: Sized + TryFrom<u64> + TryFrom<i64> {
        const NAME: &'static str;
    }

    impl Int for u32 {
        const NAME: &'static str = "u32";
    }

    impl Int for u64 {
        const NAME: &'static str = "u64";
    }

    impl Int for i32 {
        const NAME: &'static str = "i32";
    }

    impl Int for i64 {
        const NAME: &'static str = "i64";
    }

    struct IntVisitor<T>(PhantomData<T>);

    impl<T: Int> Visitor<'_> for IntVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::NAME)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            // 2^64 and -2^63 are exact as f64; a whole f64 in between converts exactly.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                return self.visit_u64(v as u64);
            }
            if v.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&v) {
                return self.visit_i64(v as i64);
            }
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    /// An integer field.
    pub(crate) fn int<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<T, D::Error> {
        d.deserialize_any(IntVisitor(PhantomData))
    }

    struct Whole<T>(T);

    impl<'de, T: Int> Deserialize<'de> for Whole<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            int(d).map(Whole)
        }
    }

    /// An optional integer field (`null` is absent).
    pub(crate) fn opt<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<Option<T>, D::Error> {
        Ok(Option::<Whole<T>>::deserialize(d)?.map(|Whole(v)| v))
    }
}

/// Request bodies are JSON objects. serde's derive would also take an array for a struct, as its
/// fields in order (`["email", null]` for `{"kind": "email", "payload": null}`), which the API neither
/// promises nor describes: each request type derives its (de)serialization as `remote = "Self"`, and
/// this macro implements the traits with deserialization from an object only.
macro_rules! object_only {
    ($($t:ident),* $(,)?) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $t::serialize(self, s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;

                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $t;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("an object (", stringify!($t), ")"))
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$t, A::Error> {
                        $t::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }

                d.deserialize_map(ObjectVisitor)
            }
        }
    )*};
}

object_only!(
    Backoff,
    EnqueueJob,
    FlowRequest,
    FlowJob,
    EnqueueBatch,
    FetchRequest,
    HeartbeatRequest,
    LogRequest,
    CompleteRequest,
    FailRequest,
    ReleaseRequest,
    AckItem,
    AckBatchRequest,
    Retention,
    QueueConfig,
    RateLimit,
    DeadFilter,
    WebhookDef,
    ScheduleDef,
);

/// The names, ids and keys of the API as `/openapi.json` describes them: each a string schema carrying
/// the rule the server enforces (`errand_core::validate`, with the defaults of `errand_core::limits`).
/// They exist only for the description; the wire types hold plain strings.
#[cfg(feature = "openapi")]
pub mod schema {
    use std::borrow::Cow;

    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    macro_rules! string_schema {
        ($(#[$doc:meta])* $name:ident: $description:literal, $pattern:literal, $min:literal..=$max:literal) => {
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name;

            impl utoipa::PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some($description))
                        .pattern(Some($pattern))
                        .min_length(Some($min))
                        .max_length(Some($max))
                        .into()
                }
            }

            impl utoipa::ToSchema for $name {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($name))
                }
            }
        };
    }

    string_schema!(
        /// A queue name.
        QueueName: "A queue name: 1–64 of `A-Z a-z 0-9 _ - . :`, not dots only.",
        r"^(?![.]+$)[A-Za-z0-9_.:-]+$", 1..=64
    );
    string_schema!(
        /// A queue name that callers may put jobs in, work or schedule for: not one of Errand's own.
        JobQueueName: "A queue name (1–64 of `A-Z a-z 0-9 _ - . :`, not dots only) that is not one of \
                       Errand's own (`errand.*`): those take no jobs or workers from outside.",
        r"^(?!errand\.)(?![.]+$)[A-Za-z0-9_.:-]+$", 1..=64
    );
    string_schema!(
        /// A schedule's or a webhook's name.
        Name: "A schedule's or webhook's name: 1–64 of `A-Z a-z 0-9 _ - . :`, not dots only.",
        r"^(?![.]+$)[A-Za-z0-9_.:-]+$", 1..=64
    );
    string_schema!(
        /// A job kind.
        Kind: "A job kind, the handler's name: 1–128 of `A-Z a-z 0-9 _ - . : /`.",
        r"^[A-Za-z0-9_.:/-]+$", 1..=128
    );
    string_schema!(
        /// A unique, group, concurrency or idempotency key.
        Key: "A key: 1–255 bytes (UTF-8), no control characters.",
        r"^[^\x00-\x1F\x7F-\x9F]+$", 1..=255
    );
    string_schema!(
        /// A worker's id.
        WorkerId: "A worker's id: 1–128 bytes (UTF-8), no control characters.",
        r"^[^\x00-\x1F\x7F-\x9F]+$", 1..=128
    );
    string_schema!(
        /// A job id.
        JobId: "A job id: a ULID, 26 characters of Crockford's base 32 (`0-9 A-Z` without `I L O U`, \
                either case), the first at most `7`.",
        r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", 26..=26
    );

    /// A queue's `unique_window_ms`: milliseconds, `"retention"` or `"forever"`.
    #[derive(Debug)]
    pub struct UniqueWindow;

    impl utoipa::PartialSchema for UniqueWindow {
        fn schema() -> RefOr<Schema> {
            use utoipa::openapi::schema::OneOfBuilder;
            OneOfBuilder::new()
                .description(Some(
                    "How long a completed job keeps holding its unique key: milliseconds (0–365 \
                     days), \"forever\", or \"retention\" (the default: as long as retention keeps \
                     completed jobs by age).",
                ))
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .maximum(Some(31_536_000_000_u64)),
                )
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["retention", "forever"])),
                )
                .into()
        }
    }

    impl utoipa::ToSchema for UniqueWindow {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("UniqueWindow")
        }
    }

    /// One event of `GET /v1/events`, as an SSE event: `event: job` with an `id` (its cursor) and an
    /// [`EventView`](crate::EventView) as data, or `event: missed` with an
    /// [`EventsMissed`](crate::EventsMissed).
    #[derive(Debug)]
    pub struct ServerSentEvent;

    impl utoipa::PartialSchema for ServerSentEvent {
        fn schema() -> RefOr<Schema> {
            use utoipa::openapi::extensions::Extensions;
            use utoipa::openapi::schema::OneOfBuilder;

            let event = |name: &str, data: &str, with_id: bool| {
                let mut content = Extensions::default();
                content.insert(
                    "contentSchema".into(),
                    serde_json::json!({ "$ref": format!("#/components/schemas/{data}") }),
                );
                let mut o = ObjectBuilder::new()
                    .property(
                        "event",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some([name])),
                    )
                    .required("event")
                    .property(
                        "data",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .content_media_type("application/json")
                            .extensions(Some(content)),
                    )
                    .required("data");
                if with_id {
                    o = o
                        .property("id", ObjectBuilder::new().schema_type(Type::String))
                        .required("id");
                }
                o
            };
            OneOfBuilder::new()
                .description(Some(
                    "One event of the stream: `job` (its `id` is the event's cursor, its data an \
                     EventView) or `missed` (its data an EventsMissed).",
                ))
                .item(event("job", "EventView", true))
                .item(event("missed", "EventsMissed", false))
                .into()
        }
    }

    impl utoipa::ToSchema for ServerSentEvent {
        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            use utoipa::PartialSchema;
            for (name, schema) in [
                (crate::EventView::name(), crate::EventView::schema()),
                (crate::EventsMissed::name(), crate::EventsMissed::schema()),
            ] {
                schemas.push((name.into_owned(), schema));
            }
            crate::EventView::schemas(schemas);
        }
    }
}

/// How long a completed job keeps holding its unique key (a queue's `unique_window_ms`): a number of
/// milliseconds, or the word `"retention"` or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueWindow {
    /// As long as retention keeps completed jobs by age (the default).
    Retention,
    /// This many milliseconds after the job completed.
    Ms(u64),
    /// For ever.
    Forever,
}

impl Serialize for UniqueWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UniqueWindow::Retention => s.serialize_str("retention"),
            UniqueWindow::Ms(ms) => s.serialize_u64(*ms),
            UniqueWindow::Forever => s.serialize_str("forever"),
        }
    }
}

impl<'de> Deserialize<'de> for UniqueWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(#[serde(deserialize_with = "whole::int")] u64),
            Word(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a number of milliseconds, \"retention\" or \"forever\"",
            )
        })? {
            Raw::Ms(ms) => Ok(UniqueWindow::Ms(ms)),
            Raw::Word(w) if w == "retention" => Ok(UniqueWindow::Retention),
            Raw::Word(w) if w == "forever" => Ok(UniqueWindow::Forever),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a number of milliseconds, \"retention\" or \"forever\", not \"{w}\""
            ))),
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable: see [`code`].
    pub code: String,
    /// For people.
    pub message: String,
    /// The request field at fault (`payload`, `jobs[3].priority`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error codes, each with the HTTP status it comes with.
pub mod code {
    /// 400: the request broke a rule; `field` names where.
    pub const INVALID: &str = "invalid";
    /// 401: no API key, or an unknown one.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 403: the key lacks the scope, or the queue is outside its prefixes.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404: no such job, queue or route.
    pub const NOT_FOUND: &str = "not_found";
    /// 405: the route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 409: the lease token is not the job's current lease; nothing changed.
    pub const LEASE_LOST: &str = "lease_lost";
    /// 409: the job's state does not allow this; nothing changed.
    pub const CONFLICT: &str = "conflict";
    /// 413: a body, payload, result, progress or batch is larger than its limit.
    pub const TOO_LARGE: &str = "too_large";
    /// 415: the body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// 429: a server limit is reached (e.g. waiting fetches); retry after `Retry-After` seconds.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// 503: the store cannot be reached, or the server is shutting down; retry.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 500: a fault of the server, never of the request.
    pub const INTERNAL: &str = "internal";
}

/// How long to wait before the next attempt after a failure (see the queue configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Backoff {
    /// `fixed` or `exponential` (`delay_ms · 2^(n−1)` after the n-th failure).
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// At most 30 days.
    #[serde(deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2_592_000_000_u64))]
    pub delay_ms: u64,
    /// Takes off a random part of up to this fraction of each delay (0–1).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub jitter: f64,
    /// Caps each delay; at most 30 days.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2_592_000_000_u64))]
    pub max_ms: Option<u64>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The shape of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    Fixed,
    Exponential,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Waiting,
    Delayed,
    Active,
    /// A flow's parent, waiting until each of its children completed.
    WaitingChildren,
    Completed,
    Cancelled,
    Dead,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::WaitingChildren,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Dead,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::WaitingChildren => "waiting_children",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
        }
    }

    /// Parses a state's wire name.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `completed`, `cancelled` or `dead`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Dead
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job to enqueue: `POST /v1/queues/{queue}/jobs` with this body, or `{"jobs": [...]}` of them.
/// Every option left out takes the queue's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EnqueueJob {
    /// The handler's name: 1–128 of `A-Z a-z 0-9 _ - . : /`.
    #[cfg_attr(feature = "openapi", schema(value_type = schema::Kind))]
    pub kind: String,
    /// Any JSON, at most 1 MiB serialized and 64 levels deep; `null` when left out.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Value,
    /// 0–1000, lower runs first (queue default 500).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000))]
    pub priority: Option<i32>,
    /// Run no earlier than this many ms from now, at most 365 days. Exclusive with `run_at`.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 31_536_000_000_u64))]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this instant (ms since the epoch, not negative), at most 365 days from
    /// now; an instant past means now. Exclusive with `delay_ms`.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub run_at: Option<i64>,
    /// 1–1000 (queue default 3).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// How long one attempt may run, heartbeats or not: 100 ms to 7 days (queue default 5 minutes).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 604_800_000_u64))]
    pub timeout_ms: Option<u64>,
    /// How often the worker promises to heartbeat; the lease is derived from it and the timeout.
    /// 100 ms up to the job's timeout (its own, or the queue's).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 604_800_000_u64))]
    pub heartbeat_ms: Option<u64>,
    /// 0–100 (queue default 1).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub max_stalled: Option<u32>,
    /// At most one unfinished job per queue with this key; a repeat returns the existing job.
    /// 1–255 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub unique_key: Option<String>,
    /// What a repeat of a held `unique_key` does: `reject` (default: the existing job stays as it is)
    /// or `replace` (a waiting or delayed job takes this one's payload, priority and run time — a
    /// debounce with `delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// The tenant: claims rotate between groups, and the queue's `group_concurrency` and
    /// `group_rate_limit` apply per group. 1–255 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub group_key: Option<String>,
    /// What must not be worked on twice at once (an order, a wallet): at most the queue's
    /// `key_concurrency` (default 1) active jobs share one. Independent of `group_key`. 1–255
    /// bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub concurrency_key: Option<String>,
    /// Stable across attempts; defaults to one derived from the unique key, or the job id. 1–255
    /// bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub idempotency_key: Option<String>,
    /// For a child of a flow: what its dying (or being cancelled) does to the parent — `fail` (the
    /// default: the parent dies, `child_dead`) or `release` (the parent stops waiting for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_on_dead: Option<ParentOnDead>,
}

/// See [`EnqueueJob::parent_on_dead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParentOnDead {
    #[default]
    Fail,
    Release,
}

/// `POST /v1/flows`: a parent job that waits (`waiting_children`) until each child completed, then
/// runs and reads its children's results (`GET /v1/jobs/{id}/children`). All or nothing; no unique keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FlowRequest {
    pub parent: FlowJob,
    /// 1 to 1,000 children.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub children: Vec<FlowJob>,
}

/// A job of a flow, with its queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FlowJob {
    #[cfg_attr(feature = "openapi", schema(value_type = schema::JobQueueName))]
    pub queue: String,
    /// A job of a flow takes no `unique_key` (nor, therefore, `dedup: replace`).
    pub job: EnqueueJob,
}

/// What `POST /v1/flows` created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FlowResponse {
    pub parent: Enqueued,
    pub children: Vec<Enqueued>,
}

impl EnqueueJob {
    /// A job of `kind` with `payload` and every option at the queue's default.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        EnqueueJob {
            kind: kind.into(),
            payload,
            ..Default::default()
        }
    }
}

/// See [`EnqueueJob::dedup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Dedup {
    #[default]
    Reject,
    Replace,
}

/// An atomic batch: every job is written, or none (the error names `jobs[i].field`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EnqueueBatch {
    /// 1 to 10,000 jobs.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 10_000))]
    pub jobs: Vec<EnqueueJob>,
}

/// The outcome of enqueuing one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Enqueued {
    pub id: String,
    pub state: JobState,
    /// `false` when the unique key matched an existing job: `id` is that job's.
    pub created: bool,
    /// With `dedup: replace`: the existing job took this one's payload, priority and run time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
}

/// The outcome of a batch, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnqueuedBatch {
    pub jobs: Vec<Enqueued>,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AttemptError {
    pub attempt: u32,
    /// `error`, `non_retryable`, `timeout` or `stalled`.
    pub kind: String,
    pub message: String,
    pub at: i64,
    /// Where it failed, as the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// The lease of an active job, as others see it (the token is only ever given to its holder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LeaseView {
    pub worker_id: String,
    pub expires_at: i64,
    /// When the attempt times out, heartbeats or not.
    pub deadline_at: i64,
}

/// A job as `GET /v1/jobs/{id}` and the listings show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobView {
    pub id: String,
    pub queue: String,
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Box<RawValue>,
    pub state: JobState,
    pub priority: i32,
    pub run_at: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    pub lease_ms: u64,
    pub max_stalled: u32,
    pub stalls: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The flow parent of this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// A flow parent's children not completed yet.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pending_children: u32,
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub progress: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub result: Option<Box<RawValue>>,
    /// One per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// `attempts_exhausted`, `non_retryable`, `stalled` or `child_dead`, for a dead job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

/// A page of jobs. Pass `next_cursor` back as `cursor` for the next page; it is absent on the last page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The outcome of a cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CancelResponse {
    pub id: String,
    /// `cancelled` (it was waiting or delayed), or `requested` (it is active; its worker learns of it on
    /// its next heartbeat).
    pub outcome: String,
}

/// A job's id and state after an operator's action (retry, promote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobStateResponse {
    pub id: String,
    pub state: JobState,
}

/// `POST /v1/fetch`: claim up to `max_jobs` due jobs, waiting up to `wait_ms` for one to arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FetchRequest {
    /// 1–64 queue names; earlier queues are not preferred over later ones except by priority. Not
    /// Errand's own (`errand.*`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<schema::JobQueueName>, min_items = 1, max_items = 64))]
    pub queues: Vec<String>,
    /// Shown on the job's lease.
    #[cfg_attr(feature = "openapi", schema(value_type = schema::WorkerId))]
    pub worker_id: String,
    /// 1 to the claim limit (1,000); default 1.
    #[serde(default = "one", deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_jobs: u32,
    /// How long to wait when no job is due (long poll); 0 answers at once. Longer waits are cut to
    /// the server's `max_wait_ms` (default 30,000).
    #[serde(default, deserialize_with = "whole::int")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "uint64",
            minimum = 0,
            maximum = 18_446_744_073_709_551_615_u64
        )
    )]
    pub wait_ms: u64,
    /// This worker's promise to heartbeat every job it holds at least this often (100 ms – 7 days;
    /// the SDKs send 10,000 and keep it). Each job's lease then lasts at most `2 × heartbeat_ms + 5 s`,
    /// so that a dead worker's jobs run elsewhere that soon instead of after their whole timeout.
    /// Absent: the lease covers the job's timeout (or twice its own `heartbeat_ms`), plus 5 s.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 604_800_000_u64))]
    pub heartbeat_ms: Option<u64>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

/// A job handed to a worker, with the lease it holds it under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FetchedJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Box<RawValue>,
    /// This attempt's number (1-based).
    pub attempt: u32,
    pub max_attempts: u32,
    /// Present this on heartbeat, complete, fail and release.
    pub lease_token: String,
    /// Heartbeat before this, or the job is taken back.
    pub lease_expires_at: i64,
    /// The attempt fails with `timeout` at this instant, heartbeats or not.
    pub deadline_at: i64,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Pass it to payment, mint and e-mail APIs: the same on every attempt.
    pub idempotency_key: String,
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The progress a previous attempt reported, to resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub progress: Option<Box<RawValue>>,
    pub created_at: i64,
}

/// The answer to a fetch: empty when nothing was due by the end of the wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FetchResponse {
    pub jobs: Vec<FetchedJob>,
}

/// `POST /v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_token: String,
    /// Replaces the job's progress (any JSON, at most 64 KiB serialized and 64 levels deep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub progress: Option<Value>,
}

/// `POST /v1/jobs/{id}/logs`: append lines to the job's log under its lease. At most 100 lines per
/// request; a line longer than 2 KiB is cut; the job keeps its latest 200 lines, across attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct LogRequest {
    pub lease_token: String,
    /// 1 to 100 lines.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub lines: Vec<String>,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogLineView {
    /// When the server received it.
    pub at: i64,
    /// The attempt that logged it.
    pub attempt: u32,
    pub line: String,
}

/// `GET /v1/jobs/{id}/logs`: the job's log, oldest line first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobLogs {
    pub logs: Vec<LogLineView>,
}

/// The lease after a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HeartbeatResponse {
    pub lease_expires_at: i64,
    /// Stop the job and report it (fail or release): an operator cancelled it.
    pub cancel_requested: bool,
}

/// `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_token: String,
    /// Any JSON, at most 1 MiB serialized and 64 levels deep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub result: Option<Value>,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: String,
    /// Kept on the job (truncated beyond 8 KiB).
    pub message: String,
    /// `false`: no retry can help; the job goes straight to the dead-letter queue. Default `true`.
    #[serde(default = "yes")]
    pub retryable: bool,
    /// Retry no sooner than this (a provider's `Retry-After`), at most 365 days; overrides the backoff
    /// policy.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 31_536_000_000_u64))]
    pub retry_after_ms: Option<u64>,
    /// Where it failed: a stack trace, kept with the error (truncated beyond 16 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/jobs/{id}/release`: give back a job without using an attempt — one fetched but not started
/// (due again at once), or one a provider would not take yet (`delay_ms`: due again no sooner than that,
/// a *snooze* for a rate limit's `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ReleaseRequest {
    pub lease_token: String,
    /// Run again no sooner than this many ms from now (at most 365 days; default 0).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 31_536_000_000_u64))]
    pub delay_ms: Option<u64>,
}

/// Where an acknowledged job went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckResponse {
    pub state: JobState,
    /// When the retry is due, for a failure that will be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
    /// The same lease was acknowledged before (a retried request whose answer was lost): nothing
    /// changed, and this is still a success.
    #[serde(default)]
    pub duplicate: bool,
}

/// One acknowledgement of `POST /v1/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(
    remote = "Self",
    tag = "outcome",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum AckItem {
    Complete {
        id: String,
        lease_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
        result: Option<Value>,
    },
    Fail {
        id: String,
        lease_token: String,
        message: String,
        #[serde(default = "yes")]
        retryable: bool,
        #[serde(
            default,
            deserialize_with = "whole::opt",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(
            feature = "openapi",
            schema(
                format = "uint64",
                minimum = 0,
                maximum = 18_446_744_073_709_551_615_u64
            )
        )]
        retry_after_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stack: Option<String>,
    },
    Release {
        id: String,
        lease_token: String,
        /// As in [`ReleaseRequest::delay_ms`].
        #[serde(
            default,
            deserialize_with = "whole::opt",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(
            feature = "openapi",
            schema(
                format = "uint64",
                minimum = 0,
                maximum = 18_446_744_073_709_551_615_u64
            )
        )]
        delay_ms: Option<u64>,
    },
}

impl AckItem {
    /// The job acknowledged.
    pub fn id(&self) -> &str {
        match self {
            AckItem::Complete { id, .. }
            | AckItem::Fail { id, .. }
            | AckItem::Release { id, .. } => id,
        }
    }
}

/// `POST /v1/ack`: many completions, failures and releases in one request and one commit. Each stands
/// or falls on its own (a lost lease on one does not affect the others): an item the server refuses
/// (a bad id, a `retry_after_ms` or `delay_ms` beyond 365 days, a result over 1 MiB) gets its error in
/// its result, and the request still succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AckBatchRequest {
    /// At most 10,000.
    #[cfg_attr(feature = "openapi", schema(max_items = 10_000))]
    pub acks: Vec<AckItem>,
}

/// The outcome of one acknowledgement of a batch: `ok` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckResult {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<AckResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The outcomes of `POST /v1/ack`, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AckBatchResponse {
    pub results: Vec<AckResult>,
}

/// How long finished (completed and cancelled) jobs are kept; dead jobs are never pruned automatically.
/// [`Retention::KEEP_ALL`] keeps every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Retention {
    /// Keep at most this many completed jobs, and as many cancelled; `null`: no count limit.
    #[serde(default, deserialize_with = "whole::opt")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)
    )]
    pub max_count: Option<u64>,
    /// Remove those finished longer ago than this; `null`: no age limit.
    #[serde(default, deserialize_with = "whole::opt")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 4_611_686_018_427_387_903_u64)
    )]
    pub max_age_ms: Option<u64>,
}

impl Retention {
    /// No limit by count or by age.
    pub const KEEP_ALL: Retention = Retention {
        max_count: None,
        max_age_ms: None,
    };
}

/// A queue's defaults and settings (`GET`/`PUT /v1/queues/{queue}/config`). A `PUT` replaces the whole
/// configuration; a field left out takes its default. It applies to jobs enqueued afterwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct QueueConfig {
    /// 0–1000, lower runs first (default 500).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000))]
    pub priority: Option<i32>,
    /// 1–1000 (default 3).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// 100 ms to 7 days (default 5 minutes).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 604_800_000_u64))]
    pub timeout_ms: Option<u64>,
    /// 100 ms up to the timeout. `null` or absent: jobs promise no heartbeat and may run their whole
    /// timeout without one.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 604_800_000_u64))]
    pub heartbeat_ms: Option<u64>,
    /// 0–100 (default 1).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub max_stalled: Option<u32>,
    /// How long a completed job keeps holding its unique key: milliseconds (0–365 days; 0 frees it
    /// when the job completes), `"forever"`, or `"retention"` (the default: as long as retention keeps
    /// completed jobs by age, 7 days by default, and for ever when retention sets no age). The key
    /// outlives the job when retention removes it sooner (by count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::UniqueWindow>))]
    pub unique_window_ms: Option<UniqueWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// At most this many active jobs in the queue, across every worker and node (1–1,000,000).
    /// Absent: no limit.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub concurrency: Option<u32>,
    /// At most this many active jobs per group key (1–1,000,000). Absent: no limit.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub group_concurrency: Option<u32>,
    /// At most this many active jobs per concurrency key (1–1,000,000; default 1).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub key_concurrency: Option<u32>,
    /// A token bucket over the queue's claims, all groups together. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A token bucket over each group's claims. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_rate_limit: Option<RateLimit>,
}

/// `limit` jobs per `period_ms`, in bursts of up to `burst` (default `limit`): a token bucket the
/// server checks at claim time, for every worker on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RateLimit {
    /// 1–1,000,000.
    #[serde(deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub limit: u32,
    /// 1 ms to a day.
    #[serde(deserialize_with = "whole::int")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400_000))]
    pub period_ms: u64,
    /// 1–1,000,000.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub burst: Option<u32>,
}

/// A queue's counts per state, and more.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueCounts {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub dead: u64,
    /// Flow parents waiting for their children.
    #[serde(default)]
    pub waiting_children: u64,
}

/// A queue: whether it is paused, its counts, and how long its oldest due job has waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    pub counts: QueueCounts,
    pub oldest_waiting_age_ms: u64,
}

/// `GET /v1/queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

/// `POST /v1/queues/{queue}/dead/replay` and the filter of `DELETE /v1/queues/{queue}/dead`: which dead
/// jobs. Everything left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct DeadFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Kind>))]
    pub kind: Option<String>,
    /// Only jobs whose latest error message contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
    /// Only jobs whose latest error has this fingerprint (`GET /v1/queues/{queue}/dead/groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// At most this many jobs.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "uint64",
            minimum = 0,
            maximum = 18_446_744_073_709_551_615_u64
        )
    )]
    pub limit: Option<u64>,
}

/// `PUT /v1/queues/{queue}/webhooks/{name}`: where to POST when one of the queue's jobs ends. Each POST
/// carries `Errand-Signature: t=<ms since the epoch>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by
/// secret>`, `Errand-Webhook: <name>` and `Errand-Delivery: <delivery id>` (the same on every retry of
/// one notice: deduplicate on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct WebhookDef {
    /// `http://` or `https://`, at most 2,048 bytes, without whitespace or control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^https?://[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
            max_length = 2048
        )
    )]
    pub url: String,
    /// The signing key, 16–512 bytes (UTF-8). Never shown again.
    #[cfg_attr(feature = "openapi", schema(min_length = 16, max_length = 512))]
    pub secret: String,
    /// One or more of `completed`, `dead`, `cancelled`, `alert`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<WebhookEvent>, min_items = 1))]
    pub events: Vec<String>,
}

/// What a webhook is told of: a job `completed`, `dead` or `cancelled`, or an `alert` firing. Only for
/// the description: [`WebhookDef::events`] holds these as strings.
#[cfg(feature = "openapi")]
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum WebhookEvent {
    Completed,
    Dead,
    Cancelled,
    Alert,
}

/// A webhook as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookView {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
}

/// `GET /v1/queues/{queue}/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// How many jobs a bulk action touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CountResponse {
    pub count: u64,
}

/// What a cron schedule does about ticks missed while no server ran: `skip` them (the default), or
/// `catch_up_one` — one job for all of them. A tick seen within 60 s of its time is never missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    #[default]
    Skip,
    CatchUpOne,
}

/// A cron schedule's definition: `PUT /v1/schedules/{name}`. Each tick enqueues one job of `kind` with
/// `payload` on `queue`; options left out take the queue's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ScheduleDef {
    /// 5 fields (`min hour day-of-month month day-of-week`), 6 with seconds first, or `@yearly`
    /// (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`; at most 256 bytes.
    /// Names (`JAN`, `MON`), lists, ranges, steps and `L`, `W`, `#`, `?` are understood. An
    /// expression that never fires (`0 0 30 2 *`) is refused.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub cron: String,
    /// An IANA time zone (default `UTC`), case-sensitive: ticks follow its wall clock, daylight
    /// saving included.
    #[serde(default = "utc")]
    pub timezone: String,
    #[cfg_attr(feature = "openapi", schema(value_type = schema::JobQueueName))]
    pub queue: String,
    #[cfg_attr(feature = "openapi", schema(value_type = schema::Kind))]
    pub kind: String,
    /// Any JSON, at most 1 MiB serialized and 64 levels deep.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Value,
    #[serde(default)]
    pub missed: Missed,
    /// 0–1000, lower runs first.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000))]
    pub priority: Option<i32>,
    /// 1–1000.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// 100 ms to 7 days.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 604_800_000_u64))]
    pub timeout_ms: Option<u64>,
    /// 100 ms up to the job's timeout (its own, or the queue's).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 604_800_000_u64))]
    pub heartbeat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<schema::Key>))]
    pub group_key: Option<String>,
}

fn utc() -> String {
    "UTC".to_string()
}

impl ScheduleDef {
    /// A schedule of `cron` (in UTC) enqueuing `kind` with `payload` on `queue`.
    pub fn new(
        cron: impl Into<String>,
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: Value,
    ) -> Self {
        ScheduleDef {
            cron: cron.into(),
            timezone: utc(),
            queue: queue.into(),
            kind: kind.into(),
            payload,
            missed: Missed::Skip,
            priority: None,
            max_attempts: None,
            backoff: None,
            timeout_ms: None,
            heartbeat_ms: None,
            group_key: None,
        }
    }
}

/// A schedule and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ScheduleView {
    pub name: String,
    #[serde(flatten)]
    pub def: ScheduleDef,
    pub paused: bool,
    /// The next ticks (up to 5), ms since the epoch; empty if it never fires again. While paused,
    /// the ticks it would fire once resumed.
    pub next_runs: Vec<i64>,
    /// The latest tick that fired, and its job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// `GET /health/live` and `GET /health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_misspelt_option_is_refused_not_ignored() {
        let e = serde_json::from_value::<EnqueueJob>(json!({"kind": "k", "priorty": 1}));
        assert!(e.unwrap_err().to_string().contains("priorty"));
    }

    #[test]
    fn ack_items_are_tagged_by_outcome() {
        let a: AckBatchRequest = serde_json::from_value(json!({"acks": [
            {"outcome": "complete", "id": "a", "lease_token": "t"},
            {"outcome": "fail", "id": "b", "lease_token": "t", "message": "m"},
            {"outcome": "release", "id": "c", "lease_token": "t"},
        ]}))
        .unwrap();
        assert!(matches!(
            &a.acks[1],
            AckItem::Fail {
                retryable: true,
                ..
            }
        ));
        assert_eq!(a.acks[2].id(), "c");
    }

    #[test]
    fn whole_numbers_written_as_floats_are_integers_and_fractions_are_not() {
        let j: EnqueueJob =
            serde_json::from_value(json!({"kind": "k", "priority": 2.0, "delay_ms": 1e3})).unwrap();
        assert_eq!((j.priority, j.delay_ms), (Some(2), Some(1000)));
        for bad in [json!(2.5), json!(-1), json!(4_294_967_296_u64), json!("2")] {
            let e = serde_json::from_value::<EnqueueJob>(json!({"kind": "k", "max_attempts": bad}));
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_is_an_object_never_an_array_of_its_fields() {
        assert!(serde_json::from_value::<EnqueueJob>(json!(["k", null])).is_err());
        assert!(serde_json::from_value::<DeadFilter>(json!([null, null])).is_err());
        assert!(serde_json::from_value::<QueueConfig>(json!({"retention": []})).is_err());
        let ack = json!({"acks": [["complete", "a", "t"]]});
        assert!(serde_json::from_value::<AckBatchRequest>(ack).is_err());
        // And what the client sends is what the server reads.
        let job = EnqueueJob {
            priority: Some(7),
            ..EnqueueJob::new("k", json!({"x": 1}))
        };
        let back: EnqueueJob = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn fetch_defaults_to_one_job_and_no_wait() {
        let f: FetchRequest =
            serde_json::from_value(json!({"queues": ["q"], "worker_id": "w"})).unwrap();
        assert_eq!((f.max_jobs, f.wait_ms), (1, 0));
    }
}

/// One job state change, as `GET /v1/events` streams it (the SSE `data` of an event of type `job`;
/// its `id` is `cursor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventView {
    /// Resume after this event with `after=<cursor>` or the `Last-Event-ID` header.
    pub cursor: String,
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    /// Absent for a job just enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<JobState>,
    pub to: JobState,
    pub at: i64,
    pub attempt: u32,
    /// A failed attempt this change records: `error`, `non_retryable`, `timeout` or `stalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The data of `GET /v1/events`'s `missed` event: events were dropped from the node's history (or the
/// cursor is from before a restart); the stream goes on from the oldest event kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventsMissed {
    /// The cursor after which the stream goes on.
    pub from: String,
}

/// `GET /v1/whoami`: the key the request was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WhoAmI {
    /// The key's name (`anonymous` when the server has no keys).
    pub name: String,
    /// `produce`, `work`, `read`, `admin`.
    pub scopes: Vec<String>,
    /// Queue-name prefixes the key is limited to (empty: every queue).
    pub queues: Vec<String>,
}

/// `GET /v1/activity`: what this node saw happen to jobs over the last few minutes, in buckets of
/// equal length, oldest first and ending with the bucket that holds `now` (still filling). Buckets
/// with nothing in them are listed with zeros, so that a gap reads as idle, not as unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ActivityHistory {
    /// The server's clock when it answered (ms since the epoch): a client places the buckets on its
    /// own clock by this.
    pub now: i64,
    /// The length of every bucket, in ms.
    pub bucket_ms: u64,
    pub buckets: Vec<ActivityBucket>,
}

/// One bucket of [`ActivityHistory`], over every queue: counts of what happened from `at` to
/// `at + bucket_ms`, and the sums of durations that give mean latencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ActivityBucket {
    /// The bucket's start (ms since the epoch).
    pub at: i64,
    /// Jobs enqueued.
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failed attempts (errors, timeouts, stalls).
    pub failed: u64,
    /// Attempts that ended (completed, failed or released), and the sum of how long they ran, in ms.
    pub ran: u64,
    pub ran_ms_sum: u64,
    /// Jobs claimed, and the sum of how long they had been due before the claim, in ms.
    pub claimed: u64,
    pub waited_ms_sum: u64,
}

/// `GET /v1/workers`: workers seen by this node in the last minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// A worker: its id, the queues it fetched from or heartbeat on, and when it was last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkerView {
    pub id: String,
    pub queues: Vec<String>,
    pub last_seen_at: i64,
}

/// `GET /v1/alerts`: the built-in alerts firing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
}

/// An alert firing: its rule, queue, the measured value against the threshold, since when the
/// condition holds and when it fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertView {
    /// `queue_depth`, `oldest_waiting`, `failure_rate`, `stalled`, `dead_letters` or `no_workers`.
    pub rule: String,
    pub queue: String,
    /// Always `firing` (resolved alerts are not listed).
    pub state: String,
    pub value: f64,
    pub threshold: f64,
    pub since: i64,
    pub fired_at: i64,
}

/// `GET /v1/queues/{queue}/dead/groups`: dead letters by error fingerprint, the largest groups first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeadGroupList {
    pub groups: Vec<DeadGroupView>,
    /// Dead jobs read (at most 100,000).
    pub scanned: u64,
    /// False when the queue holds more dead jobs than were read.
    pub complete: bool,
}

/// Dead jobs of one kind whose latest errors differ only in numbers, ids and quoted values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeadGroupView {
    /// Replay or purge the group with `{"fingerprint": ...}` / `?fingerprint=`.
    pub fingerprint: String,
    pub kind: String,
    /// The latest error of the group's most recent job.
    pub error: String,
    pub count: u64,
    pub last_failed_at: i64,
    pub sample_job_id: String,
}

/// `GET /v1/audit`: operators' actions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    /// Pass as `cursor` for older entries; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One action: when, by which key, what, to what, with what particulars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditView {
    pub id: u64,
    pub at: i64,
    /// The API key's name.
    pub key: String,
    /// `job.retry`, `job.cancel`, `job.promote`, `queue.pause`, `queue.resume`, `queue.configure`,
    /// `dead.replay`, `dead.purge`, `webhook.put`, `webhook.delete`, `schedule.put`,
    /// `schedule.delete`, `schedule.pause`, `schedule.resume`, `schedule.trigger`.
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub detail: Option<Value>,
}
