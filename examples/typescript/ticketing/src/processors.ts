/**
 * The handlers, one per job kind. Delivery is at least once — a worker may die after the provider acted
 * and before the job was acknowledged — so each handler is written to run twice harmlessly:
 *
 * - `charge` (payments; order audit: no idempotency keys on external calls) passes the job's idempotency
 *   key to the payment provider, the same on every attempt, so a rerun gets the first charge back
 *   instead of charging again; then enqueues the mint and the receipt under deterministic unique keys,
 *   so a rerun enqueues nothing new.
 * - `refund` (checklist: refund jobs also idempotent) likewise.
 * - `mint` (minting audit: no deterministic id, nonce errors not handled) runs one at a time per wallet
 *   (its concurrency key), checkpoints the nonce it is about to use before calling the chain, and on a
 *   retry sends that same nonce with the same key, which answers the mint already made.
 * - `send_email` (notification audit: not idempotent; checklist: respect the provider's rate limit)
 *   passes the key to the relay, and on a 429 snoozes: the job waits for `Retry-After` without using
 *   an attempt, so a busy relay never sends a receipt to the dead letters.
 * - `aggregate` (background) reads the providers' figures: read-only, so running it twice is harmless.
 *
 * Input that can never work throws `FatalError`: the job goes to the dead letters at once instead of
 * burning its attempts. Provider answers are sorted the same way: 429 snoozes, 5xx and network failures
 * are retried with the queue's backoff, any other 4xx is fatal.
 */
import { type Client, type Handlers, type JobContext, FatalError, RetryError, SnoozeError } from '@errand/sdk';

import { QUEUES } from './queues.js';

/** What a `charge` job carries: one order of one ticket. Amounts are in cents. */
export interface Order {
  order: string;
  amount: number;
  wallet: string;
  ticket: string;
  email: string;
}

/** No provider call may hang the job until its timeout: each gets this long. */
const REQUEST_TIMEOUT_MS = 10_000;

interface Answer {
  status: number;
  body: Record<string, unknown>;
  retryAfterMs: number | undefined;
}

function text(payload: Record<string, unknown>, field: string): string {
  const v = payload[field];
  if (typeof v !== 'string' || v === '') throw new FatalError(`bad payload: ${field} must be a non-empty string`);
  return v;
}

function cents(payload: Record<string, unknown>, field: string): number {
  const v = payload[field];
  if (!Number.isInteger(v) || (v as number) <= 0) throw new FatalError(`bad payload: ${field} must be a positive whole number of cents`);
  return v as number;
}

function object(payload: unknown): Record<string, unknown> {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new FatalError('bad payload: not an object');
  return payload as Record<string, unknown>;
}

/** The error for an answer the handler does not expect, by what a retry could change. */
function failure(what: string, a: Answer): Error {
  const message = `${what}: ${a.status} ${JSON.stringify(a.body)}`;
  // Snoozed jobs would all come back at once after `Retry-After`: up to half a second more spreads them.
  if (a.status === 429) return new SnoozeError((a.retryAfterMs ?? 1_000) + Math.floor(Math.random() * 500), message);
  if (a.status >= 500) return new RetryError(message, a.retryAfterMs);
  return new FatalError(message);
}

