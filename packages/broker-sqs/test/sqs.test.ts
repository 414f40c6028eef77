import { randomUUID } from 'node:crypto';
import { CreateQueueCommand, type DeleteMessageBatchCommandOutput, DeleteQueueCommand, ReceiveMessageCommand, SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { type Delivery, type Signature, decodeSignature, encodeSignature, formatRfc3339Nano, newSignature, newTaskUUID } from '@machinery-ts/core';
import { afterEach, describe, expect, it } from 'vitest';
import { deadLetterQueueName, type SqsBroker } from '../src/index.js';
import { brokerUrl, makeBroker, newClient } from './helpers.js';

const opened: SqsBroker[] = [];
const clients: SQSClient[] = [];
function broker(extra: Parameters<typeof makeBroker>[0] = {}): SqsBroker {
  const b = makeBroker(extra);
  opened.push(b);
  return b;
}
function client(): SQSClient {
  const c = newClient();
  clients.push(c);
  return c;
}
afterEach(async () => {
  await Promise.allSettled(opened.splice(0).map((b) => b.close()));
  for (const c of clients.splice(0)) c.destroy();
});

const name = (suffix = ''): string => `sqs_${randomUUID()}${suffix}`;

function collect() {
  const got: Delivery[] = [];
  return {
    got,
    onDelivery: (d: Delivery) => void got.push(d),
    async until(n: number, timeoutMs = 15_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (got.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} deliveries, got ${got.length}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

/** Counts SQS API calls by command name. */
function countCalls(b: SqsBroker): Record<string, number> {
  const counts: Record<string, number> = {};
  b.client.middlewareStack.add(
    (next, context) => async (args) => {
      const cmd = (context as { commandName?: string }).commandName ?? '?';
      counts[cmd] = (counts[cmd] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize' },
  );
  return counts;
}

describe('SqsBroker', () => {
  it('builds queue URLs as Go does', () => {
    const b = broker({ brokerUrl: 'https://sqs.foo.amazonaws.com.cn' });
    expect(b.queueUrl('test_queue')).toBe('https://sqs.foo.amazonaws.com.cn/test_queue');
    expect(deadLetterQueueName('q')).toBe('q-dead-letter');
    expect(deadLetterQueueName('q.fifo')).toBe('q-dead-letter.fifo');
  });

  it('standard round trip: Go body with RoutingKey "" then adjusted to the default queue', async () => {
    const q = name();
    const b = broker({ defaultQueue: q });
    const calls = countCalls(b);
    const sig = newSignature({ UUID: newTaskUUID(), Name: 'add', Args: [{ Name: '', Type: 'int64', Value: 1 }] });
    const expected = encodeSignature(sig);
    const c = collect();
    await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
    await b.publish(sig);
    expect(sig.RoutingKey).toBe(q);
    await c.until(1);
    const d = c.got[0] as Delivery;
    expect(d.body).toBe(expected);
    expect(decodeSignature(d.body).RoutingKey).toBe('');
    expect(d.deliveryCount).toBe(1);
    await d.settle({ kind: 'ack' });
    expect(calls.SendMessageCommand).toBe(1);
    expect(calls.DeleteMessageBatchCommand).toBe(1);
    expect(calls.DeleteMessageCommand).toBeUndefined();
    console.log('SQS calls for one task (publish, receive, ack):', JSON.stringify(calls));
  });

  it('FIFO round trip with the group id; a FIFO publish without one is a clear error', async () => {
    const q = name('.fifo');
    const b = broker({ defaultQueue: q });
    const sig = newSignature({ UUID: newTaskUUID(), Name: 'add', BrokerMessageGroupId: 'g1' });
    const expected = encodeSignature(sig);
    const c = collect();
    await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
    await b.publish(sig);
    await c.until(1);
    expect((c.got[0] as Delivery).body).toBe(expected);
    await (c.got[0] as Delivery).settle({ kind: 'ack' });
    await expect(b.publish(newSignature({ UUID: newTaskUUID(), Name: 'add', RoutingKey: q }))).rejects.toThrow(/BrokerMessageGroupId/);
  });

  it('a FIFO retry (same UUID, RetryCount decremented) is not deduplicated away; an identical re-publish is', async () => {
    const q = name('.fifo');
    const b = broker();
    const first = newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q, BrokerMessageGroupId: 'g', RetryCount: 3 });
    const again: Signature = { ...first };
    const retry: Signature = { ...first, RetryCount: 2 };
    await b.publish(first);
    await b.publish(again);
    await b.publish(retry);
    const c = collect();
    await b.consume(q, { prefetch: 5, onDelivery: c.onDelivery });
    await c.until(1);
    await (c.got[0] as Delivery).settle({ kind: 'ack' });
    await c.until(2);
    await (c.got[1] as Delivery).settle({ kind: 'ack' });
    await new Promise((r) => setTimeout(r, 1500));
    expect(c.got.map((d) => decodeSignature(d.body).RetryCount)).toEqual([3, 2]);
  });

  it('honours an ETA beyond the hop length by hopping', async () => {
    const q = name();
    const b = broker({ maxDelaySeconds: 1 });
    const calls = countCalls(b);
    const c = collect();
    await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
    const start = Date.now();
    await b.publish(newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q, ETA: formatRfc3339Nano(start + 3000) }));
    await c.until(1, 15_000);
    const took = Date.now() - start;
    expect(took).toBeGreaterThanOrEqual(2950);
    expect(took).toBeLessThan(6000);
    expect(calls.SendMessageCommand ?? 0).toBeGreaterThanOrEqual(2); // the publish and at least one hop
    await (c.got[0] as Delivery).settle({ kind: 'ack' });
  });

  it('FIFO: an ETA is honoured (Go ignores it) by holding the message invisible', async () => {
    const q = name('.fifo');
    const b = broker();
    const c = collect();
    await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
    const start = Date.now();
    await b.publish(newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q, BrokerMessageGroupId: 'g', ETA: formatRfc3339Nano(start + 2000) }));
    await c.until(1, 15_000);
    expect(Date.now() - start).toBeGreaterThanOrEqual(1950);
    await (c.got[0] as Delivery).settle({ kind: 'ack' });
  });

  it('a task running 3x the visibility timeout is not redelivered while extend() is called', async () => {
    const q = name();
    const a = broker(); // visibility 2 s
    const other = broker();
    await a.publish(newSignature({ UUID: newTaskUUID(), Name: 'slow', RoutingKey: q }));
    const ca = collect();
    await a.consume(q, { prefetch: 1, onDelivery: ca.onDelivery });
    await ca.until(1);
    const d = ca.got[0] as Delivery;
    const cb = collect();
    await other.consume(q, { prefetch: 1, onDelivery: cb.onDelivery });
    // The worker's rhythm: extend at half the redelivery timeout.
    const every = a.capabilities.redeliveryTimeoutMs / 2;
    const timer = setInterval(() => void d.extend?.(), every);
    await new Promise((r) => setTimeout(r, 3 * a.capabilities.redeliveryTimeoutMs));
    clearInterval(timer);
    expect(cb.got.length).toBe(0);
    expect(ca.got.length).toBe(1);
    await d.settle({ kind: 'ack' });
    await new Promise((r) => setTimeout(r, 2500));
    expect(cb.got.length).toBe(0);
  });

  it('a poison message settled as dead-letter lands in the dead-letter queue with its reason', async () => {
    const q = name();
    const b = broker();
    await b.ensureQueue(q);
    const raw = '{"UUID": "task_x", "Name": '; // malformed JSON from a foreign producer
    const sqs = client();
    await sqs.send(new SendMessageCommand({ QueueUrl: b.queueUrl(q), MessageBody: raw }));
    const c = collect();
    await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
    await c.until(1);
    const d = c.got[0] as Delivery;
    expect(d.body).toBe(raw);
    await d.settle({ kind: 'dead-letter', reason: 'Malformed task message: bad JSON' });
    const dlqUrl = `${brokerUrl}/${deadLetterQueueName(q)}`;
    const res = await sqs.send(new ReceiveMessageCommand({ QueueUrl: dlqUrl, WaitTimeSeconds: 2, MessageAttributeNames: ['All'] }));
    expect(res.Messages?.[0]?.Body).toBe(raw);
    expect(res.Messages?.[0]?.MessageAttributes?.reason?.StringValue).toBe('Malformed task message: bad JSON');
    expect(res.Messages?.[0]?.MessageAttributes?.['source-queue']?.StringValue).toBe(q);
    await new Promise((r) => setTimeout(r, 2500)); // past the visibility timeout: deleted, not back
    expect(c.got.length).toBe(1);
  });

  it('publishBatch sends more than 10 messages in chunks', async () => {
    const q = name();
    const b = broker();
    const calls = countCalls(b);
    await b.publishBatch(Array.from({ length: 23 }, (_, i) => newSignature({ UUID: newTaskUUID(), Name: `t${i}`, RoutingKey: q })));
    expect(calls.SendMessageBatchCommand).toBe(3);
    const c = collect();
    await b.consume(q, { prefetch: 30, onDelivery: c.onDelivery });
    await c.until(23);
    expect(new Set(c.got.map((d) => decodeSignature(d.body).Name)).size).toBe(23);
    await Promise.all(c.got.map((d) => d.settle({ kind: 'ack' })));
  });

  it('keeps polling after errors and reports them', async () => {
    const q = name();
    const b = broker({ createQueues: false });
    const errors: Error[] = [];
    const c = collect();
    const sub = await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery, onError: (e) => errors.push(e) });
    const deadline = Date.now() + 5000;
    while (errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(errors[0]?.name).toBe('QueueDoesNotExist');
    await client().send(new CreateQueueCommand({ QueueName: q }));
    await b.publish(newSignature({ UUID: newTaskUUID(), Name: 'late', RoutingKey: q }));
    await c.until(1, 20_000);
    await (c.got[0] as Delivery).settle({ kind: 'ack' });
    await sub.stop();
  });
});

