//! The names, ids and keys of the API as `/openapi.json` describes them: each a string schema carrying
//! the rule the server enforces (`errand_core::validate`, with the defaults of `errand_core::limits`).
//! They exist only for the description; the wire types hold plain strings.

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
    /// What an alert silence covers: a queue that is not one of Errand's own, or `*`.
    SilenceQueue: "A queue name (1–64 of `A-Z a-z 0-9 _ - . :`, not dots only, not one of Errand's \
                   own `errand.*`), or `*`: every queue and the server's own rules.",
    r"^(\*|(?!errand\.)(?![.]+$)[A-Za-z0-9_.:-]+)$", 1..=64
);
string_schema!(
    /// A built-in alert rule's name.
    AlertRule: "A built-in alert rule.",
    r"^(queue_depth|oldest_waiting|failure_rate|stalled|dead_letters|no_workers|disk_full|store_growth)$",
    1..=32
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
