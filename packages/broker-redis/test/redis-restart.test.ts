import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RedisBackend } from '@machinery-ts/backend-redis';
import { NullBackend, Server, arg, newSignature, newTaskUUID } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { deleteKeys, readStates, repoRoot, sleep, uniqueNames, waitAllSuccess } from './support.js';

// A Redis of its own (AOF, fsync always) that this test may stop and start: scripts/redis-6391.sh.
const url = process.env.MTS_REDIS_RESTART_URL ?? 'redis://127.0.0.1:6391';
const script = join(repoRoot, 'scripts', 'redis-6391.sh');
const { queue, delayedTasksKey, keyPrefix } = uniqueNames('restart');
const TASKS = 5000;
const RESTART_AFTER_SENT = 2000;
// Down long enough for several reconnect attempts on every connection, short of the 5 s lease.
const DOWN_MS = 3000;

const run = promisify(execFile);
const redis6391 = (cmd: 'start' | 'stop'): Promise<{ stdout: string }> => run('bash', [script, cmd], { cwd: repoRoot, timeout: 90_000 });

let redis: Redis;
const uuids: string[] = [];
beforeAll(async () => {
  await redis6391('start');
  redis = new Redis(url, { maxRetriesPerRequest: null });
  redis.on('error', () => {});
}, 90_000);
afterAll(async () => {
  await redis6391('start');
  await deleteKeys(redis, [queue, `${queue}:dead_letter`, delayedTasksKey, ...uuids], keyPrefix);
  await redis.quit();
}, 90_000);

const runId = async (): Promise<string> => /run_id:(\w+)/.exec(await redis.info('server'))?.[1] ?? '';

describe('Redis restarted (AOF on) in the middle of 5,000 tasks', () => {
  it('every task finishes SUCCESS; producer, worker and Server are the same objects throughout', async () => {
    const transportErrors: string[] = [];
    const make = (): Server =>
      new Server({
        defaultQueue: queue,
        broker: new RedisBroker({ url, defaultQueue: queue, delayedTasksKey, keyPrefix, leaseMs: 5000 }),
        backend: new RedisBackend({ url, resultsExpireIn: 600 }),
      });
    const producer = make();
    const workerServer = make();
    const executions = new Map<string, number>();
    let ran = 0;
    workerServer.registerTask('work', ([n], { signature }) => {
      ran += 1;
      executions.set(signature.UUID, (executions.get(signature.UUID) ?? 0) + 1);
      return n;
    });
    // Prefetch 100: the acks go out in halves a turn apart (see RedisBroker's #inHalves), across the outage too.
    const worker = workerServer.newWorker({ concurrency: 50, readAhead: 50, handleSignals: false, onError: (e) => transportErrors.push(e.message) });
    await worker.start();
    const runIdBefore = await runId();

    for (let i = 0; i < TASKS; i++) uuids.push(newTaskUUID());
    let sent = 0;
    let restart: Promise<unknown> | undefined;
    const timeline: Record<string, number> = {};
    const t0 = Date.now();
    const sendErrors: string[] = [];
    const senders = Array.from({ length: 25 }, async () => {
      for (let i = sent; i < TASKS; i = sent) {
        sent += 1;
        if (sent === RESTART_AFTER_SENT) {
          timeline.restartAt = Date.now() - t0;
          timeline.ranAtRestart = ran;
          restart = (async () => {
            await redis6391('stop');
            timeline.stoppedAt = Date.now() - t0;
            await sleep(DOWN_MS);
            await redis6391('start');
            timeline.restartedAt = Date.now() - t0;
            timeline.ranWhenBack = ran;
          })();
        }
        await producer
          .sendTask(newSignature({ UUID: uuids[i] as string, Name: 'work', Args: [arg('int64', BigInt(i))] }))
          .catch((e: unknown) => sendErrors.push(String(e)));
      }
    });
    await Promise.all(senders);
    timeline.allSent = Date.now() - t0;
    await restart;

    const ok = await waitAllSuccess(redis, uuids, 120_000);
    timeline.allSuccess = Date.now() - t0;
    // Which tasks ran twice tells why: ones sent around the restart (a push resent after
    // the reply was lost) or ones running then (returned by the reaper).
    const twiceAt = uuids.flatMap((u, i) => ((executions.get(u) ?? 0) > 1 ? [i] : []));
    const twice = twiceAt.length;
    console.log(
      `restart: ${JSON.stringify(timeline)} ms/counts; ${ok}/${TASKS} SUCCESS; executions ${ran}, ${twice} tasks ran more than once (task numbers ${twiceAt.length ? `${twiceAt[0]}–${twiceAt.at(-1)}` : '-'}); ` +
        `send errors ${sendErrors.length}; worker transport errors ${transportErrors.length} (first: ${transportErrors[0] ?? '-'})`,
    );

    expect(sendErrors).toEqual([]);
    expect(ok).toBe(TASKS);
    // The server really restarted, and it did so while the worker had work before and after.
    expect(await runId()).not.toBe(runIdBefore);
    expect(timeline.ranAtRestart).toBeGreaterThan(0);
    expect(timeline.ranAtRestart).toBeLessThan(TASKS);
    expect(ran).toBeGreaterThan(timeline.ranWhenBack ?? TASKS);
    const states = await readStates(redis, uuids);
    uuids.forEach((u, i) => expect(states.get(u)?.Results).toEqual([{ Type: 'int64', Value: i }]));
    expect(await redis.llen(queue)).toBe(0);
    // Nothing is left claimed-but-unsettled in the worker's in-flight list or claimed hash (a
    // claim whose reply was lost in the restart would strand its messages there under a live lease).
    const inflightLeft = async (): Promise<number> => {
      let n = 0;
      for (const k of await redis.keys(`${keyPrefix}inflight:*`)) n += await redis.llen(k);
      for (const k of await redis.keys(`${keyPrefix}claimed:*`)) n += (await redis.hkeys(k)).filter((f) => f !== '#').length;
      return n;
    };
    for (let waited = 0; (await inflightLeft()) > 0 && waited < 5000; waited += 100) await sleep(100);
    expect(await inflightLeft()).toBe(0);

    await worker.stop();
    await Promise.all([producer.close(), workerServer.close()]);
  }, 240_000);
});

