/**
 * `Worker`: fetches jobs, runs a handler per job kind, keeps leases, acknowledges in batches and shuts
 * down gracefully — the rules of the Rust SDK (`crates/client/src/worker/mod.rs`), for Node.
 *
 * | the handler… | reported as |
 * |---|---|
 * | resolves to `r` | complete, with `r` as the result (none for `undefined`) |
 * | throws (or rejects with) an error | fail, retryable, with the error's message and stack |
 * | throws `FatalError` | fail, not retryable: the job is dead |
 * | throws `RetryError(msg, ms)` | fail, retryable, retried after `ms` instead of the backoff |
 * | throws `SnoozeError(ms)` | released to run again after `ms`, no attempt used, no error recorded |
 * | leaves a rejection unhandled, or throws from a callback it scheduled | fail, retryable: that job only; the process goes on |
 * | runs past its timeout | `ctx.signal` aborted; stopped and fail, retryable, "timed out after N ms" |
 * | loses its lease (a heartbeat answered `lease_lost`) | `ctx.signal` aborted, stopped, nothing reported |
 * | is cancelled by an operator (learnt by heartbeat) | `ctx.signal` aborted; `cancelGraceMs` to return, then stopped; released (the server ends it `cancelled`), or completed if it resolved |
 * | is still running when a shutdown's grace ends | `ctx.signal` aborted, stopped, released |
 * | has a kind this worker has no handler for | fail, retryable, naming the kinds it handles (logged as an error) |
 *
 * "Stopped" means the worker stops waiting for the handler and reports; JavaScript cannot kill a promise,
 * so a handler that ignores `ctx.signal` goes on in the background. Sandboxed handlers (`sandbox`) run in
 * worker threads, and a stopped one's thread is terminated.
 */
import { EventEmitter } from 'node:events';
import { AsyncLocalStorage } from 'node:async_hooks';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';

import { Client, type AckBatchResponse, type AckItem, type FetchedJob } from './client.js';
import { ErrandError, LeaseLostError, NotFoundError } from './errors.js';
import { noRetry, retryDelay } from './retry.js';
import { SDK_NAME, SDK_VERSION } from './version.js';
import { sleep } from './http.js';
import { type Handler, type Handlers, type JobContext, JobStopped, type RunOutcome, outcomeOfError } from './job.js';
import { Sandbox, type SandboxOptions } from './sandbox.js';

const MAX_CLAIM = 1000;
/** The longest delay the server takes (a retry's `retry_after_ms`, a snooze's `delay_ms`): 365 days. */
const MAX_DELAY_MS = 365 * 24 * 3_600_000;

export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Warnings and errors to stderr, one line each; nothing at info. */
export const consoleLogger: Logger = {
  info() {},
  warn: (m, f) => console.error(`errand worker warn: ${m}${f ? ' ' + JSON.stringify(f) : ''}`),
  error: (m, f) => console.error(`errand worker error: ${m}${f ? ' ' + JSON.stringify(f) : ''}`),
};

export interface WorkerOptions<H extends Handlers = Handlers> {
  /** The server (or pass `client`). */
  url?: string;
  key?: string;
  /** A client to use instead of `url` and `key`. */
  client?: Client;
  /** 1–64 queues to fetch from. */
  queues: string[];
  /** A handler per job kind (not with `sandbox`, whose module exports them). */
  handlers?: H;
  /** Handlers in worker threads: see `SandboxOptions`. */
  sandbox?: SandboxOptions;
  /** How many jobs run at once (default 10). */
  concurrency?: number;
  /**
   * How many jobs the worker holds at once, running or waiting to run (at least `concurrency`); finished
   * jobs awaiting their acknowledgement do not count, and at most 2,000 of those wait before the worker
   * stops fetching. Default `'auto'`: enough to cover a fetch's and an acknowledgement's round
   * trip at the rate jobs finish, so that handlers never wait for a fetch — few for slow jobs, up to
   * 2,000 more than the concurrency for fast ones.
   */
  prefetch?: number | 'auto';
  /** The worker's name on its leases (default `<host>-<pid>-<random>`). */
  workerId?: string;
  /** How long a fetch waits when no job is due, in ms (default 10,000; the server caps it). */
  pollWaitMs?: number;
  /**
   * How often, at most, each held job is heartbeat, in ms (default 10,000; 100 ms – 7 days). Promised
   * to the server with each fetch, which then keeps each lease to `2 × this + 5 s`: the jobs of a
   * worker that dies run elsewhere within about 25 s.
   */
  heartbeatEveryMs?: number;
  /** How long a graceful shutdown lets running jobs finish, in ms (default 30,000). */
  shutdownGraceMs?: number;
  /** How long a cancelled job's handler has to return on its own, in ms (default 1,000). */
  cancelGraceMs?: number;
  /** At most this many acknowledgements per `POST /v1/ack` (default 1,000). */
  ackBatchSize?: number;
  /** Close gracefully on SIGTERM and SIGINT, then let the signal end the process (default true). */
  handleSignals?: boolean;
  /** Start at once (default true); otherwise call `run()`. */
  autorun?: boolean;
  logger?: Logger;
}

