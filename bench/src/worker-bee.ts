import BeeQueue from 'bee-queue';
import { QUEUE, add, benchUrl, ready, workerConcurrency } from './common.js';

const queue = new BeeQueue<{ a: number; b: number }>(QUEUE, { redis: { url: benchUrl() } });
queue.process(workerConcurrency(), async (job) => add(job.data.a, job.data.b));
await queue.ready();
ready();
