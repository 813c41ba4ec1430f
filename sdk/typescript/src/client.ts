/**
 * `Client`: one method per route of the HTTP API, for producers, operators and workers. Request and
 * answer shapes are the wire types (`src/wire.ts`, generated from the server's OpenAPI description), so
 * fields are spelt as in `docs/API.md`: `unique_key`, `delay_ms`, `max_attempts`.
 *
 * Every call has a timeout (`timeoutMs`, default 30 s per attempt) and takes an `AbortSignal`.
 * Failures that may pass — no connection, a timeout, `503 unavailable`, `429 rate_limited` (after its
 * `Retry-After`) — are retried with exponential backoff and full jitter within `retry.maxElapsedMs`, but
 * only where a repeat is safe, by the same rules as the Rust client:
 *
 * | retried on any such failure | only if the request certainly did nothing¹ | never |
 * |---|---|---|
 * | every GET; heartbeat, complete, fail, release, ack; pause, resume, setQueueConfig; putSchedule, pauseSchedule, resumeSchedule; putWebhook; enqueue of a job with a `unique_key` (a batch when every job has one) | enqueue without a unique key; fetch; cancel, retry, promote; replayDead, purgeDead; deleteSchedule, triggerSchedule, deleteWebhook (a repeat of a delete that landed answers 404); appendLogs; enqueueFlow | healthLive, healthReady |
 *
 * ¹ The connection was refused, or the server answered `rate_limited` or `unavailable`, which the API
 * defines as "nothing done".
 */
import { type CallOptions, Http, type Repeat } from './http.js';
import { NotFoundError } from './errors.js';
import { type RetryPolicy, defaultRetry } from './retry.js';
import { type EventFilter, type StreamEvent, eventStream } from './events.js';
import type { components } from './wire.js';

type S = components['schemas'];
export type EnqueueJob = S['EnqueueJob'];
export type Enqueued = S['Enqueued'];
export type EnqueuedBatch = S['EnqueuedBatch'];
export type FlowRequest = S['FlowRequest'];
export type FlowResponse = S['FlowResponse'];
export type JobView = S['JobView'];
export type JobPage = S['JobPage'];
export type JobState = S['JobState'];
export type JobLogs = S['JobLogs'];
export type CancelResponse = S['CancelResponse'];
export type JobStateResponse = S['JobStateResponse'];
export type FetchRequest = S['FetchRequest'];
export type FetchedJob = S['FetchedJob'];
export type FetchResponse = S['FetchResponse'];
export type HeartbeatResponse = S['HeartbeatResponse'];
export type AckResponse = S['AckResponse'];
export type AckItem = S['AckItem'];
export type AckBatchResponse = S['AckBatchResponse'];
export type QueueConfig = S['QueueConfig'];
export type QueueView = S['QueueView'];
export type QueueList = S['QueueList'];
export type DeadFilter = S['DeadFilter'];
export type DeadGroupList = S['DeadGroupList'];
export type CountResponse = S['CountResponse'];
export type ScheduleDef = S['ScheduleDef'];
export type ScheduleView = S['ScheduleView'];
export type ScheduleList = S['ScheduleList'];
export type WebhookDef = S['WebhookDef'];
export type WebhookList = S['WebhookList'];
export type Health = S['Health'];
export type WhoAmI = S['WhoAmI'];
export type AlertList = S['AlertList'];
export type AuditPage = S['AuditPage'];
export type WorkerList = S['WorkerList'];
export type ActivityHistory = S['ActivityHistory'];
export type AlertRuleList = S['AlertRuleList'];
export type AuditReport = S['AuditReport'];
export type FlowView = S['FlowView'];
export type SilenceRequest = S['SilenceRequest'];
export type SilenceView = S['SilenceView'];
export type SilenceList = S['SilenceList'];
export type FailRequest = S['FailRequest'];

/** The states in which a job has ended. */
export const FINISHED_STATES: ReadonlySet<string> = new Set(['completed', 'cancelled', 'dead']);

