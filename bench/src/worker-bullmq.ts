import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { QUEUE, add, benchUrl, ready, workerConcurrency } from './common.js';

const connection = new Redis(benchUrl(), { maxRetriesPerRequest: null });
const worker = new Worker<{ a: number; b: number }, number>(QUEUE, async (job) => add(job.data.a, job.data.b), {
  connection,
  concurrency: workerConcurrency(),
});
await worker.waitUntilReady();
ready();
