// Shared settings of the benchmark harness and its worker processes.
export const BASE_URL = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
/** The bench owns this database: it is flushed between runs. */
export const BENCH_DB = Number(process.env.MTS_BENCH_DB ?? 5);

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

export function ready(): void {
  process.stdout.write('ready\n');
}
