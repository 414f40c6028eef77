// The benchmark harness: see BENCHMARKS.md for what it measures and how.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { BENCH_DB, benchUrl } from './common.js';
import { SYSTEMS, type System, beeLostEvents } from './systems.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const PKG = join(HERE, '..');
const ROOT = join(PKG, '..');

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const quick = process.argv.includes('--quick');
const N = Number(option('--n') ?? (quick ? 2000 : 20000));
const ROUNDS = Number(option('--rounds') ?? (quick ? 1 : 3));
const LAT = Number(option('--latency') ?? (quick ? 200 : 1000));
const CONCURRENCIES = [10, 100];
const E2E_TIMEOUT_MS = Number(option('--timeout-ms') ?? 180_000);
const only = option('--systems')?.split(',');
const systems = only ? SYSTEMS.filter((s) => only.includes(s.id)) : SYSTEMS;

const admin = new Redis(benchUrl());

type Metric = 'enqueue' | 'e2e10' | 'e2e100' | 'p50' | 'p99' | 'max' | 'cmds';
const METRICS: { key: Metric; label: string; unit: string; higherBetter: boolean }[] = [
  { key: 'enqueue', label: `bulk enqueue, ${N} tasks`, unit: 'tasks/s', higherBetter: true },
  { key: 'e2e10', label: `end to end, ${N} tasks, worker concurrency 10`, unit: 'tasks/s', higherBetter: true },
  { key: 'e2e100', label: `end to end, ${N} tasks, worker concurrency 100`, unit: 'tasks/s', higherBetter: true },
  { key: 'p50', label: `send → result, sequential ×${LAT}, p50`, unit: 'ms', higherBetter: false },
  { key: 'p99', label: `send → result, sequential ×${LAT}, p99`, unit: 'ms', higherBetter: false },
  { key: 'max', label: `send → result, sequential ×${LAT}, max`, unit: 'ms', higherBetter: false },
  { key: 'cmds', label: 'Redis commands per task (end to end, concurrency 10)', unit: 'cmds', higherBetter: false },
];

/** results[system][metric][round]: a number, or a string describing the failure. */
const results: Record<string, Record<string, (number | string)[]>> = {};
function record(sys: System, metric: Metric, value: number | string): void {
  ((results[sys.id] ??= {})[metric] ??= []).push(value);
}

async function commandCalls(): Promise<number> {
  const text = await admin.info('commandstats');
  let sum = 0;
  for (const m of text.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) sum += Number(m[1]);
  return sum;
}

async function startWorker(sys: System, concurrency: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join('src', sys.worker)], {
    cwd: PKG,
    env: { ...process.env, BENCH_CONCURRENCY: String(concurrency) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${sys.id} worker not ready after 30 s`)), 30_000);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${sys.id} worker exited (${code}) before ready`));
    });
  });
  return child;
}

async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;