/** What a worker did, counted as the server confirmed it. */
export interface WorkerReport {
  completed: number;
  failed: number;
  /** Fetched but not started, given back at shutdown. */
  released: number;
  cancelled: number;
  snoozed: number;
  /** Still running at the end of the shutdown's grace: stopped and released. */
  abandoned: number;
  /** Outcomes the server refused (`lease_lost` above all) or that were still undelivered at the end. */
  lost: number;
}

/** The job an event is about. */
export interface JobInfo {
  id: string;
  queue: string;
  kind: string;
  attempt: number;
  idempotencyKey: string;
}

type Origin = 'ran' | 'unstarted' | 'abandoned' | 'cancelled' | 'snoozed';

interface Pending {
  item: AckItem;
  origin: Origin;
  held: Held;
  /** Sent in a request of its own (its batch was refused as a whole). */
  alone?: boolean;
}

/** A job the worker holds: buffered, running, or stopped and being reported. */
class Held {
  readonly controller = new AbortController();
  started = false;
  finished = false;
  cancelRequested = false;
  lost = false;
  beating = false;
  nextBeatAt: number;
  timers: NodeJS.Timeout[] = [];
  readonly info: JobInfo;
  /** What the run gave, for the `completed` and `failed` events. */
  result: unknown;
  error: Error | undefined;

  /** When the attempt times out, by this process's clock: `timeout_ms` after the fetch's answer (the
   * server's deadline, counted from the claim, is a little earlier and is the one that counts). */
  readonly deadline: number;

  constructor(
    readonly job: FetchedJob,
    readonly interval: number,
  ) {
    this.nextBeatAt = Date.now() + interval;
    this.deadline = Date.now() + job.timeout_ms;
    this.info = { id: job.id, queue: job.queue, kind: job.kind, attempt: job.attempt, idempotencyKey: job.idempotency_key };
  }
}

// ----- one process-wide hook for errors that escape handlers -----

const current = new AsyncLocalStorage<{ worker: Worker; held: Held }>();
let hooked = 0;

function onRejection(reason: unknown): void {
  if (escapedFromJob(reason, 'unhandled rejection')) return;
  if (process.listenerCount('unhandledRejection') > 1) return; // the application handles its own
  // Outside any job: what Node does without a listener, by its --unhandled-rejections mode.
  const mode = /--unhandled-rejections[= ](\S+)/.exec(`${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`)?.[1] ?? 'throw';
  if (mode === 'none') return;
  if (mode === 'warn' || mode === 'warn-with-error-code') {
    console.warn(reason);
    if (mode === 'warn-with-error-code') process.exitCode = 1;
    return;
  }
  // 'throw' (the default) and 'strict': raised as an uncaught exception, which the application's own
  // `uncaughtException` listeners may handle.
  process.nextTick(() => {
    throw reason;
  });
}

function onException(error: unknown): void {
  if (escapedFromJob(error, 'uncaught exception')) return;
  if (process.listenerCount('uncaughtException') > 1) return; // the application handles its own
  // Outside any job and unhandled: the process ends, as Node would have ended it.
  console.error(error);
  process.exit(1);
}

/** Fails the job whose handler `error` escaped from; false when it came from no job. */
function escapedFromJob(error: unknown, what: string): boolean {
  const ctx = current.getStore();
  if (!ctx) return false;
  if (!ctx.held.finished) {
    const e = error instanceof Error ? error : new Error(`${what}: ${String(error)}`);
    ctx.worker['stopJob'](ctx.held, outcomeOfError(e));
  } else {
    // From something a handler left running after its job was reported: nothing left to fail.
    ctx.worker['safeEmit']('error', new Error(`${what} after job ${ctx.held.job.id} ended: ${error instanceof Error ? error.message : String(error)}`, { cause: error }));
  }
  return true;
}

/** Counts the running workers; the listeners are on while there is one. */
function hook(): void {
  if (hooked++ === 0) {
    process.on('unhandledRejection', onRejection);
    process.on('uncaughtException', onException);
  }
}

function unhook(): void {
  if (--hooked === 0) {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  }
}