describe('SqsBroker stop', () => {
  it('stop() aborts a 20 s long poll at once and delivers nothing afterwards', async () => {
    const q = name();
    const b = broker({ waitTimeSeconds: 20 });
    const c = collect();
    const sub = await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
    await new Promise((r) => setTimeout(r, 300)); // the poll is in flight
    const t0 = Date.now();
    await sub.stop();
    expect(Date.now() - t0).toBeLessThan(2000);
    await b.publish(newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q }));
    await new Promise((r) => setTimeout(r, 1500));
    expect(c.got.length).toBe(0);
    // Still there for another consumer.
    const c2 = collect();
    await b.consume(q, { prefetch: 1, onDelivery: c2.onDelivery });
    await c2.until(1);
    await (c2.got[0] as Delivery).settle({ kind: 'ack' });
  });
});

describe('SqsBroker batched deletes', () => {
  it('acks settled together share DeleteMessageBatch calls of up to 10, and the messages are gone', async () => {
    const q = name();
    const b = broker();
    await b.publishBatch(Array.from({ length: 25 }, (_, i) => newSignature({ UUID: newTaskUUID(), Name: `t${i}`, RoutingKey: q })));
    const c = collect();
    await b.consume(q, { prefetch: 30, onDelivery: c.onDelivery });
    await c.until(25);
    const calls = countCalls(b);
    await Promise.all(c.got.map((d) => d.settle({ kind: 'ack' })));
    expect(calls.DeleteMessageBatchCommand).toBe(3);
    expect(calls.DeleteMessageCommand).toBeUndefined();
    await new Promise((r) => setTimeout(r, 2500)); // past the 2 s visibility timeout
    expect(c.got.length).toBe(25);
  });

  it('deleteBatchWindowMs 0 deletes one message per DeleteMessage, as Go does', async () => {
    const q = name();
    const b = broker({ deleteBatchWindowMs: 0 });
    await b.publishBatch(Array.from({ length: 3 }, () => newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q })));
    const c = collect();
    await b.consume(q, { prefetch: 5, onDelivery: c.onDelivery });
    await c.until(3);
    const calls = countCalls(b);
    await Promise.all(c.got.map((d) => d.settle({ kind: 'ack' })));
    expect(calls.DeleteMessageCommand).toBe(3);
    expect(calls.DeleteMessageBatchCommand).toBeUndefined();
  });

  it('a failed batch entry rejects only its own settle, and that message comes back', async () => {
    const q = name();
    const b = broker();
    await b.publishBatch(Array.from({ length: 10 }, (_, i) => newSignature({ UUID: newTaskUUID(), Name: `t${i}`, RoutingKey: q })));
    const c = collect();
    await b.consume(q, { prefetch: 10, onDelivery: c.onDelivery });
    await c.until(10);
    // fauxqs reports every delete entry as successful, even a bad handle (as AWS does for
    // DeleteMessage), so the failure AWS returns for a malformed handle is injected at the
    // SDK boundary: entry "0" really is not deleted, and the reply says so.
    b.client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { Entries?: { Id?: string; ReceiptHandle?: string }[] };
        const first = input.Entries?.find((e) => e.Id === '0');
        if ((context as { commandName?: string }).commandName !== 'DeleteMessageBatchCommand' || !first) return next(args);
        first.ReceiptHandle = 'not-a-receipt-handle';
        const res = await next(args);
        const out = res.output as DeleteMessageBatchCommandOutput;
        out.Successful = (out.Successful ?? []).filter((e) => e.Id !== '0');
        out.Failed = [{ Id: '0', Code: 'ReceiptHandleIsInvalid', Message: 'The input receipt handle is invalid.', SenderFault: true }];
        return res;
      },
      { step: 'initialize', name: 'failFirstDelete' },
    );
    const results = await Promise.allSettled(c.got.map((d) => d.settle({ kind: 'ack' })));
    const rejected = results.flatMap((r, i) => (r.status === 'rejected' ? [{ i, reason: r.reason as Error }] : []));
    expect(rejected).toHaveLength(1);
    expect(rejected[0]?.reason.message).toMatch(/ReceiptHandleIsInvalid/);
    const failedBody = c.got[rejected[0]?.i ?? -1]?.body;
    await c.until(11, 10_000); // back after the 2 s visibility timeout
    expect(c.got[10]?.body).toBe(failedBody);
    expect(c.got[10]?.deliveryCount).toBe(2);
    b.client.middlewareStack.remove('failFirstDelete');
    await (c.got[10] as Delivery).settle({ kind: 'ack' });
  });

  it('close() sends acks still waiting for their batch before the client goes', async () => {
    const q = name();
    const b = broker({ deleteBatchWindowMs: 120_000 }); // a window this test would never see end
    await b.publish(newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q }));
    const c = collect();
    await b.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
    await c.until(1);
    const settled = (c.got[0] as Delivery).settle({ kind: 'ack' });
    await b.close();
    await settled;
    const other = broker();
    const c2 = collect();
    await other.consume(q, { prefetch: 1, onDelivery: c2.onDelivery });
    await new Promise((r) => setTimeout(r, 2500)); // past the 2 s visibility timeout
    expect(c2.got.length).toBe(0);
  });

  it('a DeleteMessageBatch call that fails rejects every settle it carried', async () => {
    const q = name();
    const b = broker();
    await b.publishBatch(Array.from({ length: 3 }, () => newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q })));
    const c = collect();
    const sub = await b.consume(q, { prefetch: 3, onDelivery: c.onDelivery });
    await c.until(3);
    await sub.stop();
    await client().send(new DeleteQueueCommand({ QueueUrl: b.queueUrl(q) }));
    const results = await Promise.allSettled(c.got.map((d) => d.settle({ kind: 'ack' })));
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(((results[0] as PromiseRejectedResult).reason as Error).name).toBe('QueueDoesNotExist');
  });
});
