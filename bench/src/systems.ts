// Producer side of each system: bulk enqueue, completion counting, one send→result round trip.
import { randomUUID } from 'node:crypto';
import { RedisBackend } from '@machinery-ts/backend-redis';
import { RedisBroker } from '@machinery-ts/broker-redis';
import { type Broker, NullBackend, Server, arg } from '@machinery-ts/core';
import BeeQueue from 'bee-queue';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import type { WorkerProcess } from './child.js';
import { CompletionPoll } from './completions.js';
import { QUEUE, RAW_DONE, RAW_FAILED, RAW_QUEUE, benchUrl, rawResultKey } from './common.js';

export interface Counts {
  done: number;
  failed: number;
}

export interface Producer {
  /** Enqueues n tasks (indexes first..first+n-1) as fast as the system allows (its bulk API where it has one). */
  enqueue(n: number, first?: number): Promise<void>;
  /** Enqueues n tasks one at a time, each awaited before the next. */
  enqueueOne(n: number): Promise<void>;
  /** Completed and failed tasks so far, as the producer can see them (some ask the worker process). */
  counts(worker: WorkerProcess): Promise<Counts>;
  /** Sends one task and waits for its result; absent where the case is not run. */
  roundTrip?(): Promise<void>;
  close(): Promise<void>;
}

/** One run of one case: systems that can, use a fresh queue per run. */
export interface Run {
  readonly queue: string;
}

export interface System {
  id: string;
  label: string;
  /** Systems are compared within their group (same servers, same durability). */
  group: 'redis' | 'amqp';
  worker: string;
  open(run: Run): Promise<Producer>;
}

const CHUNK = 1000;

export const limits = {
  /** How long one send → result may take before the sample is an error; main.ts shortens it for --quick. */
  roundTripMs: 30_000,
  /**
   * How long a bee-queue sample waits for its `succeeded` event before looking in Redis. A lost event
   * would leave a user waiting for ever; any bound is arbitrary, and a long one costs a full run
   * minutes per round (a few events in a hundred are lost).
   */
  beeEventMs: 5_000,
};

/** bee-queue latency samples whose `succeeded` event never arrived (see bee().roundTrip). */
export let beeLostEvents = 0;

/**
 * machinery-ts with states in RedisBackend, or with `stored: false` in NullBackend, whose
 * completions only the worker process can count (as for raw amqplib).
 */
export function machineryProducer(broker: Broker, queue: string, options: { stored?: boolean } = {}): Producer {
  const stored = options.stored ?? true;
  const backend = stored ? new RedisBackend({ url: benchUrl(), waitPollMs: 50 }) : null;
  const server = new Server({ broker, backend: backend ?? new NullBackend(), defaultQueue: queue });
  const poll = backend ? new CompletionPoll({ get: (id) => backend.client.get(id), mget: (ids) => backend.client.mget(ids) }) : null;
  const sig = (i: number) => ({ Name: 'add', Args: [arg('int64', BigInt(i)), arg('int64', 1n)] });
  return {
    async enqueue(n, first = 0) {
      for (let i = 0; i < n; i += CHUNK) {
        const batch = [];
        for (let j = i; j < Math.min(n, i + CHUNK); j++) batch.push(sig(first + j));
        for (const r of await server.sendTasks(batch)) poll?.add(r.taskUUID);
      }
    },
    async enqueueOne(n) {
      for (let i = 0; i < n; i++) {
        const r = await server.sendTask(sig(i));
        poll?.add(r.taskUUID);
      }
    },
    async counts(worker) {
      return poll ? poll.poll() : { done: (await worker.stats()).executed, failed: 0 };
    },
    // Nothing to await a result from without stored states.
    ...(backend && {
      async roundTrip() {
        const r = await server.sendTask(sig(1));
        await r.get({ timeoutMs: limits.roundTripMs });
      },
    }),
    async close() {
      await server.close();
    },
  };
}

async function machinery(): Promise<Producer> {
  return machineryProducer(new RedisBroker({ url: benchUrl(), defaultQueue: QUEUE }), QUEUE);
}

async function bullmq(): Promise<Producer> {
  const connection = new Redis(benchUrl(), { maxRetriesPerRequest: null });
  const queue = new Queue(QUEUE, { connection });
  const events = new QueueEvents(QUEUE, { connection: { url: benchUrl() } as never });
  await events.waitUntilReady();
  return {
    async enqueue(n, first = 0) {
      for (let i = 0; i < n; i += CHUNK) {
        const jobs = [];
        for (let j = i; j < Math.min(n, i + CHUNK); j++) jobs.push({ name: 'add', data: { a: first + j, b: 1 } });
        await queue.addBulk(jobs);
      }
    },
    async enqueueOne(n) {
      for (let i = 0; i < n; i++) await queue.add('add', { a: i, b: 1 });
    },
    async counts() {
      const c = await queue.getJobCounts('completed', 'failed');
      return { done: c.completed ?? 0, failed: c.failed ?? 0 };
    },
    async roundTrip() {
      const job = await queue.add('add', { a: 1, b: 1 });
      await job.waitUntilFinished(events, limits.roundTripMs);
    },
    async close() {
      await events.close();
      await queue.close();
      connection.disconnect();
    },
  };
}

