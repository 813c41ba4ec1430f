/**
 * Errors: one class per error code of the API (`{"error": {"code", "message", "field"?}}`), and two for
 * failures the server never answered (`TransportError`, `TimeoutError`).
 *
 * Every class extends `ErrandError`, so `catch (e) { if (e instanceof ErrandError) e.code }` sees them
 * all, and `e instanceof LeaseLostError` picks one.
 */

/** The codes the API answers with, and the two of the client itself. */
export type ErrorCode =
  | 'invalid'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'lease_lost'
  | 'conflict'
  | 'too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'unavailable'
  | 'internal'
  | 'http'
  | 'transport'
  | 'timeout';

export interface ErrandErrorInit {
  /** The HTTP status, or 0 when no answer came. */
  status?: number;
  /** The request field at fault (`payload`, `jobs[3].priority`, a query parameter). */
  field?: string;
  /** What the server's `Retry-After` asked for, in milliseconds. */
  retryAfterMs?: number;
  cause?: unknown;
}

/** Any failure of a call to Errand. */
export class ErrandError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly field: string | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, init: ErrandErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = init.status ?? 0;
    this.field = init.field;
    this.retryAfterMs = init.retryAfterMs;
  }
}

/** 400: a rule is broken; `field` names where. Nothing was written. */
export class InvalidError extends ErrandError {}
/** 401: keys are configured and the request had none, or an unknown one. */
export class UnauthorizedError extends ErrandError {}
/** 403: the key lacks the scope, or the queue is outside its prefixes. */
export class ForbiddenError extends ErrandError {}
/** 404: no such job, queue, schedule, webhook or route. */
export class NotFoundError extends ErrandError {}
/** 405: the route does not take this method. */
export class MethodNotAllowedError extends ErrandError {}
/** 409: the lease token is not the job's current lease: the job is no longer this worker's. */
export class LeaseLostError extends ErrandError {}
/** 409: the job's state does not allow it (retrying a completed job, promoting a waiting one). */
export class ConflictError extends ErrandError {}
/** 413: a body, payload, result, progress or batch over its limit. */
export class TooLargeError extends ErrandError {}
/** 415: the body was not JSON. */
export class UnsupportedMediaTypeError extends ErrandError {}
/** 429: a server limit or the key's rate; `retryAfterMs` says when to try again. */
export class RateLimitedError extends ErrandError {}
/** 503: the store cannot be reached, or the server is shutting down; nothing was done. */
export class UnavailableError extends ErrandError {}
/** 500: a fault of the server, not of the request. */
export class InternalError extends ErrandError {}
/** An answer that is not in the API's error format (a proxy's 502, say). */
export class HttpError extends ErrandError {}
/** No answer: the connection failed or broke. Whether the server acted is unknown. */
export class TransportError extends ErrandError {}
/** No answer within the call's timeout. Whether the server acted is unknown. */
export class TimeoutError extends ErrandError {}

const byCode: Record<string, new (code: ErrorCode, message: string, init?: ErrandErrorInit) => ErrandError> = {
  invalid: InvalidError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  method_not_allowed: MethodNotAllowedError,
  lease_lost: LeaseLostError,
  conflict: ConflictError,
  too_large: TooLargeError,
  unsupported_media_type: UnsupportedMediaTypeError,
  rate_limited: RateLimitedError,
  unavailable: UnavailableError,
  internal: InternalError,
};

/** The error for an answer of `status` whose body was `body` (parsed JSON, or the raw text). */
export function errorFromAnswer(status: number, body: unknown, retryAfterMs: number | undefined): ErrandError {
  const detail = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | null)?.error;
  if (detail && typeof detail.code === 'string' && typeof detail.message === 'string') {
    const Class = byCode[detail.code] ?? ErrandError;
    const code = (detail.code in byCode ? detail.code : 'http') as ErrorCode;
    const init: ErrandErrorInit = { status };
    if (typeof detail.field === 'string') init.field = detail.field;
    if (retryAfterMs !== undefined) init.retryAfterMs = retryAfterMs;
    return new Class(code, detail.message, init);
  }
  const text = typeof body === 'string' ? body.slice(0, 200) : JSON.stringify(body)?.slice(0, 200);
  const init: ErrandErrorInit = { status };
  if (retryAfterMs !== undefined) init.retryAfterMs = retryAfterMs;
  return new HttpError('http', `HTTP ${status}: ${text ?? ''}`, init);
}