export interface ClientOptions {
  /** The server, e.g. `http://127.0.0.1:7700`. */
  url: string;
  /** An API key: sent as `Authorization: Bearer <key>`. */
  key?: string | undefined;
  /** How long one attempt of a call may take, answer included, in ms (default 30,000). */
  timeoutMs?: number;
  /** How failures are retried (default `defaultRetry`: 30 s in all, 100 ms doubling to 5 s). */
  retry?: RetryPolicy;
}

export interface ListJobsFilter {
  state: JobState;
  kind?: string;
  unique_key?: string;
  cursor?: string;
  /** 1–1,000 (server default 100). */
  limit?: number;
}

export interface DeadListFilter {
  kind?: string;
  cursor?: string;
  limit?: number;
}

const enc = encodeURIComponent;

export class Client {
  readonly http: Http;

  constructor(options: ClientOptions) {
    this.http = new Http({
      url: options.url,
      key: options.key,
      timeoutMs: options.timeoutMs ?? 30_000,
      retry: options.retry ?? defaultRetry,
    });
  }

  private async get<T>(path: string, query?: Record<string, string | number | boolean | undefined>, o?: CallOptions): Promise<T> {
    return (await this.http.call<T>({ method: 'GET', path, query, repeat: 'safe' }, o)).body;
  }

  private async send<T>(method: 'POST' | 'PUT' | 'DELETE', path: string, body: unknown, repeat: Repeat, o?: CallOptions): Promise<T> {
    return (await this.http.call<T>({ method, path, body, repeat }, o)).body;
  }

  // ----- producers -----

  /** Enqueues one job: `created: false` when its unique key matched a job that holds it. */
  enqueue(queue: string, job: EnqueueJob, o?: CallOptions): Promise<Enqueued> {
    const repeat: Repeat = job.unique_key !== undefined && job.unique_key !== null ? 'safe' : 'untouched';
    return this.send('POST', `/v1/queues/${enc(queue)}/jobs`, job, repeat, o);
  }

  /** Enqueues a batch of up to 10,000 jobs, all or nothing. */
  enqueueBatch(queue: string, jobs: EnqueueJob[], o?: CallOptions): Promise<EnqueuedBatch> {
    const repeat: Repeat = jobs.length > 0 && jobs.every((j) => j.unique_key !== undefined && j.unique_key !== null) ? 'safe' : 'untouched';
    return this.send('POST', `/v1/queues/${enc(queue)}/jobs`, { jobs }, repeat, o);
  }

  /** Enqueues a flow: a parent that runs once its children completed. All or nothing. */
  enqueueFlow(flow: FlowRequest, o?: CallOptions): Promise<FlowResponse> {
    return this.send('POST', '/v1/flows', flow, 'untouched', o);
  }

  getJob(id: string, o?: CallOptions): Promise<JobView> {
    return this.get(`/v1/jobs/${enc(id)}`, undefined, o);
  }

  /** A flow parent's children: states, results and errors, in the order enqueued. */
  children(id: string, o?: CallOptions): Promise<JobPage> {
    return this.get(`/v1/jobs/${enc(id)}/children`, undefined, o);
  }

  /** A job's log lines, its latest 200 across attempts. */
  logs(id: string, o?: CallOptions): Promise<JobLogs> {
    return this.get(`/v1/jobs/${enc(id)}/logs`, undefined, o);
  }

  /** One page of a queue's jobs in a state; pass `next_cursor` back as `cursor`. */
  listJobs(queue: string, filter: ListJobsFilter, o?: CallOptions): Promise<JobPage> {
    return this.get(`/v1/queues/${enc(queue)}/jobs`, { ...filter }, o);
  }

  /** Every job of a queue in a state, page after page. */
  async *jobs(queue: string, filter: ListJobsFilter, o?: CallOptions): AsyncGenerator<JobView> {
    let cursor = filter.cursor;
    for (;;) {
      const page = await this.listJobs(queue, cursor === undefined ? filter : { ...filter, cursor }, o);
      yield* page.jobs;
      if (!page.next_cursor) return;
      cursor = page.next_cursor;
    }
  }

