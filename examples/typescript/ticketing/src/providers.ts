/**
 * The outside world the jobs talk to, simulated on one HTTP server: a payment provider, an NFT mint
 * service with per-wallet nonces, and a mail relay. Each behaves like the real thing where it matters
 * to a queue: it is a little slow, it fails now and then, it deduplicates by `Idempotency-Key`, and the
 * relay rate-limits. Each also counts what it really did, so that a test can prove that nothing
 * happened twice and nothing was lost (`GET /stats`, or `stats()`).
 *
 *   node build/src/providers.js      # listens on $PROVIDERS_PORT, default 7800
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';

/** Share of payment and mint calls that fail with a 503: half before acting, half after (the answer is lost). */
const OUTAGE_RATE = 0.03;
/** Sends the mail relay admits per sliding second; beyond it, `429` with `Retry-After: 1`. */
const MAIL_PER_SECOND = 200;

export interface ProviderStats {
  payments: {
    /** Charges really made, and their sum in cents. */
    charges: number;
    revenue: number;
    chargesPerOrder: Record<string, number>;
    refunds: number;
    refundsPerOrder: Record<string, number>;
    /** Requests whose idempotency key had been seen: answered with the first result, nothing done again. */
    replays: number;
    /** 503s answered (some after the charge was made). */
    outages: number;
  };
  mints: {
    mints: number;
    mintsPerTicket: Record<string, number>;
    /** Every nonce each wallet used, in order. */
    noncesPerWallet: Record<string, number[]>;
    /** Mints refused `409` because the nonce was not the wallet's next one. */
    nonceConflicts: number;
    replays: number;
    outages: number;
  };
  mail: {
    sends: number;
    sendsPerOrder: Record<string, number>;
    replays: number;
    /** Requests answered `429`. */
    throttled: number;
  };
}

export interface Providers {
  url: string;
  stats(): ProviderStats;
  close(): Promise<void>;
}

class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A network call's few milliseconds. */
const latency = (min: number, max: number) => sleep(min + Math.random() * (max - min));
const bump = (counts: Record<string, number>, key: string) => (counts[key] = (counts[key] ?? 0) + 1);

