// The benchmark harness: see BENCHMARKS.md for what it measures and how.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { AMQP_SYSTEMS, amqpQueueName, rabbitCpuUs } from './amqp.js';
import { type WorkerProcess, startWorker } from './child.js';
import { AMQP_URL, BENCH_DB, QUEUE, type WorkerStats, benchUrl } from './common.js';
import { type SoakResult, runSoak, soakMarkdown } from './soak.js';
import { type Counts, type Producer, SYSTEMS, type System, beeLostEvents, limits } from './systems.js';

const PKG = join(dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = join(PKG, '..');

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string): boolean => process.argv.includes(name);
const quick = flag('--quick');
const N = Number(option('--n') ?? (quick ? 2000 : 20000));
const ROUNDS = Number(option('--rounds') ?? (quick ? 1 : 5));
const LAT = Number(option('--latency') ?? (quick ? 200 : 1000));
/**
 * Unmeasured round trips before the latency samples. V8 optimises a function only after it
 * has run often, on threads that share the two cores with the round trip: after 10, each
 * system's result-waiting path was still being compiled while it was measured. After 2,000,
 * a machinery-ts producer still compiled 33 functions (77 ms of compiler time) and
 * deoptimised 12 during the next 4,000 round trips, mostly Node's stream and ioredis code;
 * the p99 of a separate script fell from 1.7 ms after 2,000 to 0.65–0.71 after 10,000 or
 * 20,000, bee-queue's from 0.74 to 0.45.
 */
const WARMUP = Number(option('--warmup') ?? (quick ? 300 : 10000));
// --quick leaves out concurrency 1 and sends a quarter as many one at a time: it has to fit in 2 minutes.
const CONCURRENCIES = quick ? [10, 100] : [1, 10, 100];
const N_ONE = quick ? Math.ceil(N / 4) : N;
const E2E_TIMEOUT_MS = Number(option('--timeout-ms') ?? 180_000);
/**
 * Tasks each end-to-end worker runs before the timed ones. A fresh worker process spends its
 * first half second or so compiling its hot code on threads that share the two cores: in a
 * separate script, that was half the worker's CPU while the first 20,000 tasks were enqueued.
 */
const E2E_WARMUP = Number(option('--e2e-warmup') ?? (quick ? 1000 : 5000));
/** Task indexes of the warm-up tasks: far from 0..N-1, so the workers' duplicate check tells them apart. */
const WARMUP_FIRST_INDEX = 1_000_000_000;
/**
 * machinery-ts workers' `readAhead` (default: their own, unset). The peers have no
 * such setting; this is for measuring what a deeper one gives short tasks, not for the table.
 */
const READ_AHEAD = option('--read-ahead');
if (READ_AHEAD !== undefined && !(Number.isInteger(Number(READ_AHEAD)) && Number(READ_AHEAD) >= 0)) {
  throw new RangeError(`--read-ahead must be a whole number, 0 or more; found ${READ_AHEAD}`);
}
const only = option('--systems')?.split(',');
const soakOnly = flag('--soak-only');
const soak = soakOnly || flag('--soak');
const SOAK_N = Number(option('--soak-n') ?? 1_000_000);
const ALL = [...SYSTEMS, ...AMQP_SYSTEMS];
const systems = soakOnly ? [] : only ? ALL.filter((s) => only.includes(s.id)) : ALL;
// BENCHMARKS.md holds full runs only; anything shorter or narrower goes to bench/results.
const narrowed = Boolean(only) || soakOnly || ['--n', '--rounds', '--latency', '--warmup', '--e2e-warmup', '--soak-n', '--read-ahead'].some((o) => option(o) !== undefined);
const OUTPUT = narrowed ? 'partial' : quick ? 'quick' : 'latest';

const admin = new Redis(benchUrl());

