/**
 * The whole platform under fire: a real `errand serve`, the simulated providers, three worker processes
 * and 2,000 orders — and every 2–3 seconds one worker dies, by SIGKILL (a crash: its jobs come back when
 * their leases end) or SIGTERM (a deploy: it finishes what it runs and exits), and a new one starts.
 * Once every order is through, the providers' books must show each order charged once, each ticket
 * minted once with no wallet nonce used twice, each receipt sent once; and the server must show every
 * job completed, none dead, none left waiting.
 *
 * The server binary is `$ERRAND_BIN`, else the newer of target/debug/errand and target/release/errand
 * at the top of the repository.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { Client, type QueueView } from '@errand/sdk';

import { enqueueOrders, order } from '../src/producer.js';
import { startProviders } from '../src/providers.js';
import { QUEUES, setupQueues } from '../src/queues.js';

const ORDERS = 2_000;
const WORKERS = 3;
/** Refunds asked for after the orders went through, and one more with an amount that can never work. */
const REFUNDS = 20;
/** Give up (and fail) if the orders are not through by then. */
const DEADLINE_MS = 120_000;

const here = dirname(fileURLToPath(import.meta.url)); // build/test
const repository = join(here, '..', '..', '..', '..', '..');

function errandBin(): string {
  if (process.env.ERRAND_BIN) return process.env.ERRAND_BIN;
  const found = ['debug', 'release']
    .map((profile) => join(repository, 'target', profile, 'errand'))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!found[0]) throw new Error('no errand binary: run `cargo build --bin errand` at the top of the repository, or set ERRAND_BIN');
  return found[0];
}

/** Every child process started, so that none outlives the test, whatever happens. */
const children = new Set<ChildProcess>();
/** The children's latest output lines, shown when the test fails. */
const output: string[] = [];

function track(child: ChildProcess, name: string): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) if (line) output.push(`[${name}] ${line}`);
      output.splice(0, Math.max(0, output.length - 200));
    });
  }
  return child;
}

process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

function exited(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.signalCode ?? child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
}

/** Starts `errand serve` on a port of its own and answers its URL, read from its log. */
async function startServer(dataDir: string): Promise<string> {
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--log-format', 'json', '--log', 'warn,errand_server::run=info'];
  const child = track(spawn(errandBin(), args, { stdio: ['ignore', 'pipe', 'pipe'] }), 'errand');
  return new Promise<string>((resolve, reject) => {
    let seen = '';
    const onData = (d: Buffer | string) => {
      seen += d.toString();
      const m = /listening on (http:\/\/[0-9.:]+)/.exec(seen);
      if (m?.[1]) resolve(m[1]);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`errand serve exited with ${code}: ${seen.slice(-2000)}`)));
    setTimeout(() => reject(new Error(`errand serve did not start: ${seen.slice(-2000)}`)), 30_000).unref();
  });
}

