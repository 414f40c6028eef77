import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisLock } from '../src/index.js';

const URL = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const key = (): string => `machinery_lock_mtstest_${randomUUID()}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let raw: Redis;
let a: RedisLock;
let b: RedisLock;

beforeAll(() => {
  raw = new Redis(URL);
  a = new RedisLock({ url: URL });
  b = new RedisLock({ url: URL });
});

afterAll(async () => {
  await Promise.all([a.close(), b.close()]);
  await raw.quit();
});

describe('RedisLock', () => {
  it('acquire stores the token with a PX expiry', async () => {
    const k = key();
    const token = await a.acquire(k, 2000);
    expect(token).toEqual(expect.any(String));
    expect(await raw.get(k)).toBe(token);
    const pttl = await raw.pttl(k);
    expect(pttl).toBeGreaterThan(1500);
    expect(pttl).toBeLessThanOrEqual(2000);
    expect(await a.release(k, token!)).toBe(true);
    expect(await raw.exists(k)).toBe(0);
  });

  it('is exclusive while the lease lives, across clients and within one', async () => {
    const k = key();
    const results = await Promise.all([a, b, a, b, a, b].map((l) => l.acquire(k, 5000)));
    expect(results.filter((t) => t !== null)).toHaveLength(1);
    expect(await a.acquire(k, 5000)).toBeNull();
    await raw.del(k);
  });

  it('expires by itself after ttlMs', async () => {
    const k = key();
    expect(await a.acquire(k, 150)).not.toBeNull();
    expect(await b.acquire(k, 150)).toBeNull();
    await sleep(250);
    const t = await b.acquire(k, 150);
    expect(t).not.toBeNull();
    await b.release(k, t!);
  });

  it('release with a wrong or stale token leaves the lease alone', async () => {
    const k = key();
    const stale = (await a.acquire(k, 100))!;
    await sleep(180);
    const fresh = (await b.acquire(k, 5000))!;
    expect(fresh).not.toBeNull();
    expect(await a.release(k, stale)).toBe(false);
    expect(await a.release(k, 'wrong')).toBe(false);
    expect(await raw.get(k)).toBe(fresh);
    expect(await b.release(k, fresh)).toBe(true);
    expect(await b.release(k, fresh)).toBe(false);
  });

  it('rounds a fractional ttl up and uses at least 1 ms', async () => {
    const k = key();
    expect(await a.acquire(k, 0.2)).not.toBeNull();
    await sleep(20);
    expect(await a.acquire(k, 1000.5)).not.toBeNull();
    expect(await raw.pttl(k)).toBeLessThanOrEqual(1001);
    await raw.del(k);
  });

  it('leaves a passed-in client open; close is idempotent', async () => {
    const client = new Redis(URL);
    const l = new RedisLock({ client });
    const k = key();
    expect(await l.acquire(k, 1000)).not.toBeNull();
    await l.close();
    await l.close();
    expect(await client.ping()).toBe('PONG');
    await client.del(k);
    await client.quit();
  });
});
