import { randomUUID } from 'node:crypto';
import { Scheduler, Server, newSignature } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisLock } from '../src/index.js';

const URL = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const NS_PER_MS = 1_000_000n;
const NS_PER_S = 1_000_000_000n;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nowNs = (): bigint => BigInt(Date.now()) * NS_PER_MS;
const ns = (ms: number): bigint => BigInt(ms) * NS_PER_MS;

let raw: Redis;
beforeAll(() => {
  raw = new Redis(URL);
});
afterAll(async () => {
  await raw.quit();
});

/**
 * One attempt of Go Machinery's Redis lock, command for command as go-redis v8 sends them:
 * SET NX with PX (EX when the duration is whole seconds), then GET, GETSET and EXPIRE.
 * Returns whether Go would consider the lock taken; throws where Go returns an error.
 */
async function goLockOnce(key: string, valueNs: bigint, now: bigint): Promise<boolean> {
  const expiration = valueNs + 1n - now;
  const value = valueNs.toString();
  const set =
    expiration % NS_PER_S === 0n
      ? await raw.set(key, value, 'EX', Number(expiration / NS_PER_S), 'NX')
      : await raw.set(key, value, 'PX', Number(expiration < NS_PER_MS ? 1n : expiration / NS_PER_MS), 'NX');
  if (set === 'OK') return true;
  const stored = await raw.get(key);
  if (stored === null) throw new Error('redis: nil');
  const timeout = BigInt(stored);
  if (timeout === 0n || now <= timeout) return false;
  const old = await raw.getset(key, value);
  if (old === null) throw new Error('redis: nil');
  if (now <= BigInt(old)) return false;
  await raw.expire(key, Number(expiration < NS_PER_S ? 1n : expiration / NS_PER_S));
  return true;
}

/** Go's `LockWithRetries`: `retries + 1` attempts, back to back. */
async function goLockWithRetries(key: string, valueNs: bigint, retries = 3): Promise<boolean> {
  for (let i = 0; i <= retries; i++) {
    try {
      if (await goLockOnce(key, valueNs, nowNs())) return true;
    } catch {
      // Go retries after an error as after a miss.
    }
  }
  return false;
}

/** Waits until ~50 ms past a whole second, so the next boundary is far from now; returns it. */
async function nextSecondBoundary(): Promise<number> {
  const into = Date.now() % 1000;
  if (into > 700 || into < 50) await sleep((1050 - into) % 1000);
  return (Math.floor(Date.now() / 1000) + 1) * 1000;
}

interface Node {
  readonly server: Server;
  readonly scheduler: Scheduler;
  readonly published: string[];
}

function node(binary: string): Node {
  const server = new Server({ lock: new RedisLock({ url: URL }) });
  const published: string[] = [];
  const publish = server.broker.publish.bind(server.broker);
  server.broker.publish = async (sig) => {
    published.push(sig.UUID);
    return publish(sig);
  };
  return { server, scheduler: new Scheduler(server, { lockMode: 'go', goBinaryName: binary }), published };
}

async function shutdown(nodes: Node[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.scheduler.stop()));
  await Promise.all(nodes.map((n) => n.server.close()));
}

