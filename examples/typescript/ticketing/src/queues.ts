/**
 * The platform's queues — money (`payments`, `refunds`, `mints`), communication (`emails`), background
 * (`analytics`) — with their settings kept by the server (`PUT /v1/queues/{queue}/config`), so that every
 * producer and worker gets the same attempts, backoff, timeouts and limits without repeating them on
 * each job. Setting them again changes nothing: run at every deploy.
 *
 * What the audits found missing, and where it now is:
 * - no job timeout (minting, notification audits): `timeout_ms` on every queue; the worker stops a
 *   handler at it and the attempt counts as failed.
 * - no dead-letter queue, a message lost on `nack`, an infinite requeue loop (order, notification
 *   audits): a job whose attempts ran out, or that threw `FatalError`, is `dead` — kept (retention never
 *   removes dead jobs), listed and replayed with `GET/POST /v1/queues/{queue}/dead…`, counted by the
 *   `errand_queue_dead_letters` metric and the built-in `dead_letters` alert.
 * - no stall handling, a lock shorter than the timeout (order, minting audits): a worker's lease lives
 *   by its heartbeats, not by the timeout; a dead worker's jobs run elsewhere once its lease ends;
 *   `max_stalled` sends a job that keeps killing its workers to the dead letters.
 * - cron outside the queue (notification audit): the aggregation is a schedule the server fires once
 *   per tick, whatever the number of servers and workers, as an ordinary job.
 */
import type { Client, QueueConfig } from '@errand/sdk';

export const QUEUES = {
  payments: 'payments',
  refunds: 'refunds',
  mints: 'mints',
  emails: 'emails',
  analytics: 'analytics',
} as const;

const DAY = 24 * 3_600_000;

/**
 * One worker fetches from every queue, and a fetch takes the lowest priority number first across them:
 * money first, then mints, then receipts, analytics last.
 */
export const QUEUE_CONFIGS: Record<string, QueueConfig> = {
  [QUEUES.payments]: {
    priority: 100,
    // The provider's idempotency key makes a retry safe, so a transient failure may be retried a few times.
    max_attempts: 5,
    backoff: { type: 'exponential', delay_ms: 2_000, jitter: 0.2, max_ms: 600_000 },
    timeout_ms: 30_000,
    // A killed worker's job comes back (a stall, no attempt used); a job stalling a fourth time is taken
    // for one that kills its workers, and goes to the dead letters.
    max_stalled: 3,
    // Completed charges are kept 30 days for reconciliation; `charge-<order>` stays taken as long.
    retention: { max_count: 1_000_000, max_age_ms: 30 * DAY },
  },
  [QUEUES.refunds]: {
    priority: 100,
    max_attempts: 5,
    backoff: { type: 'exponential', delay_ms: 2_000, jitter: 0.2, max_ms: 600_000 },
    timeout_ms: 30_000,
    max_stalled: 3,
    retention: { max_count: 1_000_000, max_age_ms: 30 * DAY },
  },
  [QUEUES.mints]: {
    priority: 200,
    // Chain congestion comes and goes: more attempts, a longer backoff.
    max_attempts: 10,
    backoff: { type: 'exponential', delay_ms: 3_000, jitter: 0.2, max_ms: 600_000 },
    timeout_ms: 120_000,
    max_stalled: 3,
    // One job at a time per concurrency key, the wallet: a wallet's nonces are taken in order, so two
    // mints of one wallet at once would read the same nonce. Wallets still mint in parallel.
    key_concurrency: 1,
    retention: { max_count: 1_000_000, max_age_ms: 30 * DAY },
  },
  [QUEUES.emails]: {
    priority: 300,
    max_attempts: 5,
    backoff: { type: 'exponential', delay_ms: 1_000, jitter: 0.2, max_ms: 300_000 },
    timeout_ms: 15_000,
    max_stalled: 3,
    // The relay's published limit, enforced at claim time for all workers together. Bursts and other
    // senders on the same account still draw a 429 now and then: the handler snoozes those.
    rate_limit: { limit: 200, period_ms: 1_000 },
    retention: { max_count: 1_000_000, max_age_ms: 7 * DAY },
  },
  [QUEUES.analytics]: {
    priority: 900,
    max_attempts: 3,
    backoff: { type: 'fixed', delay_ms: 5_000 },
    timeout_ms: 60_000,
    retention: { max_count: 1_000, max_age_ms: DAY },
  },
};

/** Configures every queue and the aggregation schedule. */
export async function setupQueues(client: Client): Promise<void> {
  for (const [queue, config] of Object.entries(QUEUE_CONFIGS)) await client.setQueueConfig(queue, config);
  await client.putSchedule('analytics-aggregate', {
    // Every 5 seconds (6 fields, seconds first) so that the example shows it; hourly would do in production.
    cron: '*/5 * * * * *',
    queue: QUEUES.analytics,
    kind: 'aggregate',
    // A tick missed while no server ran is not worth running late: the next one covers it.
    missed: 'skip',
  });
}