async function bee(): Promise<Producer> {
  const queue = new BeeQueue<{ a: number; b: number }>(QUEUE, { redis: { url: benchUrl() }, isWorker: false });
  await queue.ready();
  // getJob() answers from the producer's own job objects, which a lost event left at 'created': ask Redis.
  const store = new Redis(benchUrl());
  return {
    async enqueue(n, first = 0) {
      for (let i = 0; i < n; i += CHUNK) {
        const jobs = [];
        for (let j = i; j < Math.min(n, i + CHUNK); j++) jobs.push(queue.createJob({ a: first + j, b: 1 }));
        const errors = await queue.saveAll(jobs);
        if (errors.size > 0) throw new Error(`bee-queue saveAll: ${errors.size} jobs not saved`);
      }
    },
    async enqueueOne(n) {
      for (let i = 0; i < n; i++) await queue.createJob({ a: i, b: 1 }).save();
    },
    async counts() {
      const h = await queue.checkHealth();
      return { done: h.succeeded, failed: h.failed };
    },
    async roundTrip() {
      const job = queue.createJob({ a: 1, b: 1 });
      let timer: NodeJS.Timeout | undefined;
      const finished = new Promise<boolean>((resolve, reject) => {
        timer = setTimeout(() => resolve(false), limits.beeEventMs);
        job.on('succeeded', () => resolve(true));
        job.on('failed', (e) => reject(e));
      });
      try {
        await job.save();
        if (await finished) return;
      } finally {
        clearTimeout(timer);
      }
      // bee-queue registers the job for its events only after save() resolves: a worker that
      // finishes first publishes an event nobody waits for. Count it; the sample keeps the whole wait.
      if (!(await store.sismember(`bq:${QUEUE}:succeeded`, job.id))) throw new Error(`bee-queue: job ${job.id} not done after ${limits.beeEventMs / 1000} s`);
      beeLostEvents += 1;
      process.stderr.write(`bee-queue: succeeded event of job ${job.id} lost (worker finished before save() returned)\n`);
    },
    async close() {
      await queue.close();
      store.disconnect();
    },
  };
}

async function raw(): Promise<Producer> {
  const client = new Redis(benchUrl());
  const waiter = new Redis(benchUrl());
  return {
    async enqueue(n, first = 0) {
      for (let i = 0; i < n; i += CHUNK) {
        const msgs: string[] = [];
        for (let j = i; j < Math.min(n, i + CHUNK); j++) msgs.push(JSON.stringify({ id: randomUUID(), a: first + j, b: 1 }));
        await client.lpush(RAW_QUEUE, ...msgs);
      }
    },
    async enqueueOne(n) {
      for (let i = 0; i < n; i++) await client.lpush(RAW_QUEUE, JSON.stringify({ id: randomUUID(), a: i, b: 1 }));
    },
    async counts() {
      const [d, f] = await client.mget(RAW_DONE, RAW_FAILED);
      return { done: Number(d ?? 0), failed: Number(f ?? 0) };
    },
    async roundTrip() {
      const id = randomUUID();
      await client.lpush(RAW_QUEUE, JSON.stringify({ id, a: 1, b: 1 }));
      const r = await waiter.blpop(rawResultKey(id), 30);
      if (r === null) throw new Error('raw: no result');
    },
    async close() {
      client.disconnect();
      waiter.disconnect();
    },
  };
}

export const SYSTEMS: System[] = [
  { id: 'machinery', label: 'machinery-ts (redis broker, redis backend)', group: 'redis', worker: 'worker-machinery.ts', open: machinery },
  {
    id: 'machinery-lean',
    label: "machinery-ts, progressStates: 'none'",
    group: 'redis',
    worker: 'worker-machinery-lean.ts',
    open: machinery,
  },
  { id: 'bullmq', label: 'BullMQ', group: 'redis', worker: 'worker-bullmq.ts', open: bullmq },
  { id: 'bee', label: 'bee-queue', group: 'redis', worker: 'worker-bee.ts', open: bee },
  { id: 'raw', label: 'raw ioredis (LPUSH/BLMOVE/LREM)', group: 'redis', worker: 'worker-raw.ts', open: raw },
];