interface Metric {
  key: string;
  label: string;
  unit: string;
  higherBetter: boolean;
  /** Ratios against a peer that does not use the thing measured (raw amqplib and Redis) say nothing. */
  noRatio?: boolean;
}
const GROUPS: { id: System['group']; title: string; base: string }[] = [
  { id: 'redis', title: 'Redis', base: 'machinery' },
  { id: 'amqp', title: 'RabbitMQ', base: 'machinery-amqp' },
];

function metricsOf(group: System['group']): Metric[] {
  const amqp = group === 'amqp';
  const m: Metric[] = [
    { key: 'enqueue', label: `bulk enqueue, ${N} tasks`, unit: 'tasks/s', higherBetter: true },
    { key: 'enqueue1', label: `enqueue one at a time, ${N_ONE} tasks`, unit: 'tasks/s', higherBetter: true },
    ...CONCURRENCIES.map((c) => ({ key: `e2e${c}`, label: `end to end, ${N} tasks, worker concurrency ${c}`, unit: 'tasks/s', higherBetter: true })),
  ];
  if (!amqp) {
    for (const q of ['p50', 'p99', 'max']) m.push({ key: q, label: `send → result, sequential ×${LAT}, ${q}`, unit: 'ms', higherBetter: false });
  }
  const cost = (key: string, what: string): Metric[] => [
    { key: `${key}:cpu`, label: `${what}: CPU, all processes`, unit: 'µs/task', higherBetter: false },
    { key: `${key}:cpuP`, label: `${what}: CPU, producer`, unit: 'µs/task', higherBetter: false },
    ...(key !== 'enqueue' ? [{ key: `${key}:cpuW`, label: `${what}: CPU, worker`, unit: 'µs/task', higherBetter: false }] : []),
    { key: `${key}:cpuRedis`, label: `${what}: CPU, Redis`, unit: 'µs/task', higherBetter: false, noRatio: amqp },
    ...(amqp ? [{ key: `${key}:cpuRabbit`, label: `${what}: CPU, RabbitMQ`, unit: 'µs/task', higherBetter: false }] : []),
    { key: `${key}:cmds`, label: `${what}: Redis commands`, unit: 'cmds/task', higherBetter: false, noRatio: amqp },
    ...(key.startsWith('e2e') ? [{ key: `${key}:rss`, label: `${what}: worker peak RSS`, unit: 'MB', higherBetter: false }] : []),
  ];
  m.push(...cost('enqueue', 'bulk enqueue'));
  for (const c of CONCURRENCIES) m.push(...cost(`e2e${c}`, `end to end c=${c}`));
  if (!amqp) {
    m.push(...cost('lat', 'send → result').filter((x) => !x.key.endsWith(':rss')));
    m.push({ key: 'lat:wait', label: 'send → result: waiting for a CPU, all processes (run-queue time)', unit: 'µs/task', higherBetter: false });
  }
  return m;
}

/** results[system][metric][round]: a number, or a string describing the failure. */
const results: Record<string, Record<string, (number | string)[]>> = {};
function record(sys: System, key: string, value: number | string): void {
  ((results[sys.id] ??= {})[key] ??= []).push(value);
}

async function commandCalls(): Promise<number> {
  const text = await admin.info('commandstats');
  let sum = 0;
  for (const m of text.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) sum += Number(m[1]);
  return sum;
}

async function redisCpuUs(): Promise<number> {
  const text = await admin.info('cpu');
  const sec = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 0);
  return Math.round((sec('used_cpu_sys') + sec('used_cpu_user')) * 1e6);
}

/**
 * Time the producer, the worker and Redis spent runnable but waiting for a CPU, µs (Linux
 * `/proc/<pid>/schedstat`), or null where that is not readable. On a 2-core machine three busy
 * processes queue for the cores, and a sequential round trip waits with them.
 */
async function runQueueUs(worker: WorkerProcess | null): Promise<number | null> {
  const redisPid = /^process_id:(\d+)/m.exec(await admin.info('server'))?.[1];
  let ns = 0;
  for (const pid of [process.pid, worker?.child.pid, redisPid]) {
    if (pid === undefined) return null;
    try {
      ns += Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]);
    } catch {
      return null;
    }
  }
  return Number.isFinite(ns) ? ns / 1000 : null;
}

