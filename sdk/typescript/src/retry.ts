/**
 * How the client retries: exponential backoff with full jitter, within a total time budget — the same
 * rules as the Rust client's `RetryPolicy`.
 */

export interface RetryPolicy {
  /** The total time budget of one call, retries included, in ms. 0: never retry. Default 30,000. */
  maxElapsedMs: number;
  /** The largest delay of the first retry, in ms. Default 100. */
  baseMs: number;
  /** The largest delay of any retry, in ms. Default 5,000. */
  capMs: number;
}

export const defaultRetry: Readonly<RetryPolicy> = Object.freeze({ maxElapsedMs: 30_000, baseMs: 100, capMs: 5_000 });

/** Never retry. */
export const noRetry: Readonly<RetryPolicy> = Object.freeze({ ...defaultRetry, maxElapsedMs: 0 });

/**
 * The delay before retry number `n` (from 0): a uniformly random part of `min(cap, base · 2ⁿ)` ("full
 * jitter"), or the server's `Retry-After` plus up to one base delay, spreading many clients' retries.
 */
export function retryDelay(policy: RetryPolicy, n: number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return retryAfterMs + Math.random() * Math.min(policy.baseMs, policy.capMs);
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(n, 31));
  return Math.random() * ceiling;
}
