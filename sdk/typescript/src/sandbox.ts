/**
 * Sandboxed handlers: each runs in a worker thread, one job per thread at a time, while the worker's
 * heartbeats and acknowledgements stay on the main thread. A handler that blocks its thread's event
 * loop (CPU-heavy work) therefore keeps its lease; a handler stopped at its timeout, on a cancel, on a
 * lost lease or at shutdown has its thread terminated if it does not return within `terminateGraceMs`.
 */
import { Worker as Thread, type ResourceLimits } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';

import * as errors from './errors.js';
import { ErrandError, type ErrorCode } from './errors.js';

const errorClasses = errors as unknown as Record<string, (new (code: ErrorCode, message: string, init?: errors.ErrandErrorInit) => Error) | undefined>;
import type { Handler, JobContext } from './job.js';

export interface SandboxOptions {
  /**
   * The module whose `handlers` export (or default export) maps each job kind to a handler with the
   * usual signature, `(payload, ctx) => result`. A path (relative to the working directory) or a URL.
   */
  module: string | URL;
  /** How many threads (default: the worker's concurrency). Each runs one job at a time. */
  threads?: number;
  /** How long a stopped handler may take to return before its thread is terminated (default 1,000 ms). */
  terminateGraceMs?: number;
  /** Each thread's memory limits (Node's `resourceLimits`). */
  resourceLimits?: ResourceLimits;
}

/** What crosses from a thread: an error, kept to what the worker reports. */
export interface WireError {
  name: string;
  message: string;
  stack?: string;
  delayMs?: number;
  retryAfterMs?: number;
  /** An `ErrandError`'s code and status. */
  code?: string;
  status?: number;
}

/** Messages name a run (one attempt on one thread), not a job: a job's next attempt is another run. */
export type ToThread =
  | { type: 'run'; run: number; kind: string; payload: unknown; ctx: Omit<JobContext, 'signal' | 'progress' | 'log'> }
  | { type: 'abort'; run: number; reason: { why: string; message: string } }
  | { type: 'reply'; seq: number; error?: WireError };

export type FromThread =
  | { type: 'ready'; kinds: string[] }
  | { type: 'load_failed'; error: WireError }
  | { type: 'done'; run: number; ok: true; result: unknown }
  | { type: 'done'; run: number; ok: false; error: WireError }
  | { type: 'progress'; run: number; seq: number; value: unknown }
  | { type: 'log'; run: number; seq: number; lines: string[] };

interface Slot {
  thread: Thread;
  /** The run on it, and how to settle it. */
  job?: { run: number; ctx: JobContext; settle: (r: { ok: true; result: unknown } | { ok: false; error: Error }) => void } | undefined;
}

let runs = 0;

export function errorFromWire(w: WireError): Error {
  // The SDK's own errors keep their class, so that `instanceof LeaseLostError` works in a thread too.
  const Known = w.code ? errorClasses[w.name] : undefined;
  const e = (Known ? new Known(w.code as ErrorCode, w.message, w.status === undefined ? {} : { status: w.status }) : new Error(w.message)) as Error & {
    delayMs?: number;
    retryAfterMs?: number;
  };
  e.name = w.name;
  if (w.stack !== undefined) e.stack = w.stack;
  if (w.delayMs !== undefined) e.delayMs = w.delayMs;
  if (w.retryAfterMs !== undefined) e.retryAfterMs = w.retryAfterMs;
  return e;
}

export function errorToWire(e: unknown): WireError {
  if (!(e instanceof Error)) return { name: 'Error', message: typeof e === 'string' ? e : `a non-Error was thrown: ${String(e)}` };
  const w: WireError = { name: e.name, message: e.message };
  if (e.stack !== undefined) w.stack = e.stack;
  if (e instanceof ErrandError) {
    w.code = e.code;
    w.status = e.status;
  }
  const x = e as { delayMs?: unknown; retryAfterMs?: unknown };
  if (typeof x.delayMs === 'number') w.delayMs = x.delayMs;
  if (typeof x.retryAfterMs === 'number') w.retryAfterMs = x.retryAfterMs;
  return w;
}

export class Sandbox {
  private readonly module: string;
  private readonly slots: Slot[] = [];
  private readonly idle: Slot[] = [];
  private readonly waiting: ((s: Slot) => void)[] = [];
  private readonly terminateGraceMs: number;
  private kinds: Promise<string[]> | undefined;
  private closed = false;