interface Sample {
  producer: NodeJS.CpuUsage;
  worker: WorkerStats | null;
  redis: number;
  rabbit: number | null;
  calls: number;
  waitUs: number | null;
}
async function sample(worker: WorkerProcess | null): Promise<Sample> {
  return {
    producer: process.cpuUsage(),
    worker: worker ? await worker.stats() : null,
    redis: await redisCpuUs(),
    rabbit: rabbitCpuUs(),
    calls: await commandCalls(),
    waitUs: await runQueueUs(worker),
  };
}

/** Records the cost rows of one case from the samples around it, per task of the `n` it ran. */
function recordCost(sys: System, key: string, a: Sample, b: Sample, n = N): void {
  const p = b.producer.user + b.producer.system - a.producer.user - a.producer.system;
  const w = a.worker && b.worker ? b.worker.cpuUs - a.worker.cpuUs : 0;
  const r = b.redis - a.redis;
  const q = a.rabbit !== null && b.rabbit !== null ? b.rabbit - a.rabbit : 0;
  record(sys, `${key}:cpu`, r < 0 ? 'Redis stats reset mid-run' : (p + w + r + q) / n);
  record(sys, `${key}:cpuP`, p / n);
  if (b.worker) record(sys, `${key}:cpuW`, w / n);
  // Another user of the shared server may reset its statistics (CONFIG RESETSTAT) or restart it.
  const reset = 'Redis stats reset mid-run';
  record(sys, `${key}:cpuRedis`, r < 0 ? reset : r / n);
  if (sys.group === 'amqp') record(sys, `${key}:cpuRabbit`, a.rabbit === null ? 'RabbitMQ pid not found' : q / n);
  record(sys, `${key}:cmds`, b.calls < a.calls ? reset : (b.calls - a.calls) / n);
  if (b.worker && key !== 'lat') record(sys, `${key}:rss`, b.worker.maxRss / 2 ** 20);
  if (key === 'lat') record(sys, 'lat:wait', a.waitUs === null || b.waitUs === null ? 'no /proc/<pid>/schedstat here' : (b.waitUs - a.waitUs) / n);
}

