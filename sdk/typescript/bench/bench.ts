/**
 * `npm run bench -- <scenario> [--url URL] [--key KEY] [--jobs N] [--concurrency N] [--batch N]`
 *
 * Measures the TypeScript SDK against a server in its own process, and prints one JSON line per result,
 * as `errand bench --json` does:
 * - `drain`: N no-op jobs enqueued first (not timed), then one `Worker` in this process at
 *   `--concurrency` (default: 10, then 50), with the SDK's defaults otherwise, until the server counts
 *   N completed;
 * - `enqueue-single`: N jobs, one request each, from `--concurrency` producers (default 32);
 * - `enqueue-batch`: N jobs in batches of `--batch` (default 1,000);
 * - `all`: each in turn.
 * Without `--url`, it starts `errand serve` (`$ERRAND_BIN`, else target/release/errand) on a fresh
 * embedded store with its default (durable) settings, and stops it afterwards.
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';

import { Client, Worker, type EnqueueJob } from '../src/index.js';
import { releaseBin, startServer, type Server } from '../test/server.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string' },
    key: { type: 'string' },
    jobs: { type: 'string', default: '100000' },
    concurrency: { type: 'string' },
    batch: { type: 'string', default: '1000' },
  },
});
const scenario = positionals[0] ?? 'all';
const jobs = Number(values.jobs);
const batch = Number(values.batch);

let server: Server | undefined;
let url = values.url;
if (!url) {
  server = await startServer([], {}, releaseBin());
  url = server.url;
}
const client = new Client({ url, key: values.key });
const base = values.url ? { store: `server at ${url}`, sync: 'as configured' } : { store: 'sqlite', sync: 'full' };
const run = `${Date.now().toString(36)}`;
const queueName = (s: string) => `bench-ts-${s}-${run}`;

function line(o: Record<string, unknown>): void {
  console.log(JSON.stringify({ ...o, cores: availableParallelism() }));
}

async function keepAll(q: string): Promise<void> {
  await client.setQueueConfig(q, { retention: { max_count: null, max_age_ms: null } });
}

async function enqueueBatches(q: string, n: number, size: number): Promise<void> {
  for (let done = 0; done < n; ) {
    const b = Math.min(size, n - done);
    const list: EnqueueJob[] = Array.from({ length: b }, (_, i) => ({ kind: 'noop', payload: { i: done + i } }));
    await client.enqueueBatch(q, list);
    done += b;
  }
}

async function checkTotal(q: string, n: number, state: 'waiting' | 'completed'): Promise<void> {
  const v = await client.queue(q);
  const got = v?.counts[state] ?? 0;
  if (got !== n) throw new Error(`${q}: ${got} ${state} on the server, expected ${n}`);
}

async function drain(concurrency: number): Promise<void> {
  const q = queueName(`drain-${concurrency}`);
  await keepAll(q);
  await enqueueBatches(q, jobs, 1000);
  const started = performance.now();
  let completed = 0;
  let w: Worker | undefined;
  await new Promise<void>((resolve, reject) => {
    w = new Worker({
      client,
      queues: [q],
      concurrency,
      ...(process.env.BENCH_PREFETCH ? { prefetch: Number(process.env.BENCH_PREFETCH) } : {}),
      handleSignals: false,
      handlers: { noop: () => undefined },
    });
    w.on('completed', () => {
      if (++completed === jobs) resolve();
    });
    w.on('error', reject);
  });
  const seconds = (performance.now() - started) / 1000;
  await w?.close();
  await checkTotal(q, jobs, 'completed');
  line({ scenario: 'drain', ...base, jobs, seconds, jobs_per_s: jobs / seconds, concurrency, workers: 1, sdk: 'typescript' });
}

async function enqueueSingle(): Promise<void> {
  const q = queueName('enqueue-single');
  await keepAll(q);
  const producers = Number(values.concurrency ?? 32);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: producers }, async (_, p) => {
      const share = Math.floor(jobs / producers) + (p < jobs % producers ? 1 : 0);
      for (let i = 0; i < share; i++) await client.enqueue(q, { kind: 'noop', payload: i });
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await checkTotal(q, jobs, 'waiting');
  line({ scenario: 'enqueue-single', ...base, jobs, seconds, jobs_per_s: jobs / seconds, concurrency: producers, sdk: 'typescript' });
}

async function enqueueBatch(): Promise<void> {
  const q = queueName('enqueue-batch');
  await keepAll(q);
  const started = performance.now();
  await enqueueBatches(q, jobs, batch);
  const seconds = (performance.now() - started) / 1000;
  await checkTotal(q, jobs, 'waiting');
  line({ scenario: 'enqueue-batch', ...base, jobs, seconds, jobs_per_s: jobs / seconds, batch, sdk: 'typescript' });
}

try {
  if (scenario === 'drain' || scenario === 'all') {
    for (const c of values.concurrency ? [Number(values.concurrency)] : [10, 50]) await drain(c);
  }
  if (scenario === 'enqueue-single' || scenario === 'all') await enqueueSingle();
  if (scenario === 'enqueue-batch' || scenario === 'all') await enqueueBatch();
  if (!['drain', 'enqueue-single', 'enqueue-batch', 'all'].includes(scenario)) throw new Error(`unknown scenario ${scenario}`);
} finally {
  await server?.stop();
}
