#!/usr/bin/env python3
"""Server memory with 1,000,000 waiting jobs (docs/PERFORMANCE.md).

Starts `errand serve` (release build) on a fresh data directory, enqueues 1,000 batches of 1,000 jobs
over HTTP, reads the queue's counts, claims 50,000 of them, and prints the server's resident memory
(VmRSS) and its peak (VmHWM) after each step.

    cargo build --release
    python3 benches/memory.py                                   # embedded store
    python3 benches/memory.py --store postgres://postgres@127.0.0.1:5432/postgres --pg-schema errand_mem

Extra arguments go to `errand serve`. With PostgreSQL, drop the schema afterwards.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "errand")
PORT = int(os.environ.get("ERRAND_MEMORY_PORT", "7790"))
BASE = f"http://127.0.0.1:{PORT}"


def post(path, body):
    req = urllib.request.Request(
        BASE + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    return urllib.request.urlopen(req).read()


def memory(pid, step):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    print(f"{step:<32} RSS {fields['VmRSS']:>5} MB   peak {fields['VmHWM']:>5} MB", flush=True)


def main():
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [BINARY, "serve", "--listen", f"127.0.0.1:{PORT}", "--data-dir", data] + sys.argv[1:],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(BASE + "/health/ready")
                    break
                except OSError:
                    time.sleep(0.1)
            memory(server.pid, "started")
            batch = {"jobs": [{"kind": "noop", "payload": {"order": i, "note": "x" * 40}} for i in range(1000)]}
            for _ in range(1000):
                post("/v1/queues/memory/jobs", batch)
            memory(server.pid, "1,000,000 waiting")
            counts = json.loads(urllib.request.urlopen(BASE + "/v1/queues/memory").read())["counts"]
            assert counts["waiting"] == 1_000_000, counts
            memory(server.pid, "after counting them")
            for _ in range(50):
                post("/v1/fetch", {"queues": ["memory"], "worker_id": "m", "max_jobs": 1000, "wait_ms": 0})
            memory(server.pid, "after claiming 50,000")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
