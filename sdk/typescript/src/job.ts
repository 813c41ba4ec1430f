/**
 * What a handler sees (`JobContext`) and what it may throw to say how its job ended.
 */

/** What a handler gets beside its payload. */
export interface JobContext {
  readonly id: string;
  readonly queue: string;
  readonly kind: string;
  /** This attempt's number, from 1. */
  readonly attempt: number;
  readonly maxAttempts: number;
  /** The same on every attempt and replay: pass it to payment, mint and e-mail providers. */
  readonly idempotencyKey: string;
  /** The progress a previous attempt reported (a checkpoint to resume from), if any. */
  readonly previousProgress: unknown;
  readonly priority: number;
  readonly groupKey: string | undefined;
  readonly concurrencyKey: string | undefined;
  /** The attempt's timeout, in ms. */
  readonly timeoutMs: number;
  /** When the server gives up on this attempt (ms since the epoch, the server's clock). */
  readonly deadlineAt: number;
  /**
   * Aborted when the handler should stop: at the job's timeout, on a cancel request, when the lease is
   * lost, and at the end of a shutdown's grace. `signal.reason` is a `JobStopped` saying which. Pass it
   * to `fetch` and to anything else that takes a signal.
   */
  readonly signal: AbortSignal;
  /**
   * Records progress (any JSON, at most 64 KiB) and sends it now, with a heartbeat: a checkpoint the next
   * attempt reads as `previousProgress`. Resolves once the server has it; rejects with `LeaseLostError`
   * when the job is no longer this worker's.
   */
  progress(value: unknown): Promise<void>;
  /** Appends lines to the job's log (each cut at 2 KiB by the server). */
  log(...lines: string[]): Promise<void>;
}

/** A handler: the payload in, the result out (any JSON; `undefined` for none). */
export type Handler<P = any, R = unknown> = (payload: P, ctx: JobContext) => R | Promise<R>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A handler per job kind. */
export type Handlers = Record<string, Handler>;

/** Why `ctx.signal` was aborted. */
export class JobStopped extends Error {
  constructor(
    readonly why: 'timeout' | 'cancelled' | 'lease_lost' | 'shutdown',
    message: string,
  ) {
    super(message);
    this.name = 'JobStopped';
  }
}

/** Thrown by a handler: the job fails and is not retried (input that will never work). */
export class FatalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FatalError';
  }
}

/**
 * Thrown by a handler: the job could not run yet (a provider's 429). It is released to run again after
 * `delayMs`, without using an attempt and without recording an error.
 */
export class SnoozeError extends Error {
  constructor(
    readonly delayMs: number,
    message = `snoozed for ${delayMs} ms`,
  ) {
    super(message);
    this.name = 'SnoozeError';
  }
}

/** Thrown by a handler: a retryable failure, retried after `retryAfterMs` instead of the backoff. */
export class RetryError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RetryError';
  }
}

/** How a run ended, as the worker reports it. */
export type RunOutcome =
  | { type: 'complete'; result: unknown }
  | { type: 'fail'; message: string; stack?: string; retryable: boolean; retryAfterMs?: number; error: Error }
  | { type: 'snooze'; delayMs: number };

/** Turns what a handler threw into an outcome (also used for errors that crossed a thread). */
export function outcomeOfError(e: unknown): RunOutcome {
  const err = e instanceof Error ? e : new Error(typeof e === 'string' ? e : `a non-Error was thrown: ${safeString(e)}`);
  if (err instanceof SnoozeError || err.name === 'SnoozeError') {
    const delay = Number((err as SnoozeError).delayMs);
    return { type: 'snooze', delayMs: Number.isFinite(delay) && delay >= 0 ? Math.round(delay) : 0 };
  }
  const out: RunOutcome = {
    type: 'fail',
    message: err.message || err.name || 'failed',
    retryable: !(err instanceof FatalError || err.name === 'FatalError'),
    error: err,
  };
  if (err.stack) out.stack = err.stack;
  const ra = (err as RetryError).retryAfterMs;
  if ((err instanceof RetryError || err.name === 'RetryError') && typeof ra === 'number' && ra >= 0) out.retryAfterMs = Math.round(ra);
  return out;
}

function safeString(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
