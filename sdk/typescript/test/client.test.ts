/**
 * The client against a real `errand serve`: every route group, the errors, the timeouts and the retry
 * rules (which calls are repeated after which failures).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { createServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  Client,
  ConflictError,
  InvalidError,
  NotFoundError,
  RateLimitedError,
  TimeoutError,
  TransportError,
  UnauthorizedError,
  noRetry,
  type StreamEvent,
} from '../src/index.js';
import { startServer, type Server } from './server.js';

let server: Server;
let client: Client;
before(async () => {
  server = await startServer();
  client = new Client({ url: server.url });
});
after(() => server.stop());

let n = 0;
const q = (name: string) => `${name}-${++n}`;

describe('producers', () => {
  test('enqueue takes every job option and the job carries them', async () => {
    const queue = q('opts');
    const runAt = Date.now() + 60_000;
    const e = await client.enqueue(queue, {
      kind: 'charge',
      payload: { order: 42 },
      priority: 100,
      run_at: runAt,
      max_attempts: 7,
      backoff: { type: 'exponential', delay_ms: 2000, jitter: 0.1, max_ms: 60_000 },
      timeout_ms: 45_000,
      heartbeat_ms: 5_000,
      unique_key: 'charge-42',
      group_key: 'tenant-7',
      concurrency_key: 'order-42',
      idempotency_key: 'idem-42',
    });
    assert.equal(e.created, true);
    assert.equal(e.state, 'delayed');
    const job = await client.getJob(e.id);
    assert.deepEqual(job.payload, { order: 42 });
    assert.equal(job.priority, 100);
    assert.equal(job.run_at, runAt);
    assert.equal(job.max_attempts, 7);
    assert.deepEqual(job.backoff, { type: 'exponential', delay_ms: 2000, jitter: 0.1, max_ms: 60_000 });
    assert.equal(job.timeout_ms, 45_000);
    assert.equal(job.heartbeat_ms, 5_000);
    assert.equal(job.unique_key, 'charge-42');
    assert.equal(job.group_key, 'tenant-7');
    assert.equal(job.concurrency_key, 'order-42');
    assert.equal(job.idempotency_key, 'idem-42');

    // delay_ms, and promote makes it due now.
    const d = await client.enqueue(queue, { kind: 'later', delay_ms: 60_000 });
    assert.equal(d.state, 'delayed');
    assert.equal((await client.promote(d.id)).state, 'waiting');
    await assert.rejects(client.promote(d.id), ConflictError);
  });

  test('a unique key rejects a repeat, and dedup replace debounces', async () => {
    const queue = q('unique');
    const a = await client.enqueue(queue, { kind: 'k', payload: 1, unique_key: 'u', delay_ms: 10_000 });
    const b = await client.enqueue(queue, { kind: 'k', payload: 2, unique_key: 'u' });
    assert.equal(b.created, false);
    assert.equal(b.id, a.id);
    const c = await client.enqueue(queue, { kind: 'k', payload: 3, unique_key: 'u', dedup: 'replace', delay_ms: 20_000 });
    assert.equal(c.replaced, true);
    assert.deepEqual((await client.getJob(a.id)).payload, 3);
    const page = await client.listJobs(queue, { state: 'delayed', unique_key: 'u' });
    assert.equal(page.jobs.length, 1);
  });

  test('a batch is all or nothing, and an error names the field', async () => {
    const queue = q('batch');
    const err = await client.enqueueBatch(queue, [{ kind: 'a' }, { kind: 'b', priority: 5000 }]).catch((e: unknown) => e);
    assert.ok(err instanceof InvalidError, String(err));
    assert.equal(err.code, 'invalid');
    assert.equal(err.status, 400);
    assert.equal(err.field, 'jobs[1].priority');
    assert.equal(await client.queue(queue), undefined, 'nothing was enqueued');
    const ok = await client.enqueueBatch(queue, [{ kind: 'a' }, { kind: 'b' }]);
    assert.equal(ok.jobs.length, 2);
    assert.equal((await client.queue(queue))?.counts.waiting, 2);
  });

  test('errors are one class per code', async () => {
    const e = await client.getJob('01KAAAAAAAAAAAAAAAAAAAAAAA').catch((x: unknown) => x);
    assert.ok(e instanceof NotFoundError);
    assert.equal(e.status, 404);
    assert.equal(e.code, 'not_found');
    const bad = await client.enqueue(q('bad'), { kind: '' }).catch((x: unknown) => x);
    assert.ok(bad instanceof InvalidError);
    assert.equal(bad.field, 'kind');
  });

  test('cancel, retry, wait for a result, flows and their children', async () => {
    const queue = q('life');
    const a = await client.enqueue(queue, { kind: 'k' });
    assert.equal((await client.cancel(a.id)).outcome, 'cancelled');
    assert.equal((await client.getJob(a.id)).state, 'cancelled');
    assert.equal((await client.retry(a.id)).state, 'waiting');

    // waitFor answers as soon as the job ends.
    const waited = client.waitFor(a.id, { waitMs: 10_000 });
    const [fetched] = (await client.fetch({ queues: [queue], worker_id: 't', max_jobs: 1 })).jobs;
    assert.ok(fetched);
    await client.complete(fetched.id, fetched.lease_token, { receipt: 'r-1' });
    const done = await waited;
    assert.equal(done.state, 'completed');
    assert.deepEqual(done.result, { receipt: 'r-1' });
    // ...and answers the job as it is when the wait is over.
    const b = await client.enqueue(queue, { kind: 'k' });
    const still = await client.waitFor(b.id, { waitMs: 200 });
    assert.equal(still.state, 'waiting');

    const flow = await client.enqueueFlow({
      parent: { queue, job: { kind: 'merge' } },
      children: [
        { queue, job: { kind: 'part', payload: 1 } },
        { queue, job: { kind: 'part', payload: 2 } },
      ],
    });
    assert.equal(flow.parent.state, 'waiting_children');
    const kids = await client.children(flow.parent.id);
    assert.deepEqual(kids.jobs.map((j) => j.payload), [1, 2]);
  });

  test('listing pages through every job', async () => {
    const queue = q('pages');
    await client.enqueueBatch(queue, Array.from({ length: 25 }, (_, i) => ({ kind: 'k', payload: i })));
    const seen: unknown[] = [];
    for await (const j of client.jobs(queue, { state: 'waiting', limit: 10 })) seen.push(j.payload);
    assert.equal(seen.length, 25);
    assert.deepEqual([...seen].sort((x, y) => (x as number) - (y as number)), Array.from({ length: 25 }, (_, i) => i));
  });
});

describe('operators', () => {
  test('queues: stats, pause, resume, config', async () => {
    const queue = q('ops');
    await client.enqueue(queue, { kind: 'k' });
    const list = await client.queues();
    assert.ok(list.queues.some((x) => x.name === queue));
    assert.equal((await client.pause(queue)).paused, true);
    assert.equal((await client.fetch({ queues: [queue], worker_id: 't', max_jobs: 1 })).jobs.length, 0, 'a paused queue hands out nothing');
    assert.equal((await client.resume(queue)).paused, false);
    const cfg = await client.setQueueConfig(queue, { max_attempts: 9, timeout_ms: 60_000, rate_limit: { limit: 100, period_ms: 1000 } });
    assert.equal(cfg.max_attempts, 9);
    assert.equal((await client.queueConfig(queue)).timeout_ms, 60_000);
  });

  test('dead letters: list, groups, replay, purge', async () => {
    const queue = q('dead');
    await client.enqueueBatch(queue, [{ kind: 'charge', max_attempts: 1 }, { kind: 'charge', max_attempts: 1 }, { kind: 'charge', max_attempts: 1 }]);
    const { jobs } = await client.fetch({ queues: [queue], worker_id: 't', max_jobs: 3 });
    assert.equal(jobs.length, 3);
    await client.ack(jobs.map((j, i) => ({ outcome: 'fail', id: j.id, lease_token: j.lease_token, message: `card 42${i} declined`, retryable: false })));
    assert.equal((await client.listDead(queue)).jobs.length, 3);
    const groups = await client.deadGroups(queue);
    assert.equal(groups.groups.length, 1);
    assert.equal(groups.groups[0]?.count, 3);
    assert.equal((await client.replayDead(queue, { kind: 'charge', limit: 1 })).count, 1);
    assert.equal((await client.purgeDead(queue, { kind: 'charge' })).count, 2);
    assert.equal((await client.listDead(queue)).jobs.length, 0);
  });

  test('schedules: put, get, trigger, pause, resume, delete', async () => {
    const queue = q('cron');
    const s = await client.putSchedule('nightly', { cron: '0 3 * * *', timezone: 'Europe/Berlin', queue, kind: 'report' });
    assert.equal(s.next_runs.length, 5);
    assert.equal((await client.schedule('nightly')).timezone, 'Europe/Berlin');
    assert.ok((await client.schedules()).schedules.some((x) => x.name === 'nightly'));
    const t = await client.triggerSchedule('nightly');
    assert.equal((await client.getJob(t.id)).kind, 'report');
    assert.equal((await client.pauseSchedule('nightly')).paused, true);
    assert.equal((await client.resumeSchedule('nightly')).paused, false);
    await client.deleteSchedule('nightly');
    await assert.rejects(client.schedule('nightly'), NotFoundError);
  });

  test('webhooks: put, list, delete', async () => {
    const queue = q('hooks');
    await client.putWebhook(queue, 'ledger', { url: 'http://127.0.0.1:9/hook', secret: 'at-least-16-bytes-of-secret', events: ['completed'] });
    const list = await client.webhooks(queue);
    assert.deepEqual(list.webhooks.map((w) => w.name), ['ledger']);
    await client.deleteWebhook(queue, 'ledger');
    assert.equal((await client.webhooks(queue)).webhooks.length, 0);
  });

  test('observability routes answer', async () => {
    assert.equal((await client.whoami()).name, 'anonymous');
    assert.match(await client.metrics(), /errand_jobs/);
    assert.ok(Array.isArray((await client.alerts()).alerts));
    assert.ok(Array.isArray((await client.audit({ limit: 5 })).entries));
    assert.ok(Array.isArray((await client.workers()).workers));
    assert.ok((await client.activity()).buckets.length > 0);
    assert.equal((await client.healthLive()).status, 'ok');
    assert.equal((await client.healthReady()).status, 'ok');
  });

  test("the audit report, alert rules and a queue's flow control", async () => {
    const queue = q('flow');
    await client.setQueueConfig(queue, { concurrency: 4, rate_limit: { limit: 3, period_ms: 86_400_000 } });
    await client.enqueueBatch(queue, [{ kind: 'k' }, { kind: 'k' }]);
    await client.fetch({ queues: [queue], worker_id: 't', max_jobs: 2 });
    const flow = await client.queueFlow(queue);
    assert.equal(flow.concurrency, 4);
    assert.equal(flow.active, 2);
    assert.equal(Math.round(flow.bucket!.tokens), 1, 'three a day, two taken');
    const rules = await client.alertRules();
    assert.ok(rules.rules.some((r) => r.queue === '*' && r.rule === 'queue_depth' && r.enabled));
    const report = await client.auditReport();
    const check = report.checks.find((c) => c.id === 'queue.max_waiting' && c.subject === `queue ${queue}`);
    assert.equal(check?.verdict, 'warn');
    assert.equal(report.pass + report.warn + report.fail, report.checks.length);
    const silence = await client.silence({ queue, rule: 'no_workers', duration_ms: 60_000, reason: 'a test' });
    assert.equal(silence.rule, 'no_workers');
    assert.ok((await client.silences()).silences.some((s) => s.queue === queue && s.until === silence.until));
    assert.equal((await client.unsilence(queue, 'no_workers')).count, 1);
    assert.ok(!(await client.silences()).silences.some((s) => s.queue === queue));
  });
});

describe('the event stream', () => {
  test('yields state changes, and resumes after the server restarts', async () => {
    const queue = q('events');
    const stop = new AbortController();
    const it = client.events({ queue }, { signal: stop.signal, reconnectDelayMs: 100 });
    const seen: StreamEvent[] = [];
    const reader = (async () => {
      for await (const ev of it) {
        seen.push(ev);
        if (ev.type === 'job' && ev.kind === 'after-restart' && ev.to === 'waiting') return;
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const a = await client.enqueue(queue, { kind: 'before' });
    await until(() => seen.some((e) => e.type === 'job' && e.job_id === a.id));
    await server.restart();
    const b = await client.enqueue(queue, { kind: 'after-restart' });
    await reader;
    stop.abort();
    const job = seen.find((e) => e.type === 'job' && e.job_id === b.id);
    assert.ok(job, `the event after the restart came: ${JSON.stringify(seen)}`);
    // The cursor is from before the restart: the stream says events may have been missed.
    assert.ok(seen.some((e) => e.type === 'missed'), JSON.stringify(seen));
  });
});

describe('timeouts and retries', () => {
  let silent: NetServer;
  let connections = 0;
  let silentUrl: string;
  before(async () => {
    // A peer that accepts connections and never answers: a hung network path.
    silent = createServer((s) => {
      connections++;
      s.on('error', () => {});
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const addr = silent.address() as { port: number };
    silentUrl = `http://127.0.0.1:${addr.port}`;
  });
  after(() => silent.close());

  test('a call without an answer ends at its timeout; only safe calls are repeated', async () => {
    const c = new Client({ url: silentUrl, timeoutMs: 200, retry: { maxElapsedMs: 1_000, baseMs: 50, capMs: 100 } });
    connections = 0;
    const e = await c.enqueue('q', { kind: 'k' }).catch((x: unknown) => x);
    assert.ok(e instanceof TimeoutError, String(e));
    assert.equal(connections, 1, 'an enqueue without a unique key is not repeated after a timeout: it may have landed');
    connections = 0;
    const g = await c.getJob('x').catch((x: unknown) => x);
    assert.ok(g instanceof TimeoutError);
    assert.ok(connections >= 2, `a GET is repeated (${connections} attempts)`);
    connections = 0;
    await assert.rejects(c.enqueue('q', { kind: 'k', unique_key: 'u' }), TimeoutError);
    assert.ok(connections >= 2, 'an enqueue with a unique key is repeated');
    // A signal aborts the call at once.
    const ac = new AbortController();
    const p = c.getJob('x', { signal: ac.signal, timeoutMs: 10_000 });
    ac.abort(new Error('given up'));
    await assert.rejects(p, /given up/);
  });

  test('a refused connection is retried until the server is up, even for an enqueue', async () => {
    const other = await startServer();
    await other.stop();
    const c = new Client({ url: other.url, retry: { maxElapsedMs: 20_000, baseMs: 50, capMs: 200 } });
    const pending = c.enqueue('refused', { kind: 'k' });
    await new Promise((r) => setTimeout(r, 500));
    await other.restart();
    try {
      const e = await pending;
      assert.equal(e.created, true);
      assert.equal((await c.queue('refused'))?.counts.waiting, 1, 'one job: nothing was sent while refused');
    } finally {
      await other.stop();
    }
    const short = new Client({ url: other.url, retry: { maxElapsedMs: 150, baseMs: 10, capMs: 20 } });
    const e = await short.enqueue('q', { kind: 'k' }).catch((x: unknown) => x);
    assert.ok(e instanceof TransportError, String(e));
    assert.equal(e.code, 'transport');
  });

  test('429 carries retryAfterMs, and is retried after it', async () => {
    const secret = 'test-secret-0123456789';
    const dir = mkdtempSync(join(tmpdir(), 'errand-ts-cfg-'));
    const config = join(dir, 'errand.toml');
    writeFileSync(
      config,
      `[[keys]]\nname = "slow"\nsha256 = "${createHash('sha256').update(secret).digest('hex')}"\nscopes = ["admin"]\nrequests_per_second = 1\nburst = 1\n`,
    );
    const limited = await startServer(['--config', config]);
    try {
      const once = new Client({ url: limited.url, key: secret, retry: noRetry });
      await once.queues();
      const e = await once.queues().catch((x: unknown) => x);
      assert.ok(e instanceof RateLimitedError, String(e));
      assert.equal(e.status, 429);
      assert.ok((e.retryAfterMs ?? 0) >= 1000, `retryAfterMs ${e.retryAfterMs}`);
      const patient = new Client({ url: limited.url, key: secret });
      const started = Date.now();
      await patient.queues();
      assert.ok(Date.now() - started >= 900, 'waited for Retry-After');
      await assert.rejects(new Client({ url: limited.url, key: 'wrong-key-0123456789' }).queues(), UnauthorizedError);
    } finally {
      await limited.stop();
    }
  });
});

async function until(f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
