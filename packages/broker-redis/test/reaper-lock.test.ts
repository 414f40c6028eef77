import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const keyPrefix = `mts_test_${randomUUID()}:`;
const queue = `mts_test_q_${randomUUID()}`;
const redis = new Redis(url);
afterAll(async () => {
  const keys = await redis.keys(`${keyPrefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

describe('the cluster-wide reaper turn', () => {
  it('is given up by a broker that closes, so brokers with a shorter lease reap at once', async () => {
    // Default lease (30 s): its first reap takes the turn for 0.8 × 15 s.
    const long = new RedisBroker({ url, keyPrefix });
    const sub = await long.consume(queue, { prefetch: 1, onDelivery: () => {} });
    await sub.stop();
    expect(await redis.pttl(long.reaperLockKey)).toBeGreaterThan(5_000);
    await long.close();
    expect(await redis.get(long.reaperLockKey)).toBeNull();

    // Another broker's turn is not touched by a closing one.
    const short = new RedisBroker({ url, keyPrefix, leaseMs: 1000, reapIntervalMs: 300 });
    await short.reap();
    const holder = await redis.get(short.reaperLockKey);
    const other = new RedisBroker({ url, keyPrefix });
    await other.close();
    expect(await redis.get(short.reaperLockKey)).toBe(holder);
    await short.close();
  });
});
