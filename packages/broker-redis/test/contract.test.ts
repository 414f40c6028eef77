import { randomUUID } from 'node:crypto';
import { brokerContract } from '@machinery-ts/contract-tests';
import { afterAll } from 'vitest';
import { Redis } from 'ioredis';
import { RedisBroker } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
// A private delayed ZSET so these tests never move anyone else's delayed tasks.
const delayedTasksKey = `mts_test_delayed_${randomUUID()}`;

afterAll(async () => {
  const r = new Redis(url);
  await r.del(delayedTasksKey);
  await r.quit();
});

brokerContract('redis', {
  create: () => new RedisBroker({ url, leaseMs: 1000, reapIntervalMs: 300, delayedTasksKey }),
  crash: async (b) => {
    await (b as RedisBroker).disconnectAbruptly();
  },
});
