"""Schemathesis hooks for .ci/run's API fuzzing step.

`/openapi.json` carries every rule of a request that JSON Schema can say. The few it cannot are below,
and a "schema-valid request rejected" failure (ST202) is dropped only when the server's answer is a
400 naming exactly such a rule; anything else still fails the run.
"""

import json
import os

import schemathesis

# Where to note each dropped failure (field and message), for a look at what was dropped.
LOG = os.environ.get("ERRAND_SCHEMATHESIS_DROPPED")

# Rules JSON Schema cannot express, by the field the server names and how its message starts.
UNDESCRIBABLE = (
    # The bound moves with the clock: at most 365 days from now.
    ("run_at", "must be at most "),
    # At most the job's timeout: its own, or its queue's (set by another request).
    ("heartbeat_ms", "must be between "),
    # A cron expression's validity (syntax, ranges, and that it ever fires).
    ("cron", ""),
    # The tz database's zone names.
    ("timezone", "unknown time zone"),
    # Lengths in bytes: JSON Schema counts characters.
    ("", "must be at most ", " bytes"),
    ("secret", "must be 16 to 512 bytes"),
    ("url", "must be an http:// or https:// URL of at most 2,048 characters"),
    # State across requests: a queue holds at most 10 webhooks.
    ("name", "a queue has at most 10 webhooks"),
)


def _undescribable(error):
    field = error.get("field") or ""
    message = error.get("message") or ""
    for rule in UNDESCRIBABLE:
        name, start = rule[0], rule[1]
        end = rule[2] if len(rule) > 2 else ""
        named = not name or field == name or field.endswith("." + name)
        if named and message.startswith(start) and message.endswith(end):
            return True
    return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
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
