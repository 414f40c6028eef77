import { randomUUID } from 'node:crypto';
import { brokerContract } from '@machinery-ts/contract-tests';
import type { ConsumeOptions, Subscription } from '@machinery-ts/core';
import { afterAll } from 'vitest';
import { Redis } from 'ioredis';
import { RedisBroker } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
// A private delayed ZSET so these tests never move anyone else's delayed tasks.
const delayedTasksKey = `mts_test_delayed_${randomUUID()}`;
const queues = new Set<string>();

/** Records the queues the suite uses, so they can be deleted afterwards (never FLUSHALL). */
class TrackedRedisBroker extends RedisBroker {
  override async consume(queue: string, options: ConsumeOptions): Promise<Subscription> {
    queues.add(queue);
    return super.consume(queue, options);
  }
}

afterAll(async () => {
  const r = new Redis(url);
  await r.del(delayedTasksKey, ...[...queues].flatMap((q) => [q, RedisBroker.deadLetterKey(q)]));
  await r.quit();
});

brokerContract('redis', {
  create: () => new TrackedRedisBroker({ url, leaseMs: 1000, reapIntervalMs: 300, delayedTasksKey }),
  crash: async (b) => {
    await (b as RedisBroker).disconnectAbruptly();
  },
});
