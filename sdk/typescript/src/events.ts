/**
 * The event stream, `GET /v1/events` (Server-Sent Events), as an async iterator that resumes after a
 * disconnect from the last cursor it saw (`Last-Event-ID`).
 */
import { ErrandError, errorFromAnswer } from './errors.js';
import { type Http, sleep } from './http.js';
import { retryDelay } from './retry.js';
import type { components } from './wire.js';

export type EventView = components['schemas']['EventView'];

export interface EventFilter {
  queue?: string;
  kind?: string;
  job_id?: string;
  /** Start after this cursor (an event's `cursor`); absent: from the next event. */
  after?: string;
}

/** A job changed state; or the node no longer kept the events after the cursor (`missed`). */
export type StreamEvent = ({ type: 'job' } & EventView) | { type: 'missed'; from: string };

/** The server sends a comment every 15 s on a quiet stream; three missed mean the connection is dead. */
const IDLE_MS = 45_000;

export async function* eventStream(
  http: Http,
  filter: EventFilter,
  options: { signal?: AbortSignal; reconnectDelayMs?: number },
): AsyncGenerator<StreamEvent> {
  const { after, ...query } = filter;
  let cursor = after;
  let failures = 0;
  const outer = options.signal;
  const backoff = () => options.reconnectDelayMs ?? retryDelay({ maxElapsedMs: 0, baseMs: 250, capMs: 5_000 }, failures++);
  while (!outer?.aborted) {
    // One connection: ended by the caller's signal, by the loop's end, or by silence.
    const conn = new AbortController();
    const onOuter = () => conn.abort(outer?.reason);
    outer?.addEventListener('abort', onOuter, { once: true });
    let idle: NodeJS.Timeout | undefined;
    const quiet = () => {
      clearTimeout(idle);
      idle = setTimeout(() => conn.abort(new Error('the event stream went quiet')), IDLE_MS);
    };
    try {
      let res: Response;
      try {
        quiet();
        const headers = http.headersFor(cursor === undefined ? { accept: 'text/event-stream' } : { accept: 'text/event-stream', 'last-event-id': cursor });
        res = await fetch(http.url('/v1/events', query), { headers, signal: conn.signal });
      } catch {
        if (outer?.aborted) return;
        await sleep(backoff(), outer).catch(() => {});
        continue;
      }
      if (!res.ok) {
        const text = await res.text();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          /* text */
        }
        // 503 and 429 pass; anything else (401, 403, 400) would fail the same way again.
        if (res.status !== 503 && res.status !== 429) throw errorFromAnswer(res.status, body, undefined);
        await sleep(backoff(), outer).catch(() => {});
        continue;
      }
      if (!res.body) throw new ErrandError('http', 'the event stream answered without a body');
      failures = 0;
      const decoder = new TextDecoder();
      let buf = '';
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          quiet();
          buf += decoder.decode(chunk, { stream: true });
          let end: number;
          while ((end = buf.search(/\r?\n\r?\n/)) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + (buf[end] === '\r' ? 4 : 2));
            const ev = parseBlock(block);
            if (!ev) continue;
            let event: StreamEvent | undefined;
            if (ev.event === 'job') event = { type: 'job', ...(JSON.parse(ev.data) as EventView) };
            else if (ev.event === 'missed') event = { type: 'missed', ...(JSON.parse(ev.data) as { from: string }) };
            // The cursor moves only past an event delivered: a reconnect resumes after it.
            if (ev.id !== undefined) cursor = ev.id;
            if (event) yield event;
          }
        }
      } catch (e) {
        if (outer?.aborted) return;
        // A JSON error is the server's fault, not the connection's: say so rather than skip the event.
        if (e instanceof SyntaxError) throw new ErrandError('http', `the event stream sent an event that is not JSON: ${e.message}`);
        // Otherwise a broken or silent connection: reconnect from `cursor`.
      }
      if (outer?.aborted) return;
      await sleep(options.reconnectDelayMs ?? 250, outer).catch(() => {});
    } finally {
      clearTimeout(idle);
      outer?.removeEventListener('abort', onOuter);
      conn.abort();
    }
  }
}

function parseBlock(block: string): { event: string; data: string; id?: string } | undefined {
  let event = 'message';
  const data: string[] = [];
  let id: string | undefined;
  for (const line of block.split(/\r?\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
  }
  if (!data.length) return undefined;
  return id === undefined ? { event, data: data.join('\n') } : { event, data: data.join('\n'), id };
}
