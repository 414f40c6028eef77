// Shared settings of the benchmark harness and its worker processes.
export const BASE_URL = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
/** The bench owns this database: it is flushed between runs. */
export const BENCH_DB = Number(process.env.MTS_BENCH_DB ?? 5);
export const AMQP_URL = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';

export function benchUrl(): string {
  const u = new URL(BASE_URL);
  u.pathname = `/${BENCH_DB}`;
  return u.toString();
}

export const QUEUE = 'bench';
export const RAW_QUEUE = 'raw:queue';
export const RAW_PROCESSING = 'raw:processing';
export const RAW_DONE = 'raw:done';
export const RAW_FAILED = 'raw:failed';
export const rawResultKey = (id: string): string => `raw:result:${id}`;

/** The task every system runs: adds two numbers. */
export function add(a: number, b: number): number {
  return a + b;
}

export function workerConcurrency(): number {
  return Number(process.env.BENCH_CONCURRENCY ?? 10);
}

/** machinery-ts workers' `readAhead` when `--read-ahead` sets one; otherwise their default (unset: see WorkerOptions.readAhead). */
export function workerReadAhead(): { readAhead?: number } {
  const n = process.env.BENCH_READ_AHEAD;
  return n === undefined || n === '' ? {} : { readAhead: Number(n) };
}

/** The queue of this run, for systems that name a fresh one per run (AMQP). */
export function runQueue(): string {
  return process.env.BENCH_QUEUE ?? QUEUE;
}

/** What a worker process says about itself when the harness asks (over the IPC channel). */
export interface WorkerStats {
  /** Task executions, counted in the task function. */
  executed: number;
  /** Executions of a task index already seen (redeliveries): any is a failure of the run. */
  duplicates: number;
  /** user + system CPU of the worker process since it started, µs. */
  cpuUs: number;
  /** Peak resident set size since the process started, bytes. */
  maxRss: number;
  rss: number;
}

// The soak keeps no per-task index: the set would grow with every task and be the leak it looks for.
const seen = process.env.BENCH_TRACK_IDS === '0' ? null : new Set<number>();
const reportEvery = Number(process.env.BENCH_REPORT_EVERY ?? 0);
let executed = 0;
let duplicates = 0;

/** Called by each worker's task function with the task's index (its first argument). */
export function track(index: number): void {
  executed += 1;
  if (seen) {
    if (seen.has(index)) duplicates += 1;
    else seen.add(index);
  }
  if (reportEvery > 0 && executed % reportEvery === 0) {
    process.send?.({ type: 'rss', processed: executed, rss: process.memoryUsage().rss });
  }
}

function stats(): WorkerStats {
  const cpu = process.cpuUsage();
  return {
    executed,
    duplicates,
    cpuUs: cpu.user + cpu.system,
    maxRss: process.resourceUsage().maxRSS * 1024,
    rss: process.memoryUsage().rss,
  };
}

/**
 * Tells the harness the worker consumes, and answers its stats requests from then on. A
 * worker outlives a harness that is killed or crashes: left running, it would keep taking
 * tasks from the next run's queue of the same name and make that run fail or skew it. So it
 * exits when the harness's IPC channel closes, which happens however the harness ends.
 */
export function ready(): void {
  process.on('message', (m) => {
    if (m === 'stats') process.send?.({ type: 'stats', ...stats() });
  });
  process.once('disconnect', () => process.exit(0));
  // The harness may have gone while this worker was starting, before anyone listened.
  if (process.send !== undefined && !process.connected) process.exit(0);
  process.stdout.write('ready\n');
}
