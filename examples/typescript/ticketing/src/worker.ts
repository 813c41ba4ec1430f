/**
 * A worker process over every queue, running the handlers of `processors.ts`. Run as many as needed, on
 * as many machines: the server hands each job to one of them, and the limits (per-wallet concurrency,
 * the relay's rate) hold across all of them.
 *
 *   ERRAND_URL=http://127.0.0.1:7700 PROVIDERS_URL=http://127.0.0.1:7800 node build/src/worker.js
 *
 * Separate from any HTTP server (order audit: jobs ran in the API's process). Stopped with SIGTERM or
 * Ctrl-C it shuts down gracefully (minting audit: no queue shutdown): it fetches no more, gives back
 * the jobs it fetched but did not start, lets running ones finish, delivers every acknowledgement, and
 * exits by the signal. Killed outright, its jobs come back to the queue when their leases end.
 */
import { Client, Worker } from '@errand/sdk';

import { processors } from './processors.js';
import { QUEUES } from './queues.js';

const url = process.env.ERRAND_URL ?? 'http://127.0.0.1:7700';
const providersUrl = process.env.PROVIDERS_URL ?? 'http://127.0.0.1:7800';
const client = new Client({ url, key: process.env.ERRAND_API_KEY });

const worker = new Worker({
  client,
  queues: Object.values(QUEUES),
  // The handlers mostly wait on providers: many at once per process (minting audit: concurrency 1).
  concurrency: 20,
  handlers: processors(client, providersUrl),
  // A heartbeat for each held job every second: the server keeps each lease 2 × 1 s + 5 s, so the jobs of
  // a worker that dies without a word (SIGKILL, out of memory) run elsewhere about 7 s later.
  heartbeatEveryMs: 1_000,
  // Running jobs get this long to finish on SIGTERM: within Kubernetes' default 30 s before its SIGKILL.
  shutdownGraceMs: 25_000,
  handleSignals: true,
});
console.log(`worker ${worker.workerId} started: queues ${worker.queues.join(', ')}, concurrency ${worker.concurrency}, errand ${url}, providers ${providersUrl}`);
worker.on('closed', (report) => console.log(`worker ${worker.workerId} stopped: ${JSON.stringify(report)}`));
