import { RedisBackend } from '@machinery-ts/backend-redis';
import { Server, arg, chord, group, newSignature } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { deleteKeys, sleep, uniqueNames } from './support.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const { queue, delayedTasksKey, keyPrefix } = uniqueNames('chord');
const TRIALS = 50;
const MEMBERS = 100;
const WORKERS = 4;

const redis = new Redis(url);
const keys: string[] = [queue, `${queue}:dead_letter`, delayedTasksKey];
afterAll(async () => {
  await deleteKeys(redis, keys, keyPrefix);
  await redis.quit();
});

describe('chord over the Redis broker and backend', () => {
  it(`a ${MEMBERS}-member chord on ${WORKERS} workers fires its callback exactly once, ${TRIALS} trials in a row`, async () => {
    // Each worker has its own Server, so its own broker and backend connections.
    const servers = Array.from(
      { length: WORKERS },
      () =>
        new Server({
          defaultQueue: queue,
          broker: new RedisBroker({ url, defaultQueue: queue, delayedTasksKey, keyPrefix, leaseMs: 5000 }),
          backend: new RedisBackend({ url, resultsExpireIn: 600 }),
        }),
    );
    const callbackRuns = new Map<string, number>();
    const membersRunBy = servers.map(() => 0);
    const workers = servers.map((s, w) => {
      s.registerTask('member', ([n]) => {
        membersRunBy[w] = (membersRunBy[w] ?? 0) + 1;
        return n;
      });
      s.registerTask('sum', (args, { signature }) => {
        callbackRuns.set(signature.UUID, (callbackRuns.get(signature.UUID) ?? 0) + 1);
        return (args as bigint[]).reduce((a, b) => a + b, 0n);
      });
      return s.newWorker({ concurrency: 8, handleSignals: false });
    });
    await Promise.all(workers.map((w) => w.start()));
    const producer = servers[0] as Server;

    const callbacks: string[] = [];
    for (let t = 0; t < TRIALS; t++) {
      const members = Array.from({ length: MEMBERS }, (_, i) => newSignature({ Name: 'member', Args: [arg('int64', BigInt(i))] }));
      const c = chord(group(...members), newSignature({ Name: 'sum' }));
      keys.push(c.group.groupUUID, c.callback.UUID, ...c.group.tasks.map((m) => m.UUID));
      callbacks.push(c.callback.UUID);
      const r = await producer.sendChord(c);
      expect(await r.get({ timeoutMs: 30_000 })).toEqual([BigInt((MEMBERS * (MEMBERS - 1)) / 2)]);
    }
    // A second firing would come right after the first; give it time to show up.
    await sleep(500);
    await Promise.all(workers.map((w) => w.stop()));
    await Promise.all(servers.map((s) => s.close()));

    console.log(`chord: ${TRIALS} trials, members run per worker: ${membersRunBy.join(', ')}`);
    expect(callbacks.map((u) => callbackRuns.get(u) ?? 0)).toEqual(callbacks.map(() => 1));
    expect(callbackRuns.size).toBe(TRIALS);
    // The members really were spread over the workers, so the chord step raced.
    for (const n of membersRunBy) expect(n).toBeGreaterThan(0);
  }, 180_000);
});
