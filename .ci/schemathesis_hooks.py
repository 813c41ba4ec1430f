"""Schemathesis hooks for .ci/run's API fuzzing step.

`/openapi.json` carries every rule of a request that JSON Schema can say. The few it cannot are below,
and a "schema-valid request rejected" failure (ST202) is dropped only when the server's answer is a
400 naming exactly such a rule; anything else still fails the run.
"""

import json
import os
import re

import schemathesis

# Where to note each dropped failure (field and message), for a look at what was dropped.
LOG = os.environ.get("ERRAND_SCHEMATHESIS_DROPPED")
# Where to note each failure kept, one line each, as the check fails: .ci/run counts these lines, so that
# a failed check counts even when the run's report shows it otherwise (a case that failed a check and then
# hit a network error ends as an error; one that failed and then passed when replayed ends as
# Hypothesis's "inconsistent results").
FAILED = os.environ.get("ERRAND_SCHEMATHESIS_FAILED")

# Rules JSON Schema cannot express, by the field the server names and how its message starts.
UNDESCRIBABLE = (
    # The bound moves with the clock: at most 365 days from now.
    ("run_at", "must be at most "),
    # The heartbeat's cap by the job's timeout (its own, or its queue's, set by another request) is
    # excused in `_undescribable` below, not here: only when the bound named is that timeout.
    # A cron expression's validity (syntax, ranges, and that it ever fires) — not its length.
    ("cron", "", "", "at most"),
    # The tz database's zone names.
    ("timezone", "unknown time zone"),
    # Lengths in bytes (JSON Schema counts characters): a webhook secret's here, the keys' and the
    # worker id's in BYTE_BOUNDS below.
    ("secret", "must be 16 to 512 bytes"),
    ("url", "must be an http:// or https:// URL of at most 2,048 characters"),
    # The server's destination lists (.ci/run denies every address): an IP literal is refused at once.
    ("url", "deliveries to this URL would be refused: "),
    # State across requests: a queue holds at most 10 webhooks.
    ("name", "a queue has at most 10 webhooks"),
    # A queue's policy, set by another request, refusing a job (crates/core/src/validate.rs
    # `job_policy`), or the queue's own defaults outside its policy's bounds.
    ("unique_key", "the queue's policy require_unique_key: "),
    ("payload", "the queue's policy max_payload_bytes: "),
    ("timeout_ms", "the queue's policy m"),
    ("max_attempts", "the queue's policy min_attempts: "),
    ("queue", "the queue's policy require_dead_letter_route: "),
    # Between two fields of one policy, and up to the server's own payload limit (a setting).
    ("policy.min_timeout_ms", "must be at most policy.max_timeout_ms ("),
    ("policy.max_payload_bytes", "must be between 2 and "),
    # Between two fields of a job: its time to live outlasts its delay.
    ("expire_after_ms", "must be longer than the job's delay"),
    # A worker's report: no control characters.
    ("report.sdk", "must be 1 to 64 characters, none of them control characters"),
    ("report.version", "must be 1 to 64 characters, none of them control characters"),
)


# Lengths in bytes: JSON Schema's maxLength counts characters, so a string within the description's
# maxLength can still exceed the server's bound in bytes (UTF-8). Only these fields have such a bound
# (crates/core/src/validate.rs `key`, with crates/core/src/limits.rs `max_key` and `max_worker_id`), and
# each is excused only with its own bound, in the server's exact words: a byte bound named on any other
# field, or with another number, is a failure.
BYTE_BOUNDS = {
    "unique_key": 255,
    "group_key": 255,
    "concurrency_key": 255,
    "idempotency_key": 255,
    "worker_id": 128,
}


# The largest timeout (7 days): a heartbeat bound below it is a job's or queue's timeout.
MAX_TIMEOUT_MS = 604_800_000


def _undescribable(error):
    field = error.get("field") or ""
    message = error.get("message") or ""
    if field == "heartbeat_ms" or field.endswith(".heartbeat_ms"):
        bounds = re.fullmatch(r"must be between (\d+) and (\d+)", message)
        return bool(bounds) and int(bounds.group(2)) < MAX_TIMEOUT_MS
    last = field.rsplit(".", 1)[-1]
    if last in BYTE_BOUNDS and message == f"must be at most {BYTE_BOUNDS[last]} bytes":
        return True
    for rule in UNDESCRIBABLE:
        name, start = rule[0], rule[1]
        end = rule[2] if len(rule) > 2 else ""
        unless = rule[3] if len(rule) > 3 else None
        named = not name or field == name or field.endswith("." + name)
        if unless is not None and unless in message:
            continue
        if named and message.startswith(start) and message.endswith(end):
            return True
    return False


# Purging a queue's dead letters (`DELETE /v1/queues/{queue}/dead`) deletes the dead jobs, not the
# queue's dead-letter list: reading the list or its groups afterwards rightly answers 200, empty.
PURGE = re.compile(r"DELETE /v1/queues/[^/]+/dead")


@schemathesis.hook
def filter_failure(context, failure, case, response):
    keep = _keep(failure, case, response)
    if keep and FAILED:
        title = " ".join(str(getattr(failure, "title", "") or "").split())
        with open(FAILED, "a", encoding="utf-8") as f:
            f.write(f"{case.operation.label}\t{failure.code}\t{response.status_code}\t{title}\n")
    return keep


def _keep(failure, case, response):
    if failure.code == "ST301" and PURGE.fullmatch(getattr(failure, "free", "") or ""):
        return False
    if failure.code == "ST202" and response.status_code == 429:
        # State across requests: a queue at its `max_waiting` (set by another request) refuses
        # enqueues with 429 until workers take some; nothing else answers a valid request 429 here.
        try:
            message = json.loads(response.content)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return True
        return " holds its max_waiting of " not in message
    if failure.code != "ST202" or response.status_code != 400:
        return True
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return True
    if not _undescribable(error):
        return True
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(f"{case.operation.label}\t{error.get('field')}\t{error.get('message')}\n")
    return False