/** The handlers by job kind; `client` enqueues the follow-up jobs, `providersUrl` is where the providers are. */
export function processors(client: Client, providersUrl: string): Handlers {
  /** A provider call, aborted at the job's timeout (or cancel, or shutdown grace) and at our own. */
  async function call(ctx: JobContext, method: 'GET' | 'POST', path: string, body?: unknown): Promise<Answer> {
    const res = await fetch(providersUrl + path, {
      method,
      headers: { 'content-type': 'application/json', 'idempotency-key': ctx.idempotencyKey },
      signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const retryAfter = res.headers.get('retry-after');
    return {
      status: res.status,
      body: (await res.json()) as Record<string, unknown>,
      retryAfterMs: retryAfter !== null && /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1_000 : undefined,
    };
  }

  return {
    async charge(payload: unknown, ctx: JobContext) {
      const p = object(payload);
      const order: Order = {
        order: text(p, 'order'),
        amount: cents(p, 'amount'),
        wallet: text(p, 'wallet'),
        ticket: text(p, 'ticket'),
        email: text(p, 'email'),
      };
      const a = await call(ctx, 'POST', '/charges', { order: order.order, amount: order.amount });
      if (a.status !== 200 && a.status !== 201) throw failure('charge', a);
      // Paid: the ticket is minted and the receipt sent, each by a job of its own queue. The unique keys
      // make this step safe to repeat: after a crash here the rerun finds both jobs and adds nothing.
      const o = { signal: ctx.signal };
      await client.enqueue(
        QUEUES.mints,
        { kind: 'mint', payload: { wallet: order.wallet, ticket: order.ticket, order: order.order }, unique_key: `mint-${order.ticket}`, concurrency_key: order.wallet },
        o,
      );
      await client.enqueue(
        QUEUES.emails,
        { kind: 'send_email', payload: { to: order.email, template: 'receipt', order: order.order }, unique_key: `receipt-${order.order}` },
        o,
      );
      return { charge: a.body.id };
    },

    async refund(payload: unknown, ctx: JobContext) {
      const p = object(payload);
      const a = await call(ctx, 'POST', '/refunds', { order: text(p, 'order'), amount: cents(p, 'amount') });
      if (a.status !== 200 && a.status !== 201) throw failure('refund', a);
      return { refund: a.body.id };
    },

    async mint(payload: unknown, ctx: JobContext) {
      const p = object(payload);
      const wallet = text(p, 'wallet');
      const ticket = text(p, 'ticket');
      // An earlier attempt that checkpointed a nonce may have minted with it before it died: send the
      // same nonce with the same key, and the chain answers that mint instead of minting again.
      const saved = (ctx.previousProgress as { nonce?: unknown } | undefined)?.nonce;
      let nonce = Number.isInteger(saved) ? (saved as number) : undefined;
      for (let tries = 0; tries < 3; tries++) {
        if (nonce === undefined) {
          const n = await call(ctx, 'GET', `/wallets/${encodeURIComponent(wallet)}/nonce`);
          if (n.status !== 200 || !Number.isInteger(n.body.nonce)) throw failure('nonce', n);
          nonce = n.body.nonce as number;
          // The checkpoint, sent before the external call: whatever happens next, a retry knows the nonce.
          await ctx.progress({ nonce });
        }
        const a = await call(ctx, 'POST', '/mints', { wallet, nonce, ticket });
        if (a.status === 200 || a.status === 201) return { mint: a.body.id, nonce };
        if (a.status !== 409) throw failure('mint', a);
        // The checkpointed nonce was taken by another of the wallet's mints while this job waited for
        // its retry (the wallet was free meanwhile), and nothing was minted with our key: take the next.
        await ctx.log(`nonce ${nonce} of ${wallet} is taken (${String(a.body.error)}); reading the next one`);
        nonce = undefined;
      }
      throw new RetryError(`mint of ${ticket}: the nonce of ${wallet} kept changing`);
    },

    async send_email(payload: unknown, ctx: JobContext) {
      const p = object(payload);
      const a = await call(ctx, 'POST', '/send', { to: text(p, 'to'), template: text(p, 'template'), order: text(p, 'order') });
      // A 429 snoozes (see `failure`): the relay's limit delays a receipt, it never kills it.
      if (a.status !== 200 && a.status !== 202) throw failure('send', a);
      return { message: a.body.id };
    },

    async aggregate(_payload: unknown, ctx: JobContext) {
      const a = await call(ctx, 'GET', '/stats');
      if (a.status !== 200) throw failure('stats', a);
      const s = a.body as { payments: { charges: number; revenue: number; refunds: number }; mints: { mints: number }; mail: { sends: number } };
      const figures = { charges: s.payments.charges, revenue: s.payments.revenue, refunds: s.payments.refunds, mints: s.mints.mints, emails: s.mail.sends };
      await ctx.log(`aggregate: ${JSON.stringify(figures)}`);
      return figures;
    },
  };
}