/** Names of its own for a test that stops Redis, and the clean-up after it (Redis started again first). */
function outageBed(tag: string, uuids: readonly string[]): ReturnType<typeof uniqueNames> {
  const names = uniqueNames(tag);
  afterAll(async () => {
    await redis6391('start');
    await deleteKeys(redis, [names.queue, names.delayedTasksKey, ...uuids], names.keyPrefix);
  }, 90_000);
  return names;
}

describe('Redis gone when a worker shuts down', () => {
  const held = Array.from({ length: 4 }, () => newTaskUUID());
  const names = outageBed('outage_stop', held);

  it('stop({ abandonRunning: true }) and close() end within publishTimeoutMs, not at ioredis retry limit; the held tasks run once Redis is back', async () => {
    await redis6391('start');
    const make = (): Server =>
      new Server({
        defaultQueue: names.queue,
        broker: new RedisBroker({ url, ...names, defaultQueue: names.queue, leaseMs: 2000, publishTimeoutMs: 1000 }),
        backend: new RedisBackend({ url, resultsExpireIn: 600 }),
      });
    const first = make();
    let started = 0;
    // Never finishes on the first worker: it is running when Redis goes.
    first.registerTask('hold', () => {
      started += 1;
      return new Promise(() => {});
    });
    for (const UUID of held) await first.sendTask(newSignature({ UUID, Name: 'hold' }));
    const errors: string[] = [];
    const worker = first.newWorker({ concurrency: 1, readAhead: 3, handleSignals: false, onError: (e) => errors.push(e.message) });
    await worker.start();
    // One running, three prefetched.
    for (let waited = 0; (started === 0 || (await redis.llen(names.queue)) > 0) && waited < 10_000; waited += 50) await sleep(50);
    expect(started).toBe(1);

    await redis6391('stop');
    // Bounded by the test's own timeout: before, each Redis call of the shutdown waited for
    // ioredis to give up on it (about 45 s per call with the broker's reconnect back-off).
    await worker.stop({ abandonRunning: true });
    await first.close();
    // The first requeue is reported; the two after it are left to the lease, not tried in turn.
    expect(errors).toEqual([expect.stringMatching(/^RedisBroker: requeue of a delivery not confirmed within 1000 ms .*come back to the queue once its lease lapses$/)]);

    await redis6391('start');
    const second = make();
    second.registerTask('hold', () => 'done');
    const again = second.newWorker({ concurrency: 4, handleSignals: false });
    await again.start();
    // The first worker's lease lapses, and the reaper of the second gives the four back.
    expect(await waitAllSuccess(redis, held, 30_000)).toBe(held.length);
    await again.stop();
    await second.close();
  }, 40_000);
});

describe('an ack Redis refused while it was down', () => {
  const uuids = [newTaskUUID(), newTaskUUID()];
  const names = outageBed('outage_ack', uuids);

  it('is sent again once Redis is back: the message leaves the in-flight list and its prefetch slot is free for the next task', async () => {
    await redis6391('start');
    // A client that gives up on a command after one failed reconnect, as ioredis's own does
    // after twenty (about 42 s with this back-off): the ack fails while Redis is down.
    const client = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
    client.on('error', () => {});
    const server = new Server({
      defaultQueue: names.queue,
      broker: new RedisBroker({ client, ...names, defaultQueue: names.queue, leaseMs: 60_000 }),
      backend: new NullBackend(),
    });
    let release = (): void => {};
    const gate = new Promise<void>((r) => (release = r));
    const ran: string[] = [];
    server.registerTask('step', async (_args, { signature }) => {
      ran.push(signature.UUID);
      if (ran.length === 1) await gate;
    });
    const errors: string[] = [];
    // Prefetch 1: a slot lost to an ack that is never retried stops the worker for good.
    const worker = server.newWorker({ concurrency: 1, readAhead: 0, handleSignals: false, onError: (e) => errors.push(e.message) });
    await worker.start();
    await server.sendTask(newSignature({ UUID: uuids[0] as string, Name: 'step' }));
    for (let waited = 0; ran.length === 0 && waited < 10_000; waited += 50) await sleep(50);
    await redis6391('stop');
    release(); // the task ends; its ack goes to a Redis that is not there
    for (let waited = 0; errors.length === 0 && waited < 10_000; waited += 50) await sleep(50);
    expect(errors.length).toBeGreaterThan(0);
    await redis6391('start');

    await server.sendTask(newSignature({ UUID: uuids[1] as string, Name: 'step' }));
    for (let waited = 0; ran.length < 2 && waited < 15_000; waited += 100) await sleep(100);
    expect(ran).toEqual(uuids);
    const inflight = async (): Promise<number> => {
      let n = 0;
      for (const k of await redis.keys(`${names.keyPrefix}inflight:*`)) n += await redis.llen(k);
      for (const k of await redis.keys(`${names.keyPrefix}claimed:*`)) n += (await redis.hkeys(k)).filter((f) => f !== '#').length;
      return n;
    };
    for (let waited = 0; (await inflight()) > 0 && waited < 5000; waited += 100) await sleep(100);
    expect(await inflight()).toBe(0);
    await worker.stop();
    await server.close();
    await client.quit();
  }, 60_000);
});
