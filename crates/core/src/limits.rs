//! Every limit Errand enforces, with its default. `docs/ARCHITECTURE.md` and the API docs quote this table;
//! keep them in step.
//!
//! | limit | default |
//! |---|---|
//! | payload (JSON bytes) | 1 MiB (`errand serve --max-payload-bytes`; a queue's policy may set less) |
//! | result (JSON bytes) | 1 MiB |
//! | progress (JSON bytes) | 64 KiB |
//! | jobs in one enqueue batch | 10,000 |
//! | jobs in one claim | 1,000 |
//! | queues named in one claim | 64 |
//! | JSON nesting of a payload, result or progress | 64 levels |
//! | queue name | 1–64 of `A-Z a-z 0-9 _ - . :` |
//! | kind | 1–128 of `A-Z a-z 0-9 _ - . : /` |
//! | worker id | 1–128 printable characters |
//! | unique, group and idempotency keys | 1–255 bytes, no control characters |
//! | priority | 0–1000 (default 500; lower runs first) |
//! | max attempts | 1–1000 (queue default 3) |
//! | delay / run_at | at most 365 days ahead |
//! | timeout | 100 ms – 7 days (queue default 5 min) |
//! | heartbeat interval | 100 ms – the timeout (queue default: none) |
//! | backoff delay and cap | at most 30 days; jitter 0–1; a computed delay never exceeds 30 days |
//! | max stalls | 0–100 (queue default 1) |
//! | concurrency, group and key concurrency | 1–1,000,000 (queue defaults: none, none, 1) |
//! | rate limit | 1–1,000,000 jobs (burst the same) per 1 ms – 1 day (queue default: none) |
//! | jobs not yet started in a queue (`max_waiting`) | 1–1,000,000,000 (queue default: none) |
//! | error message | 8 KiB, longer ones are truncated (a worker's failure is never refused for its size) |
//! | error stack trace | 16 KiB, truncated likewise |
//! | log lines kept per job | the latest 200 (older ones are dropped as new ones arrive) |
//! | log line | 2 KiB, longer ones are truncated |
//! | log lines in one request | 100 |

/// The lowest priority number accepted (runs first).
pub const MIN_PRIORITY: i32 = 0;
/// The highest priority number accepted (runs last).
pub const MAX_PRIORITY: i32 = 1000;
/// The priority of a job and queue that set none.
pub const DEFAULT_PRIORITY: i32 = 500;
/// Added to every lease so that a heartbeat sent on time but delivered a little late still counts.
pub const LEASE_GRACE_MS: u64 = 5_000;

/// The configurable limits. [`Limits::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_result_bytes: usize,
    pub max_progress_bytes: usize,
    pub max_batch: usize,
    pub max_claim: usize,
    pub max_claim_queues: usize,
    pub max_json_depth: usize,
    pub max_queue_name: usize,
    pub max_kind: usize,
    pub max_worker_id: usize,
    pub max_key: usize,
    pub max_attempts: u32,
    pub max_delay_ms: u64,
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub min_heartbeat_ms: u64,
    pub max_backoff_ms: u64,
    pub max_stalled: u32,
    pub max_error_message: usize,
    /// A failure's stack trace, in bytes; longer ones are truncated.
    pub max_error_stack: usize,
    pub max_log_lines: usize,
    pub max_log_line_bytes: usize,
    pub max_log_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_result_bytes: 1 << 20,
            max_progress_bytes: 64 << 10,
            max_batch: 10_000,
            max_claim: 1_000,
            max_claim_queues: 64,
            max_json_depth: 64,
            max_queue_name: 64,
            max_kind: 128,
            max_worker_id: 128,
            max_key: 255,
            max_attempts: 1_000,
            max_delay_ms: 365 * 24 * 3_600_000,
            min_timeout_ms: 100,
            max_timeout_ms: 7 * 24 * 3_600_000,
            min_heartbeat_ms: 100,
            max_backoff_ms: 30 * 24 * 3_600_000,
            max_stalled: 100,
            max_error_message: 8 << 10,
            max_error_stack: 16 << 10,
            max_log_lines: 200,
            max_log_line_bytes: 2 << 10,
            max_log_batch: 100,
        }
    }
}
