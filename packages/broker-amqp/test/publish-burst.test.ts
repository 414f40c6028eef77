import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import { newSignature } from '@machinery-ts/core';
import { describe, expect, it } from 'vitest';
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
