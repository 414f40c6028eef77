import { randomUUID } from 'node:crypto';
import { formatRfc3339Nano, newSignature, parseRfc3339 } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectDeliveries } from '@machinery-ts/contract-tests';
import { RedisBroker } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const delayedTasksKey = `mts_test_delayed_${randomUUID()}`;
const keys: string[] = [delayedTasksKey];
const q = (): string => {
  const name = `mts_test_q_${randomUUID()}`;
  keys.push(name, `${name}:dead_letter`);
  return name;
};

// §13 of the reference: the exact bytes a Go producer RPUSHes.
const GO_BODY =
  '{"UUID":"task_64ef830e-3820-4cf7-9562-b746c5ec23f1","Name":"add","RoutingKey":"machinery_tasks","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":[{"Name":"","Type":"int64","Value":1},{"Name":"","Type":"int64","Value":1}],"Headers":{},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}';

let redis: Redis;
const brokers: RedisBroker[] = [];
const make = (opts: Partial<ConstructorParameters<typeof RedisBroker>[0]> = {}): RedisBroker => {
  const b = new RedisBroker({ url, leaseMs: 1000, reapIntervalMs: 300, delayedTasksKey, ...opts });
  brokers.push(b);
  return b;
};

beforeAll(() => {
  redis = new Redis(url);
});
afterAll(async () => {
  await Promise.allSettled(brokers.map((b) => b.close()));
  await redis.del(...keys);
  await redis.quit();
});


describe('Go interop (reference §13)', () => {
  it('delivers a Go-produced message byte for byte', async () => {
    const queue = q();
    const body = GO_BODY.replace('"RoutingKey":"machinery_tasks"', `"RoutingKey":"${queue}"`);
    await redis.rpush(queue, body);
    const c = collectDeliveries();
    await make().consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
    await c.until(1);
    expect(c.got[0]?.body).toBe(body);
    await c.got[0]?.settle({ kind: 'ack' });
    expect(await redis.llen(queue)).toBe(0);
  });

  it('publishes exactly the bytes a Go producer writes, to the default queue when no routing key', async () => {
    const queue = q();
    const broker = make({ defaultQueue: queue });
    const sig = newSignature({
      UUID: 'task_64ef830e-3820-4cf7-9562-b746c5ec23f1',
      Name: 'add',
      Args: [
        { Name: '', Type: 'int64', Value: 1 },
        { Name: '', Type: 'int64', Value: 1 },
      ],
    });
    await broker.publish(sig);
    expect(sig.RoutingKey).toBe(queue);
    expect(await redis.lrange(queue, 0, -1)).toEqual([GO_BODY.replace('"RoutingKey":"machinery_tasks"', `"RoutingKey":"${queue}"`)]);
  });

  it('puts a future ETA into the delayed ZSET with a nanosecond score, as Go does', async () => {
    const queue = q();
    const broker = make();
    const eta = formatRfc3339Nano(Date.now() + 3_600_000);
    await broker.publish(newSignature({ UUID: 'task_x', Name: 'add', RoutingKey: queue, ETA: eta }));
    const members = await redis.zrange(delayedTasksKey, 0, -1, 'WITHSCORES');
    expect(members[0]).toContain(`"ETA":"${eta}"`);
    expect(Number(members[1])).toBeCloseTo((parseRfc3339(eta) as number) * 1e6, -4);
    expect(await redis.llen(queue)).toBe(0);
    await redis.zrem(delayedTasksKey, members[0] as string);
  });

  it('moves a Go-written delayed member to its RoutingKey list when due', async () => {
    const queue = q();
    const body = GO_BODY.replace('"RoutingKey":"machinery_tasks"', `"RoutingKey":"${queue}"`);
    await redis.zadd(delayedTasksKey, String((Date.now() - 10) * 1e6), body);
    const c = collectDeliveries();
    await make().consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
    await c.until(1);
    expect(c.got[0]?.body).toBe(body);
    await c.got[0]?.settle({ kind: 'ack' });
  });

  it('dead-letters to <queue>:dead_letter with reason, queue and body', async () => {
    const queue = q();
    await redis.rpush(queue, 'not json');
    const c = collectDeliveries();
    await make().consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
    await c.until(1);
    await c.got[0]?.settle({ kind: 'dead-letter', reason: 'malformed' });
    const dl = await redis.lrange(`${queue}:dead_letter`, 0, -1);
    expect(dl.map((s) => JSON.parse(s))).toEqual([{ reason: 'malformed', queue, body: 'not json' }]);
  });

  it('close() returns unsettled deliveries to the head of the queue at once', async () => {
    const queue = q();
    await redis.rpush(queue, 'a', 'b', 'c');
    const c = collectDeliveries();
    const broker = make();
    await broker.consume(queue, { prefetch: 2, onDelivery: c.onDelivery });
    await c.until(2);
    await broker.close();
    expect(await redis.lrange(queue, 0, -1)).toEqual(['a', 'b', 'c']);
  });
});

