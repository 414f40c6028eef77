import { randomUUID } from 'node:crypto';
import { type Delivery, decodeSignature, formatRfc3339Nano, newSignature, newTaskUUID } from '@machinery-ts/core';
import { describe, expect, it, vi } from 'vitest';
import { collectDeliveries } from '@machinery-ts/contract-tests';
import { rabbitTestBed } from './support.js';
import { AmqpBroker } from '../src/index.js';

const bed = rabbitTestBed();
const { url, exchange: X, queues } = bed;
const q = (): string => {
  const name = `mts_test_q_${randomUUID()}`;
  queues.push(name);
  return name;
};



const GO_BODY =
  '{"UUID":"task_7a4f1a56-5f3e-4c6c-9d55-3f0c1f7f2e11","Name":"add","RoutingKey":"%Q%","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":[{"Name":"","Type":"int64","Value":1},{"Name":"","Type":"int64","Value":2}],"Headers":{},"Priority":5,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}';

describe('AMQP interop with Go Machinery', () => {
  it('consumes the exact bytes and properties a Go producer publishes', async () => {
    const queue = q();
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    try {
      const c = collectDeliveries();
      await broker.consume(queue, { prefetch: 3, onDelivery: c.onDelivery });
      const ch = await bed.admin.createConfirmChannel();
      const body = GO_BODY.replace('%Q%', queue);
      await new Promise<void>((resolve, reject) =>
        ch.publish(X, queue, Buffer.from(body), { contentType: 'application/json', deliveryMode: 2, priority: 5, headers: {} }, (err) =>
          err ? reject(err) : resolve(),
        ),
      );
      await ch.close();
      await c.until(1);
      const d = c.got[0] as Delivery;
      expect(d.body).toBe(body);
      expect(d.queue).toBe(queue);
      expect(decodeSignature(d.body).Name).toBe('add');
      await d.settle({ kind: 'ack' });
    } finally {
      await broker.close();
    }
  });

  it('declares queues exactly as Go does: Go first then ours, and ours first then Go (no 406)', async () => {
    const args = { 'x-max-priority': 10 };
    const goDeclare = async (name: string): Promise<void> => {
      const ch = await bed.admin.createChannel();
      await ch.assertExchange(X, 'direct', { durable: true, autoDelete: false, internal: false });
      await ch.assertQueue(name, { durable: true, autoDelete: false, exclusive: false, arguments: args });
      await ch.bindQueue(name, X, name, {});
      await ch.close();
    };
    // Go first.
    const a = q();
    await goDeclare(a);
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: a, defaultQueue: a, queueDeclareArgs: args });
    try {
      const c = collectDeliveries();
      await broker.consume(a, { prefetch: 1, onDelivery: c.onDelivery });
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'go-first', RoutingKey: a, Priority: 3 }));
      await c.until(1);
      await (c.got[0] as Delivery).settle({ kind: 'ack' });
      // Ours first.
      const b = q();
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'ours-first', RoutingKey: b }));
      await goDeclare(b);
      const ch = await bed.admin.createChannel();
      const msg = await ch.get(b, { noAck: true });
      await ch.close();
      expect(msg && decodeSignature(msg.content.toString()).Name).toBe('ours-first');
      expect(msg && msg.properties.contentType).toBe('application/json');
      expect(msg && msg.properties.deliveryMode).toBe(2);
    } finally {
      await broker.close();
    }
  });

  it("coexists with Go's delay queue declaration (delay.<ms>.<exchange>.<routingKey>)", async () => {
    const queue = q();
    const now = Date.now();
    const delayQueue = `delay.1000.${X}.${queue}`;
    queues.push(delayQueue);
    const ch = await bed.admin.createChannel();
    await ch.assertExchange(X, 'direct', { durable: true, autoDelete: false, internal: false });
    await ch.assertQueue(delayQueue, {
      durable: true,
      autoDelete: false,
      exclusive: false,
      // amqplib writes these as int32; Go writes int64. RabbitMQ accepts both.
      arguments: { 'x-dead-letter-exchange': X, 'x-dead-letter-routing-key': queue, 'x-message-ttl': 1000, 'x-expires': 2000 },
    });
    await ch.close();
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    try {
      const c = collectDeliveries();
      await broker.consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
      const spy = vi.spyOn(Date, 'now').mockReturnValue(now);
      const p = broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'delayed', RoutingKey: queue, ETA: formatRfc3339Nano(now + 1000) }));
      // The delay is computed synchronously-ish on the first tick(s); restore soon after.
      await new Promise((r) => setTimeout(r, 50));
      spy.mockRestore();
      await p;
      const check = await bed.admin.createChannel();
      const { messageCount } = await check.checkQueue(delayQueue);
      await check.close();
      expect(messageCount).toBe(1);
      await c.until(1, 10_000);
      expect(decodeSignature((c.got[0] as Delivery).body).Name).toBe('delayed');
      await (c.got[0] as Delivery).settle({ kind: 'ack' });
    } finally {
      vi.restoreAllMocks();
      await broker.close();
    }
  });

  it("declares delay queues as Go does: ours first then Go's exact args (int64), and Go's case B queue first then ours", async () => {
    const queue = q();
    const int64 = (value: number): { '!': 'int64'; value: number } => ({ '!': 'int64', value });
    const goDeclareDelay = async (name: string, args: Record<string, unknown>): Promise<void> => {
      const ch = await bed.admin.createChannel();
      await ch.assertExchange(X, 'direct', { durable: true, autoDelete: false, internal: false });
      await ch.assertQueue(name, { durable: true, autoDelete: false, exclusive: false, arguments: args });
      await ch.bindQueue(name, X, name, {});
      await ch.close();
    };
    // Case A, ours first: the queue is named after the delay, so the clock is held still while publishing.
    const delayQueue = `delay.1500.${X}.${queue}`;
    queues.push(delayQueue);
    const a = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    const now = Date.now();
    const spy = vi.spyOn(Date, 'now').mockReturnValue(now);
    try {
      await a.publish(newSignature({ UUID: newTaskUUID(), Name: 'a', RoutingKey: queue, ETA: formatRfc3339Nano(now + 1500) }));
    } finally {
      spy.mockRestore();
      await a.close();
    }
    await goDeclareDelay(delayQueue, {
      'x-dead-letter-exchange': X,
      'x-dead-letter-routing-key': queue,
      'x-message-ttl': int64(1500),
      'x-expires': int64(3000),
    });
    const check = await bed.admin.createChannel();
    expect((await check.checkQueue(delayQueue)).messageCount).toBe(1);
    await check.close();

    // Case B, Go first: its shared queue with the two dead-letter args, then our delayed publish.
    const shared = q();
    await goDeclareDelay(shared, { 'x-dead-letter-exchange': X, 'x-dead-letter-routing-key': queue });
    const b = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue, delayedQueue: shared });
    try {
      const c = collectDeliveries();
      await b.consume(queue, { prefetch: 2, onDelivery: c.onDelivery });
      await b.publish(newSignature({ UUID: newTaskUUID(), Name: 'b', RoutingKey: queue, ETA: formatRfc3339Nano(Date.now() + 300) }));
      await c.until(2, 10_000);
      expect(c.got.map((d) => decodeSignature(d.body).Name).sort()).toEqual(['a', 'b']);
      for (const d of c.got) await d.settle({ kind: 'ack' });
    } finally {
      await b.close();
    }
  });

  it('delivers a 1 s delayed task promptly after its ETA, not before', async () => {
    const queue = q();
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    try {
      const c = collectDeliveries();
      await broker.consume(queue, { prefetch: 5, onDelivery: c.onDelivery });
      const etas: number[] = [];
      for (let i = 0; i < 3; i++) {
        const eta = Date.now() + 1000;
        etas.push(eta);
        await broker.publish(newSignature({ UUID: newTaskUUID(), Name: `d${i}`, RoutingKey: queue, ETA: formatRfc3339Nano(eta) }));
      }
      await c.until(3, 10_000);
      for (let i = 0; i < 3; i++) {
        const d = c.got[i] as Delivery;
        const idx = Number(decodeSignature(d.body).Name.slice(1));
        const lateness = (c.at[i] as number) - (etas[idx] as number);
        expect(lateness).toBeGreaterThanOrEqual(-5);
        expect(lateness).toBeLessThan(1000);
        await d.settle({ kind: 'ack' });
      }
    } finally {
      await broker.close();
    }
  });

  it('consumes once per subscription even when consume() opens the connection (prefetch holds)', async () => {
    const queue = q();
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    try {
      const c = collectDeliveries();
      await broker.consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
      for (let i = 0; i < 3; i++) await broker.publish(newSignature({ UUID: newTaskUUID(), Name: `p${i}`, RoutingKey: queue }));
      await c.until(1);
      await new Promise((r) => setTimeout(r, 300));
      expect(c.got.length).toBe(1);
      await (c.got[0] as Delivery).settle({ kind: 'ack' });
      await c.until(2);
      await new Promise((r) => setTimeout(r, 200));
      expect(c.got.length).toBe(2);
    } finally {
      await broker.close();
    }
  });

  it('supports Go case B: one shared delayed queue with per-message expiration', async () => {
    const queue = q();
    const delayedQueue = q();
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue, delayedQueue });
    try {
      const c = collectDeliveries();
      await broker.consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
      const eta = Date.now() + 600;
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'caseB', RoutingKey: queue, ETA: formatRfc3339Nano(eta) }));
      const ch = await bed.admin.createChannel();
      const { messageCount } = await ch.checkQueue(delayedQueue);
      await ch.close();
      expect(messageCount).toBe(1);
      await c.until(1, 10_000);
      expect((c.at[0] as number) - eta).toBeGreaterThanOrEqual(-5);
      expect(decodeSignature((c.got[0] as Delivery).body).Name).toBe('caseB');
      await (c.got[0] as Delivery).settle({ kind: 'ack' });
    } finally {
      await broker.close();
    }
  });

  it('dead-letters into its own queue with the reason headers', async () => {
    const queue = q();
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    queues.push(broker.deadLetterQueueOf(queue));
    try {
      const c = collectDeliveries();
      await broker.consume(queue, { prefetch: 1, onDelivery: c.onDelivery });
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'bad', RoutingKey: queue }));
      await c.until(1);
      const body = (c.got[0] as Delivery).body;
      await (c.got[0] as Delivery).settle({ kind: 'dead-letter', reason: 'nope' });
      const ch = await bed.admin.createChannel();
      const msg = await ch.get(broker.deadLetterQueueOf(queue), { noAck: true });
      await ch.close();
      expect(msg && msg.content.toString()).toBe(body);
      expect(msg && msg.properties.headers?.['x-machinery-ts-reason']).toBe('nope');
      expect(msg && msg.properties.headers?.['x-machinery-ts-queue']).toBe(queue);
    } finally {
      await broker.close();
    }
  });
});
