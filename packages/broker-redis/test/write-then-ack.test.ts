import { RedisBackend } from '@machinery-ts/backend-redis';
import { type ScriptedWrite, Server, arg, newSignature } from '@machinery-ts/core';
import { collectDeliveries } from '@machinery-ts/contract-tests';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { brokerTestBed, deleteKeys, recordCommands, sleep, uniqueNames, waitAllSuccess } from './support.js';

const { url, queue, keyPrefix, redis, broker } = brokerTestBed('wack');
const written: string[] = [];
afterAll(async () => {
  await deleteKeys(redis, written);
});

/** A scripted write of the simplest kind: KEYS[i] set to the shared prefix and the write's own value. */
const setTo = (key: string, value: string, store = broker.store): ScriptedWrite => {
  written.push(key);
  return { store, lua: "for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1] .. ARGV[1 + i]) end", shared: ['v:'], key, args: [value] };
};

describe('RedisBroker ackAfterWrite', () => {
  it('applies the write, acks, and claims the freed slot, in one call; a write that raises acks nothing and the delivery can still be settled', async () => {
    await broker.publishBatch(['a', 'b', 'c'].map((UUID) => newSignature({ Name: 'noop', UUID })));
    const c = collectDeliveries();
    const sub = await broker.consume(queue, { prefetch: 2, onDelivery: c.onDelivery, consumerTag: 'wack' });
    await c.until(2);
    const claimed = (await redis.keys(`${keyPrefix}claimed:wack:*`))[0] as string;
    const [first, second] = c.got as [(typeof c.got)[number], (typeof c.got)[number]];
    const [k1, k2] = [`${queue}_k1`, `${queue}_k2`];

    const recorded = recordCommands(broker.client);
    await first.ackAfterWrite?.(setTo(k1, 'one'));
    recorded.stop();
    expect(await redis.get(k1)).toBe('v:one');
    // One script call carried the write, the ack and the claim of the third message (an EVAL
    // follows only when the server did not have the script yet).
    expect(recorded.names().filter((n) => n !== 'eval')).toEqual(['evalsha']);
    await c.until(3);
    expect(await redis.hlen(claimed)).toBe(3); // the second, the third, and the '#' counter

    const failing: ScriptedWrite = { store: broker.store, lua: "error('refused')", shared: [], key: k2, args: [] };
    await expect(second.ackAfterWrite?.(failing)).rejects.toThrow(/refused/);
    expect(await redis.hlen(claimed)).toBe(3);
    expect(await redis.exists(k2)).toBe(0);
    // Still unsettled: the caller gives it back another way.
    await second.settle({ kind: 'requeue' });
    expect(await redis.lrange(queue, 0, -1)).toEqual([second.body]);

    await expect(c.got[2]?.ackAfterWrite?.(setTo(k2, 'x', 'redis://127.0.0.1:1/0'))).rejects.toThrow(/RedisBroker writes to redis:\/\/.*, not redis:\/\/127\.0\.0\.1:1\/0/);
    await c.got[2]?.settle({ kind: 'ack' });
    await sub.stop();
    await redis.del(queue);
  });
});

