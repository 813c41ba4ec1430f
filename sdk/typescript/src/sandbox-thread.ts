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

const current = new AsyncLocalStorage<number>();
/** The runs not reported yet, by run number (a job's next attempt is another run). */
const controllers = new Map<number, AbortController>();
const replies = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
let seq = 0;
let done: ((run: number, r: { ok: true; result: unknown } | { ok: false; error: unknown }) => void) | undefined;

// An error that escapes a handler fails its job, not the thread.
const escaped = (e: unknown) => {
  const run = current.getStore();
  if (run !== undefined && done) done(run, { ok: false, error: e });
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

done = (run, r) => {
  // The first end of a run counts; what its handler left running reports nothing more.
  if (!controllers.delete(run)) return;
  if (!r.ok) return post({ type: 'done', run, ok: false, error: errorToWire(r.error) });
  try {
    post({ type: 'done', run, ok: true, result: r.result });
  } catch (e) {
    // A result that cannot be copied to the main thread (a function, a socket): the job fails for
    // good, as a result that cannot be sent as JSON does.
    post({ type: 'done', run, ok: false, error: { name: 'FatalError', message: `the result cannot leave the sandbox: ${(e as Error).message}` } });
  }
};

port.on('message', (m: ToThread) => {
  if (m.type === 'reply') {
    const r = replies.get(m.seq);
    replies.delete(m.seq);
    if (m.error) r?.reject(errorFromWire(m.error));
    else r?.resolve();
  } else if (m.type === 'abort') {
    controllers.get(m.run)?.abort(new JobStopped(m.reason.why as JobStopped['why'], m.reason.message));
  } else if (m.type === 'run') {
    const controller = new AbortController();
    controllers.set(m.run, controller);
    const ctx: JobContext = {
      ...m.ctx,
      signal: controller.signal,
      progress: (value: unknown) => ask({ type: 'progress', run: m.run, value }),
      log: (...lines: string[]) => ask({ type: 'log', run: m.run, lines: lines.map(String) }),
    };
    const handler = handlers[m.kind] as Handler;
    current.run(m.run, () => {
      try {
        Promise.resolve(handler(m.payload, ctx)).then(
          (result) => done?.(m.run, { ok: true, result }),
          (error) => done?.(m.run, { ok: false, error }),
        );
      } catch (error) {
        done?.(m.run, { ok: false, error });
      }
    });
  }
});
