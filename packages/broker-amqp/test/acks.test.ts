import { randomUUID } from 'node:crypto';
import type { Channel } from 'amqplib';
import { type Delivery, decodeSignature, newSignature } from '@machinery-ts/core';
import { describe, expect, it, vi } from 'vitest';
import { rabbitTestBed } from './support.js';
import { AmqpBroker } from '../src/index.js';

// Acks are gathered per event-loop turn and sent as one `multiple` ack where a settled prefix
// allows. RabbitMQ closes the channel on an ack of an unknown or already-acked tag, so these
// settle in awkward orders and then check that nothing was lost, kept, or redelivered.

const bed = rabbitTestBed();
const { url, exchange: X, queues } = bed;

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

const until = async (what: string, ok: () => boolean, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** A broker with `n` messages published to a fresh queue, consuming it with `prefetch`. */
async function consuming(n: number, prefetch: number) {
  const queue = `mts_test_q_${randomUUID()}`;
  const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
  queues.push(queue, broker.deadLetterQueueOf(queue));
  await broker.publishBatch(Array.from({ length: n }, (_, i) => newSignature({ Name: 'noop', UUID: `t${i}` })));
  const deliveries: Delivery[] = [];
  const errors: Error[] = [];
  const sub = await broker.consume(queue, { prefetch, onDelivery: (d) => deliveries.push(d), onError: (e) => errors.push(e) });
  return { queue, broker, sub, deliveries, errors };
}

/** Ready messages once the broker's connection is gone and its unacked ones are back. */
async function leftIn(queue: string): Promise<number> {
  await new Promise((r) => setTimeout(r, 300));
  const ch = await bed.admin.createChannel();
  try {
    return (await ch.checkQueue(queue)).messageCount;
  } finally {
    await ch.close();
  }
}

const uuid = (d: Delivery): string => decodeSignature(d.body).UUID;
const channelOf = (d: Delivery): Channel => (d as unknown as { channel: Channel }).channel;

describe('AMQP acks gathered per turn', () => {
  it('settles out of order, with a requeue and a dead-letter among the acks: each message leaves exactly once', async () => {
    const { queue, broker, deliveries, errors } = await consuming(60, 60);
    try {
      await until('60 deliveries', () => deliveries.length === 60);
      const first = deliveries.slice();
      const acks = vi.spyOn(channelOf(first[0]!), 'ack');
      const settling: Promise<void>[] = [];
      // Turn 1: every odd one of the first half, each above an open delivery, so none may be covered by another.
      for (let i = 1; i < 30; i += 2) settling.push(first[i]!.settle({ kind: 'ack' }));
      await turn();
      // Turn 2: the evens close the gaps, around a requeue and a dead-letter.
      settling.push(first[4]!.settle({ kind: 'requeue' }));
      settling.push(first[6]!.settle({ kind: 'dead-letter', reason: 'test' }));
      for (let i = 0; i < 30; i += 2) if (i !== 4 && i !== 6) settling.push(first[i]!.settle({ kind: 'ack' }));
      await Promise.all(settling);
      // Turn 3: fifteen in reverse order, all above a settled prefix: one multiple ack covers them.
      const before = acks.mock.calls.length;
      const block = first.slice(30, 45);
      await Promise.all(block.reverse().map((d) => d.settle({ kind: 'ack' })));
      expect(acks.mock.calls.slice(before).map((c) => [c[0], c[1]])).toEqual([[(first[44] as unknown as { msg: unknown }).msg, true]]);
      // Then the rest in a scrambled order over several turns, each settled twice.
      const rest = first.slice(45).sort(() => Math.random() - 0.5);
      for (let i = 0; i < rest.length; i++) {
        settling.push(rest[i]!.settle({ kind: 'ack' }));
        settling.push(rest[i]!.settle({ kind: 'ack' }));
        if (i % 4 === 0) await turn();
      }
      await Promise.all(settling);
      await until('the requeued message back', () => deliveries.length === 61);
      const again = deliveries[60]!;
      expect(uuid(again)).toBe(uuid(first[4]!));
      expect(again.deliveryCount).toBe(2);
      await again.settle({ kind: 'ack' });
    } finally {
      await broker.close();
    }
    expect(errors).toEqual([]);
    expect(await leftIn(queue)).toBe(0);
    const ch = await bed.admin.createChannel();
    expect((await ch.checkQueue(broker.deadLetterQueueOf(queue))).messageCount).toBe(1);
    await ch.close();
  });

  it('does not hold back acks behind a delivery still running: the prefetch window moves on', async () => {
    const { queue, broker, deliveries, errors } = await consuming(20, 10);
    try {
      await until('10 deliveries', () => deliveries.length === 10);
      await new Promise((r) => setTimeout(r, 100));
      expect(deliveries.length).toBe(10);
      // The oldest stays open, as a long task would.
      for (const d of deliveries.slice(1)) void d.settle({ kind: 'ack' });
      await until('the next 9 deliveries', () => deliveries.length === 19);
      for (const d of deliveries.slice(10)) void d.settle({ kind: 'ack' });
      await until('the last delivery', () => deliveries.length === 20);
      await Promise.all(deliveries.map((d) => d.settle({ kind: 'ack' })));
    } finally {
      await broker.close();
    }
    expect(errors).toEqual([]);
    expect(await leftIn(queue)).toBe(0);
  });

  it('sends the acks of the current turn before close() closes the connection', async () => {
    const { queue, broker, deliveries, errors } = await consuming(30, 30);
    await until('30 deliveries', () => deliveries.length === 30);
    for (const d of deliveries) void d.settle({ kind: 'ack' });
    await broker.close();
    expect(errors).toEqual([]);
    expect(await leftIn(queue)).toBe(0);
  });

  it('settles deliveries of a channel that died without touching the new one: they come back instead', async () => {
    const { queue, broker, deliveries, errors } = await consuming(10, 10);
    try {
      await until('10 deliveries', () => deliveries.length === 10);
      await channelOf(deliveries[0]!).close();
      // Their tags mean nothing on the channel the subscription opens next; sending them there would be a 406.
      const old = deliveries.slice(0, 10).map((d) => d.settle({ kind: 'ack' }));
      await Promise.all(old);
      await until('ten redeliveries', () => deliveries.length === 20, 5_000);
      expect(deliveries.slice(10).every((d) => d.deliveryCount === 2)).toBe(true);
      await Promise.all(deliveries.slice(10).map((d) => d.settle({ kind: 'ack' })));
    } finally {
      await broker.close();
    }
    expect(errors).toEqual([]);
    expect(await leftIn(queue)).toBe(0);
  });
});