describe('RedisLock.acquireUntil on values Go may leave', () => {
  // A `now` 10 s ahead, so a lock held until just after it lasts about 10 s.
  const NOW = nowNs() + ns(10_000);
  const cases: Array<[string, boolean]> = [
    ['0', false],
    ['-0', false],
    ['000', false],
    ['-5', true],
    ['+0001', true],
    [(NOW - 1n).toString(), true],
    [NOW.toString(), false],
    [(NOW + 1n).toString(), false],
    ['999999999999999999', true], // 18 digits: shorter, so smaller
    ['9223372036854775807', false],
    ['9223372036854775808', false], // out of int64: Go's Atoi fails and the tick is skipped
    ['-9223372036854775809', false],
    ['-9223372036854775808', true],
    ['12 ', false],
    ['1e18', false],
    ['', false],
    ['3f1c7c1e-8d2b-4d55-9a51-2b1a9d6c9e01', false],
  ];

  it.each(cases)('stored %j → taken: %s', async (stored, taken) => {
    const lock = new RedisLock({ client: raw });
    const key = `machinery_lock_mtstest_${randomUUID()}`;
    await raw.set(key, stored, 'PX', 60_000);
    const until = NOW + 5n;
    expect(await lock.acquireUntil(key, until, NOW)).toBe(taken);
    expect(await raw.get(key)).toBe(taken ? until.toString() : stored);
    const pttl = await raw.pttl(key);
    if (taken) expect(pttl).toBeLessThanOrEqual(10_001);
    else expect(pttl).toBeGreaterThan(10_001);
    await raw.del(key);
  });

  it('sets an expiry on a taken value that had none (as Go GETSET leaves it)', async () => {
    const lock = new RedisLock({ client: raw });
    const key = `machinery_lock_mtstest_${randomUUID()}`;
    await raw.set(key, (nowNs() - ns(5000)).toString());
    expect(await raw.pttl(key)).toBe(-1);
    const until = nowNs() + ns(1500);
    expect(await lock.acquireUntil(key, until)).toBe(true);
    const pttl = await raw.pttl(key);
    expect(pttl).toBeGreaterThan(1000);
    expect(pttl).toBeLessThanOrEqual(1501);
    await raw.del(key);
  });
});

