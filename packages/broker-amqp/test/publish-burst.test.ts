import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import { newSignature } from '@machinery-ts/core';
import { describe, expect, it, vi } from 'vitest';
import { AmqpBroker } from '../src/index.js';

const url = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const run = promisify(execFile);

/** Channels open on the node, per connection, as RabbitMQ itself counts them. */
async function channelsPerConnection(): Promise<number[]> {
  const { stdout } = await run('bash', [join(root, 'scripts', 'rabbitmq.sh'), 'ctl', 'list_connections', '-q', 'channels'], { timeout: 60_000 });
  return stdout.split('\n').filter((l) => /^\d+$/.test(l.trim())).map(Number);
}

describe('a burst of first publishes', () => {
  it('shares one confirm channel and one queue declaration, and every message arrives', async () => {
    const X = `mts_test_${randomUUID()}`;
    const queue = `mts_test_q_${randomUUID()}`;
    const before = await channelsPerConnection();
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    const admin = await amqp.connect(url);
    try {
      await Promise.all(Array.from({ length: 300 }, (_, i) => broker.publish(newSignature({ Name: 'noop', UUID: `t${i}` }))));
      const after = await channelsPerConnection();
      // The broker's connection is the new one (admin has opened no channel yet).
      const opened = after.reduce((a, b) => a + b, 0) - before.reduce((a, b) => a + b, 0);
      expect(opened).toBe(1);
      const ch = await admin.createChannel();
      expect((await ch.checkQueue(queue)).messageCount).toBe(300);
      await ch.deleteQueue(queue);
      await ch.deleteExchange(X);
    } finally {
      await broker.close();
      await admin.close();
    }
  });
});

describe('a batch of publishes', () => {
  it('reaches the socket in a few writev calls rather than a write per message, and every message arrives', async () => {
    const X = `mts_test_${randomUUID()}`;
    const queue = `mts_test_q_${randomUUID()}`;
    const broker = new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue });
    const admin = await amqp.connect(url);
    try {
      await broker.publish(newSignature({ Name: 'warmup' }));
      // What the socket hands the kernel: one call per write(), or one per corked run of them.
      const socket = Socket.prototype as unknown as { _write(...a: unknown[]): void; _writev(...a: unknown[]): void };
      const writes = vi.spyOn(socket, '_write');
      const writevs = vi.spyOn(socket, '_writev');
      let calls: number;
      try {
        await broker.publishBatch(Array.from({ length: 1000 }, (_, i) => newSignature({ Name: 'noop', UUID: `t${i}` })));
        calls = writes.mock.calls.length + writevs.mock.calls.length;
      } finally {
        writes.mockRestore();
        writevs.mockRestore();
      }
      console.log(`1000 publishes: ${calls} socket writes`);
      // About 16 kB (the socket's high-water mark) per writev: some 30 for ~450 kB.
      expect(calls).toBeLessThan(200);
      const ch = await admin.createChannel();
      expect((await ch.checkQueue(queue)).messageCount).toBe(1001);
      await ch.deleteQueue(queue);
      await ch.deleteExchange(X);
    } finally {
      await broker.close();
      await admin.close();
    }
  });
});
