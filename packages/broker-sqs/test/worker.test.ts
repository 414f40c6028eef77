import { ReceiveMessageCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import { MemoryBackend, Server, newSignature, newTaskUUID } from '@machinery-ts/core';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { deadLetterQueueName } from '../src/index.js';
import { makeBroker, newClient } from './helpers.js';

describe('SqsBroker with the core worker', () => {
  it('runs a task lasting 3x the visibility timeout once (heartbeat), and dead-letters a poison message', async () => {
    const q = `sqs_${randomUUID()}`;
    const broker = makeBroker({ defaultQueue: q }); // visibility 2 s
    const server = new Server({ broker, backend: new MemoryBackend(), defaultQueue: q });
    let runs = 0;
    server.registerTask('slow', async () => {
      runs += 1;
      await new Promise((r) => setTimeout(r, 6000));
      return 'done';
    });
    const errors: Error[] = [];
    const worker = server.newWorker({ handleSignals: false, concurrency: 2, onError: (e) => errors.push(e) });
    await worker.start();
    const sqs = newClient();
    try {
      const r = await server.sendTask(newSignature({ UUID: newTaskUUID(), Name: 'slow' }));
      await sqs.send(new SendMessageCommand({ QueueUrl: broker.queueUrl(q), MessageBody: 'not json at all' }));
      expect(await r.get({ timeoutMs: 20_000 })).toEqual(['done']);
      expect(runs).toBe(1);
      const dlq = await sqs.send(new ReceiveMessageCommand({ QueueUrl: broker.queueUrl(deadLetterQueueName(q)), WaitTimeSeconds: 5, MessageAttributeNames: ['All'] }));
      expect(dlq.Messages?.[0]?.Body).toBe('not json at all');
      expect(dlq.Messages?.[0]?.MessageAttributes?.reason?.StringValue).toMatch(/Malformed|JSON/i);
      await new Promise((r) => setTimeout(r, 2500)); // a redelivery would have come by now
      expect(runs).toBe(1);
    } finally {
      await worker.stop();
      await server.close();
      sqs.destroy();
    }
  });
});
