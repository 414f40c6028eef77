import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { QUEUE, add, benchUrl, ready, track, workerConcurrency } from './common.js';

const connection = new Redis(benchUrl(), { maxRetriesPerRequest: null });
const worker = new Worker<{ a: number; b: number }, number>(QUEUE, async (job) => {
    track(job.data.a);
    return add(job.data.a, job.data.b);
  }, {
  connection,
  concurrency: workerConcurrency(),
});
await worker.waitUntilReady();
ready();
