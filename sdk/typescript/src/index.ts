export * from './client.js';
export * from './errors.js';
export * from './events.js';
export * from './job.js';
export { type RetryPolicy, defaultRetry, noRetry, retryDelay } from './retry.js';
export type { CallOptions } from './http.js';
export { Worker, consoleLogger, type Logger, type WorkerOptions, type WorkerReport, type JobInfo } from './worker.js';
export type { SandboxOptions } from './sandbox.js';
export type { components, paths } from './wire.js';
