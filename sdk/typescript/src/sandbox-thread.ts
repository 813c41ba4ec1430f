/**
 * The code of a sandbox thread: loads the handlers' module, runs one job at a time, and passes
 * `ctx.progress` and `ctx.log` to the main thread, which owns the lease.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { AsyncLocalStorage } from 'node:async_hooks';

import { JobStopped, type Handler, type JobContext } from './job.js';
import { type FromThread, type ToThread, errorFromWire, errorToWire } from './sandbox.js';

const port = parentPort;
if (!port) throw new Error('sandbox-thread.js runs in a worker thread');
const post = (m: FromThread) => port.postMessage(m);

const current = new AsyncLocalStorage<string>();
const controllers = new Map<string, AbortController>();
const replies = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
let seq = 0;
let done: ((id: string, r: { ok: true; result: unknown } | { ok: false; error: unknown }) => void) | undefined;

// An error that escapes a handler fails its job, not the thread.
const escaped = (e: unknown) => {
  const id = current.getStore();
  if (id !== undefined && done) done(id, { ok: false, error: e });
  else {
    console.error(e);
    process.exit(1);
  }
};
process.on('unhandledRejection', escaped);
process.on('uncaughtException', escaped);

function ask(m: Omit<Extract<FromThread, { type: 'progress' }>, 'seq'> | Omit<Extract<FromThread, { type: 'log' }>, 'seq'>): Promise<void> {
  const s = ++seq;
  return new Promise((resolve, reject) => {
    replies.set(s, { resolve, reject });
    post({ ...m, seq: s } as FromThread);
  });
}

let handlers: Record<string, Handler>;
try {
  const mod = (await import(workerData.module as string)) as { handlers?: Record<string, Handler>; default?: Record<string, Handler> };
  const found = mod.handlers ?? mod.default;
  if (!found || typeof found !== 'object') throw new Error('it exports no `handlers` object (nor a default one)');
  for (const [k, v] of Object.entries(found)) if (typeof v !== 'function') throw new Error(`its handler for ${JSON.stringify(k)} is not a function`);
  handlers = found;
  post({ type: 'ready', kinds: Object.keys(found) });
} catch (e) {
  post({ type: 'load_failed', error: errorToWire(e) });
  process.exit(1);
}

const finished = new Set<string>();
done = (id, r) => {
  if (finished.has(id) || !controllers.has(id)) return;
  finished.add(id);
  controllers.delete(id);
  if (r.ok) post({ type: 'done', id, ok: true, result: r.result });
  else post({ type: 'done', id, ok: false, error: errorToWire(r.error) });
};

port.on('message', (m: ToThread) => {
  if (m.type === 'reply') {
    const r = replies.get(m.seq);
    replies.delete(m.seq);
    if (m.error) r?.reject(errorFromWire(m.error));
    else r?.resolve();
  } else if (m.type === 'abort') {
    controllers.get(m.id)?.abort(new JobStopped(m.reason.why as JobStopped['why'], m.reason.message));
  } else if (m.type === 'run') {
    const controller = new AbortController();
    controllers.set(m.id, controller);
    const ctx: JobContext = {
      ...m.ctx,
      signal: controller.signal,
      progress: (value: unknown) => ask({ type: 'progress', id: m.id, value }),
      log: (...lines: string[]) => ask({ type: 'log', id: m.id, lines: lines.map(String) }),
    };
    const handler = handlers[m.kind] as Handler;
    current.run(m.id, () => {
      try {
        Promise.resolve(handler(m.payload, ctx)).then(
          (result) => done?.(m.id, { ok: true, result }),
          (error) => done?.(m.id, { ok: false, error }),
        );
      } catch (error) {
        done?.(m.id, { ok: false, error });
      }
    });
  }
});
