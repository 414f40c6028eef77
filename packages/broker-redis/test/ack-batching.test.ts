import { randomUUID } from 'node:crypto';
import { newSignature } from '@machinery-ts/core';
import { collectDeliveries } from '@machinery-ts/contract-tests';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const queue = `mts_test_acks_${randomUUID()}`;
// Its own bookkeeping keys, so its default-lease brokers never hold the reaper turn other tests need.
const keyPrefix = `mts_test_${randomUUID()}:`;
let redis: Redis;
let broker: RedisBroker;

beforeAll(() => {
  redis = new Redis(url);
  broker = new RedisBroker({ url, defaultQueue: queue, keyPrefix });
});
afterAll(async () => {
  await broker.close();
  await redis.del(queue);
  await redis.quit();
});

describe('RedisBroker acks', () => {
  it('sends the acks of one turn as one call, and each resolves only once its message left the in-flight list', async () => {
    const n = 40;
    await broker.publishBatch(Array.from({ length: n }, (_, i) => newSignature({ Name: 'noop', UUID: `t${i}` })));
    const c = collectDeliveries();
    const sub = await broker.consume(queue, { prefetch: n, onDelivery: c.onDelivery, consumerTag: 'acks' });
    await c.until(n);
    const inflight = (await redis.keys(`${keyPrefix}inflight:acks:*`))[0] as string;
    expect(await redis.llen(inflight)).toBe(n);

    const calls: string[] = [];
    const client = broker.client;
    const lrem = client.lrem.bind(client);
    const evalsha = client.evalsha.bind(client);
    client.lrem = ((...a: Parameters<typeof lrem>) => (calls.push(`lrem ${String(a[0])}`), lrem(...a))) as typeof lrem;
    client.evalsha = ((...a: Parameters<typeof evalsha>) => (calls.push(`evalsha ${String(a[2])} ${a.length}`), evalsha(...a))) as typeof evalsha;
    try {
      await Promise.all(c.got.map((d) => d.settle({ kind: 'ack' })));
    } finally {
      client.lrem = lrem;
      client.evalsha = evalsha;
    }
    // Calls on the in-flight list (claims of new work name the queue first): sha, numkeys,
    // the in-flight key, then one argument per acked body.
    expect(calls.filter((call) => call.includes(inflight))).toEqual([`evalsha ${inflight} ${3 + n}`]);
    expect(await redis.llen(inflight)).toBe(0);

    // A lone ack is a plain LREM.
    await broker.publish(newSignature({ Name: 'noop', UUID: 'single' }));
    await c.until(n + 1);
    await c.got[n]?.settle({ kind: 'ack' });
    expect(await redis.llen(inflight)).toBe(0);
    await sub.stop();
  });

  it('an ack still gathering when the broker closes is sent before the unsettled rest goes back to the queue', async () => {
    const q2 = `${queue}_close`;
    const closing = new RedisBroker({ url, defaultQueue: q2, keyPrefix });
    await closing.publishBatch([newSignature({ Name: 'noop', UUID: 'acked' }), newSignature({ Name: 'noop', UUID: 'unsettled' })]);
    const c = collectDeliveries();
    await closing.consume(q2, { prefetch: 2, onDelivery: c.onDelivery, consumerTag: 'closing' });
    await c.until(2);
    const acked = c.got.find((d) => d.body.includes('"acked"'));
    const settling = acked?.settle({ kind: 'ack' });
    await closing.close();
    await settling;
    // Only the unsettled message is handed back; the acked one is not run again.
    const left = await redis.lrange(q2, 0, -1);
    await redis.del(q2);
    expect(left.map((b) => (JSON.parse(b) as { UUID: string }).UUID)).toEqual(['unsettled']);
  });
});
