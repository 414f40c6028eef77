// Throughput and SQS API calls per task through a local SQS-compatible server (fauxqs).
// Usage: pnpm --filter @machinery-ts/broker-sqs bench [-- --tasks 5000 --concurrency 50]
// The result backend is the in-memory one, so the numbers are the broker's alone.
import { randomUUID } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { DeleteQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { MemoryBackend, Server, newSignature, newTaskUUID } from '@machinery-ts/core';
import { SqsBroker } from '../src/index.js';

process.removeAllListeners('warning');

const { values } = parseArgs({
  // pnpm passes its `--` separator through.
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: {
    tasks: { type: 'string', default: '5000' },
    concurrency: { type: 'string', default: '50' },
    'delete-batch-window': { type: 'string' },
  },
});
const tasks = Number(values.tasks);
const concurrency = Number(values.concurrency);
const deleteWindow = values['delete-batch-window'] === undefined ? undefined : Number(values['delete-batch-window']);

const endpoint = process.env.MTS_SQS_ENDPOINT ?? 'http://127.0.0.1:9325';
const brokerUrl = process.env.MTS_SQS_BROKER_URL ?? `http://sqs.us-east-1.localhost:${new URL(endpoint).port || '80'}/000000000000`;
const clientConfig = { endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } };

type Counts = Record<string, number>;

function countingClient(): { client: SQSClient; counts: Counts } {
  const client = new SQSClient(clientConfig);
  const counts: Counts = {};
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const name = (context as { commandName?: string }).commandName?.replace(/Command$/, '') ?? '?';
      counts[name] = (counts[name] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'mtsCallCounter' },
  );
  return { client, counts };
}

/** Runs `n` jobs, `limit` at a time. */
async function pool(n: number, limit: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, n) }, async () => {
    for (let i = next++; i < n; i = next++) await job(i);
  }));
}

interface Row {
  phase: string;
  seconds: number;
  counts: Counts;
}

const rows: Row[] = [];
const { client, counts } = countingClient();
const snapshot = (): Counts => ({ ...counts });
const diff = (before: Counts): Counts =>
  Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => (v as number) > 0));

const queue = `bench_${randomUUID()}`;
const sendQueue = `${queue}_send`;
const broker = new SqsBroker({
  brokerUrl,
  client,
  createQueues: true,
  visibilityTimeoutSeconds: 30,
  ...(deleteWindow === undefined ? {} : { deleteBatchWindowMs: deleteWindow }),
});
const server = new Server({ broker, backend: new MemoryBackend(), defaultQueue: queue });
let runs = 0;
server.registerTask('noop', async () => {
  runs += 1;
});

try {
  await broker.ensureQueue(queue);
  await broker.ensureQueue(sendQueue);

  // 1. One SendMessage per task: Server.sendTask (what sendGroup and most callers use).
  let before = snapshot();
  let t0 = performance.now();
  await pool(tasks, concurrency, async () => {
    await server.sendTask(newSignature({ UUID: newTaskUUID(), Name: 'noop', RoutingKey: sendQueue }));
  });
  rows.push({ phase: `publish ${tasks} (sendTask, ${concurrency} at a time)`, seconds: (performance.now() - t0) / 1000, counts: diff(before) });
  await client.send(new DeleteQueueCommand({ QueueUrl: broker.queueUrl(sendQueue) }));

  // 2. publishBatch: SendMessageBatch of 10, 50 batches of 100 in parallel.
  before = snapshot();
  t0 = performance.now();
  const per = Math.ceil(tasks / concurrency);
  await pool(Math.ceil(tasks / per), concurrency, async (i) => {
    const n = Math.min(per, tasks - i * per);
    await broker.publishBatch(Array.from({ length: n }, () => newSignature({ UUID: newTaskUUID(), Name: 'noop', RoutingKey: queue })));
  });
  rows.push({ phase: `publish ${tasks} (publishBatch)`, seconds: (performance.now() - t0) / 1000, counts: diff(before) });

  // 3. A worker drains the queue at the given concurrency.
  before = snapshot();
  t0 = performance.now();
  const worker = server.newWorker({ concurrency, handleSignals: false, onError: (e) => console.error(e.message) });
  await worker.start();
  while (runs < tasks) await new Promise((r) => setTimeout(r, 5));
  await worker.stop(); // waits for the last settles (deletes)
  rows.push({ phase: `consume ${tasks} no-op (worker, concurrency ${concurrency})`, seconds: (performance.now() - t0) / 1000, counts: diff(before) });
} finally {
  await client.send(new DeleteQueueCommand({ QueueUrl: broker.queueUrl(queue) })).catch(() => undefined);
  await server.close();
  client.destroy();
}

const fmt = (n: number, d = 2): string => n.toFixed(d);
// tasks/s depends on the machine (fauxqs runs on the same cores); calls per task do not.
const load = loadavg().map((l) => l.toFixed(1)).join(' ');
console.log(`\nfauxqs at ${endpoint}, Node ${process.version}, ${cpus().length} cores, load ${load}, delete batch window ${deleteWindow ?? 'default'} ms\n`);
console.log('| phase | seconds | tasks/s | SQS calls per task |');
console.log('|---|---:|---:|---|');
for (const r of rows) {
  const total = Object.values(r.counts).reduce((a, b) => a + b, 0);
  const detail = Object.entries(r.counts).map(([k, v]) => `${k} ${fmt(v / tasks, 3)}`).join(', ');
  console.log(`| ${r.phase} | ${fmt(r.seconds)} | ${fmt(tasks / r.seconds, 0)} | ${fmt(total / tasks, 3)} (${detail}) |`);
}