function defaultWorkerId(): string {
  const host = (process.env.HOSTNAME || hostname() || 'worker').replace(/[^\x21-\x7e]/g, '').slice(0, 64) || 'worker';
  return `${host}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * A worker. Events: `completed` (job, result), `failed` (job, error, willRetry), `cancelled` (job),
 * `snoozed` (job, delayMs), `leaseLost` (job), `error` (error: the worker's own trouble — a fetch or an
 * acknowledgement that failed, an outcome refused). Without an `error` listener, errors go to the
 * logger instead of throwing.
 */
export class Worker<H extends Handlers = Handlers> extends EventEmitter {
  readonly client: Client;
  readonly workerId: string;
  readonly queues: readonly string[];
  readonly concurrency: number;
  private readonly handlers: Map<string, Handler>;
  private readonly sandbox: Sandbox | undefined;
  private readonly fixedPrefetch: number | undefined;
  private readonly pollWaitMs: number;
  private readonly heartbeatMs: number;
  private readonly shutdownGraceMs: number;
  private readonly cancelGraceMs: number;
  private readonly ackBatchSize: number;
  private readonly handleSignals: boolean;
  private readonly log: Logger;

  private readonly held = new Map<string, Held>();
  private readonly buffer: Held[] = [];
  private running = 0;
  private readonly acks: Pending[] = [];
  /** Acknowledgements in requests not answered yet, and those requests. */
  private acksInFlight = 0;
  private ackRequests = 0;
  /** An answer asked for the items it refused to be sent again later (unavailable, rate limited). */
  private retryLater = false;
  private ackFailures = 0;
  private ackRetryTimer: NodeJS.Timeout | undefined;
  private ackDrained: (() => void) | undefined;
  private giveUpAt = Infinity;
  private stopping = false;
  private started = false;
  /** Whether this worker counts in the process-wide error hook. */
  private hooked = false;
  private fetchAbort = new AbortController();
  private wake: (() => void) | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private closing: Promise<WorkerReport> | undefined;
  private loop: Promise<void> | undefined;
  private readonly report: WorkerReport = { completed: 0, failed: 0, released: 0, cancelled: 0, snoozed: 0, abandoned: 0, lost: 0 };
  private readonly signalHandlers = new Map<NodeJS.Signals, () => void>();

  // For `prefetch: 'auto'`: jobs finished per ms, and round trips, as moving averages.
  private rate = 0;
  private finishedSinceTick = 0;
  private lastTick = Date.now();
  private fetchRtt = 5;
  private ackRtt = 5;

  constructor(options: WorkerOptions<H>) {
    super();
    if (!options.client && !options.url) throw new ErrandError('invalid', 'a worker needs `url` or `client`');
    this.client = options.client ?? new Client({ url: options.url as string, key: options.key });
    if (!Array.isArray(options.queues) || options.queues.length < 1 || options.queues.length > 64) {
      throw new ErrandError('invalid', 'a worker needs 1–64 queues', { field: 'queues' });
    }
    this.queues = [...options.queues];
    if (options.handlers && options.sandbox) throw new ErrandError('invalid', 'give `handlers` or `sandbox`, not both', { field: 'sandbox' });
    this.handlers = new Map(Object.entries(options.handlers ?? {}));
    for (const [kind, h] of this.handlers) {
      if (typeof h !== 'function') throw new ErrandError('invalid', `the handler for ${JSON.stringify(kind)} is not a function`, { field: 'handlers' });
    }
    this.concurrency = positive(options.concurrency ?? 10, 'concurrency');
    if (!options.sandbox && this.handlers.size === 0) throw new ErrandError('invalid', 'a worker needs at least one handler', { field: 'handlers' });
    if (options.prefetch !== undefined && options.prefetch !== 'auto') {
      this.fixedPrefetch = Math.max(positive(options.prefetch, 'prefetch'), this.concurrency);
    }
    this.pollWaitMs = nonNegative(options.pollWaitMs ?? 10_000, 'pollWaitMs');
    this.heartbeatMs = Math.min(Math.max(positive(options.heartbeatEveryMs ?? 10_000, 'heartbeatEveryMs'), 100), 7 * 24 * 3_600_000);
    this.shutdownGraceMs = nonNegative(options.shutdownGraceMs ?? 30_000, 'shutdownGraceMs');
    this.cancelGraceMs = nonNegative(options.cancelGraceMs ?? 1_000, 'cancelGraceMs');
    this.ackBatchSize = Math.min(positive(options.ackBatchSize ?? 1_000, 'ackBatchSize'), 10_000);
    this.handleSignals = options.handleSignals ?? true;
    this.workerId = options.workerId ?? defaultWorkerId();
    this.log = options.logger ?? consoleLogger;
    this.sandbox = options.sandbox ? new Sandbox(options.sandbox, options.sandbox.threads ?? this.concurrency) : undefined;
    if (options.autorun ?? true) void this.run();
  }

  /** Starts the worker (done by the constructor unless `autorun: false`). Resolves when it has closed. */
  run(): Promise<WorkerReport> {
    if (this.closing) return this.closing;
    if (!this.started) {
      this.started = true;
      this.hooked = true;
      hook();
      if (this.handleSignals) {
        for (const sig of ['SIGTERM', 'SIGINT'] as const) {
          const h = () => this.onSignal(sig);
          this.signalHandlers.set(sig, h);
          process.on(sig, h);
        }
      }
      const tick = Math.max(50, Math.min(1000, Math.floor(this.heartbeatMs / 4)));
      this.sweepTimer = setInterval(() => this.sweep(), tick);
      this.loop = this.fetchLoop().catch((e) => this.fault(e instanceof Error ? e : new Error(String(e))));
      this.log.info('worker started', { worker_id: this.workerId, queues: this.queues, concurrency: this.concurrency });
    }
    return new Promise((resolve) => this.once('closed', resolve));
  }

  /** What the worker did so far. */
  stats(): Readonly<WorkerReport> {
    return { ...this.report };
  }

  /**
   * Shuts down gracefully: stops fetching (a long poll in flight is dropped; should its answer have
   * been on the way, those jobs return to their queue when their leases end), releases the jobs fetched
   * but not started, lets running jobs finish for up to `graceMs` (default `shutdownGraceMs`), then stops
   * and releases the rest, and delivers every acknowledgement, trying for up to `graceMs` again.
   */
  close(options: { graceMs?: number } = {}): Promise<WorkerReport> {
    if (!this.closing) this.closing = this.shutdown(options.graceMs ?? this.shutdownGraceMs);
    return this.closing;
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error' && this.listenerCount('error') === 0) {
      const e = args[0] as Error;
      this.log.error(e?.message ?? String(e), e instanceof ErrandError ? { code: e.code } : undefined);
      return false;
    }
    return super.emit(event, ...args);
  }

  // ----- fetching -----

  private target(): number {
    if (this.fixedPrefetch !== undefined) return this.fixedPrefetch;
    // Enough to keep the handlers busy over a fetch's and an acknowledgement's round trip, twice over.
    const cover = Math.ceil(this.rate * (this.fetchRtt + this.ackRtt) * 2);
    return this.concurrency + Math.min(2 * MAX_CLAIM, Math.max(1, cover));
  }

  /** The rate jobs finish at (per ms), for `prefetch: 'auto'`: a moving average over spans of 25 ms or more. */
  private measureRate(now: number): void {
    const span = now - this.lastTick;
    if (span < 25) return;
    const weight = Math.min(1, span / 250);
    this.rate = (1 - weight) * this.rate + weight * (this.finishedSinceTick / span);
    this.finishedSinceTick = 0;
    this.lastTick = now;
  }

  /** Jobs fetched and not finished. Finished jobs waiting for their acknowledgement do not count, so
   * that a fetch overlaps the acknowledgement of the previous batch; `ackBacklog` bounds those. */
  private holding(): number {
    return this.buffer.length + this.running;
  }

  private ackBacklog(): number {
    return this.acks.length + this.acksInFlight;
  }

  private async fetchLoop(): Promise<void> {
    if (this.sandbox) {
      const kinds = await this.sandbox.ready();
      for (const kind of kinds) this.handlers.set(kind, this.sandbox.handler(kind));
    }
    let failures = 0;
    while (!this.stopping) {
      this.measureRate(Date.now());
      const target = this.target();
      const room = target - this.holding();
      const lowWater = Math.max(1, Math.floor((target - this.concurrency) / 2));
      if ((room < lowWater && this.holding() > 0) || this.ackBacklog() > 2 * MAX_CLAIM) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
        continue;
      }
      const max = Math.max(1, Math.min(room, MAX_CLAIM));
      const began = Date.now();
      let jobs: FetchedJob[];
      try {
        const answer = await this.client.fetch(
          {
            queues: [...this.queues],
            worker_id: this.workerId,
            max_jobs: max,
            wait_ms: this.pollWaitMs,
            heartbeat_ms: this.heartbeatMs,
            // For GET /v1/workers and `errand audit`: concurrency 1, or no drain on SIGTERM, shows.
            report: { sdk: SDK_NAME, version: SDK_VERSION, concurrency: Math.min(this.concurrency, 1_000_000), drains_on_sigterm: this.handleSignals },
          },
          { signal: this.fetchAbort.signal },
        );
        jobs = answer.jobs;
        failures = 0;
      } catch (e) {
        if (this.stopping) return;
        const err = e instanceof Error ? e : new Error(String(e));
        this.safeEmit('error', err);
        await sleep(retryDelay({ maxElapsedMs: 0, baseMs: 250, capMs: 10_000 }, failures++, (err as ErrandError).retryAfterMs), this.fetchAbort.signal).catch(() => {});
        continue;
      }
      // A fetch answered at once measures the round trip; one that waited measured the queue's silence.
      if (jobs.length === max) this.fetchRtt = 0.8 * this.fetchRtt + 0.2 * (Date.now() - began);
      for (const job of jobs) {
        // The lease's length, from two instants of the server's clock (skew cancels out): the claim is
        // the deadline less the timeout. A beat every third of it, as in the Rust SDK, or sooner when
        // promised.
        const leaseMs = job.lease_expires_at - (job.deadline_at - job.timeout_ms);
        const h = new Held(job, Math.max(100, Math.floor(Math.min(this.heartbeatMs, job.heartbeat_ms ?? Infinity, leaseMs / 3))));
        this.held.set(job.id, h);
        if (this.stopping) this.releaseUnstarted(h);
        else this.buffer.push(h);
      }
      this.dispatch();
    }
  }

  private poke(): void {
    this.wake?.();
  }

  private dispatch(): void {
    while (!this.stopping && this.running < this.concurrency && this.buffer.length > 0) {
      const h = this.buffer.shift() as Held;
      // Waited in the buffer past its timeout: the server has given up on this attempt; running it
      // now would run it beside its retry.
      if (Date.now() >= h.deadline) this.releaseUnstarted(h);
      else this.start(h);
    }
  }

  // ----- running -----

  private start(h: Held): void {
    h.started = true;
    this.running++;
    const job = h.job;
    const handler = this.handlers.get(job.kind);
    if (!handler) {
      const kinds = [...this.handlers.keys()].sort().map((k) => JSON.stringify(k)).join(', ') || 'no kind';
      const message = `no handler for kind ${JSON.stringify(job.kind)} on worker ${this.workerId} (it handles ${kinds})`;
      this.log.error(message, { job_id: job.id, queue: job.queue });
      this.stopJob(h, { type: 'fail', message, retryable: true, error: new Error(message) });
    } else {
      h.timers.push(
        setTimeout(() => {
          const message = `timed out after ${job.timeout_ms} ms`;
          h.controller.abort(new JobStopped('timeout', message));
          this.stopJob(h, { type: 'fail', message, retryable: true, error: new JobStopped('timeout', message) });
        }, Math.max(0, h.deadline - Date.now())),
      );
      const ctx = this.context(h);
      current.run({ worker: this as Worker, held: h }, () => {
        let result: unknown;
        try {
          result = handler(job.payload, ctx);
        } catch (e) {
          this.stopJob(h, outcomeOfError(e));
          return;
        }
        Promise.resolve(result).then(
          (r) => this.stopJob(h, { type: 'complete', result: r }),
          (e) => this.stopJob(h, outcomeOfError(e)),
        );
      });
    }
  }

  /** Ends a held job's run once (the first of handler, timeout, cancel, lease loss, abandon wins). */
  private stopJob(h: Held, outcome: RunOutcome | 'lease_lost' | 'abandoned'): void {
    if (h.finished) return;
    h.finished = true;
    for (const t of h.timers) clearTimeout(t);
    this.finish(h, outcome);
  }

  private context(h: Held): JobContext {
    const job = h.job;
    return {
      id: job.id,
      queue: job.queue,
      kind: job.kind,
      attempt: job.attempt,
      maxAttempts: job.max_attempts,
      idempotencyKey: job.idempotency_key,
      previousProgress: job.progress ?? undefined,
      priority: job.priority,
      groupKey: job.group_key ?? undefined,
      concurrencyKey: job.concurrency_key ?? undefined,
      timeoutMs: job.timeout_ms,
      deadlineAt: job.deadline_at,
      signal: h.controller.signal,
      progress: (value: unknown) => this.beat(h, { progress: value, strict: true }),
      log: async (...lines: string[]) => {
        try {
          await this.client.appendLogs(job.id, job.lease_token, lines.map(String));
        } catch (e) {
          if (e instanceof LeaseLostError) this.leaseLost(h);
          throw e;
        }
      },
    };
  }

  private finish(h: Held, outcome: RunOutcome | 'lease_lost' | 'abandoned'): void {
    this.running--;
    this.finishedSinceTick++;
    const job = h.job;
    if (outcome === 'lease_lost') {
      this.forget(h);
      this.safeEmit('leaseLost', h.info);
    } else if (outcome === 'abandoned') {
      this.queueAck({ outcome: 'release', id: job.id, lease_token: job.lease_token }, 'abandoned', h);
    } else if (outcome.type === 'complete') {
      let result = outcome.result;
      if (result !== undefined) {
        try {
          result = JSON.parse(JSON.stringify(result) ?? 'null');
        } catch (e) {
          const message = `the result cannot be sent as JSON: ${(e as Error).message}`;
          this.queueAck({ outcome: 'fail', id: job.id, lease_token: job.lease_token, message, retryable: false }, 'ran', h);
          this.dispatch();
          this.poke();
          return;
        }
      }
      const item: AckItem = { outcome: 'complete', id: job.id, lease_token: job.lease_token };
      if (result !== undefined && result !== null) (item as { result?: unknown }).result = result;
      h.result = result;
      this.queueAck(item, 'ran', h);
    } else if (h.cancelRequested) {
      // It stopped before the work was done: a release, which the server ends `cancelled`.
      this.queueAck({ outcome: 'release', id: job.id, lease_token: job.lease_token }, 'cancelled', h);
    } else if (outcome.type === 'snooze') {
      this.queueAck({ outcome: 'release', id: job.id, lease_token: job.lease_token, delay_ms: Math.min(outcome.delayMs, MAX_DELAY_MS) }, 'snoozed', h);
    } else {
      const item: AckItem = { outcome: 'fail', id: job.id, lease_token: job.lease_token, message: outcome.message, retryable: outcome.retryable };
      if (outcome.stack) (item as { stack?: string }).stack = outcome.stack;
      if (outcome.retryAfterMs !== undefined) (item as { retry_after_ms?: number }).retry_after_ms = Math.min(outcome.retryAfterMs, MAX_DELAY_MS);
      h.error = outcome.error;
      this.queueAck(item, 'ran', h);
    }
    this.dispatch();
    this.poke();
  }

  // ----- heartbeats -----

  private sweep(): void {
    const now = Date.now();
    this.measureRate(now);
    for (const h of this.held.values()) {
      if (!h.beating && !h.lost && now >= h.nextBeatAt && !h.finished) void this.beat(h, {});
    }
    this.poke();
  }

  /** Heartbeats one job; with `strict`, a failure rejects (a handler's `ctx.progress`). */
  private async beat(h: Held, opts: { progress?: unknown; strict?: boolean }): Promise<void> {
    if (h.lost) throw new LeaseLostError('lease_lost', `job ${h.job.id}: the lease was lost`, { status: 409 });
    h.beating = true;
    try {
      // One beat may take at most the interval: a hung request must not outlive the lease it renews.
      const answer = await this.client.heartbeat(h.job.id, h.job.lease_token, 'progress' in opts ? opts.progress : undefined, {
        timeoutMs: Math.max(1000, h.interval),
        ...(opts.strict ? {} : { retry: noRetry }),
      });
      h.nextBeatAt = Date.now() + h.interval;
      if (answer.cancel_requested && !h.cancelRequested) this.cancelRequested(h);
    } catch (e) {
      // Not found: purged, or retention removed it. Either way, not this worker's any more.
      if (e instanceof LeaseLostError || e instanceof NotFoundError) this.leaseLost(h);
      else {
        h.nextBeatAt = Date.now() + Math.min(1000, h.interval / 4);
        if (!opts.strict) this.safeEmit('error', e instanceof Error ? e : new Error(String(e)));
      }
      if (opts.strict) throw e;
    } finally {
      h.beating = false;
    }
  }

  private cancelRequested(h: Held): void {
    // Already reported (released at shutdown, say): its acknowledgement says what happened.
    if (h.finished || h.cancelRequested) return;
    h.cancelRequested = true;
    if (!h.started) {
      // Not started: it was never ours to run; give it back and the server ends it cancelled.
      const i = this.buffer.indexOf(h);
      if (i >= 0) this.buffer.splice(i, 1);
      h.finished = true;
      this.queueAck({ outcome: 'release', id: h.job.id, lease_token: h.job.lease_token }, 'cancelled', h);
      this.poke();
      return;
    }
    h.controller.abort(new JobStopped('cancelled', 'the job was cancelled'));
    h.timers.push(
      setTimeout(() => this.stopJob(h, { type: 'fail', message: 'cancelled', retryable: false, error: new JobStopped('cancelled', 'cancelled') }), this.cancelGraceMs),
    );
  }

  private leaseLost(h: Held): void {
    if (h.lost) return;
    h.lost = true;
    // Already reported: the acknowledgement will be answered lease_lost, and dropped then.
    if (h.finished) return;
    this.log.warn('lease lost: the job is no longer this worker\'s; stopping it', { job_id: h.job.id, queue: h.job.queue });
    h.controller.abort(new JobStopped('lease_lost', 'the lease was lost'));
    if (!h.started) {
      const i = this.buffer.indexOf(h);
      if (i >= 0) this.buffer.splice(i, 1);
      h.finished = true;
      this.forget(h);
      this.safeEmit('leaseLost', h.info);
      this.poke();
      return;
    }
    this.stopJob(h, 'lease_lost');
  }

  // ----- acknowledgements -----

  private releaseUnstarted(h: Held): void {
    h.finished = true;
    this.queueAck({ outcome: 'release', id: h.job.id, lease_token: h.job.lease_token }, 'unstarted', h);
  }

  private queueAck(item: AckItem, origin: Origin, h: Held): void {
    this.acks.push({ item, origin, held: h });
    this.flushAcks();
  }

  /**
   * Sends what is queued: at once when no request is in flight, else as soon as one returns, so that
   * batches grow with the load and a lone outcome is not held back. Two requests at most in flight.
   */
  private flushAcks(): void {
    while (this.acks.length > 0 && this.ackRequests < 2 && this.ackRetryTimer === undefined) {
      const batch = this.acks.splice(0, this.acks[0]?.alone ? 1 : this.ackBatchSize);
      this.ackRequests++;
      this.acksInFlight += batch.length;
      void this.sendAcks(batch);
    }
    if (this.acks.length === 0 && this.acksInFlight === 0) this.ackDrained?.();
  }

  private async sendAcks(batch: Pending[]): Promise<void> {
    const began = Date.now();
    let answer: AckBatchResponse | undefined;
    let failure: ErrandError | undefined;
    try {
      // Once shutting down, no request outlives the deadline for delivering acknowledgements.
      const left = this.giveUpAt - Date.now();
      answer = await this.client.ack(
        batch.map((p) => p.item),
        Number.isFinite(left) ? { retry: noRetry, timeoutMs: Math.max(100, Math.min(30_000, left)) } : { retry: noRetry },
      );
    } catch (e) {
      failure = e instanceof ErrandError ? e : new ErrandError('transport', String(e), { cause: e });
    }
    this.ackRequests--;
    this.acksInFlight -= batch.length;
    const again: Pending[] = [];
    if (answer) {
      this.ackRtt = 0.8 * this.ackRtt + 0.2 * (Date.now() - began);
      this.ackFailures = 0;
      batch.forEach((p, i) => {
        const r = answer.results[i];
        const back = r?.error ? this.refused(p, r.error.code, r.error.message) : r?.ok ? this.acked(p, r.ok) : this.refused(p, 'internal', 'no answer for it');
        if (back) again.push(back);
      });
    } else if (failure && (failure.code === 'invalid' || failure.code === 'too_large') && batch.length > 1) {
      // One item spoils the batch: send each alone to find it.
      for (const p of batch) again.push({ ...p, alone: true });
    } else if (failure && failure.status >= 400 && failure.status < 500 && failure.code !== 'rate_limited') {
      // Refused as a whole (a batch of one, or a key without the scope).
      for (const p of batch) {
        const back = this.refused(p, failure.code, failure.message);
        if (back) again.push(back);
      }
    } else if (failure) {
      // The server cannot be reached, or cannot take them now: every one again, after a backoff.
      again.push(...batch);
      this.retryLater = true;
      this.safeEmit('error', failure);
    }
    if (again.length > 0) {
      if (Date.now() >= this.giveUpAt) {
        for (const p of again) this.lose(p, 'still undelivered at the end of the shutdown');
      } else {
        this.acks.unshift(...again);
      }
    }
    if (this.retryLater && this.acks.length > 0 && this.ackRetryTimer === undefined) {
      const delay = Math.min(retryDelay({ maxElapsedMs: 0, baseMs: 100, capMs: 5_000 }, this.ackFailures++, failure?.retryAfterMs), Math.max(0, this.giveUpAt - Date.now()));
      this.ackRetryTimer = setTimeout(() => {
        this.ackRetryTimer = undefined;
        this.flushAcks();
      }, delay);
    }
    this.retryLater = false;
    this.flushAcks();
    this.poke();
  }

  /** The server took the outcome: count it and tell the listeners. */
  private acked(p: Pending, ok: { state?: string; duplicate?: boolean }): undefined {
    this.forget(p.held);
    const h = p.held;
    switch (p.origin) {
      case 'ran':
        if (p.item.outcome === 'complete') {
          this.report.completed++;
          this.safeEmit('completed', h.info, h.result);
        } else {
          this.report.failed++;
          this.safeEmit('failed', h.info, h.error ?? new Error((p.item as { message?: string }).message ?? 'failed'), ok.state !== 'dead');
        }
        break;
      case 'unstarted':
        this.report.released++;
        break;
      case 'abandoned':
        this.report.abandoned++;
        break;
      case 'cancelled':
        this.report.cancelled++;
        this.safeEmit('cancelled', h.info);
        break;
      case 'snoozed':
        this.report.snoozed++;
        this.safeEmit('snoozed', h.info, (p.item as { delay_ms?: number }).delay_ms ?? 0);
        break;
    }
    return undefined;
  }

  /** The server refused an outcome (the Rust SDK's rules); returns what to send again, if anything. */
  private refused(p: Pending, code: string, message: string): Pending | undefined {
    const item = p.item;
    switch (code) {
      case 'unavailable':
      case 'internal':
      case 'rate_limited':
        this.retryLater = true;
        return p;
      case 'lease_lost':
        // Too late: the server already timed the attempt out, or another worker holds the job.
        this.log.warn('acknowledgement refused, lease lost; dropped', { job_id: item.id, outcome: item.outcome });
        this.lose(p, 'lease lost');
        return undefined;
    }
    if ((code === 'too_large' || code === 'invalid') && item.outcome === 'complete') {
      // The same run would give the same result: the job fails for good, saying why.
      this.safeEmit('error', new ErrandError(code, `job ${item.id}: the server refused its result (${message}); failing it`));
      return { ...p, item: { outcome: 'fail', id: item.id, lease_token: item.lease_token, message: `the server refused the result: ${message}`, retryable: false } };
    }
    if (code === 'invalid' && item.outcome === 'fail' && item.retry_after_ms != null) {
      const { retry_after_ms: _dropped, ...rest } = item;
      return { ...p, item: rest };
    }
    if (code === 'invalid' && item.outcome === 'release' && item.delay_ms != null) {
      const { delay_ms: _dropped, ...rest } = item;
      return { ...p, item: rest };
    }
    this.safeEmit('error', new ErrandError(code as 'invalid', `acknowledgement of job ${item.id} refused: ${message}`));
    this.lose(p, 'refused');
    return undefined;
  }

  private lose(p: Pending, why: string): void {
    this.report.lost++;
    this.forget(p.held);
    this.log.warn('acknowledgement dropped', { job_id: p.item.id, why });
  }

  /** Stops tracking a job: only this very attempt, not a newer one the server handed out again since. */
  private forget(h: Held): void {
    if (this.held.get(h.job.id) === h) this.held.delete(h.job.id);
  }

  /** Emits to the application's listeners; one that throws must not derail the worker. */
  private safeEmit(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch (e) {
      this.log.error(`a ${JSON.stringify(event)} listener threw: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  // ----- shutdown -----

  private onSignal(sig: NodeJS.Signals): void {
    if (this.closing) {
      // A second signal: do not wait for running jobs any longer.
      this.abandonRunning();
      return;
    }
    this.log.info(`${sig}: shutting down`, { worker_id: this.workerId });
    void this.close().then(() => {
      // Let the signal do what it would have done without us, unless the application listens too.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }

  private abandonRunning(): void {
    for (const h of this.held.values()) {
      if (h.started && !h.finished) {
        h.controller.abort(new JobStopped('shutdown', 'the worker is shutting down'));
        this.stopJob(h, 'abandoned');
      }
    }
  }

  private async shutdown(graceMs: number): Promise<WorkerReport> {
    if (!this.started) this.started = true;
    this.stopping = true;
    this.fetchAbort.abort(new ErrandError('invalid', 'the worker is closing'));
    this.poke();
    await this.loop;
    // Release what was fetched but not started.
    for (const h of this.buffer.splice(0)) this.releaseUnstarted(h);
    // Let running jobs finish, up to the grace.
    const deadline = Date.now() + graceMs;
    while (this.running > 0 && Date.now() < deadline) await sleep(Math.min(20, Math.max(1, deadline - Date.now())));
    if (this.running > 0) {
      this.log.warn('shutdown grace over: stopping the jobs still running', { running: this.running });
      this.abandonRunning();
    }
    // Deliver every acknowledgement, for up to the grace again.
    this.giveUpAt = Date.now() + graceMs;
    if (this.acks.length + this.acksInFlight > 0) {
      await new Promise<void>((resolve) => {
        this.ackDrained = resolve;
        this.flushAcks();
      });
    }
    if (this.ackRetryTimer) clearTimeout(this.ackRetryTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await this.sandbox?.close();
    for (const [sig, h] of this.signalHandlers) process.off(sig, h);
    this.signalHandlers.clear();
    if (this.hooked) {
      this.hooked = false;
      unhook();
    }
    this.log.info('worker stopped', { worker_id: this.workerId, ...this.report });
    const report = { ...this.report };
    this.emit('closed', report);
    return report;
  }

  private fault(e: Error): void {
    this.safeEmit('error', e);
    void this.close();
  }
}

function positive(n: number, field: string): number {
  if (!Number.isInteger(n) || n < 1) throw new ErrandError('invalid', `${field} must be a whole number of at least 1`, { field });
  return n;
}

function nonNegative(n: number, field: string): number {
  if (!Number.isFinite(n) || n < 0) throw new ErrandError('invalid', `${field} must be 0 or more`, { field });
  return n;
}