  /** Cancels a waiting or delayed job, or asks an active one to stop (`outcome: "requested"`). */
  cancel(id: string, o?: CallOptions): Promise<CancelResponse> {
    return this.send('POST', `/v1/jobs/${enc(id)}/cancel`, undefined, 'untouched', o);
  }

  /** Retries a dead or cancelled job: fresh attempts, the same idempotency key. */
  retry(id: string, o?: CallOptions): Promise<JobStateResponse> {
    return this.send('POST', `/v1/jobs/${enc(id)}/retry`, undefined, 'untouched', o);
  }

  /** Makes a delayed job due now. */
  promote(id: string, o?: CallOptions): Promise<JobStateResponse> {
    return this.send('POST', `/v1/jobs/${enc(id)}/promote`, undefined, 'untouched', o);
  }

  /**
   * Waits until the job ends (`completed`, `cancelled` or `dead`) and answers it, or answers it as it is
   * when `timeoutMs` (default 30,000) passed. Long-polls the server, one request per 30 s at most.
   */
  async waitFor(id: string, options: CallOptions & { waitMs?: number } = {}): Promise<JobView> {
    const until = Date.now() + (options.waitMs ?? 30_000);
    for (;;) {
      const left = Math.max(0, until - Date.now());
      const wait = Math.min(left, 30_000);
      const job = await this.get<JobView>(`/v1/jobs/${enc(id)}/wait`, { timeout: wait }, {
        ...options,
        timeoutMs: (options.timeoutMs ?? 30_000) + wait,
      });
      if (FINISHED_STATES.has(job.state) || Date.now() >= until) return job;
    }
  }

  // ----- queues -----

  queues(o?: CallOptions): Promise<QueueList> {
    return this.get('/v1/queues', undefined, o);
  }

