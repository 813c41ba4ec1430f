/**
 * The worker against a real `errand serve`: outcomes, errors that escape handlers, timeouts, cancels,
 * lost leases, acknowledgements through an outage, graceful shutdown on SIGTERM, sandboxed handlers.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client, FatalError, JobStopped, RetryError, SnoozeError, Worker, type JobContext, type JobView, type WorkerReport, SDK_VERSION } from '../src/index.js';
import { startServer, type Server } from './server.js';

const here = dirname(fileURLToPath(import.meta.url));
let server: Server;
let client: Client;
before(async () => {
  server = await startServer();
  client = new Client({ url: server.url });
});
// Workers a failed test left running would keep this file's process alive.
const open: Worker[] = [];
after(async () => {
  await Promise.all(open.map((w) => w.close({ graceMs: 0 })));
  await server.stop();
});

let n = 0;
const q = (name: string) => `${name}-${++n}`;
const quiet = { info() {}, warn() {}, error() {} };

async function until<T>(f: () => Promise<T | undefined> | T | undefined, ms = 20_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const ended = (id: string) => async () => {
  const j = await client.getJob(id);
  return ['completed', 'dead', 'cancelled'].includes(j.state) ? j : undefined;
};

function worker(queue: string, handlers: Record<string, (p: any, ctx: JobContext) => unknown>, extra: Partial<ConstructorParameters<typeof Worker>[0]> = {}): Worker {
  const w = new Worker({ url: server.url, queues: [queue], handlers, handleSignals: false, logger: quiet, pollWaitMs: 500, ...extra });
  open.push(w);
  return w;
}

describe('outcomes', () => {
  test('results, a default concurrency of 10, and events', async () => {
    const queue = q('ok');
    let live = 0;
    let most = 0;
    const w = worker(queue, {
      add: async (p: { a: number; b: number }) => {
        most = Math.max(most, ++live);
        await new Promise((r) => setTimeout(r, 100));
        live--;
        return { sum: p.a + p.b };
      },
    });
    assert.equal(w.concurrency, 10);
    const completed: string[] = [];
    w.on('completed', (job, result: { sum: number }) => completed.push(`${job.id}:${result.sum}`));
    const { jobs } = await client.enqueueBatch(queue, Array.from({ length: 30 }, (_, i) => ({ kind: 'add', payload: { a: i, b: 1 } })));
    const first = await until(ended(jobs[0]!.id));
    assert.deepEqual(first.result, { sum: 1 });
    await until(() => (completed.length === 30 ? true : undefined));
    const report = await w.close();
    assert.equal(report.completed, 30);
    assert.equal(most, 10, 'ten handlers ran at once, not one');
  });

  test('a thrown error is retried with its stack; FatalError is dead at once', async () => {
    const queue = q('errors');
    const failed: [string, boolean][] = [];
    const w = worker(queue, {
      flaky: async function chargeCard(_p: unknown, ctx: JobContext) {
        if (ctx.attempt === 1) throw new Error('provider 502');
        return 'charged';
      },
      bad: async () => {
        throw new FatalError('card number is malformed');
      },
    });
    w.on('failed', (job, _e, willRetry: boolean) => failed.push([job.kind, willRetry]));
    const a = await client.enqueue(queue, { kind: 'flaky', backoff: { type: 'fixed', delay_ms: 100 } });
    const b = await client.enqueue(queue, { kind: 'bad', max_attempts: 5 });
    const ja = await until(ended(a.id));
    const jb = await until(ended(b.id));
    await w.close();
    assert.equal(ja.state, 'completed');
    assert.equal(ja.errors.length, 1);
    assert.equal(ja.errors[0]?.message, 'provider 502');
    assert.match(ja.errors[0]?.stack ?? '', /chargeCard/);
    assert.equal(jb.state, 'dead');
    assert.equal(jb.dead_reason, 'non_retryable');
    assert.equal(jb.attempts, 1);
    assert.deepEqual(failed.sort(), [['bad', false], ['flaky', true]]);
  });

  test('SnoozeError releases without using an attempt; RetryError sets the retry time', async () => {
    const queue = q('snooze');
    const attempts: number[] = [];
    const w = worker(queue, {
      mail: async (_p: unknown, ctx: JobContext) => {
        attempts.push(ctx.attempt);
        if (attempts.length === 1) throw new SnoozeError(300);
        return 'sent';
      },
      later: async (_p: unknown, ctx: JobContext) => {
        if (ctx.attempt === 1) throw new RetryError('429 from the provider', 5_000);
        return 'ok';
      },
    });
    const a = await client.enqueue(queue, { kind: 'mail' });
    const ja = await until(ended(a.id));
    assert.equal(ja.state, 'completed');
    assert.deepEqual(attempts, [1, 1], 'the snooze gave its attempt back');
    assert.equal(ja.errors.length, 0, 'a snooze is not an error');
    const before = Date.now();
    const b = await client.enqueue(queue, { kind: 'later' });
    const jb = await until(async () => {
      const j = await client.getJob(b.id);
      return j.errors.length === 1 ? j : undefined;
    });
    assert.equal(jb.state, 'delayed');
    assert.ok(jb.run_at >= before + 4_000, `retried after Retry-After, not the backoff (${jb.run_at - before} ms)`);
    await w.close();
  });

  test('no handler for a kind: a retryable failure naming the kinds handled', async () => {
    const queue = q('nohandler');
    const w = worker(queue, { a: () => 1, b: () => 2 });
    const j = await client.enqueue(queue, { kind: 'zzz', max_attempts: 1 });
    const job = await until(ended(j.id));
    await w.close();
    assert.equal(job.state, 'dead');
    assert.equal(job.dead_reason, 'attempts_exhausted');
    assert.match(job.errors[0]?.message ?? '', /no handler for kind "zzz" on worker .* \(it handles "a", "b"\)/);
  });

  test('progress is a checkpoint the next attempt reads; log lines are kept', async () => {
    const queue = q('progress');
    const seen: unknown[] = [];
    const w = worker(queue, {
      mint: async (_p: unknown, ctx: JobContext) => {
        seen.push(ctx.previousProgress);
        await ctx.log(`attempt ${ctx.attempt}`);
        if (ctx.attempt === 1) {
          await ctx.progress({ nonce: 7 });
          throw new Error('rpc timeout');
        }
        return ctx.idempotencyKey;
      },
    });
    const j = await client.enqueue(queue, { kind: 'mint', backoff: { type: 'fixed', delay_ms: 50 }, idempotency_key: 'mint-1' });
    const job = await until(ended(j.id));
    await w.close();
    assert.equal(job.result, 'mint-1');
    assert.deepEqual(seen, [undefined, { nonce: 7 }]);
    assert.deepEqual((await client.logs(j.id)).logs.map((l) => l.line), ['attempt 1', 'attempt 2']);
  });
});

describe('what a worker tells the server', () => {
  test('its SDK, version, concurrency and whether it drains on SIGTERM, with each fetch', async () => {
    const queue = q('report');
    const quietly = worker(queue, { k: () => 1 }, { concurrency: 3 });
    const seen = await until(async () => (await client.workers()).workers.find((w) => w.id === quietly.workerId && w.report), 20_000, 'the report');
    assert.deepEqual(seen.report, { sdk: '@errand/sdk', version: SDK_VERSION, concurrency: 3, drains_on_sigterm: false });
    await quietly.close();
    const pkg = JSON.parse(readFileSync(join(here, '..', '..', 'package.json'), 'utf8')) as { version: string };
    assert.equal(SDK_VERSION, pkg.version, 'src/version.ts follows package.json');
    // A worker handling SIGTERM itself says so (it is closed before any signal comes).
    const draining = worker(q('report'), { k: () => 1 }, { handleSignals: true });
    const drains = await until(async () => (await client.workers()).workers.find((w) => w.id === draining.workerId && w.report), 20_000, 'the report');
    assert.equal(drains.report!.drains_on_sigterm, true);
    await draining.close();
  });
});

describe('what the server refuses, and what listeners throw', () => {
  test('a result over 1 MiB fails the job for good, saying why', async () => {
    const queue = q('toolarge');
    const w = worker(queue, { big: () => 'x'.repeat(1_100_000) });
    const j = await client.enqueue(queue, { kind: 'big', max_attempts: 3 });
    const job = await until(ended(j.id));
    const report = await w.close();
    assert.equal(job.state, 'dead');
    assert.equal(job.dead_reason, 'non_retryable');
    assert.match(job.errors[0]?.message ?? '', /refused the result/);
    assert.equal(report.failed, 1);
    assert.equal(report.lost, 0);
  });

  test("a listener that throws derails nothing: each outcome is counted once", async () => {
    const queue = q('listener');
    const w = worker(queue, { k: () => 1 });
    let calls = 0;
    w.on('completed', () => {
      calls++;
      throw new Error('a bug in the application');
    });
    const { jobs } = await client.enqueueBatch(queue, Array.from({ length: 20 }, () => ({ kind: 'k' })));
    await Promise.all(jobs.map((j) => until(ended(j.id))));
    const report = await w.close({ graceMs: 2_000 });
    assert.equal(report.completed, 20);
    assert.equal(calls, 20);
  });

  test('the process-wide error hook is on exactly while workers run', async () => {
    const before = process.listenerCount('unhandledRejection');
    const idle = new Worker({ url: server.url, queues: ['never'], handlers: { k: () => 1 }, autorun: false, handleSignals: false, logger: quiet });
    await idle.close();
    assert.equal(process.listenerCount('unhandledRejection'), before, 'a worker closed before it ran leaves no trace');
    const w = worker(q('hook'), { k: () => 1 });
    assert.equal(process.listenerCount('unhandledRejection'), before + 1);
    await w.close();
    assert.equal(process.listenerCount('unhandledRejection'), before);
  });
});

describe('errors that escape a handler', () => {
  // In a process of its own: node:test would take such errors for its own failures.
  test("a handler's unhandled rejection, or a throw from its callback, fails that job only", async () => {
    const queue = q('escape');
    const { jobs } = await client.enqueueBatch(queue, [
      { kind: 'rejects', max_attempts: 1 },
      { kind: 'throws', max_attempts: 1 },
      ...Array.from({ length: 5 }, () => ({ kind: 'work' })),
    ]);
    const c = child({ url: server.url, queue, mode: 'sleep', ms: 50, concurrency: 10 });
    const done = await Promise.all(jobs.map((j) => until(ended(j.id))));
    assert.equal(c.proc.exitCode, null, 'the process is still running');
    c.proc.kill('SIGTERM');
    await c.exited;
    assert.equal(done[0]?.state, 'dead');
    assert.equal(done[0]?.errors[0]?.message, 'nobody awaited me');
    assert.match(done[0]?.errors[0]?.stack ?? '', /child-worker/);
    assert.equal(done[1]?.state, 'dead');
    assert.equal(done[1]?.errors[0]?.message, 'thrown from a timer');
    assert.deepEqual(done.slice(2).map((j) => j.state), Array(5).fill('completed'));
  });
});

describe('stopping handlers', () => {
  test('a handler that never settles is stopped at its timeout, and its slot is freed', async () => {
    const queue = q('timeout');
    let reason: unknown;
    const w = worker(
      queue,
      {
        hang: (_p: unknown, ctx: JobContext) => {
          ctx.signal.addEventListener('abort', () => (reason = ctx.signal.reason));
          return new Promise(() => {});
        },
        quick: () => 'ok',
      },
      { concurrency: 1 },
    );
    const a = await client.enqueue(queue, { kind: 'hang', timeout_ms: 500, max_attempts: 1 });
    const b = await client.enqueue(queue, { kind: 'quick' });
    const ja = await until(ended(a.id));
    const jb = await until(ended(b.id));
    await w.close();
    assert.equal(ja.state, 'dead');
    assert.ok(reason instanceof JobStopped && reason.why === 'timeout', String(reason));
    assert.equal(jb.state, 'completed', 'the one slot was freed for the next job');
  });

  test('a cancel aborts ctx.signal and the job ends cancelled', async () => {
    const queue = q('cancel');
    let started = false;
    const w = worker(
      queue,
      {
        long: async (_p: unknown, ctx: JobContext) => {
          started = true;
          await new Promise((_r, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
        },
      },
      { heartbeatEveryMs: 200 },
    );
    const j = await client.enqueue(queue, { kind: 'long' });
    await until(() => (started ? true : undefined));
    assert.equal((await client.cancel(j.id)).outcome, 'requested');
    const job = await until(ended(j.id));
    const report = await w.close();
    assert.equal(job.state, 'cancelled');
    assert.equal(report.cancelled, 1);
  });
});

function child(settings: object): { proc: ChildProcess; lines: Record<string, any>[]; exited: Promise<{ code: number | null; signal: string | null }> } {
  const proc = spawn(process.execPath, [join(here, 'fixtures', 'child-worker.js'), JSON.stringify(settings)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: Record<string, any>[] = [];
  let buf = '';
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  after(() => proc.kill('SIGKILL'));
  return { proc, lines, exited };
}

describe('buffered jobs', () => {
  test('a buffered job cancelled before it starts is given back, never run', async () => {
    const queue = q('buffered');
    const ran: string[] = [];
    const w = worker(
      queue,
      {
        k: async (p: string, ctx: JobContext) => {
          ran.push(p);
          if (p === 'first') await new Promise((_r, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
        },
      },
      { concurrency: 1, prefetch: 2, heartbeatEveryMs: 200 },
    );
    const a = await client.enqueue(queue, { kind: 'k', payload: 'first' });
    const b = await client.enqueue(queue, { kind: 'k', payload: 'second' });
    await until(async () => ((await client.getJob(b.id)).state === 'active' ? true : undefined), 5_000, 'the second fetched');
    assert.equal((await client.cancel(b.id)).outcome, 'requested');
    const jb = await until(ended(b.id));
    assert.equal(jb.state, 'cancelled');
    await client.cancel(a.id);
    await until(ended(a.id));
    const report = await w.close();
    assert.deepEqual(ran, ['first'], 'the cancelled job never ran');
    assert.equal(report.cancelled, 2);
  });
});

describe('leases', () => {
  test("a stale worker's late completion is refused and not retried", async () => {
    const queue = q('stale');
    const j = await client.enqueue(queue, { kind: 'work' });
    // The worker promises heartbeats every 100 ms (a lease of 5.2 s), then blocks its event loop for 8 s.
    const a = child({ url: server.url, queue, mode: 'spin', ms: 8_000, concurrency: 1, heartbeatEveryMs: 100 });
    await until(() => a.lines.find((l) => l.event === 'started'));
    const spinStart = Date.now();
    // Its lease ends; the server takes the job back and another worker completes it.
    const taken = await until(async () => (await client.fetch({ queues: [queue], worker_id: 'other', max_jobs: 1 })).jobs[0], 15_000, 'the stall');
    await client.complete(taken.id, taken.lease_token, 'fresh');
    // The stale worker finishes and acknowledges: refused, and dropped.
    // It ends its spin 8 s after it started; give its acknowledgement a moment to be answered.
    await new Promise((r) => setTimeout(r, 9_500 - (Date.now() - spinStart)));
    a.proc.kill('SIGTERM');
    await a.exited;
    const report = a.lines.find((l) => l.event === 'report');
    assert.ok(report, 'the worker reported');
    assert.equal(report.acks[j.id], 1, 'the refused acknowledgement was sent once, never retried');
    assert.equal((report.report as WorkerReport).lost, 1);
    assert.equal((report.report as WorkerReport).completed, 0);
    const job = await client.getJob(j.id);
    assert.equal(job.state, 'completed');
    assert.equal(job.result, 'fresh', 'the stale result did not replace the fresh one');
    assert.equal(job.stalls, 1);
  });
});

describe('acknowledgements', () => {
  test('are kept and retried while the server is down, and delivered once it is back', async () => {
    const queue = q('outage');
    let gate!: () => void;
    const open = new Promise<void>((r) => (gate = r));
    let started = 0;
    const errors: string[] = [];
    const w = worker(queue, {
      job: async () => {
        started++;
        await open;
        return 'done';
      },
    });
    w.on('error', (e: Error) => errors.push(e.message));
    const { jobs } = await client.enqueueBatch(queue, Array.from({ length: 8 }, () => ({ kind: 'job' })));
    await until(() => (started === 8 ? true : undefined));
    await server.stop();
    gate();
    await until(() => (errors.length >= 2 ? true : undefined), 10_000, 'failed acknowledgements');
    await server.restart();
    const done = await Promise.all(jobs.map((j) => until(ended(j.id))));
    const report = await w.close();
    assert.deepEqual(done.map((j) => j.state), Array(8).fill('completed'));
    assert.equal(report.completed, 8);
    assert.equal(report.lost, 0);
  });
});

describe('graceful shutdown', () => {
  test('SIGTERM releases fetched but unstarted jobs and lets running ones finish', async () => {
    const queue = q('sigterm');
    const { jobs } = await client.enqueueBatch(queue, Array.from({ length: 10 }, () => ({ kind: 'work' })));
    const c = child({ url: server.url, queue, mode: 'sleep', ms: 1_500, concurrency: 2, prefetch: 10 });
    await until(() => (c.lines.filter((l) => l.event === 'started').length === 2 ? true : undefined));
    await until(async () => ((await client.queue(queue))?.counts.active === 10 ? true : undefined), 5_000, 'all ten fetched');
    const t = Date.now();
    c.proc.kill('SIGTERM');
    const exit = await c.exited;
    assert.equal(exit.signal, 'SIGTERM', 'the process ends by the signal, after draining');
    assert.ok(Date.now() - t < 5_000);
    const report = c.lines.find((l) => l.event === 'report')?.report as WorkerReport;
    assert.equal(report.completed, 2);
    assert.equal(report.released, 8);
    const states = await Promise.all(jobs.map((j) => client.getJob(j.id)));
    const by = (s: string) => states.filter((j: JobView) => j.state === s);
    assert.equal(by('completed').length, 2);
    assert.equal(by('waiting').length, 8, 'released: due again at once');
    assert.ok(by('waiting').every((j) => j.attempts === 0), 'an unstarted job keeps its attempts');
  });

  test('running jobs that outlast the grace are stopped and released', async () => {
    const queue = q('grace');
    const { jobs } = await client.enqueueBatch(queue, [{ kind: 'work' }, { kind: 'work' }]);
    const c = child({ url: server.url, queue, mode: 'ignore', ms: 60_000, concurrency: 2, shutdownGraceMs: 500 });
    await until(() => (c.lines.filter((l) => l.event === 'started').length === 2 ? true : undefined));
    const t = Date.now();
    c.proc.kill('SIGTERM');
    await c.exited;
    assert.ok(Date.now() - t < 4_000, `ended within the grace (${Date.now() - t} ms)`);
    const report = c.lines.find((l) => l.event === 'report')?.report as WorkerReport;
    assert.equal(report.abandoned, 2);
    for (const j of jobs) assert.equal((await client.getJob(j.id)).state, 'waiting');
  });
});

describe('sandboxed handlers', () => {
  const module = join(here, 'fixtures', 'handlers.js');

  test('a handler spinning the CPU for three lease lengths keeps its lease and runs once', async () => {
    const queue = q('spin');
    const file = join(mkdtempSync(join(tmpdir(), 'errand-spin-')), 'runs');
    // heartbeats every 100 ms: leases of 2 × 100 ms + 5 s = 5.2 s; the handler spins 16 s.
    const w = new Worker({ url: server.url, queues: [queue], sandbox: { module, threads: 1 }, concurrency: 1, heartbeatEveryMs: 100, handleSignals: false, logger: quiet });
    open.push(w);
    const j = await client.enqueue(queue, { kind: 'spin', payload: { ms: 16_000, file }, timeout_ms: 60_000 });
    const job = await until(ended(j.id), 40_000);
    await w.close();
    assert.equal(job.state, 'completed');
    assert.deepEqual(job.result, { spun: true });
    assert.equal(job.stalls, 0, 'never stalled');
    assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 1, 'ran once');
  });

  test('a sandboxed handler that never returns is ended with its thread; the next job gets a new one', async () => {
    const queue = q('forever');
    const w = new Worker({ url: server.url, queues: [queue], sandbox: { module, threads: 1, terminateGraceMs: 200 }, concurrency: 1, handleSignals: false, logger: quiet });
    open.push(w);
    const a = await client.enqueue(queue, { kind: 'forever', timeout_ms: 500, max_attempts: 1 });
    const b = await client.enqueue(queue, { kind: 'echo', payload: 'hi', idempotency_key: 'k-1' });
    const c = await client.enqueue(queue, { kind: 'leak', max_attempts: 1 });
    const d = await client.enqueue(queue, { kind: 'flaky', backoff: { type: 'fixed', delay_ms: 50 } });
    const ja = await until(ended(a.id));
    const jb = await until(ended(b.id));
    const jc = await until(ended(c.id));
    const jd = await until(ended(d.id));
    await w.close();
    assert.equal(jd.state, 'completed', 'the retry of a job ran on the thread of its first attempt');
    assert.deepEqual(jd.result, { attempt: 2 });
    assert.equal(ja.state, 'dead');
    assert.match(ja.errors[0]?.message ?? '', /timed out/);
    assert.deepEqual(jb.result, { echo: 'hi', attempt: 1, key: 'k-1' });
    assert.deepEqual(jb.progress, { seen: 'hi' }, 'ctx.progress crossed from the thread');
    assert.equal(jc.state, 'dead');
    assert.equal(jc.errors[0]?.message, 'leaked in a thread');
  });
});
