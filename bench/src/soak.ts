// The soak: does a machinery-ts worker's memory stay flat over a million tasks? The producer
// keeps the queue fed with a bounded number of tasks in flight; the worker reports its RSS
// every tenth of the way.
import { RedisBackend } from '@machinery-ts/backend-redis';
import { RedisBroker } from '@machinery-ts/broker-redis';
import { Server, arg } from '@machinery-ts/core';
import { startWorker } from './child.js';
import { QUEUE, benchUrl } from './common.js';

const CHUNK = 1000;
/** Sent but not yet run: enough to keep 100 slots busy, small enough for the producer and Redis. */
const IN_FLIGHT = 10_000;
/** States outlive their task by this much; a million of them at Go's 3600 s would fill Redis. */
const STATE_TTL_S = 10;
const STALL_MS = 60_000;

export interface SoakResult {
  total: number;
  concurrency: number;
  points: { processed: number; rss: number }[];
  /** RSS at the last report over RSS at the first. */
  ratio: number | null;
  seconds: number;
  producerPeakRss: number;
  failure: string | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runSoak(total: number, concurrency = 100): Promise<SoakResult> {
  const every = Math.max(1, Math.floor(total / 10));
  console.log(`soak: ${total} tasks, worker concurrency ${concurrency}, RSS every ${every}`);
  const url = benchUrl();
  const points: SoakResult['points'] = [];
  const server = new Server({
    broker: new RedisBroker({ url, defaultQueue: QUEUE }),
    backend: new RedisBackend({ url, resultsExpireIn: STATE_TTL_S }),
    defaultQueue: QUEUE,
  });
  let failure: string | null = null;
  const t0 = performance.now();
  const worker = await startWorker('worker-machinery.ts', {
    BENCH_CONCURRENCY: String(concurrency),
    BENCH_TRACK_IDS: '0',
    BENCH_REPORT_EVERY: String(every),
    BENCH_RESULTS_EXPIRE_S: String(STATE_TTL_S),
  });
  worker.child.on('message', (m: { type?: string; processed: number; rss: number }) => {
    if (m?.type !== 'rss') return;
    points.push({ processed: m.processed, rss: m.rss });
    console.log(`  soak: ${m.processed} processed, worker RSS ${(m.rss / 2 ** 20).toFixed(1)} MB`);
  });
  try {
    let sent = 0;
    let executed = 0;
    let progressAt = Date.now();
    while (executed < total) {
      const now = (await worker.stats()).executed;
      if (now > executed) progressAt = Date.now();
      executed = now;
      if (Date.now() - progressAt > STALL_MS) throw new Error(`no task ran for ${STALL_MS / 1000} s, at ${executed} of ${total}`);
      if (sent < total && sent - executed < IN_FLIGHT) {
        const batch = [];
        for (let j = sent; j < Math.min(total, sent + CHUNK); j++) {
          batch.push(server.sendTask({ Name: 'add', Args: [arg('int64', BigInt(j)), arg('int64', 1n)] }));
        }
        await Promise.all(batch);
        sent += batch.length;
      } else {
        await sleep(5);
      }
    }
    // A redelivered task would push the count past the total: give one a moment to show.
    await sleep(1000);
    const ran = (await worker.stats()).executed;
    if (ran !== total) failure = `FAILED: the worker ran ${ran} tasks of ${total}`;
  } catch (e) {
    failure = `error: ${String(e)}`;
  } finally {
    await worker.stop();
    await server.close();
  }
  const first = points[0];
  const last = points.at(-1);
  return {
    total,
    concurrency,
    points,
    ratio: first && last && points.length > 1 ? last.rss / first.rss : null,
    seconds: (performance.now() - t0) / 1000,
    producerPeakRss: process.resourceUsage().maxRSS * 1024,
    failure,
  };
}

export function soakMarkdown(r: SoakResult): string {
  const mb = (b: number) => (b / 2 ** 20).toFixed(1);
  const first = r.points[0];
  const rows = r.points.map((p) => `| ${p.processed.toLocaleString('en-US')} | ${mb(p.rss)} | ${first ? (p.rss / first.rss).toFixed(2) : '—'} |`);
  const verdict =
    r.failure ??
    (r.ratio === null
      ? 'too few reports for a ratio'
      : `RSS(${r.points.at(-1)!.processed.toLocaleString('en-US')}) / RSS(${first!.processed.toLocaleString('en-US')}) = **${r.ratio.toFixed(3)}**: ${Math.abs(r.ratio - 1) <= 0.1 ? 'flat (within ±10%)' : '**not flat** (beyond ±10%)'}`);
  return `## Soak: machinery-ts worker memory (Redis broker and backend)

\`--soak\`: ${r.total.toLocaleString('en-US')} tasks through one worker process at concurrency ${r.concurrency}, the producer keeping at most
${IN_FLIGHT.toLocaleString('en-US')} tasks in flight (states expire after ${STATE_TTL_S} s), in ${r.seconds.toFixed(0)} s
(${Math.round(r.total / r.seconds).toLocaleString('en-US')} tasks/s). The worker reports \`process.memoryUsage().rss\` every tenth
of the way (one snapshot each, so a garbage collection due or just done moves it by a few MB). Producer peak RSS: ${mb(r.producerPeakRss)} MB (the whole harness process).

| processed | worker RSS (MB) | vs first |
| --- | --- | --- |
${rows.join('\n')}

${verdict}
`;
}
