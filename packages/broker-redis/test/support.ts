import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll } from 'vitest';
import { RedisBroker } from '../src/index.js';

export const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));

/** Unique names per test run, so tests share a Redis with others without meeting them. */
export function uniqueNames(tag: string): { queue: string; delayedTasksKey: string; keyPrefix: string } {
  const id = randomUUID().slice(0, 8);
  return { queue: `mts_test_${tag}_${id}`, delayedTasksKey: `mts_test_delayed_${id}`, keyPrefix: `mts_test_${id}:` };
}

/**
 * A test file's own queue (named `mts_test_<tag>_<id>`; sub-queues start with it), key prefix,
 * admin client and broker on them. After the file, the broker closes and every key under the
 * queue's name and the prefix is deleted.
 */
export function brokerTestBed(tag: string): { url: string; queue: string; keyPrefix: string; redis: Redis; broker: RedisBroker } {
  const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
  const queue = `mts_test_${tag}_${randomUUID()}`;
  // Bookkeeping keys of its own, so its default-lease brokers never hold the reaper turn other tests need.
  const keyPrefix = `mts_test_${randomUUID()}:`;
  const redis = new Redis(url);
  const broker = new RedisBroker({ url, defaultQueue: queue, keyPrefix });
  afterAll(async () => {
    await broker.close();
    await deleteKeys(redis, [], queue);
    await deleteKeys(redis, [], keyPrefix);
    await redis.quit();
  });
  return { url, queue, keyPrefix, redis, broker };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Deletes the given keys and every key under `prefix` (the broker's private bookkeeping). */
export async function deleteKeys(redis: Redis, keys: readonly string[], prefix?: string): Promise<void> {
  const all = [...keys];
  if (prefix) {
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      all.push(...found);
    } while (cursor !== '0');
  }
  for (let i = 0; i < all.length; i += 500) await redis.del(...all.slice(i, i + 500));
}

/** The State field of every task document (null where none), read in MGET chunks. */
export async function readStates(redis: Redis, uuids: readonly string[]): Promise<Map<string, { State: string; Results: unknown; Error: string } | null>> {
  const out = new Map<string, { State: string; Results: unknown; Error: string } | null>();
  for (let i = 0; i < uuids.length; i += 500) {
    const chunk = uuids.slice(i, i + 500);
    const texts = await redis.mget(...chunk);
    chunk.forEach((u, j) => {
      const t = texts[j];
      out.set(u, t ? (JSON.parse(t) as { State: string; Results: unknown; Error: string }) : null);
    });
  }
  return out;
}

/** Polls until `uuids` all have State SUCCESS or the deadline passes; returns how many did. */
export async function waitAllSuccess(redis: Redis, uuids: readonly string[], timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await readStates(redis, uuids);
    const ok = [...states.values()].filter((s) => s?.State === 'SUCCESS').length;
    if (ok === uuids.length || Date.now() > deadline) return ok;
    await sleep(250);
  }
}

/**
 * Records the commands `client` sends (name, then arguments as text) until `stop()`: what
 * actually goes to Redis, for tests about batching.
 */
export function recordCommands(client: Redis): { calls: string[][]; names: () => string[]; stop: () => void } {
  const calls: string[][] = [];
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: { name: string; args: unknown[] }, ...rest: unknown[]) => {
    calls.push([command.name, ...command.args.map(String)]);
    return (send as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  return { calls, names: () => calls.map((c) => c[0] as string), stop: () => void (client.sendCommand = send) };
}
