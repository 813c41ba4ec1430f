/**
 * One request to the API, with its timeout and the retries that are safe for it.
 */
import * as http from 'node:http';
import * as https from 'node:https';

import { ErrandError, TimeoutError, TransportError, errorFromAnswer } from './errors.js';
import { type RetryPolicy, retryDelay } from './retry.js';

/**
 * Whether a request may be sent again after a failure (the Rust client's rules):
 * - `safe`: a repeat does no harm; retried on any transport error or timeout, on 429, 502, 503, 504;
 * - `untouched`: a repeat could do the work twice; retried only when the request certainly did nothing:
 *   the connection was refused, or the server answered `rate_limited` or `unavailable` in the API's format;
 * - `never`.
 */
export type Repeat = 'safe' | 'untouched' | 'never';

export interface CallOptions {
  /** Aborts the call (and its retries). */
  signal?: AbortSignal;
  /** How long one attempt may take, answer included, in ms (default: the client's, 30,000). */
  timeoutMs?: number;
  /** How this call retries (default: the client's policy). */
  retry?: RetryPolicy;
}

export interface HttpSettings {
  url: string;
  key?: string | undefined;
  timeoutMs: number;
  retry: RetryPolicy;
  /** Extra headers on every request (`User-Agent`, say). */
  headers?: Record<string, string>;
}

export interface Request {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  query?: Record<string, string | number | boolean | undefined> | undefined;
  body?: unknown;
  repeat: Repeat;
  /** Added to the attempt's timeout (a long poll's wait). */
  extraMs?: number;
  /** Answer the raw text instead of parsing JSON. */
  text?: boolean;
}

export interface Answer<T> {
  status: number;
  body: T;
}

export class Http {
  readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly settings: HttpSettings;
  private readonly transport: typeof http | typeof https;
  /** Connections kept alive between requests, closed after 4 s idle (before a server closes them). */
  private readonly agent: http.Agent;

  constructor(settings: HttpSettings) {
    let url: URL;
    try {
      url = new URL(settings.url);
    } catch {
      throw new ErrandError('invalid', `base URL ${JSON.stringify(settings.url)} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ErrandError('invalid', `base URL scheme ${url.protocol}: expected http or https`);
    }
    this.base = url.origin + url.pathname.replace(/\/+$/, '');
    this.settings = settings;
    this.transport = url.protocol === 'https:' ? https : http;
    this.agent = new this.transport.Agent({ keepAlive: true, timeout: 4_000, scheduling: 'lifo' });
    this.headers = { accept: 'application/json', 'user-agent': 'errand-sdk-typescript', ...settings.headers };
    if (settings.key !== undefined) {
      if (/[\r\n]/.test(settings.key)) throw new ErrandError('invalid', 'the API key has characters a header cannot carry');
      this.headers.authorization = `Bearer ${settings.key}`;
    }
  }

  url(path: string, query?: Request['query']): string {
    let u = this.base + path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
      const s = q.toString();
      if (s) u += `?${s}`;
    }
    return u;
  }

  /** The request's headers (for the event stream, which reads the answer itself). */
  headersFor(extra: Record<string, string> = {}): Record<string, string> {
    return { ...this.headers, ...extra };
  }

  async call<T>(req: Request, opts: CallOptions = {}): Promise<Answer<T>> {
    const started = Date.now();
    const policy = opts.retry ?? this.settings.retry;
    const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
    const headers: Record<string, string | number> =
      body === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json', 'content-length': body.length };
    const url = new URL(this.url(req.path, req.query));
    for (let n = 0; ; n++) {
      let failure: ErrandError;
      let retryable: boolean;
      const timeoutMs = (opts.timeoutMs ?? this.settings.timeoutMs) + (req.extraMs ?? 0);
      try {
        const res = await this.send(url, req.method, headers, body, timeoutMs, opts.signal);
        if (res.status >= 200 && res.status < 300) {
          if (req.text) return { status: res.status, body: res.text as T };
          return { status: res.status, body: (res.text === '' ? undefined : JSON.parse(res.text)) as T };
        }
        let parsed: unknown = res.text;
        try {
          parsed = JSON.parse(res.text);
        } catch {
          /* not JSON: reported as text */
        }
        const ra = res.retryAfter?.trim();
        const retryAfterMs = ra !== undefined && /^\d+$/.test(ra) ? Number(ra) * 1000 : undefined;
        failure = errorFromAnswer(res.status, parsed, retryAfterMs);
        const apiSaysNothingDone = failure.code === 'rate_limited' || failure.code === 'unavailable';
        retryable =
          req.repeat === 'safe'
            ? [429, 502, 503, 504].includes(res.status)
            : req.repeat === 'untouched' && apiSaysNothingDone;
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        if (e instanceof Timeout) {
          failure = new TimeoutError('timeout', `${req.method} ${req.path}: no answer within ${timeoutMs} ms`);
          retryable = req.repeat === 'safe';
        } else {
          const code = transportCode(e);
          failure = new TransportError('transport', `${req.method} ${req.path}: ${code ?? String(e)}`, { cause: e });
          // Refused: nothing was sent. Any other failure (a reset, even on a kept-alive connection) may
          // have come after the server acted, as the Rust client also assumes.
          retryable = req.repeat === 'safe' || (req.repeat === 'untouched' && code === 'ECONNREFUSED');
        }
      }
      if (!retryable) throw failure;
      const delay = retryDelay(policy, n, failure.retryAfterMs);
      if (Date.now() - started + delay > policy.maxElapsedMs) throw failure;
      await sleep(delay, opts.signal);
    }
  }

  /**
   * One attempt over node:http with a kept-alive connection (several times the requests per second of
   * the global `fetch` on the same core, which matters to a producer making one request per job).
   */
  private send(
    url: URL,
    method: string,
    headers: Record<string, string | number>,
    body: Buffer | undefined,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; text: string; retryAfter: string | undefined }> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const req = this.transport.request(url, { method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          done();
          const ra = res.headers['retry-after'];
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), retryAfter: Array.isArray(ra) ? ra[0] : ra });
        });
        res.on('error', fail);
      });
      const timer = setTimeout(() => {
        req.destroy(new Timeout());
      }, timeoutMs);
      const onAbort = () => req.destroy(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      function fail(e: Error) {
        done();
        reject(e);
      }
      req.on('error', fail);
      req.end(body);
    });
  }
}

/** A request's own timer ended it. */
class Timeout extends Error {}

/** The system error code of a failed request (`ECONNREFUSED`, `ECONNRESET`). */
function transportCode(e: unknown): string | undefined {
  let c: unknown = e;
  for (let i = 0; i < 4 && c; i++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    c = (c as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