describe('RedisBroker ackAfterWrite, a turn of acks beyond half the prefetch', () => {
  const uuids = Array.from({ length: 200 }, (_, i) => `half-${i}`);
  const evalshas = (calls: string[][]) => calls.filter((call) => call[0] === 'evalsha');

  it('goes out in two calls a turn apart (from a prefetch of 100), and the slots both free are claimed again', async () => {
    await broker.publishBatch(uuids.map((UUID) => newSignature({ Name: 'noop', UUID })));
    const c = collectDeliveries();
    const sub = await broker.consume(queue, { prefetch: 100, onDelivery: c.onDelivery, consumerTag: 'half' });
    await c.until(100);
    const recorded = recordCommands(broker.client);
    const acks = c.got.map((d, i) => d.ackAfterWrite?.(setTo(`${queue}_half${i}`, String(i))));
    // The acks flush on the next turn; this runs right after that flush and before the turn after.
    const afterFlush = await new Promise<number>((r) => setImmediate(() => r(evalshas(recorded.calls).length)));
    await Promise.all(acks);
    recorded.stop();
    expect(afterFlush).toBe(1);
    const calls = evalshas(recorded.calls);
    expect(calls).toHaveLength(2);
    // Each call carries 50 of the writes (their keys follow the three keys of the script).
    for (const call of calls) expect(call.filter((a) => a.startsWith(`${queue}_half`))).toHaveLength(50);
    for (let i = 0; i < 100; i++) expect(await redis.get(`${queue}_half${i}`)).toBe(`v:${i}`);
    await c.until(200);
    expect(c.got.slice(100).map((d) => (JSON.parse(d.body) as { UUID: string }).UUID)).toEqual(uuids.slice(100));
    for (const d of c.got.slice(100)) await d.settle({ kind: 'ack' });
    await sub.stop();
    expect(await redis.llen(queue)).toBe(0);
  });

  it('hands out nothing its second call claims once stop() came between the two, and those messages go back to the queue in order', async () => {
    const q3 = `${queue}_halfstop`;
    await broker.publishBatch(uuids.map((UUID) => newSignature({ Name: 'noop', UUID, RoutingKey: q3 })));
    const c = collectDeliveries();
    const sub = await broker.consume(q3, { prefetch: 100, onDelivery: c.onDelivery, consumerTag: 'halfstop' });
    await c.until(100);
    const recorded = recordCommands(broker.client);
    const acks = c.got.map((d, i) => d.ackAfterWrite?.(setTo(`${q3}_${i}`, String(i))));
    // Queued after the acks' flush and before their second call (which the flush queues).
    const stopped = new Promise<void>((r) => setImmediate(() => r(sub.stop())));
    await Promise.all(acks);
    await stopped;
    recorded.stop();
    // The second call still claims its 50 slots (counted before stop()): after its 3 + 50 keys, 'hash' and that count.
    const calls = evalshas(recorded.calls).filter((call) => call.some((a) => a.startsWith(`${q3}_`)));
    expect(calls.map((call) => call[3 + 53 + 1])).toEqual(['50', '50']);
    for (let i = 0; i < 100; i++) expect(await redis.get(`${q3}_${i}`)).toBe(`v:${i}`);
    await sleep(50);
    expect(c.got).toHaveLength(100);
    const left = await redis.lrange(q3, 0, -1);
    await redis.del(q3);
    expect(left.map((b) => (JSON.parse(b) as { UUID: string }).UUID)).toEqual(uuids.slice(100));
  });

  it('stays one call below a prefetch of 100, where halves would cost more than they overlap', async () => {
    await broker.publishBatch(uuids.slice(0, 98).map((UUID) => newSignature({ Name: 'noop', UUID })));
    const c = collectDeliveries();
    const sub = await broker.consume(queue, { prefetch: 98, onDelivery: c.onDelivery, consumerTag: 'whole' });
    await c.until(98);
    const recorded = recordCommands(broker.client);
    await Promise.all(c.got.map((d, i) => d.ackAfterWrite?.(setTo(`${queue}_whole${i}`, String(i)))));
    recorded.stop();
    // (The consumer's own claim follows once its slots are free: it carries no write.)
    expect(evalshas(recorded.calls).filter((call) => call.some((a) => a.startsWith(`${queue}_whole`)))).toHaveLength(1);
    await sub.stop();
    expect(await redis.llen(queue)).toBe(0);
  });

  it('sends its second call before the messages go back when the broker closes in the same turn', async () => {
    const q2 = `${queue}_halfclose`;
    const closing = new RedisBroker({ url, defaultQueue: q2, keyPrefix });
    await closing.publishBatch(uuids.map((UUID) => newSignature({ Name: 'noop', UUID })));
    const c = collectDeliveries();
    await closing.consume(q2, { prefetch: 100, onDelivery: c.onDelivery, consumerTag: 'halfclose' });
    await c.until(100);
    const acks = c.got.map((d, i) => d.ackAfterWrite?.(setTo(`${q2}_${i}`, String(i), closing.store)));
    await closing.close();
    await Promise.allSettled(acks);
    for (let i = 0; i < 100; i++) expect(await redis.get(`${q2}_${i}`)).toBe(`v:${i}`);
    // The acked 100 are not handed back to run again; the 100 never handed out are, in order.
    const left = await redis.lrange(q2, 0, -1);
    await redis.del(q2);
    expect(left.map((b) => (JSON.parse(b) as { UUID: string }).UUID)).toEqual(uuids.slice(100));
  });
});