  /** A queue with its counts; `undefined` for a queue never used or configured. */
  async queue(name: string, o?: CallOptions): Promise<QueueView | undefined> {
    try {
      return await this.get<QueueView>(`/v1/queues/${enc(name)}`, undefined, o);
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  pause(queue: string, o?: CallOptions): Promise<QueueView> {
    return this.send('POST', `/v1/queues/${enc(queue)}/pause`, undefined, 'safe', o);
  }

  resume(queue: string, o?: CallOptions): Promise<QueueView> {
    return this.send('POST', `/v1/queues/${enc(queue)}/resume`, undefined, 'safe', o);
  }

  queueConfig(queue: string, o?: CallOptions): Promise<QueueConfig> {
    return this.get(`/v1/queues/${enc(queue)}/config`, undefined, o);
  }

  /** Replaces the queue's whole configuration; fields left out take their defaults. */
  setQueueConfig(queue: string, config: QueueConfig, o?: CallOptions): Promise<QueueConfig> {
    return this.send('PUT', `/v1/queues/${enc(queue)}/config`, config, 'safe', o);
  }

  // ----- dead letters -----

  listDead(queue: string, filter: DeadListFilter = {}, o?: CallOptions): Promise<JobPage> {
    return this.get(`/v1/queues/${enc(queue)}/dead`, { ...filter }, o);
  }

  deadGroups(queue: string, filter: { limit?: number } = {}, o?: CallOptions): Promise<DeadGroupList> {
    return this.get(`/v1/queues/${enc(queue)}/dead/groups`, { ...filter }, o);
  }

  /** Back to waiting, with fresh attempts and the same idempotency keys; answers how many. */
  replayDead(queue: string, filter: DeadFilter = {}, o?: CallOptions): Promise<CountResponse> {
    return this.send('POST', `/v1/queues/${enc(queue)}/dead/replay`, filter, 'untouched', o);
  }

  /** Deletes dead jobs; answers how many. */
  async purgeDead(queue: string, filter: DeadFilter = {}, o?: CallOptions): Promise<CountResponse> {
    const query: Record<string, string | number | undefined> = {};
    for (const [k, v] of Object.entries(filter)) if (v !== undefined && v !== null) query[k] = v as string | number;
    return (await this.http.call<CountResponse>({ method: 'DELETE', path: `/v1/queues/${enc(queue)}/dead`, query, repeat: 'untouched' }, o)).body;
  }

  // ----- webhooks -----

  webhooks(queue: string, o?: CallOptions): Promise<WebhookList> {
    return this.get(`/v1/queues/${enc(queue)}/webhooks`, undefined, o);
  }

  putWebhook(queue: string, name: string, def: WebhookDef, o?: CallOptions): Promise<unknown> {
    return this.send('PUT', `/v1/queues/${enc(queue)}/webhooks/${enc(name)}`, def, 'safe', o);
  }

  deleteWebhook(queue: string, name: string, o?: CallOptions): Promise<unknown> {
    return this.send('DELETE', `/v1/queues/${enc(queue)}/webhooks/${enc(name)}`, undefined, 'untouched', o);
  }

  // ----- schedules -----

  schedules(o?: CallOptions): Promise<ScheduleList> {
    return this.get('/v1/schedules', undefined, o);
  }

  schedule(name: string, o?: CallOptions): Promise<ScheduleView> {
    return this.get(`/v1/schedules/${enc(name)}`, undefined, o);
  }

  /** Creates or replaces a schedule; its next tick is computed from now. */
  putSchedule(name: string, def: ScheduleDef, o?: CallOptions): Promise<ScheduleView> {
    return this.send('PUT', `/v1/schedules/${enc(name)}`, def, 'safe', o);
  }

  deleteSchedule(name: string, o?: CallOptions): Promise<ScheduleView> {
    return this.send('DELETE', `/v1/schedules/${enc(name)}`, undefined, 'untouched', o);
  }

  pauseSchedule(name: string, o?: CallOptions): Promise<ScheduleView> {
    return this.send('POST', `/v1/schedules/${enc(name)}/pause`, undefined, 'safe', o);
  }

  resumeSchedule(name: string, o?: CallOptions): Promise<ScheduleView> {
    return this.send('POST', `/v1/schedules/${enc(name)}/resume`, undefined, 'safe', o);
  }

  /** Enqueues the schedule's job now, outside its ticks. */
  triggerSchedule(name: string, o?: CallOptions): Promise<Enqueued> {
    return this.send('POST', `/v1/schedules/${enc(name)}/trigger`, undefined, 'untouched', o);
  }

  // ----- workers (the Worker class does all of this; for a loop of one's own) -----

  /** Claims up to `max_jobs` due jobs, waiting up to `wait_ms` for one. Never retried (see above). */
  fetch(req: FetchRequest, o?: CallOptions): Promise<FetchResponse> {
    return this.http
      .call<FetchResponse>({ method: 'POST', path: '/v1/fetch', body: req, repeat: 'untouched', extraMs: req.wait_ms ?? 0 }, o)
      .then((a) => a.body);
  }

  heartbeat(id: string, leaseToken: string, progress?: unknown, o?: CallOptions): Promise<HeartbeatResponse> {
    const body = progress === undefined ? { lease_token: leaseToken } : { lease_token: leaseToken, progress };
    return this.send('POST', `/v1/jobs/${enc(id)}/heartbeat`, body, 'safe', o);
  }

  complete(id: string, leaseToken: string, result?: unknown, o?: CallOptions): Promise<AckResponse> {
    const body = result === undefined ? { lease_token: leaseToken } : { lease_token: leaseToken, result };
    return this.send('POST', `/v1/jobs/${enc(id)}/complete`, body, 'safe', o);
  }

  fail(id: string, req: FailRequest, o?: CallOptions): Promise<AckResponse> {
    return this.send('POST', `/v1/jobs/${enc(id)}/fail`, req, 'safe', o);
  }

  release(id: string, leaseToken: string, delayMs?: number, o?: CallOptions): Promise<AckResponse> {
    const body = delayMs === undefined ? { lease_token: leaseToken } : { lease_token: leaseToken, delay_ms: delayMs };
    return this.send('POST', `/v1/jobs/${enc(id)}/release`, body, 'safe', o);
  }

  /** Completions, failures and releases in one request; each succeeds or fails on its own. */
  ack(acks: AckItem[], o?: CallOptions): Promise<AckBatchResponse> {
    return this.send('POST', '/v1/ack', { acks }, 'safe', o);
  }

  appendLogs(id: string, leaseToken: string, lines: string[], o?: CallOptions): Promise<CountResponse> {
    return this.send('POST', `/v1/jobs/${enc(id)}/logs`, { lease_token: leaseToken, lines }, 'untouched', o);
  }

  // ----- observability -----

  /**
   * The event stream (`GET /v1/events`) as an async iterator: `job` events, and `missed` when the node
   * no longer kept events after the cursor. It reconnects after a disconnect with the last cursor, so
   * nothing the node still keeps is missed. Ends when `signal` aborts or the loop breaks.
   */
  events(filter: EventFilter = {}, options: { signal?: AbortSignal; reconnectDelayMs?: number } = {}): AsyncGenerator<StreamEvent> {
    return eventStream(this.http, filter, options);
  }

  /** Prometheus metrics, as OpenMetrics text. */
  async metrics(o?: CallOptions): Promise<string> {
    return (await this.http.call<string>({ method: 'GET', path: '/metrics', repeat: 'safe', text: true }, o)).body;
  }

  whoami(o?: CallOptions): Promise<WhoAmI> {
    return this.get('/v1/whoami', undefined, o);
  }

  alerts(o?: CallOptions): Promise<AlertList> {
    return this.get('/v1/alerts', undefined, o);
  }

  /** The built-in alert rules in force: for `*`, then each queue's own changes. */
  alertRules(o?: CallOptions): Promise<AlertRuleList> {
    return this.get('/v1/alerts/rules', undefined, o);
  }

  /** The alert silences in force. */
  silences(o?: CallOptions): Promise<SilenceList> {
    return this.get('/v1/alerts/silences', undefined, o);
  }

  /** Silences `rule` of `queue` (`*`: every queue) for `duration_ms`: it fires untold until then. */
  silence(req: SilenceRequest, o?: CallOptions): Promise<SilenceView> {
    return this.send('POST', '/v1/alerts/silences', req, 'safe', o);
  }

  /** Ends a silence early; `count` is 0 when none was in force. */
  unsilence(queue: string, rule: string, o?: CallOptions): Promise<CountResponse> {
    return this.send('DELETE', `/v1/alerts/silences/${enc(queue)}/${enc(rule)}`, undefined, 'untouched', o);
  }

  audit(filter: { cursor?: string; limit?: number } = {}, o?: CallOptions): Promise<AuditPage> {
    return this.get('/v1/audit', { ...filter }, o);
  }

  /** This deployment checked against docs/AUDIT.md, as `errand audit` prints it (scope `admin`). */
  auditReport(o?: CallOptions): Promise<AuditReport> {
    return this.get('/v1/audit/report', undefined, o);
  }

  /** A queue's flow control as it stands: limits, active jobs, the tokens its buckets hold now. */
  queueFlow(queue: string, o?: CallOptions): Promise<FlowView> {
    return this.get(`/v1/queues/${enc(queue)}/flow`, undefined, o);
  }

  workers(o?: CallOptions): Promise<WorkerList> {
    return this.get('/v1/workers', undefined, o);
  }

  activity(o?: CallOptions): Promise<ActivityHistory> {
    return this.get('/v1/activity', undefined, o);
  }

  healthLive(o?: CallOptions): Promise<Health> {
    return this.http.call<Health>({ method: 'GET', path: '/health/live', repeat: 'never' }, o).then((a) => a.body);
  }

  healthReady(o?: CallOptions): Promise<Health> {
    return this.http.call<Health>({ method: 'GET', path: '/health/ready', repeat: 'never' }, o).then((a) => a.body);
  }
}
