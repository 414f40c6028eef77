import * as net from 'node:net';
import { newSignature } from '@machinery-ts/core';
import { describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { brokerTestBed } from './support.js';

const { url, queue, redis } = brokerTestBed('timeout');

/** A loopback port nothing listens on: ioredis keeps reconnecting and holds the commands. */
async function deadPort(): Promise<number> {
  const server = net.createServer();
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)));
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('RedisBroker publish timeout', () => {
  it('rejects each publish Redis never answers, within publishTimeoutMs, with an error that says it may have been stored', async () => {
    const broker = new RedisBroker({ url: `redis://127.0.0.1:${await deadPort()}`, defaultQueue: 'nowhere', publishTimeoutMs: 200 });
    try {
      const started = Date.now();
      const outcomes = await Promise.allSettled([
        broker.publish(newSignature({ Name: 'a', UUID: 'a1' })),
        broker.publish(newSignature({ Name: 'a', UUID: 'a2', RoutingKey: 'elsewhere' })),
        // Delayed: a ZADD rather than the push script.
        broker.publish(newSignature({ Name: 'a', UUID: 'a3', ETA: new Date(Date.now() + 60_000).toISOString() })),
      ]);
      for (const o of outcomes) {
        expect(o.status).toBe('rejected');
        expect(String((o as PromiseRejectedResult).reason)).toMatch(/not confirmed within 200 ms .*may or may not have been stored/);
      }
      // Not before the deadline (the upper side is left to the machine's mood).
      expect(Date.now() - started).toBeGreaterThanOrEqual(195);
    } finally {
      await broker.disconnectAbruptly();
    }
  });

  it('close() on a Redis that never answered ends after at most publishTimeoutMs (it took ~45 s, ioredis giving up on each call)', async () => {
    const broker = new RedisBroker({ url: `redis://127.0.0.1:${await deadPort()}`, defaultQueue: 'nowhere', publishTimeoutMs: 300 });
    const sent = broker.publish(newSignature({ Name: 'a', UUID: 'c1' })).catch((e: unknown) => String(e));
    await broker.close();
    expect(await sent).toMatch(/not confirmed within 300 ms/);
  }, 10_000);

  it('leaves answered publishes alone: a broker that sent them long ago still resolves the next one', async () => {
    const broker = new RedisBroker({ url, defaultQueue: queue, publishTimeoutMs: 100 });
    try {
      await broker.publish(newSignature({ Name: 'a', UUID: 'b1' }));
      // Several watchdog checks pass with nothing overdue.
      await new Promise((r) => setTimeout(r, 250));
      await broker.publish(newSignature({ Name: 'a', UUID: 'b2' }));
      expect(await redis.llen(queue)).toBe(2);
    } finally {
      await broker.close();
    }
  });
});
