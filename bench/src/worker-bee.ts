import BeeQueue from 'bee-queue';
import { QUEUE, add, benchUrl, ready, track, workerConcurrency } from './common.js';

const queue = new BeeQueue<{ a: number; b: number }>(QUEUE, { redis: { url: benchUrl() } });
queue.process(workerConcurrency(), async (job) => {
  track(job.data.a);
  return add(job.data.a, job.data.b);
});
await queue.ready();
ready();
