/**
 * One request to the API, with its timeout and the retries that are safe for it.
 */
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
    const body = req.body === undefined ? undefined : JSON.stringify(req.body);
    const headers = body === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json' };
    const url = this.url(req.path, req.query);
    for (let n = 0; ; n++) {
      let failure: ErrandError;
      let retryable: boolean;
      // AbortSignal.timeout takes whole milliseconds only.
      const timeoutMs = Math.ceil((opts.timeoutMs ?? this.settings.timeoutMs) + (req.extraMs ?? 0));
      const timeout = AbortSignal.timeout(timeoutMs);
      const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
      try {
        const res = await fetch(url, body === undefined ? { method: req.method, headers, signal } : { method: req.method, headers, body, signal });
        const raw = await res.text();
        if (res.ok) {
          if (req.text) return { status: res.status, body: raw as T };
          return { status: res.status, body: (raw === '' ? undefined : JSON.parse(raw)) as T };
        }
        let parsed: unknown = raw;
        try {
          parsed = JSON.parse(raw);
        } catch {
          /* not JSON: reported as text */
        }
        const ra = res.headers.get('retry-after');
        const retryAfterMs = ra !== null && /^\d+$/.test(ra.trim()) ? Number(ra.trim()) * 1000 : undefined;
        failure = errorFromAnswer(res.status, parsed, retryAfterMs);
        const apiSaysNothingDone = failure.code === 'rate_limited' || failure.code === 'unavailable';
        retryable =
          req.repeat === 'safe'
            ? [429, 502, 503, 504].includes(res.status)
            : req.repeat === 'untouched' && apiSaysNothingDone;
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? e;
        if (timeout.aborted) {
          failure = new TimeoutError('timeout', `${req.method} ${req.path}: no answer within ${timeoutMs} ms`, { cause: e });
          retryable = req.repeat === 'safe';
        } else {
          const code = transportCode(e);
          failure = new TransportError('transport', `${req.method} ${req.path}: ${code ?? String(e)}`, { cause: e });
          retryable = req.repeat === 'safe' || (req.repeat === 'untouched' && code === 'ECONNREFUSED');
        }
      }
      if (!retryable) throw failure;
      const delay = retryDelay(policy, n, failure.retryAfterMs);
      if (Date.now() - started + delay > policy.maxElapsedMs) throw failure;
      await sleep(delay, opts.signal);
    }
  }
}

/** The system error code under a failed fetch (`ECONNREFUSED`, `ECONNRESET`, `UND_ERR_SOCKET`). */
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
