import { randomUUID } from 'node:crypto';
import { type WireValue, encodeSignature, newSignature } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { describe, expect, it, vi } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { brokerTestBed, recordCommands } from './support.js';

const { url, queue, keyPrefix, redis, broker } = brokerTestBed('pushes');

/** The RPUSHes recorded so far by the running `rpushCalls`. */
const recordedPushes: { key: string; values: number }[] = [];
/** Records the RPUSH calls made on the broker's client while `fn` runs. */
async function rpushCalls(fn: () => Promise<unknown>): Promise<{ key: string; values: number }[]> {
  recordedPushes.length = 0;
  const client = broker.client;
  const rpush = client.rpush.bind(client);
  client.rpush = ((...a: unknown[]) => {
    recordedPushes.push({ key: String(a[0]), values: a.length - 1 });
    return (rpush as (...x: unknown[]) => Promise<number>)(...a);
  }) as typeof rpush;
  try {
    await fn();
  } finally {
    client.rpush = rpush;
  }
  return [...recordedPushes];
}

describe('RedisBroker publishes', () => {
  it('sends the publishes of one tick as one RPUSH per queue, in issue order, each resolving once stored', async () => {
    const sigs = Array.from({ length: 30 }, (_, i) =>
      newSignature({ Name: 'noop', UUID: `p${i}`, RoutingKey: i % 3 === 0 ? `${queue}_b` : queue }),
    );
    const calls = await rpushCalls(async () => {
      await Promise.all(
        sigs.map(async (s) => {
          await broker.publish(s);
          await findBody(s.RoutingKey, s.UUID); // resolved only once Redis holds it
        }),
      );
    });
    expect(calls).toEqual([
      { key: `${queue}_b`, values: 10 },
      { key: queue, values: 20 },
    ]);
    const uuids = (await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID);
    expect(uuids).toEqual(sigs.filter((s) => s.RoutingKey === queue).map((s) => s.UUID));
  });

  it('publishes of different ticks go separately, and a batch larger than one RPUSH is split in order', async () => {
    await redis.del(queue);
    const calls = await rpushCalls(async () => {
      await broker.publish(newSignature({ Name: 'noop', UUID: 'alone', RoutingKey: queue }));
      await broker.publishBatch(Array.from({ length: 1050 }, (_, i) => newSignature({ Name: 'noop', UUID: `b${i}`, RoutingKey: queue })));
    });
    expect(calls.map((c) => c.values)).toEqual([1, ...Array<number>(10).fill(100), 50]);
    const uuids = (await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID);
    expect(uuids).toEqual(['alone', ...Array.from({ length: 1050 }, (_, i) => `b${i}`)]);
  });

  it('a long run of publishes in one tick sends each full chunk at once, before the tick ends', async () => {
    await redis.del(queue);
    const seenInTick: number[] = [];
    const calls = await rpushCalls(async () => {
      const stored: Promise<void>[] = [];
      for (let i = 0; i < 250; i++) {
        stored.push(broker.publish(newSignature({ Name: 'noop', UUID: `r${i}`, RoutingKey: queue })));
        if (i === 99 || i === 199) seenInTick.push(recordedPushes.length);
      }
      await Promise.all(stored);
    });
    // Redis is storing the first chunks while the rest are still being encoded.
    expect(seenInTick).toEqual([1, 2]);
    expect(calls.map((c) => c.values)).toEqual([100, 100, 50]);
    expect(await redis.llen(queue)).toBe(250);
  });

  it('a message that cannot be encoded, and any publish after close, reject rather than throw', async () => {
    const circular: { [key: string]: WireValue } = {};
    circular.self = circular;
    const bad = newSignature({ Name: 'noop', RoutingKey: queue, Args: [{ Name: '', Type: 'string', Value: circular }] });
    let sent: Promise<void> | undefined;
    expect(() => (sent = broker.publish(bad))).not.toThrow();
    await expect(sent).rejects.toThrow(/circular/i);
    const closed = new RedisBroker({ url, defaultQueue: queue, keyPrefix });
    await closed.close();
    let late: Promise<void> | undefined;
    expect(() => (late = closed.publish(newSignature({ Name: 'noop' })))).not.toThrow();
    await expect(late).rejects.toThrow(/closed/i);
  });

  it('a failed RPUSH rejects every publish it carried', async () => {
    const wrongType = `${queue}_string`;
    await redis.set(wrongType, 'not a list');
    const results = await Promise.allSettled(
      [1, 2, 3].map((i) => broker.publish(newSignature({ Name: 'noop', UUID: `w${i}`, RoutingKey: wrongType }))),
    );
    await redis.del(wrongType);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
  });
});