describe("Scheduler lockMode 'go' on Redis", () => {
  it("writes exactly Go's key and value for name periodic-task, spec @every 1s, binary worker", async () => {
    const key = 'machinery_lock_workerperiodic-task@every 1s';
    await raw.del(key);
    const n = node('worker');
    const first = await nextSecondBoundary();
    n.scheduler.registerPeriodicTask('@every 1s', 'periodic-task', newSignature({ Name: 'add' }));
    while (n.published.length < 1 && Date.now() < first + 3000) await sleep(5);
    const [value, pttl] = await Promise.all([raw.get(key), raw.pttl(key)]);
    await shutdown([n]);
    expect(n.published).toHaveLength(1);
    expect(Date.now()).toBeLessThan(first + 1000);
    // Fired at `first`: held until the next fire time, in ns, minus 1.
    expect(value).toBe(`${first / 1000}999999999`);
    expect(BigInt(value ?? '0')).toBe(ns(first + 1000) - 1n);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1000);
    await raw.del(key);
  }, 15_000);

  it('a Go scheduler that took the tick stops ours; the next tick is ours, and Go then reads it as held', async () => {
    const name = `go-held-${randomUUID()}`;
    const key = `machinery_lock_worker${name}@every 1s`;
    const n = node('worker');
    const first = await nextSecondBoundary();
    n.scheduler.registerPeriodicTask('@every 1s', name, newSignature({ Name: 'add' }));
    await sleep(first - 200 - Date.now());
    // What a Go process whose clock runs 200 ms ahead writes when it fires `first`.
    expect(await goLockOnce(key, ns(first + 1000) - 1n, ns(first) + ns(3))).toBe(true);
    expect(await raw.get(key)).toBe((ns(first + 1000) - 1n).toString());
    await sleep(first + 600 - Date.now());
    expect(n.published).toHaveLength(0);
    while (n.published.length < 1 && Date.now() < first + 3000) await sleep(5);
    expect(n.published).toHaveLength(1);
    expect(Date.now()).toBeLessThan(first + 2000);
    expect(await raw.get(key)).toBe((ns(first + 2000) - 1n).toString());
    // A Go process firing the same tick a little later finds it held …
    expect(await goLockOnce(key, ns(first + 2000) - 1n, ns(first + 1000) + ns(40))).toBe(false);
    await shutdown([n]);
    // … and takes the next one, whoever held the key before (here through GET + GETSET).
    await raw.pexpire(key, 60_000);
    expect(await goLockOnce(key, ns(first + 3000) - 1n, ns(first + 2000) + ns(2))).toBe(true);
    expect(await raw.get(key)).toBe((ns(first + 3000) - 1n).toString());
    await raw.del(key);
  }, 15_000);

  it('takes over a Go value whose time is over even though its key never expired', async () => {
    const name = `go-stale-${randomUUID()}`;
    const key = `machinery_lock_worker${name}*/1 * * * *`;
    // Left by a Go process whose GETSET cleared the expiry and whose EXPIRE never came.
    await raw.set(key, (nowNs() - ns(90_000)).toString());
    const lock = new RedisLock({ url: URL });
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    expect(await lock.acquireUntil(key, ns(minute + 60_000) - 1n, ns(minute))).toBe(true);
    expect(await raw.get(key)).toBe((ns(minute + 60_000) - 1n).toString());
    expect(await raw.pttl(key)).toBeGreaterThan(0);
    await lock.close();
    await raw.del(key);
  });

  it('three TypeScript schedulers send each of 5 ticks exactly once', async () => {
    const name = `ts3-${randomUUID()}`;
    const nodes = [node('worker'), node('worker'), node('worker')];
    const first = await nextSecondBoundary();
    for (const n of nodes) n.scheduler.registerPeriodicTask('@every 1s', name, newSignature({ Name: 'add' }));
    const sent = (): number => nodes.reduce((k, n) => k + n.published.length, 0);
    while (sent() < 5 && Date.now() < first + 15_000) await sleep(20);
    await shutdown(nodes);
    expect(Date.now()).toBeGreaterThanOrEqual(first + 4000);
    expect(Date.now()).toBeLessThan(first + 5000);
    expect(sent()).toBe(5);
    await raw.del(`machinery_lock_worker${name}@every 1s`);
  }, 30_000);

  it('two TypeScript schedulers and a Go scheduler share 5 ticks, each sent once', async () => {
    const name = `mixed-${randomUUID()}`;
    const key = `machinery_lock_worker${name}@every 1s`;
    const nodes = [node('worker'), node('worker')];
    const first = await nextSecondBoundary();
    for (const n of nodes) n.scheduler.registerPeriodicTask('@every 1s', name, newSignature({ Name: 'add' }));
    let goWins = 0;
    for (let tick = first; tick < first + 5000; tick += 1000) {
      while (Date.now() < tick) await sleep(Math.max(1, tick - Date.now()));
      // Go's job runs once its timer fires, and locks until schedule.Next(time.Now()) − 1 ns.
      const next = (Math.floor(Date.now() / 1000) + 1) * 1000;
      if (await goLockWithRetries(key, ns(next) - 1n)) goWins++;
    }
    await sleep(first + 4500 - Date.now());
    await shutdown(nodes);
    const ours = nodes.reduce((k, n) => k + n.published.length, 0);
    expect(ours + goWins).toBe(5);
    await raw.del(key);
  }, 30_000);

  it('a binary name that differs from Go’s does not share the lock (Go’s #678)', async () => {
    const name = `other-bin-${randomUUID()}`;
    const n = node('node');
    const first = await nextSecondBoundary();
    expect(await goLockOnce(`machinery_lock_worker${name}@every 1s`, ns(first + 1000) - 1n, ns(first) + 1n)).toBe(true);
    n.scheduler.registerPeriodicTask('@every 1s', name, newSignature({ Name: 'add' }));
    while (n.published.length < 1 && Date.now() < first + 3000) await sleep(5);
    await shutdown([n]);
    expect(n.published).toHaveLength(1);
    expect(Date.now()).toBeLessThan(first + 1000);
    await raw.del(`machinery_lock_worker${name}@every 1s`, `machinery_lock_node${name}@every 1s`);
  }, 15_000);
});