/** A failed case shows its reason in each of its rows, so rounds stay aligned for the ratios. */
function recordFailure(sys: System, key: string, why: string): void {
  for (const m of metricsOf(sys.group)) if (m.key === key || m.key.startsWith(`${key}:`)) record(sys, m.key, why);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
/** A server lost mid-run (RabbitMQ gets restarted by tests) fails that run, not the whole bench. */
async function closeQuietly(p: Producer | undefined): Promise<void> {
  await p?.close().catch((e: unknown) => console.error(`  close: ${String(e)}`));
}
const runOf = (sys: System) => ({ queue: sys.group === 'amqp' ? amqpQueueName() : QUEUE });

async function runSystem(sys: System): Promise<void> {
  // 1. Enqueue with no worker: in bulk, then one at a time.
  for (const key of ['enqueue', 'enqueue1']) {
    await admin.flushdb();
    let p;
    try {
      p = await sys.open(runOf(sys));
      const s0 = await sample(null);
      const t0 = performance.now();
      const n = key === 'enqueue' ? N : N_ONE;
      await (key === 'enqueue' ? p.enqueue(n) : p.enqueueOne(n));
      const s = (performance.now() - t0) / 1000;
      const s1 = await sample(null);
      record(sys, key, n / s);
      if (key === 'enqueue') recordCost(sys, key, s0, s1);
    } catch (e) {
      recordFailure(sys, key, `error: ${String(e)}`);
    } finally {
      await closeQuietly(p);
    }
  }
  // 2. End to end against a worker process; 3. latency on the concurrency-10 worker.
  for (const c of CONCURRENCIES) {
    await admin.flushdb();
    const key = `e2e${c}`;
    const run = runOf(sys);
    let p;
    let worker: WorkerProcess | undefined;
    try {
      p = await sys.open(run);
      worker = await startWorker(sys.worker, { BENCH_CONCURRENCY: String(c), BENCH_QUEUE: run.queue, ...(READ_AHEAD === undefined ? {} : { BENCH_READ_AHEAD: READ_AHEAD }) });
      // Untimed, with task indexes of their own, so that the run measures a worker V8 has optimised.
      let base: Counts = { done: 0, failed: 0 };
      if (E2E_WARMUP > 0) {
        await p.enqueue(E2E_WARMUP, WARMUP_FIRST_INDEX);
        base = await completions(p, worker, E2E_WARMUP);
        if (base.done !== E2E_WARMUP || base.failed !== 0) throw new Error(`warm-up: ${base.done} completed, ${base.failed} failed of ${E2E_WARMUP}`);
      }
      const s0 = await sample(worker);
      const t0 = performance.now();
      await p.enqueue(N);
      const total = await completions(p, worker, E2E_WARMUP + N);
      const counts = { done: total.done - base.done, failed: total.failed - base.failed };
      const s = (performance.now() - t0) / 1000;
      const s1 = await sample(worker);
      const w = s1.worker!;
      const ran = w.executed - s0.worker!.executed;
      const wrong = [
        counts.done !== N || counts.failed !== 0 ? `${counts.done} completed, ${counts.failed} failed of ${N}` : '',
        ran !== N ? `the worker ran ${ran} tasks` : '',
        w.duplicates !== 0 ? `${w.duplicates} ran twice` : '',
      ].filter(Boolean);
      if (wrong.length === 0) {
        record(sys, key, N / s);
        recordCost(sys, key, s0, s1);
      } else {
        recordFailure(sys, key, `FAILED: ${wrong.join(', ')}`);
      }
      console.log(`  ${sys.id} c=${c}: ${counts.done}/${N} done, ${counts.failed} failed, worker ran ${ran} (${w.duplicates} twice), ${(N / s).toFixed(0)} tasks/s`);
      // Latency is a Redis case. On RabbitMQ a fresh producer gets a queue of its own (runOf),
      // which no worker consumes: every round waited out the round-trip timeout, unreported.
      if (c === 10 && p.roundTrip && sys.group === 'redis') await latency(sys, worker);
    } catch (e) {
      recordFailure(sys, key, `error: ${String(e)}`);
      if (c === 10 && sys.group === 'redis') for (const q of ['p50', 'p99', 'max', 'lat']) recordFailure(sys, q, 'not run: end to end failed');
    } finally {
      await worker?.stop();
      await closeQuietly(p);
    }
  }
}

/** Polls the producer's completion count (every 10 ms) until `n` tasks have completed or failed, or the run times out. */
async function completions(p: Producer, worker: WorkerProcess, n: number): Promise<Counts> {
  let counts = await p.counts(worker);
  const deadline = Date.now() + E2E_TIMEOUT_MS;
  while (counts.done + counts.failed < n && Date.now() < deadline) {
    await sleep(10);
    counts = await p.counts(worker);
  }
  return counts;
}

async function latency(sys: System, worker: WorkerProcess): Promise<void> {
  // A fresh producer: the end-to-end run's flood of completion events can cost a
  // subscriber its connection (Redis' pubsub output-buffer limit), losing later events.
  let lp: Producer | undefined;
  try {
    lp = await sys.open(runOf(sys));
    for (let i = 0; i < WARMUP; i++) await lp.roundTrip!();
    const times: number[] = [];
    const s0 = await sample(worker);
    for (let i = 0; i < LAT; i++) {
      const t = performance.now();
      await lp.roundTrip!();
      times.push(performance.now() - t);
    }
    recordCost(sys, 'lat', s0, await sample(worker), LAT);
    times.sort((a, b) => a - b);
    record(sys, 'p50', quantile(times, 0.5));
    record(sys, 'p99', quantile(times, 0.99));
    record(sys, 'max', times[times.length - 1]!);
  } catch (e) {
    for (const q of ['p50', 'p99', 'max']) record(sys, q, `error: ${String(e)}`);
    recordFailure(sys, 'lat', `error: ${String(e)}`);
  } finally {
    await closeQuietly(lp);
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (x: number, unit: string): string =>
  unit === 'tasks/s' ? Math.round(x).toLocaleString('en-US') : unit === 'ms' ? x.toFixed(2) : unit === 'µs/task' ? x.toFixed(0) : x.toFixed(1);

function cell(values: (number | string)[] | undefined, unit: string): string {
  if (!values || values.length === 0) return '—';
  const bad = values.filter((v) => typeof v === 'string');
  if (bad.length > 0) return `**${bad[0]}** (${bad.length}/${values.length} rounds)`;
  const nums = values as number[];
  return `${fmt(median(nums), unit)} (${fmt(Math.min(...nums), unit)}–${fmt(Math.max(...nums), unit)})`;
}

/** Median of the per-round ratios: each round's two numbers come from the same stretch of time. */
function ratioCell(mine: (number | string)[] | undefined, theirs: (number | string)[] | undefined): string {
  if (!mine || !theirs) return '—';
  const rs: number[] = [];
  for (let i = 0; i < Math.min(mine.length, theirs.length); i++) {
    const a = mine[i];
    const b = theirs[i];
    if (typeof a === 'number' && typeof b === 'number' && b > 0) rs.push(a / b);
  }
  return rs.length ? `${median(rs).toFixed(2)}×` : 'n/a';
}

function groupTable(group: (typeof GROUPS)[number]): string {
  const members = systems.filter((s) => s.group === group.id);
  if (members.length === 0) return '';
  // machinery-ts in each of its settings (e.g. `machinery`, `machinery-lean`) against every peer.
  const mine = members.filter((s) => s.id === group.base || s.id.startsWith(`${group.base}-`));
  const peers = members.filter((s) => !mine.includes(s));
  const pairs = mine.flatMap((me) => peers.map((p) => ({ me, p })));
  const head = ['case', 'unit', ...members.map((s) => s.label), ...pairs.map(({ me, p }) => `${me.label} / ${p.label}`)];
  const rows = metricsOf(group.id)
    .filter((m) => members.some((s) => results[s.id]?.[m.key]))
    .map((m) => {
      const cells = members.map((s) => cell(results[s.id]?.[m.key], m.unit));
      const ratios = pairs.map(({ me, p }) => (m.noRatio ? '—' : ratioCell(results[me.id]?.[m.key], results[p.id]?.[m.key])));
      return `| ${m.label} (${m.higherBetter ? 'higher' : 'lower'} is better) | ${m.unit} | ${[...cells, ...ratios].join(' | ')} |`;
    });
  return `## ${group.title}

| ${head.join(' | ')} |
| ${head.map(() => '---').join(' | ')} |
${rows.join('\n')}
`;
}

function markdown(started: Date, seconds: number, soakResult: SoakResult | null): string {
  const args = process.argv.slice(2).join(' ');
  const head = `# Benchmarks

Generated by \`bash scripts/bench.sh${args ? ` ${args}` : ''}\` (bench/src/main.ts) on ${started.toISOString()}, ${seconds.toFixed(0)} s.
Node ${process.version}, ${process.platform}/${process.arch}; Redis at \`${benchUrl().replace(/\/\/[^@]*@/, '//')}\` (db ${BENCH_DB}, flushed before each run);
RabbitMQ at \`${AMQP_URL.replace(/\/\/[^@]*@/, '//')}\`.
`;
  if (systems.length === 0) return `${head}\n${soakResult ? soakMarkdown(soakResult) : ''}`;
  return `${head}${N} tasks per throughput run, ${ROUNDS} round${ROUNDS === 1 ? '' : 's'}, systems interleaved round by round (the order rotates each round).

Cells: median over rounds (min–max). A run where any task is missing, failed or ran twice is shown as **FAILED**, not as a number.
The last columns are the ratios of machinery-ts to each peer: the median of the per-round ratios (each round's numbers come from the same run).

${GROUPS.map(groupTable).filter(Boolean).join('\n')}
${soakResult ? soakMarkdown(soakResult) : ''}
## What is measured

- **Task**: \`add(a, b)\` returning the sum, \`a\` the task's index. Every system runs it with its default settings, except where noted.
- **Bulk enqueue**: time to enqueue N tasks with no worker running, in batches of 1000: BullMQ \`addBulk\`,
  bee-queue \`saveAll\`, raw \`LPUSH\` of 1000 messages, raw amqplib 1000 publishes then \`waitForConfirms\`,
  machinery-ts \`sendTasks\` of 1000 (the PENDING states in one pipeline, then one \`publishBatch\`).
  **One at a time**: \`sendTask\` (PENDING, then publish), each awaited before the next.
- **End to end**: the worker is a separate process (\`node --import tsx src/worker-<system>.ts\`; machinery-ts from its
  packages' tsc output, \`dist/\`, which \`pnpm bench\` builds first — as an application runs it, and as the peers run from npm)
  at concurrency 1, 10 or 100. machinery-ts workers run with their defaults: on Redis an unset \`readAhead\` holds
  \`concurrency\` messages beyond those running and three times as many while tasks average under 1 ms, as these
  no-op tasks do${READ_AHEAD === undefined ? '' : ` (this run sets readAhead ${READ_AHEAD})`}; bee-queue, BullMQ and the raw ioredis worker fetch a job per free slot. Each worker first runs ${E2E_WARMUP} untimed tasks (as many as V8 needs to optimise its
  hot code; a fresh process otherwise spends the first part of the run compiling, on threads that share the two cores),
  then throughput = N / (first send → last completion seen by the producer), the producer
  polling every 10 ms: machinery-ts reads the task states in the Redis backend (\`MGET\` of the unfinished ones, 100 at a
  time, up to the first chunk with one unfinished, since tasks finish roughly in order),
  BullMQ \`getJobCounts('completed','failed')\` (results kept: \`removeOnComplete\` is off by default),
  bee-queue \`checkHealth()\`, raw ioredis a done counter the worker \`INCR\`s, raw amqplib the worker process's
  count of tasks run (asked over the IPC channel; it acks right after). Each run checks that all N completed and
  none failed as the store shows, and that the worker ran exactly N tasks, none of them twice (it counts each
  task index it runs).
- **Latency** (Redis): sequential send → awaited result on the concurrency-10 worker (after its end-to-end run, from a
  fresh producer), after ${WARMUP} unmeasured round trips (so that V8 has optimised each system's code path first): machinery-ts
  \`AsyncResult.get()\` (RedisBackend wakes on the state's pub/sub channel), BullMQ \`job.waitUntilFinished(QueueEvents)\`,
  bee-queue the job's \`succeeded\` event, raw \`BLPOP\` on a per-task result list.
  bee-queue subscribes a job to its events only after \`save()\` resolves, so when its worker finishes first the
  \`succeeded\` event goes unheard; after ${limits.beeEventMs / 1000} s the harness checks that Redis has the job in its succeeded set and keeps the sample (the whole wait).
  Events lost this run: ${beeLostEvents}.
- **Cost per task** over the same window as the throughput (first send → last completion): CPU of the producer process
  (\`process.cpuUsage()\`, its completion polling included), of the worker process (its own \`process.cpuUsage()\`,
  asked over IPC), of Redis (\`INFO cpu\` user + sys delta) and of RabbitMQ (\`/proc/<pid>/stat\` of the server
  \`scripts/rabbitmq.sh\` started, 10 ms ticks), divided by N; Redis commands (\`INFO commandstats\` calls delta).
  Server figures count everything the server did in the window, the producer's polling included and other users'
  work on the same server too, so they are upper bounds and only meaningful when nothing else uses the servers.
  **Worker peak RSS**: \`process.resourceUsage().maxRSS\` of the worker process (a fresh one per run), start-up included.
- **send → result costs** are the same figures over the ${LAT} sequential round trips, per round trip, plus the time the
  producer, the worker and Redis spent runnable but waiting for a CPU (\`/proc/<pid>/schedstat\`, Linux only): on a
  2-core machine, work that three processes do at the same moment queues, and the round trip waits with it.
- **raw ioredis**: the Redis floor — \`LPUSH\`; worker \`BLMOVE\` into a processing list, then \`MULTI LREM + LPUSH result + INCR\`.
- **RabbitMQ**: both systems use a fresh durable queue per run (deleted after it), persistent messages (delivery mode 2),
  publisher confirms awaited for every message, manual acks, one ack per message. raw amqplib publishes with
  \`sendToQueue\` (default exchange) and consumes with \`prefetch(concurrency)\`; machinery-ts publishes through a
  per-run direct exchange bound to the queue (its usual topology) and consumes with its worker's default prefetch,
  concurrency + readAhead (${READ_AHEAD === undefined ? '= 2 × concurrency: an unset readAhead stays at concurrency on AMQP' : `readAhead ${READ_AHEAD} in this run`}). machinery-ts runs twice: with task states in **RedisBackend** on the
  Redis server above (what a user wanting durable results next to a durable queue would run; more work per task
  than raw amqplib does), and with **NullBackend**, which stores nothing — the same durability as raw amqplib, whose
  completion count lives in the worker process, as machinery-ts's does in that run.
  **raw amqplib, Go's message and exchange** is the same raw client sending what machinery-ts has to send: Go's task
  message as the body (about 470 bytes against 14; wire compatibility fixes it), the properties Go sets, through a
  direct exchange bound to the queue. The ratio against it is machinery-ts's own overhead; the ratio against plain
  raw amqplib adds what the message and the exchange cost RabbitMQ.
`;
}

const started = new Date();
const t0 = performance.now();
console.log(`bench: N=${N}, rounds=${ROUNDS}, latency samples=${LAT} after ${WARMUP} warm-ups, systems=${systems.map((s) => s.id).join(',') || 'none'}${soak ? `, soak ${SOAK_N}` : ''}${READ_AHEAD === undefined ? '' : `, machinery-ts readAhead ${READ_AHEAD}`}`);
for (let round = 0; round < ROUNDS && systems.length > 0; round++) {
  const order = systems.map((_, i) => systems[(i + round) % systems.length]!);
  for (const sys of order) {
    console.log(`round ${round + 1}/${ROUNDS}: ${sys.label} (at ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    await runSystem(sys);
  }
}
let soakResult: SoakResult | null = null;
if (soak) {
  await admin.flushdb();
  soakResult = await runSoak(SOAK_N);
}
await admin.flushdb();
admin.disconnect();
const seconds = (performance.now() - t0) / 1000;
const md = markdown(started, seconds, soakResult);
mkdirSync(join(PKG, 'results'), { recursive: true });
writeFileSync(
  join(PKG, 'results', `${OUTPUT}.json`),
  `${JSON.stringify({ started: started.toISOString(), seconds, argv: process.argv.slice(2), n: N, rounds: ROUNDS, latencySamples: LAT, latencyWarmup: WARMUP, beeLostEvents, node: process.version, systems: systems.map((s) => ({ id: s.id, label: s.label, group: s.group })), results, soak: soakResult }, null, 2)}\n`,
);
writeFileSync(OUTPUT === 'latest' ? join(ROOT, 'BENCHMARKS.md') : join(PKG, 'results', `${OUTPUT}.md`), md);
console.log(md);
process.exit(0);