describe('subscriptions', () => {
  it('stop() drops the lease; a later consume on the same broker still promotes delayed messages', async () => {
    const queue = q();
    const broker = make();
    const first = await broker.consume(queue, { prefetch: 1, onDelivery: () => {} });
    await first.stop();
    const ids = await redis.hkeys(broker.consumersKey);
    expect(ids.filter((id) => id.includes(queue))).toEqual([]);
    expect(await redis.hvals(broker.consumersKey)).not.toContain(queue);
    const c = collectDeliveries();
    await broker.consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
    await broker.publish(newSignature({ UUID: 'task_later', Name: 'd', RoutingKey: queue, ETA: formatRfc3339Nano(Date.now() + 200) }));
    await c.until(1);
    await c.got[0]?.settle({ kind: 'ack' });
  });
});

describe('reconnection', () => {
  it('keeps consuming after its connections are killed server-side; a user client stays open on close', async () => {
    const name = `mts_test_${randomUUID().slice(0, 8)}`;
    const client = new Redis(url, { connectionName: name });
    const queue = q();
    const broker = make({ client });
    const c = collectDeliveries();
    const errors: Error[] = [];
    await broker.consume(queue, { prefetch: 5, onDelivery: c.onDelivery, onError: (e) => errors.push(e) });
    await redis.rpush(queue, 'before');
    await c.until(1);
    const list = await redis.client('LIST');
    const ids = String(list)
      .split('\n')
      .filter((line) => line.includes(` name=${name} `))
      .map((line) => /id=(\d+)/.exec(line)?.[1] as string);
    expect(ids.length).toBeGreaterThanOrEqual(2);
    for (const id of ids) await redis.client('KILL', 'ID', id);
    await broker.publish(newSignature({ UUID: 'task_after', Name: 'x', RoutingKey: queue }));
    await c.until(2, 15_000);
    for (const d of c.got) await d.settle({ kind: 'ack' });
    expect(await redis.llen(queue)).toBe(0);
    await broker.close();
    expect(await client.ping()).toBe('PONG');
    await client.quit();
  });
});

describe('delayed tasks at scale', () => {
  it('delivers 500 delayed messages spread over 2 s close to their ETA', async () => {
    const queue = q();
    const producer = make();
    const consumer = make();
    const c = collectDeliveries();
    await consumer.consume(queue, {
      prefetch: 600,
      onDelivery: (d) => {
        c.onDelivery(d);
        void d.settle({ kind: 'ack' });
      },
    });
    const start = Date.now() + 300;
    const etaOf = new Map<string, number>();
    const sigs = Array.from({ length: 500 }, (_, i) => {
      const etaMs = start + (i * 2000) / 500;
      const uuid = `task_${randomUUID()}`;
      etaOf.set(uuid, etaMs);
      return newSignature({ UUID: uuid, Name: 'd', RoutingKey: queue, ETA: formatRfc3339Nano(etaMs) });
    });
    await producer.publishBatch(sigs);
    await c.until(500, 15_000);
    const lateness = c.got.map((d, i) => {
      const uuid = /"UUID":"([^"]+)"/.exec(d.body)?.[1] as string;
      return (c.at[i] as number) - (etaOf.get(uuid) as number);
    });
    lateness.sort((a, b) => a - b);
    const p50 = lateness[250] as number;
    const p99 = lateness[495] as number;
    const max = lateness[499] as number;
    console.log(`delayed lateness ms: min ${lateness[0]} p50 ${p50} p99 ${p99} max ${max}`);
    expect(lateness[0]).toBeGreaterThanOrEqual(-2);
    expect(max).toBeLessThan(500);
  });
});