  constructor(
    private readonly options: SandboxOptions,
    private readonly size: number,
  ) {
    const m = options.module;
    this.module = m instanceof URL ? m.href : /^[a-z]+:/i.test(m) ? m : pathToFileURL(isAbsolute(m) ? m : resolve(m)).href;
    this.terminateGraceMs = options.terminateGraceMs ?? 1_000;
    if (!Number.isInteger(size) || size < 1) throw new ErrandError('invalid', 'sandbox.threads must be at least 1', { field: 'sandbox.threads' });
  }

  /** Starts the threads; resolves with the kinds the module handles, or rejects if it cannot load. */
  ready(): Promise<string[]> {
    this.kinds ??= (async () => {
      const first = await Promise.all(Array.from({ length: this.size }, () => this.spawn()));
      return first[0] as string[];
    })();
    return this.kinds;
  }

  private spawn(): Promise<string[]> {
    const threadOptions: ConstructorParameters<typeof Thread>[1] = { workerData: { module: this.module } };
    if (this.options.resourceLimits) threadOptions.resourceLimits = this.options.resourceLimits;
    const thread = new Thread(new URL('./sandbox-thread.js', import.meta.url), threadOptions);
    const slot: Slot = { thread };
    this.slots.push(slot);
    return new Promise((resolveReady, rejectReady) => {
      thread.on('message', (m: FromThread) => {
        switch (m.type) {
          case 'ready':
            this.free(slot);
            resolveReady(m.kinds);
            break;
          case 'load_failed':
            rejectReady(new ErrandError('invalid', `the sandbox module ${this.module} cannot be loaded: ${m.error.message}`, { field: 'sandbox.module' }));
            break;
          case 'done':
            if (slot.job?.run === m.run) {
              const job = slot.job;
              slot.job = undefined;
              job.settle(m.ok ? { ok: true, result: m.result } : { ok: false, error: errorFromWire(m.error) });
              this.free(slot);
            }
            break;
          case 'progress':
          case 'log': {
            const ctx = slot.job?.run === m.run ? slot.job.ctx : undefined;
            const done = ctx ? (m.type === 'progress' ? ctx.progress(m.value) : ctx.log(...m.lines)) : Promise.reject(new Error('the job is over'));
            done.then(
              () => thread.postMessage({ type: 'reply', seq: m.seq } satisfies ToThread),
              (e) => thread.postMessage({ type: 'reply', seq: m.seq, error: errorToWire(e) } satisfies ToThread),
            );
            break;
          }
        }
      });
      thread.on('error', (e) => {
        rejectReady(e);
        this.lost(slot, e);
      });
      thread.on('exit', (code) => this.lost(slot, new Error(`the sandbox thread exited with code ${code}`)));
    });
  }

  /** A thread died or was terminated: its job (if any) fails, and a new thread takes its place. */
  private lost(slot: Slot, e: Error): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    this.slots.splice(i, 1);
    const j = this.idle.indexOf(slot);
    if (j >= 0) this.idle.splice(j, 1);
    slot.job?.settle({ ok: false, error: e });
    slot.job = undefined;
    if (!this.closed) this.spawn().catch(() => {});
  }

  private free(slot: Slot): void {
    const next = this.waiting.shift();
    if (next) next(slot);
    else this.idle.push(slot);
  }

  private acquire(): Promise<Slot> {
    const s = this.idle.pop();
    return s ? Promise.resolve(s) : new Promise((r) => this.waiting.push(r));
  }

  /** A handler for `kind` that runs in a thread. */
  handler(kind: string): Handler {
    return async (payload: unknown, ctx: JobContext) => {
      const slot = await this.acquire();
      if (ctx.signal.aborted) {
        this.free(slot);
        throw ctx.signal.reason;
      }
      const run = ++runs;
      const outcome = new Promise<{ ok: true; result: unknown } | { ok: false; error: Error }>((settle) => {
        slot.job = { run, ctx, settle };
      });
      // What crosses to the thread: the context without its functions and signal (the thread makes its own).
      const { signal, progress: _progress, log: _log, ...plain } = ctx;
      slot.thread.postMessage({ type: 'run', run, kind, payload, ctx: plain } satisfies ToThread);
      let terminate: NodeJS.Timeout | undefined;
      const onAbort = () => {
        const r = signal.reason as { why?: string; message?: string } | undefined;
        slot.thread.postMessage({ type: 'abort', run, reason: { why: r?.why ?? 'stopped', message: r?.message ?? 'stopped' } } satisfies ToThread);
        // A handler that does not return once told to stop loses its thread.
        terminate = setTimeout(() => {
          if (slot.job?.run === run) void slot.thread.terminate();
        }, this.terminateGraceMs);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        const r = await outcome;
        if (!r.ok) throw r.error;
        return r.result;
      } finally {
        clearTimeout(terminate);
        signal.removeEventListener('abort', onAbort);
      }
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.thread.terminate()));
  }
}