async function runSystem(sys: System): Promise<void> {
  // 1. Bulk enqueue, no worker.
  await admin.flushdb();
  {
    const p = await sys.open();
    try {
      const t0 = performance.now();
      await p.enqueue(N);
      const s = (performance.now() - t0) / 1000;
      record(sys, 'enqueue', N / s);
    } catch (e) {
      record(sys, 'enqueue', `error: ${String(e)}`);
    } finally {
      await p.close();
    }
  }
  // 2. End to end against a worker process; 3. latency on the concurrency-10 worker.
  for (const c of CONCURRENCIES) {
    await admin.flushdb();
    const metric: Metric = c === 10 ? 'e2e10' : 'e2e100';
    const p = await sys.open();
    const worker = await startWorker(sys, c);
    try {
      const calls0 = await commandCalls();
      const t0 = performance.now();
      await p.enqueue(N);
      let counts = await p.counts();
      const deadline = Date.now() + E2E_TIMEOUT_MS;
      while (counts.done + counts.failed < N && Date.now() < deadline) {
        await sleep(10);
        counts = await p.counts();
      }
      const s = (performance.now() - t0) / 1000;
      const calls = (await commandCalls()) - calls0;
      if (counts.done === N && counts.failed === 0) {
        record(sys, metric, N / s);
        if (c === 10) record(sys, 'cmds', calls / N);
      } else {
        const why = `FAILED: ${counts.done} completed, ${counts.failed} failed of ${N}`;
        record(sys, metric, why);
        if (c === 10) record(sys, 'cmds', why);
      }
      console.log(`  ${sys.id} c=${c}: ${counts.done}/${N} done, ${counts.failed} failed, ${(N / s).toFixed(0)} tasks/s`);
      if (c === 10) {
        // A fresh producer: the end-to-end run's flood of completion events can cost a
        // subscriber its connection (Redis' pubsub output-buffer limit), losing later events.
        const lp = await sys.open();
        try {
          for (let i = 0; i < 10; i++) await lp.roundTrip(); // warm-up
          const times: number[] = [];
          for (let i = 0; i < LAT; i++) {
            const t = performance.now();
            await lp.roundTrip();
            times.push(performance.now() - t);
          }
          times.sort((a, b) => a - b);
          record(sys, 'p50', quantile(times, 0.5));
          record(sys, 'p99', quantile(times, 0.99));
          record(sys, 'max', times[times.length - 1]!);
        } catch (e) {
          record(sys, 'p50', `error: ${String(e)}`);
          record(sys, 'p99', `error: ${String(e)}`);
          record(sys, 'max', `error: ${String(e)}`);
        } finally {
          await lp.close();
        }
      }
    } catch (e) {
      record(sys, metric, `error: ${String(e)}`);
    } finally {
      await stopWorker(worker);
      await p.close();
    }
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (x: number, unit: string): string =>
  unit === 'tasks/s' ? Math.round(x).toLocaleString('en-US') : unit === 'ms' ? x.toFixed(2) : x.toFixed(1);

function cell(values: (number | string)[] | undefined, unit: string): string {
  if (!values || values.length === 0) return '—';
  const bad = values.filter((v) => typeof v === 'string');
  if (bad.length > 0) return `**${bad[0]}** (${bad.length}/${values.length} rounds)`;
  const nums = values as number[];
  return `${fmt(median(nums), unit)} (${fmt(Math.min(...nums), unit)}–${fmt(Math.max(...nums), unit)})`;
}

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

function markdown(started: Date, seconds: number): string {
  const head = ['case', 'unit', ...systems.map((s) => s.label)];
  const lines = [
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...METRICS.map((m) => `| ${m.label} | ${m.unit} | ${systems.map((s) => cell(results[s.id]?.[m.key], m.unit)).join(' | ')} |`),
  ];
  const me = systems.find((s) => s.id === 'machinery');
  const peers = systems.filter((s) => s.id !== 'machinery');
  const ratio: string[] = [];
  if (me && peers.length) {
    const h = ['case', ...peers.map((p) => `machinery-ts / ${p.label}`)];
    ratio.push(`| ${h.join(' | ')} |`, `| ${h.map(() => '---').join(' | ')} |`);
    for (const m of METRICS) {
      ratio.push(
        `| ${m.label} (${m.higherBetter ? 'higher' : 'lower'} is better for machinery-ts) | ${peers
          .map((p) => ratioCell(results[me.id]?.[m.key], results[p.id]?.[m.key]))
          .join(' | ')} |`,
      );
    }
  }
  return `# Benchmarks

Generated by \`bash scripts/bench.sh${quick ? ' --quick' : ''}\` (bench/src/main.ts) on ${started.toISOString()}, ${seconds.toFixed(0)} s.
Node ${process.version}, ${process.platform}/${process.arch}; Redis at \`${benchUrl().replace(/\/\/[^@]*@/, '//')}\` (db ${BENCH_DB}, flushed before each run).
${N} tasks per throughput run, ${ROUNDS} round${ROUNDS === 1 ? '' : 's'}, systems interleaved round by round (the order rotates each round).

Cells: median over rounds (min–max). A run where any task is missing or failed is shown as **FAILED**, not as a number.

${lines.join('\n')}

Ratios of machinery-ts to each peer, median of the per-round ratios (each round's numbers come from the same run):

${ratio.join('\n')}

## What is measured

- **Task**: \`add(a, b)\` returning the sum. Every system runs it with its default settings, except where noted.
- **Bulk enqueue**: time to enqueue N tasks with no worker running, in batches of 1000: BullMQ \`addBulk\`,
  bee-queue \`saveAll\`, raw \`LPUSH\` of 1000 messages, machinery-ts 1000 concurrent \`sendTask\` calls
  (machinery-ts has no bulk API; each send writes the PENDING state to the backend and publishes the message).
- **End to end**: the worker is a separate process (\`node --conditions=source --import tsx src/worker-<system>.ts\`)
  at concurrency 10 or 100. Throughput = N / (first send → last completion seen by the producer), the producer
  polling every 10 ms: machinery-ts reads the task states in the Redis backend (\`MGET\` of the unfinished ones),
  BullMQ \`getJobCounts('completed','failed')\` (results kept: \`removeOnComplete\` is off by default),
  bee-queue \`checkHealth()\`, raw a done counter the worker \`INCR\`s. Each run checks that all N completed and none failed.
- **Latency**: sequential send → awaited result on the concurrency-10 worker (after its end-to-end run, from a
  fresh producer), after 10 warm-ups: machinery-ts
  \`AsyncResult.get()\` (RedisBackend wakes on the state's pub/sub channel), BullMQ \`job.waitUntilFinished(QueueEvents)\`,
  bee-queue the job's \`succeeded\` event, raw \`BLPOP\` on a per-task result list.
  bee-queue subscribes a job to its events only after \`save()\` resolves, so when its worker finishes first the
  \`succeeded\` event goes unheard; after 30 s the harness checks the job's stored status and keeps the sample.
  Events lost this run: ${beeLostEvents}.
- **Redis commands per task**: \`INFO commandstats\` calls delta over the concurrency-10 end-to-end run divided by N.
  It counts everything the server ran in that window, including the producer's completion polling, so it is an
  upper bound, and it is only meaningful when nothing else uses the Redis server.
- **raw ioredis**: the floor — \`LPUSH\`; worker \`BLMOVE\` into a processing list, then \`MULTI LREM + LPUSH result + INCR\`.
`;
}

const started = new Date();
const t0 = performance.now();
console.log(`bench: N=${N}, rounds=${ROUNDS}, latency samples=${LAT}, systems=${systems.map((s) => s.id).join(',')}`);
for (let round = 0; round < ROUNDS; round++) {
  const order = systems.map((_, i) => systems[(i + round) % systems.length]!);
  for (const sys of order) {
    console.log(`round ${round + 1}/${ROUNDS}: ${sys.label}`);
    await runSystem(sys);
  }
}
await admin.flushdb();
admin.disconnect();
const seconds = (performance.now() - t0) / 1000;
const md = markdown(started, seconds);
mkdirSync(join(PKG, 'results'), { recursive: true });
writeFileSync(
  join(PKG, 'results', 'latest.json'),
  `${JSON.stringify({ started: started.toISOString(), seconds, quick, n: N, rounds: ROUNDS, latencySamples: LAT, beeLostEvents, node: process.version, systems: systems.map((s) => ({ id: s.id, label: s.label })), results }, null, 2)}\n`,
);
writeFileSync(join(ROOT, 'BENCHMARKS.md'), md);
console.log(md);
process.exit(0);
