import { RedisBackend } from '@machinery-ts/backend-redis';
import { Server, encodeSignature, newSignature, newTaskUUID } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { deleteKeys, readStates, sleep, uniqueNames, waitAllSuccess } from './support.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const { queue, delayedTasksKey, keyPrefix } = uniqueNames('dlq');
const deadLetters = RedisBroker.deadLetterKey(queue);

const redis = new Redis(url);
const uuids: string[] = [];
afterAll(async () => {
  await deleteKeys(redis, [queue, deadLetters, delayedTasksKey, ...uuids], keyPrefix);
  await redis.quit();
});

interface DeadLetter {
  reason: string;
  queue: string;
  body: string;
}

const valid = (): string => {
  const UUID = newTaskUUID();
  uuids.push(UUID);
  return encodeSignature(newSignature({ UUID, Name: 'echo', RoutingKey: queue, Args: [{ Name: '', Type: 'string', Value: UUID }] }));
};

describe('poison messages RPUSHed into the real list', () => {
  it('malformed JSON and unknown tasks go to <queue>:dead_letter with the reason; the worker keeps going', async () => {
    const server = new Server({
      defaultQueue: queue,
      broker: new RedisBroker({ url, defaultQueue: queue, delayedTasksKey, keyPrefix, leaseMs: 1000, reapIntervalMs: 300 }),
      backend: new RedisBackend({ url, resultsExpireIn: 600 }),
    });
    let ran = 0;
    server.registerTask('echo', ([s]) => {
      ran += 1;
      return s;
    });
    const errors: Error[] = [];
    const worker = server.newWorker({ concurrency: 2, unknownTaskRequeues: 2, handleSignals: false, onError: (e) => errors.push(e) });
    await worker.start();

    const truncatedUUID = newTaskUUID();
    const unknownUUID = newTaskUUID();
    uuids.push(truncatedUUID, unknownUUID);
    const garbage = 'this is not { json';
    const truncated = `{"UUID":"${truncatedUUID}","Name":"echo","RoutingKey":"${queue}","Args":[{"Name":"","Type":"str`;
    const unknown = encodeSignature(newSignature({ UUID: unknownUUID, Name: 'no_such_task', RoutingKey: queue }));
    const first = [valid(), valid()];
    await redis.rpush(queue, first[0] as string, garbage, truncated, unknown, first[1] as string);

    const deadline = Date.now() + 20_000;
    while ((await redis.llen(deadLetters)) < 3 && Date.now() < deadline) await sleep(50);
    const entries = (await redis.lrange(deadLetters, 0, -1)).map((t) => JSON.parse(t) as DeadLetter);
    const byBody = new Map(entries.map((e) => [e.body, e]));
    expect(entries).toHaveLength(3);
    // The message is kept byte for byte beside the reason, so it can be inspected and replayed.
    expect(byBody.get(garbage)).toEqual({ reason: expect.stringMatching(/^Malformed task message: /) as unknown, queue, body: garbage });
    expect(byBody.get(truncated)?.reason).toMatch(/^Malformed task message: /);
    expect(byBody.get(unknown)).toEqual({ reason: 'task no_such_task is not registered', queue, body: unknown });
    // The unknown task was handed back first (through the delayed set), so it is dead-lettered last.
    expect(entries.at(-1)?.body).toBe(unknown);

    // Where a UUID can be read, the failure is recorded in the backend too.
    const failed = await readStates(redis, [truncatedUUID, unknownUUID]);
    expect(failed.get(truncatedUUID)).toMatchObject({ State: 'FAILURE', Error: byBody.get(truncated)?.reason });
    expect(failed.get(unknownUUID)).toMatchObject({ State: 'FAILURE', Error: 'task no_such_task is not registered' });

    // Valid tasks around the poison ran, and ones sent after it still run.
    const later = [valid(), valid(), valid()];
    await redis.rpush(queue, ...later);
    const validUUIDs = uuids.filter((u) => u !== truncatedUUID && u !== unknownUUID);
    expect(await waitAllSuccess(redis, validUUIDs, 15_000)).toBe(5);
    expect(ran).toBe(5);
    expect(errors.map((e) => e.message).filter((m) => m.includes('no_such_task'))).toEqual(['task no_such_task is not registered']);

    await worker.stop();
    await server.close();
    expect(await redis.llen(queue)).toBe(0);
    expect(await redis.zcard(delayedTasksKey)).toBe(0);
    expect(await redis.llen(deadLetters)).toBe(3);
  });
});