async function findBody(list: string, uuid: string): Promise<void> {
  const all = await redis.lrange(list, 0, -1);
  const body = all.find((b) => (JSON.parse(b) as { UUID: string }).UUID === uuid);
  if (!body) throw new Error(`${uuid} not in ${list} once its publish resolved`);
}

describe('a PENDING state carried with its task', () => {
  it('sets the state and pushes the task in one script call, then both are there', async () => {
    const { RedisBackend } = await import('@machinery-ts/backend-redis');
    const { Server } = await import('@machinery-ts/core');
    const backend = new RedisBackend({ url, resultsExpireIn: 120 });
    const server = new Server({ broker, backend, defaultQueue: queue });
    await redis.del(queue);
    const recorded = recordCommands(broker.client);
    let results;
    try {
      results = await Promise.all([1, 2, 3].map(() => server.sendTask({ Name: 'noop' })));
    } finally {
      recorded.stop();
    }
    // evalsha, or evalsha then eval the first time the server sees the script.
    expect(recorded.names().filter((c) => c !== 'eval')).toEqual(['evalsha']);
    for (const r of results) {
      const state = await backend.getState(r.taskUUID);
      expect(state?.State).toBe('PENDING');
      expect(state?.TaskName).toBe('noop');
      expect(await redis.ttl(r.taskUUID)).toBeGreaterThan(100);
    }
    const uuids = (await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID);
    expect(uuids).toEqual(results.map((r) => r.taskUUID));
    await backend.close();
  });

  it('sendTasks hands the whole batch to one publishBatchAfterWrite: every state and task lands, in order', async () => {
    const { RedisBackend } = await import('@machinery-ts/backend-redis');
    const { Server } = await import('@machinery-ts/core');
    const backend = new RedisBackend({ url, resultsExpireIn: 120 });
    const server = new Server({ broker, backend, defaultQueue: queue });
    await redis.del(queue);
    const spy = vi.spyOn(broker, 'publishBatchAfterWrite');
    const single = vi.spyOn(broker, 'publishAfterWrite');
    let results;
    let calls: [number, number];
    try {
      results = await server.sendTasks(Array.from({ length: 150 }, (_, i) => ({ Name: 'noop', Args: [{ Name: '', Type: 'int64', Value: i }] })));
      calls = [spy.mock.calls.length, single.mock.calls.length];
    } finally {
      spy.mockRestore();
      single.mockRestore();
    }
    expect(calls).toEqual([1, 0]);
    const states = await Promise.all(results.map((r) => backend.getState(r.taskUUID)));
    expect(states.map((st) => st?.State)).toEqual(Array<string>(150).fill('PENDING'));
    const uuids = (await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID);
    expect(uuids).toEqual(results.map((r) => r.taskUUID));
    await backend.close();
  });

  it('a chunk of carried writes stores each value with its own expiry, and bodies in order', async () => {
    await redis.del(queue);
    const sigs = Array.from({ length: 150 }, (_, i) => newSignature({ Name: 'noop', UUID: `chunk_${randomUUID()}_${i}`, RoutingKey: queue }));
    const store = broker.store;
    // Values unlike any state document: the script must not care what they hold.
    const values = sigs.map((s, i) => (i === 7 ? '' : `{"v":${i},"text":"a\\nb, ü 🙂"}`));
    await Promise.all(sigs.map((s, i) => broker.publishAfterWrite(s, { store, key: s.UUID, value: values[i]!, expireSeconds: 100 + i })));
    expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual(values);
    for (const i of [0, 99, 100, 149]) {
      const ttl = await redis.ttl(sigs[i]!.UUID);
      expect(ttl).toBeLessThanOrEqual(100 + i);
      expect(ttl).toBeGreaterThan(100 + i - 5);
    }
    const uuids = (await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID);
    expect(uuids).toEqual(sigs.map((s) => s.UUID));
  });

  it('when Redis refuses a SET of a chunk, the whole chunk is refused: no task shows without its state', async () => {
    const user = `mts_noset_${randomUUID().slice(0, 8)}`;
    await redis.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '&*', '+@all', '-set');
    const u = new URL(url);
    u.username = user;
    u.password = 'pw';
    const noSet = new RedisBroker({ url: u.toString(), defaultQueue: queue, keyPrefix });
    try {
      await redis.del(queue);
      const sigs = [0, 1].map((i) => newSignature({ Name: 'noop', UUID: `noset_${randomUUID()}_${i}`, RoutingKey: queue }));
      const values = ['plain', 'two\nlines'];
      const sent = await Promise.allSettled(sigs.map((s, i) => noSet.publishAfterWrite(s, { store: noSet.store, key: s.UUID, value: values[i]!, expireSeconds: 60 })));
      expect(sent.map((r) => r.status)).toEqual(['rejected', 'rejected']);
      expect(await redis.llen(queue)).toBe(0);
      expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual([null, null]);
    } finally {
      await noSet.close();
      await redis.call('ACL', 'DELUSER', user);
    }
  });

  it('a carried write with an expiry SET … EX cannot take is refused alone; its tick-mates go out whole', async () => {
    await redis.del(queue);
    const store = broker.store;
    const sigs = [0, 1, 2].map((i) => newSignature({ Name: 'noop', UUID: `ttl_${randomUUID()}_${i}`, RoutingKey: queue }));
    const expiries = [60, 1.5, 61];
    const sent = await Promise.allSettled(sigs.map((s, i) => broker.publishAfterWrite(s, { store, key: s.UUID, value: `v${i}`, expireSeconds: expiries[i]! })));
    expect(sent.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((sent[1] as PromiseRejectedResult).reason)).toMatch(/expiry must be whole seconds, at least 1; found 1.5/);
    expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual(['v0', null, 'v2']);
    expect(await redis.ttl(sigs[2]!.UUID)).toBeGreaterThan(55);
    expect((await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID)).toEqual([sigs[0]!.UUID, sigs[2]!.UUID]);
  });

  it('a carried value holding a raw newline is stored whole, as are the others of its chunk', async () => {
    await redis.del(queue);
    const store = broker.store;
    const sigs = [0, 1, 2].map((i) => newSignature({ Name: 'noop', UUID: `nl_${randomUUID()}_${i}`, RoutingKey: queue }));
    const values = ['first', 'two\nlines', 'third'];
    await Promise.all(sigs.map((s, i) => broker.publishAfterWrite(s, { store, key: s.UUID, value: values[i]!, expireSeconds: 60 })));
    expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual(values);
    expect((await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID)).toEqual(sigs.map((s) => s.UUID));
  });

  it('a task whose name and arguments hold newlines goes out whole: its body, as encoded, holds none raw', async () => {
    await redis.del(queue);
    const store = broker.store;
    const sigs = [0, 1].map((i) => newSignature({ Name: `two\nlines ${i}`, UUID: `nlb_${randomUUID()}_${i}`, RoutingKey: queue, Args: [{ Name: '', Type: 'string', Value: 'a\nb\r\n' }] }));
    await Promise.all(sigs.map((s) => broker.publishAfterWrite(s, { store, key: s.UUID, value: 'v', expireSeconds: 60 })));
    const bodies = await redis.lrange(queue, 0, -1);
    expect(bodies).toEqual(sigs.map((s) => encodeSignature(s)));
    expect(bodies.some((b) => b.includes('\n'))).toBe(false);
  });

  it('RedisBackend PENDING documents of names holding newlines are stored whole, as their tasks', async () => {
    const { RedisBackend } = await import('@machinery-ts/backend-redis');
    const backend = new RedisBackend({ url, resultsExpireIn: 120 });
    try {
      await redis.del(queue);
      const sigs = [0, 1].map((i) => newSignature({ Name: `two\nlines\r\n${i}`, UUID: `vouch_${randomUUID()}_${i}`, RoutingKey: queue }));
      const writes = sigs.map((s) => backend.plainWrite({ taskUUID: s.UUID, taskName: s.Name, state: 'PENDING' })!);
      await Promise.all(sigs.map((s, i) => broker.publishAfterWrite(s, writes[i]!)));
      expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual(writes.map((w) => w.value));
      expect(await redis.lrange(queue, 0, -1)).toEqual(sigs.map((s) => encodeSignature(s)));
      expect(((await backend.getState(sigs[0]!.UUID)) as { TaskName: string }).TaskName).toBe('two\nlines\r\n0');
    } finally {
      await backend.close();
    }
  });

  it('carries a delayed task’s state too, and refuses a write for another store', async () => {
    const { RedisBackend } = await import('@machinery-ts/backend-redis');
    const backend = new RedisBackend({ url, resultsExpireIn: 120 });
    const uuid = `carried_${randomUUID()}`;
    const write = backend.plainWrite({ taskUUID: uuid, taskName: 'later', state: 'PENDING' });
    expect(write).toBeDefined();
    expect(broker.carriesWritesFor(write!.store)).toBe(true);
    const eta = new Date(Date.now() + 60_000).toISOString();
    await broker.publishAfterWrite(newSignature({ Name: 'later', UUID: uuid, ETA: eta }), write!);
    expect(JSON.parse((await redis.get(uuid)) ?? '{}')).toMatchObject({ TaskUUID: uuid, State: 'PENDING', TaskName: 'later' });
    const member = (await redis.zrange('delayed_tasks', 0, -1)).find((m) => m.includes(uuid));
    expect(member).toBeDefined();
    await redis.zrem('delayed_tasks', member!);

    const elsewhere = { ...write!, store: 'redis://127.0.0.1:1/0' };
    expect(broker.carriesWritesFor(elsewhere.store)).toBe(false);
    await expect(broker.publishAfterWrite(newSignature({ Name: 'x' }), elsewhere)).rejects.toThrow(/not redis:\/\/127\.0\.0\.1:1\/0/);
    // Another database of the same server is another store.
    const otherDb = new RedisBackend({ url: url.replace(/(:\d+)(\/\d+)?$/, '$1/3') });
    expect(broker.carriesWritesFor(otherDb.plainWrite({ taskUUID: 'u', taskName: 'n', state: 'PENDING' })!.store)).toBe(false);
    expect(otherDb.plainWrite({ taskUUID: 'u', taskName: 'n', state: 'STARTED' })).toBeUndefined();
    await otherDb.close();
    await backend.close();
  });

  it('publishBatchAfterWrite stores every write and task in order, a script call per chunk (a delayed one apart)', async () => {
    await redis.del(queue);
    const store = broker.store;
    const sigs = Array.from({ length: 250 }, (_, i) => newSignature({ Name: 'noop', UUID: `bulk_${randomUUID()}_${i}`, RoutingKey: queue }));
    sigs[5]!.ETA = new Date(Date.now() + 60_000).toISOString();
    const writes = sigs.map((s, i) => ({ store, key: s.UUID, value: `v${i}`, expireSeconds: 60 }));
    const recorded = recordCommands(broker.client);
    try {
      await broker.publishBatchAfterWrite(sigs, writes);
    } finally {
      recorded.stop();
    }
    expect(recorded.names().filter((c) => c !== 'eval')).toEqual(['set', 'zadd', 'evalsha', 'evalsha', 'evalsha']);
    expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual(writes.map((w) => w.value));
    const uuids = (await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID);
    expect(uuids).toEqual(sigs.filter((_, i) => i !== 5).map((s) => s.UUID));
    const member = (await redis.zrange('delayed_tasks', 0, -1)).find((m) => m.includes(sigs[5]!.UUID));
    expect(member).toBeDefined();
    await redis.zrem('delayed_tasks', member!);
  });

  it('publishBatchAfterWrite refuses a write it cannot carry before sending anything, and one write per task', async () => {
    await redis.del(queue);
    const store = broker.store;
    const sigs = [0, 1, 2].map((i) => newSignature({ Name: 'noop', UUID: `refused_${randomUUID()}_${i}`, RoutingKey: queue }));
    const writes = sigs.map((s) => ({ store, key: s.UUID, value: 'v', expireSeconds: 60 }));
    await expect(broker.publishBatchAfterWrite(sigs, [writes[0]!, { ...writes[1]!, store: 'redis://127.0.0.1:1/0' }, writes[2]!])).rejects.toThrow(/not redis:\/\/127\.0\.0\.1:1\/0/);
    await expect(broker.publishBatchAfterWrite(sigs, [writes[0]!, { ...writes[1]!, expireSeconds: 0 }, writes[2]!])).rejects.toThrow(/at least 1; found 0/);
    await expect(broker.publishBatchAfterWrite(sigs, writes.slice(0, 2))).rejects.toThrow(/3 tasks and 2 writes/);
    await new Promise((r) => setTimeout(r, 20));
    expect(await redis.llen(queue)).toBe(0);
    expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual([null, null, null]);
  });

  it('publishBatchAfterWrite rejects when a task cannot be encoded; those before it are sent whole', async () => {
    await redis.del(queue);
    const store = broker.store;
    const circular: Record<string, WireValue> = {};
    circular.self = circular as unknown as WireValue;
    const sigs = [0, 1, 2].map((i) => newSignature({ Name: 'noop', UUID: `enc_${randomUUID()}_${i}`, RoutingKey: queue }));
    sigs[1]!.Headers = { trace: circular as unknown as WireValue };
    const writes = sigs.map((s) => ({ store, key: s.UUID, value: 'v', expireSeconds: 60 }));
    await expect(broker.publishBatchAfterWrite(sigs, writes)).rejects.toThrow(/circular/i);
    await new Promise((r) => setTimeout(r, 20));
    expect((await redis.lrange(queue, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID)).toEqual([sigs[0]!.UUID]);
    expect(await redis.mget(...sigs.map((s) => s.UUID))).toEqual(['v', null, null]);
  });
});
