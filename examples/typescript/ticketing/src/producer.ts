/**
 * The shop's side: configures the queues (as a deploy would), then enqueues one `charge` job per order.
 *
 *   ERRAND_URL=http://127.0.0.1:7700 node build/src/producer.js [orders]     # default 100
 *
 * Each order's job has the unique key `charge-<order>` (order audit: no deterministic job ids): a
 * double-click, a retried request or a second run of this script finds the job already there and
 * enqueues nothing — run it twice and the second run creates no job.
 */
import { pathToFileURL } from 'node:url';

import { Client, type EnqueueJob } from '@errand/sdk';

import { type Order } from './processors.js';
import { QUEUES, setupQueues } from './queues.js';

/** Orders go to this many wallets, so that each wallet mints many tickets, one after the other. */
export const WALLETS = 50;

/** Order number `n`: its ticket, its buyer's wallet and e-mail, a price in cents. */
export function order(n: number): Order {
  return {
    order: `order-${n}`,
    amount: 2_500 + (n % 7) * 500,
    wallet: `wallet-${n % WALLETS}`,
    ticket: `ticket-${n}`,
    email: `buyer-${n}@example.com`,
  };
}

/** Enqueues orders 1 to `count`, in batches; answers how many jobs were new. */
export async function enqueueOrders(client: Client, count: number): Promise<number> {
  let created = 0;
  for (let first = 1; first <= count; first += 500) {
    const jobs: EnqueueJob[] = [];
    for (let n = first; n <= Math.min(count, first + 499); n++) {
      const o = order(n);
      jobs.push({ kind: 'charge', payload: o, unique_key: `charge-${o.order}` });
    }
    // Every job has a unique key, so the SDK may safely send the batch again after a network failure.
    const answer = await client.enqueueBatch(QUEUES.payments, jobs);
    created += answer.jobs.filter((j) => j.created).length;
  }
  return created;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const count = Number(process.argv[2] ?? 100);
  if (!Number.isInteger(count) || count < 1) throw new Error(`usage: producer.js [orders], a whole number (got ${process.argv[2]})`);
  const client = new Client({ url: process.env.ERRAND_URL ?? 'http://127.0.0.1:7700', key: process.env.ERRAND_API_KEY });
  await setupQueues(client);
  const created = await enqueueOrders(client, count);
  console.log(`enqueued ${created} new charge jobs of ${count} orders (the rest were already there)`);
}