let workerCount = 0;
function startWorker(errandUrl: string, providersUrl: string): ChildProcess {
  const child = spawn(process.execPath, [join(here, '..', 'src', 'worker.js')], {
    env: { ...process.env, ERRAND_URL: errandUrl, PROVIDERS_URL: providersUrl },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return track(child, `worker ${++workerCount}`);
}

/** Each queue's view; `undefined` for a queue no job reached yet. */
async function views(client: Client, queues: string[]): Promise<Map<string, QueueView | undefined>> {
  return new Map(await Promise.all(queues.map(async (q) => [q, await client.queue(q)] as const)));
}

function unfinished(v: QueueView | undefined): number {
  return v ? v.counts.waiting + v.counts.delayed + v.counts.active : 0;
}

/** Whether every order went through: its charge, mint and receipt completed, nothing left to run. */
async function ordersDone(client: Client): Promise<boolean> {
  const orderQueues: string[] = [QUEUES.payments, QUEUES.mints, QUEUES.emails];
  const byQueue = await views(client, orderQueues);
  for (const [queue, v] of byQueue) {
    // A dead job would never complete: stop at once and say why.
    if (v && v.counts.dead > 0) assert.fail(`${queue} has dead jobs: ${JSON.stringify((await client.listDead(queue)).jobs.map((j) => [j.dead_reason, j.errors.at(-1)?.message]))}`);
  }
  return [...byQueue.values()].every((v) => v?.counts.completed === ORDERS && unfinished(v) === 0);
}

test('2,000 orders go through exactly once while workers are killed every few seconds', { timeout: 170_000 }, async (t) => {
  const began = Date.now();
  // Should the test time out, an await below may never return: the children go at once, not at exit.
  t.signal.addEventListener('abort', () => {
    for (const child of children) child.kill('SIGKILL');
  });
  const dataDir = mkdtempSync(join(tmpdir(), 'errand-ticketing-'));
  const providers = await startProviders();
  try {
    const errandUrl = await startServer(dataDir);
    const client = new Client({ url: errandUrl });
    await setupQueues(client);

    const workers: ChildProcess[] = [];
    for (let i = 0; i < WORKERS; i++) workers.push(startWorker(errandUrl, providers.url));
    assert.equal(await enqueueOrders(client, ORDERS), ORDERS);
    // A second submission of the same orders (a retried request, a double-click) adds nothing.
    assert.equal(await enqueueOrders(client, 100), 0);

    // Kill a worker every 2–3 s, the oldest first, alternating a crash and a graceful stop, and start
    // another in its place, until every order went through.
    const kills = { SIGKILL: 0, SIGTERM: 0 };
    const terminated: Promise<NodeJS.Signals | number | null>[] = [];
    let nextKill = Date.now() + 2_000 + Math.random() * 1_000;
    while (!(await ordersDone(client))) {
      assert.ok(Date.now() - began < DEADLINE_MS, `the orders are not through after ${DEADLINE_MS / 1000} s: ${JSON.stringify([...(await views(client, Object.values(QUEUES))).values()].map((v) => v && [v.name, v.counts]))}`);
      if (Date.now() >= nextKill) {
        const victim = workers.shift() as ChildProcess;
        const signal = kills.SIGKILL <= kills.SIGTERM ? 'SIGKILL' : 'SIGTERM';
        if (signal === 'SIGTERM') terminated.push(exited(victim));
        victim.kill(signal);
        kills[signal]++;
        workers.push(startWorker(errandUrl, providers.url));
        nextKill = Date.now() + 2_000 + Math.random() * 1_000;
      }
      await sleep(250);
    }
    const ordersSeconds = (Date.now() - began) / 1000;

    // Refunds for some orders — each asked twice, as a support agent's double-click would — and one with
    // an amount that can never work, which must go straight to the dead letters.
    for (let n = 1; n <= REFUNDS; n++) {
      const { order: id, amount } = order(n);
      for (const created of [true, false]) {
        const answer = await client.enqueue(QUEUES.refunds, { kind: 'refund', payload: { order: id, amount }, unique_key: `refund-${id}` });
        assert.equal(answer.created, created);
      }
    }
    const badOrder = order(REFUNDS + 1).order;
    const bad = await client.enqueue(QUEUES.refunds, { kind: 'refund', payload: { order: badOrder, amount: -500 }, unique_key: `refund-${badOrder}` });
    for (;;) {
      const v = await client.queue(QUEUES.refunds);
      if (v && v.counts.completed === REFUNDS && v.counts.dead === 1 && unfinished(v) === 0) break;
      assert.ok(Date.now() - began < DEADLINE_MS, `the refunds are not through: ${JSON.stringify(v?.counts)}`);
      await sleep(100);
    }

    // Stop the workers gracefully; each exits by its signal once its acknowledgements are delivered.
    for (const w of workers) {
      terminated.push(exited(w));
      w.kill('SIGTERM');
    }
    for (const how of await Promise.all(terminated)) assert.equal(how, 'SIGTERM', 'a worker stopped by SIGTERM ends by it');

    const s = providers.stats();
    const all = Array.from({ length: ORDERS }, (_, i) => order(i + 1));

    // Each order charged exactly once, for its amount.
    assert.equal(s.payments.charges, ORDERS);
    assert.equal(s.payments.revenue, all.reduce((sum, o) => sum + o.amount, 0));
    for (const o of all) assert.equal(s.payments.chargesPerOrder[o.order], 1, `charges of ${o.order}`);

    // Each ticket minted once; each wallet's nonces taken in order, none twice.
    assert.equal(s.mints.mints, ORDERS);
    for (const o of all) assert.equal(s.mints.mintsPerTicket[o.ticket], 1, `mints of ${o.ticket}`);
    for (const [wallet, nonces] of Object.entries(s.mints.noncesPerWallet)) {
      assert.deepEqual(nonces, nonces.map((_, i) => i), `nonces of ${wallet}`);
    }

    // Each receipt sent once.
    assert.equal(s.mail.sends, ORDERS);
    for (const o of all) assert.equal(s.mail.sendsPerOrder[o.order], 1, `receipts of ${o.order}`);

    // Each refund made once; the bad one dead at its first attempt, not retried.
    assert.equal(s.payments.refunds, REFUNDS);
    for (let n = 1; n <= REFUNDS; n++) assert.equal(s.payments.refundsPerOrder[order(n).order], 1);
    const dead = await client.listDead(QUEUES.refunds);
    assert.deepEqual(dead.jobs.map((j) => [j.id, j.dead_reason, j.attempts]), [[bad.id, 'non_retryable', 1]]);

    // No job lost: on the server every job completed — none dead, none waiting, delayed or running.
    const end = await views(client, Object.values(QUEUES));
    for (const queue of [QUEUES.payments, QUEUES.mints, QUEUES.emails]) {
      assert.deepEqual(end.get(queue)?.counts, { waiting: 0, delayed: 0, active: 0, completed: ORDERS, cancelled: 0, dead: 0, waiting_children: 0 }, queue);
      assert.deepEqual((await client.listDead(queue)).jobs, [], `${queue} dead letters`);
    }
    // The schedule fired while the orders ran, and its jobs completed.
    const analytics = end.get(QUEUES.analytics)?.counts;
    assert.ok(analytics && analytics.completed >= 1 && analytics.dead === 0, `analytics: ${JSON.stringify(analytics)}`);

    // The run went through what it is meant to show.
    const replays = s.payments.replays + s.mints.replays + s.mail.replays;
    assert.ok(kills.SIGKILL >= 1 && kills.SIGTERM >= 1, `kills: ${JSON.stringify(kills)}`);
    assert.ok(replays > 0, 'some requests were repeated, and refused as duplicates by their idempotency key');
    assert.ok(s.mail.throttled > 0, 'the mail relay throttled, and the receipts snoozed');

    const summary =
      `ticketing: ${ORDERS} orders through in ${ordersSeconds.toFixed(1)} s; ` +
      `${kills.SIGKILL + kills.SIGTERM} workers killed (${kills.SIGKILL} SIGKILL, ${kills.SIGTERM} SIGTERM); ` +
      `${s.payments.charges} charges, ${s.mints.mints} mints, ${s.mail.sends} receipts, ${s.payments.refunds} refunds; ` +
      `${replays} duplicates refused by idempotency (payments ${s.payments.replays}, mints ${s.mints.replays}, mail ${s.mail.replays}); ` +
      `${s.payments.outages + s.mints.outages} provider 503s retried; ${s.mints.nonceConflicts} stale nonces re-read; ` +
      `${s.mail.throttled} snoozes on 429; ${((Date.now() - began) / 1000).toFixed(1)} s in all`;
    t.diagnostic(summary);
  } catch (e) {
    console.error(`--- the children's last output ---\n${output.join('\n')}`);
    throw e;
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all([...children].map(exited));
    await providers.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