/** Starts the providers on `port` (0: any free port). */
export async function startProviders(port = 0): Promise<Providers> {
  const stats: ProviderStats = {
    payments: { charges: 0, revenue: 0, chargesPerOrder: {}, refunds: 0, refundsPerOrder: {}, replays: 0, outages: 0 },
    mints: { mints: 0, mintsPerTicket: {}, noncesPerWallet: {}, nonceConflicts: 0, replays: 0, outages: 0 },
    mail: { sends: 0, sendsPerOrder: {}, replays: 0, throttled: 0 },
  };
  // What each idempotency key got the first time, per provider.
  const charges = new Map<string, { id: string; order: string; amount: number }>();
  const chargedByOrder = new Map<string, number>();
  const refunds = new Map<string, { id: string; order: string; amount: number }>();
  const mints = new Map<string, { id: string; wallet: string; nonce: number; ticket: string }>();
  const mails = new Map<string, { id: string }>();
  const admitted: number[] = []; // when the relay admitted each request of the last second
  let ids = 0;

  /** Fails the request with a 503 now and then: before acting, or after it (`act` runs, the answer is lost). */
  function flaky(counter: { outages: number }, act: () => Reply): Reply {
    const roll = Math.random();
    if (roll < OUTAGE_RATE / 2) {
      counter.outages++;
      return new Reply(503, { error: 'temporarily unavailable' });
    }
    const reply = act();
    if (roll < OUTAGE_RATE) {
      counter.outages++;
      return new Reply(503, { error: 'upstream timeout' });
    }
    return reply;
  }

  async function route(method: string, path: string, key: string | undefined, body: Record<string, unknown>): Promise<Reply> {
    if (method === 'GET' && path === '/stats') return new Reply(200, stats);
    const nonceOf = /^\/wallets\/([^/]+)\/nonce$/.exec(path);
    if (method === 'GET' && nonceOf?.[1]) {
      await latency(2, 6);
      return new Reply(200, { nonce: stats.mints.noncesPerWallet[decodeURIComponent(nonceOf[1])]?.length ?? 0 });
    }
    if (method !== 'POST') return new Reply(404, { error: 'no such route' });
    if (!key) return new Reply(400, { error: 'Idempotency-Key is required' });

    switch (path) {
      case '/charges': {
        await latency(2, 8);
        const { order, amount } = body;
        if (typeof order !== 'string' || !Number.isInteger(amount) || (amount as number) <= 0) return new Reply(400, { error: 'order and a positive amount in cents are required' });
        const seen = charges.get(key);
        if (seen) {
          stats.payments.replays++;
          return new Reply(200, seen);
        }
        return flaky(stats.payments, () => {
          const charge = { id: `ch_${++ids}`, order, amount: amount as number };
          charges.set(key, charge);
          chargedByOrder.set(order, (chargedByOrder.get(order) ?? 0) + charge.amount);
          stats.payments.charges++;
          stats.payments.revenue += charge.amount;
          bump(stats.payments.chargesPerOrder, order);
          return new Reply(201, charge);
        });
      }
      case '/refunds': {
        await latency(2, 8);
        const { order, amount } = body;
        if (typeof order !== 'string' || !Number.isInteger(amount) || (amount as number) <= 0) return new Reply(400, { error: 'order and a positive amount in cents are required' });
        const seen = refunds.get(key);
        if (seen) {
          stats.payments.replays++;
          return new Reply(200, seen);
        }
        const charged = chargedByOrder.get(order);
        if (charged === undefined) return new Reply(404, { error: `no charge for order ${order}` });
        if ((amount as number) > charged) return new Reply(422, { error: `refund of ${String(amount)} exceeds the ${charged} charged` });
        return flaky(stats.payments, () => {
          const refund = { id: `re_${++ids}`, order, amount: amount as number };
          refunds.set(key, refund);
          chargedByOrder.set(order, charged - refund.amount);
          stats.payments.refunds++;
          bump(stats.payments.refundsPerOrder, order);
          return new Reply(201, refund);
        });
      }
      case '/mints': {
        await latency(5, 15);
        const { wallet, nonce, ticket } = body;
        if (typeof wallet !== 'string' || typeof ticket !== 'string' || !Number.isInteger(nonce)) return new Reply(400, { error: 'wallet, nonce and ticket are required' });
        // The same key again: the mint it made, whatever nonce it carries now.
        const seen = mints.get(key);
        if (seen) {
          stats.mints.replays++;
          return new Reply(200, seen);
        }
        // Like a chain: each wallet's transactions take its nonces in order, each once.
        const used = (stats.mints.noncesPerWallet[wallet] ??= []);
        if (nonce !== used.length) {
          stats.mints.nonceConflicts++;
          return new Reply(409, { error: (nonce as number) < used.length ? 'nonce already used' : 'nonce too high', next: used.length });
        }
        return flaky(stats.mints, () => {
          const mint = { id: `mint_${++ids}`, wallet, nonce: nonce as number, ticket };
          mints.set(key, mint);
          used.push(mint.nonce);
          stats.mints.mints++;
          bump(stats.mints.mintsPerTicket, ticket);
          return new Reply(201, mint);
        });
      }
      case '/send': {
        await latency(1, 3);
        const now = Date.now();
        while (admitted.length > 0 && (admitted[0] as number) <= now - 1000) admitted.shift();
        if (admitted.length >= MAIL_PER_SECOND) {
          stats.mail.throttled++;
          return new Reply(429, { error: 'too many requests' }, { 'retry-after': '1' });
        }
        admitted.push(now);
        const { to, template, order } = body;
        if (typeof to !== 'string' || !to.includes('@') || typeof template !== 'string' || typeof order !== 'string') return new Reply(400, { error: 'to, template and order are required' });
        const seen = mails.get(key);
        if (seen) {
          stats.mail.replays++;
          return new Reply(200, seen);
        }
        const mail = { id: `msg_${++ids}` };
        mails.set(key, mail);
        stats.mail.sends++;
        bump(stats.mail.sendsPerOrder, order);
        return new Reply(202, mail);
      }
      default:
        return new Reply(404, { error: 'no such route' });
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let reply: Reply;
    try {
      let raw = '';
      for await (const chunk of req) raw += chunk;
      const body: unknown = raw ? JSON.parse(raw) : {};
      const key = req.headers['idempotency-key'];
      const path = new URL(req.url ?? '/', 'http://providers').pathname;
      reply = await route(req.method ?? 'GET', path, typeof key === 'string' ? key : undefined, (body ?? {}) as Record<string, unknown>);
    } catch (e) {
      reply = new Reply(400, { error: `bad request: ${(e as Error).message}` });
    }
    res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
    res.end(JSON.stringify(reply.body));
  }

  const server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const { port: bound } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${bound}`,
    stats: () => structuredClone(stats),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const providers = await startProviders(Number(process.env.PROVIDERS_PORT ?? 7800));
  console.log(`providers listening on ${providers.url} (payments, mints, mail; GET /stats)`);
}