describe('a worker whose backend shares the broker\'s Redis', () => {
  const names = uniqueNames('wackw');
  const uuids: string[] = [];
  const raw = new Redis(url);
  afterAll(async () => {
    await deleteKeys(raw, [names.queue, names.delayedTasksKey, ...uuids], names.keyPrefix);
    await raw.quit();
  });
  const newServer = (backendUrl = url): Server =>
    new Server({
      defaultQueue: names.queue,
      broker: new RedisBroker({ url, defaultQueue: names.queue, delayedTasksKey: names.delayedTasksKey, keyPrefix: names.keyPrefix }),
      backend: new RedisBackend({ url: backendUrl, resultsExpireIn: 600 }),
    });
  const successWrites = (calls: string[][]): number => calls.filter((call) => call.some((a) => a.includes('"State":"SUCCESS"'))).length;

  it('writes each SUCCESS in the script that acks its delivery: the backend sends none, the documents keep their PENDING name and time', async () => {
    const server = newServer();
    server.registerTask('add', ([a, b]) => BigInt(a as bigint) + BigInt(b as bigint));
    const sent = await server.sendTasks(Array.from({ length: 30 }, (_, i) => ({ Name: 'add', Args: [arg('int64', BigInt(i)), arg('int64', 1n)] })));
    const ids = sent.map((r) => r.taskUUID);
    uuids.push(...ids);
    const pendingAt = new Map((await raw.mget(ids)).map((t, i) => [ids[i], (JSON.parse(t as string) as { CreatedAt: string }).CreatedAt]));
    const backendCalls = recordCommands((server.backend as RedisBackend).client);
    const brokerCalls = recordCommands((server.broker as RedisBroker).client);
    const worker = server.newWorker({ concurrency: 5, handleSignals: false });
    await worker.start();
    expect(await waitAllSuccess(raw, ids, 15_000)).toBe(30);
    await worker.stop();
    backendCalls.stop();
    brokerCalls.stop();
    expect(successWrites(backendCalls.calls)).toBe(0);
    expect(successWrites(brokerCalls.calls)).toBeGreaterThan(0);
    const docs = await raw.mget(ids);
    docs.forEach((t, i) => {
      const doc = JSON.parse(t as string) as { TaskName: string; CreatedAt: string; Results: { Value: number }[] };
      expect(doc.TaskName).toBe('add');
      expect(doc.CreatedAt).toBe(pendingAt.get(ids[i]));
      expect(doc.Results[0]?.Value).toBe(i + 1);
    });
    expect(await Promise.all(sent.slice(0, 3).map((r) => r.get({ timeoutMs: 2000 })))).toEqual([[1n], [2n], [3n]]);
    expect(await raw.keys(`${names.keyPrefix}claimed:*`)).toEqual([]);
    await server.close();
  });

  it('a task that ends within its turn has no RECEIVED or STARTED made at all; a running one shows STARTED', async () => {
    const server = newServer();
    let release: (() => void) | undefined;
    server.registerTask('quick', () => 1n);
    server.registerTask('slow', async () => {
      await new Promise<void>((r) => (release = r));
      return 2n;
    });
    const progress: string[] = [];
    const setState = server.backend.setState.bind(server.backend);
    server.backend.setState = (u) => {
      progress.push(`${u.taskUUID}:${u.state}`);
      return setState(u);
    };
    const worker = server.newWorker({ concurrency: 2, handleSignals: false });
    await worker.start();
    const quick = await server.sendTask({ Name: 'quick' });
    uuids.push(quick.taskUUID);
    expect(await quick.get({ timeoutMs: 5000 })).toEqual([1n]);
    expect(progress.filter((p) => p.startsWith(quick.taskUUID))).toEqual([]);
    // It came by the blocking claim (the queue was empty), so its ack is the LREM of the
    // in-flight list, made in the same script as the write: nothing is left in flight.
    const consumers = await raw.hkeys(`${names.keyPrefix}consumers`);
    const inflight = consumers.map((id) => (server.broker as RedisBroker).inflightKey(id));
    expect(inflight.length).toBeGreaterThan(0);
    for (let i = 0; i < 100 && (await Promise.all(inflight.map((k) => raw.llen(k)))).some((n) => n > 0); i++) await sleep(10);
    expect(await Promise.all(inflight.map((k) => raw.llen(k)))).toEqual(inflight.map(() => 0));

    const slow = await server.sendTask({ Name: 'slow' });
    uuids.push(slow.taskUUID);
    let stored: string | undefined;
    for (let i = 0; i < 200 && stored !== 'STARTED'; i++) {
      await sleep(10);
      stored = (JSON.parse((await raw.get(slow.taskUUID)) ?? '{}') as { State?: string }).State;
    }
    expect(stored).toBe('STARTED');
    expect(progress.filter((p) => p.startsWith(slow.taskUUID))).toEqual([`${slow.taskUUID}:RECEIVED`, `${slow.taskUUID}:STARTED`]);
    release?.();
    expect(await slow.get({ timeoutMs: 5000 })).toEqual([2n]);
    await worker.stop();
    await server.close();
  });

  it('leaves the write to the backend where the stores differ, and where onPostTask must see the state stored (as in Go)', async () => {
    for (const variant of ['other database', 'onPostTask'] as const) {
      const other = url.replace(/\/\d*$/, '') + '/1';
      const server = newServer(variant === 'other database' ? other : url);
      server.registerTask('echo', ([s]) => s);
      const seenAfter: (string | undefined)[] = [];
      const backendCalls = recordCommands((server.backend as RedisBackend).client);
      const worker = server.newWorker({
        concurrency: 2,
        handleSignals: false,
        ...(variant === 'onPostTask' ? { onPostTask: async (sig) => void seenAfter.push((await server.backend.getState(sig.UUID))?.State) } : {}),
      });
      await worker.start();
      const r = await server.sendTask({ Name: 'echo', Args: [arg('string', variant)] });
      uuids.push(r.taskUUID);
      expect(await r.get({ timeoutMs: 5000 })).toEqual([variant]);
      await worker.stop();
      backendCalls.stop();
      expect(successWrites(backendCalls.calls)).toBe(1);
      if (variant === 'onPostTask') expect(seenAfter).toEqual(['SUCCESS']);
      if (variant === 'other database') await (server.backend as RedisBackend).client.del(r.taskUUID);
      await server.close();
    }
  });

  it('a task that finishes after its consumer closed and gave it back still has its SUCCESS written, by the backend', async () => {
    const server = newServer();
    let release: (() => void) | undefined;
    server.registerTask('slow', async () => {
      await new Promise<void>((r) => (release = r));
      return 'done';
    });
    const worker = server.newWorker({ concurrency: 1, handleSignals: false, onError: () => {} });
    await worker.start();
    const r = await server.sendTask({ Name: 'slow' });
    uuids.push(r.taskUUID);
    for (let i = 0; i < 200 && !release; i++) await sleep(10);
    // The broker closes under the running task: its message goes back to the queue.
    await server.broker.close();
    expect((await raw.lrange(names.queue, 0, -1)).filter((b) => b.includes(r.taskUUID))).toHaveLength(1);
    release?.();
    let state: string | undefined;
    for (let i = 0; i < 200 && state !== 'SUCCESS'; i++) {
      await sleep(10);
      state = (JSON.parse((await raw.get(r.taskUUID)) ?? '{}') as { State?: string }).State;
    }
    expect(state).toBe('SUCCESS');
    await worker.stop();
    await server.close();
    await raw.del(names.queue);
  });

  it('a SUCCESS the script cannot write is reported, nothing is acked, and the task goes back for a later run', async () => {
    const server = newServer();
    let ran = 0;
    server.registerTask('echo', ([s]) => {
      ran += 1;
      return s;
    });
    const r = await server.sendTask({ Name: 'echo', Args: [arg('string', 'x')] });
    uuids.push(r.taskUUID);
    // The state script's GET fails on a hash (WRONGTYPE), after the worker has read the message.
    await raw.del(r.taskUUID);
    await raw.hset(r.taskUUID, 'not', 'a state');
    const errors: Error[] = [];
    const worker = server.newWorker({ concurrency: 1, handleSignals: false, onError: (e) => errors.push(e) });
    const brokerCalls = recordCommands((server.broker as RedisBroker).client);
    await worker.start();
    for (let i = 0; i < 200 && !errors.some((e) => /WRONGTYPE/.test(e.message)); i++) await sleep(10);
    await worker.stop();
    brokerCalls.stop();
    expect(ran).toBeGreaterThanOrEqual(1);
    expect(errors.some((e) => /WRONGTYPE/.test(e.message))).toBe(true);
    // The failing call was the write-and-ack script, on the broker's connection.
    expect(brokerCalls.calls.some((call) => call[0] === 'evalsha' && call.includes(r.taskUUID))).toBe(true);
    expect(await raw.type(r.taskUUID)).toBe('hash');
    // Not acked and not lost: waiting for its retry in the delayed set (or already back in the queue).
    const waiting = [...(await raw.zrange(names.delayedTasksKey, 0, -1)), ...(await raw.lrange(names.queue, 0, -1))];
    expect(waiting.filter((b) => b.includes(r.taskUUID))).toHaveLength(1);
    await server.close();
    await raw.del(names.delayedTasksKey, names.queue);
  });
});
