import { randomUUID } from 'node:crypto';
import * as net from 'node:net';
import amqp from 'amqplib';
import { type Delivery, decodeSignature, newSignature, newTaskUUID } from '@machinery-ts/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AmqpBroker } from '../src/index.js';

const url = new URL(process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/');
const X = `mts_test_${randomUUID()}`;
const Q = `mts_test_q_${randomUUID()}`;
const Q2 = `mts_test_q_${randomUUID()}`;

/** A TCP proxy in front of RabbitMQ that can cut every connection and refuse new ones for a while. */
function proxy() {
  const sockets = new Set<net.Socket>();
  let down = false;
  const pairs = new Map<net.Socket, net.Socket>();
  let onServerData: ((chunk: Buffer) => void) | null = null;
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(url.port || 5672), url.hostname);
    sockets.add(client);
    sockets.add(upstream);
    pairs.set(client, upstream);
    client.pipe(upstream).pipe(client);
    upstream.on('data', (chunk: Buffer) => onServerData?.(chunk));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
      pairs.delete(client);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  return {
    server,
    listen: () => new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port))),
    outage(ms: number): void {
      down = true;
      for (const s of sockets) s.destroy();
      setTimeout(() => (down = false), ms);
    },
    /**
     * Passes on at most `bytes` more of what each client sends and drops the rest (servers still
     * answer), until the next outage. Counting bytes rather than waiting for some reply keeps
     * the split independent of how much the kernel's socket buffers had already taken in.
     */
    passClientBytes(bytes: number): void {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        let left = bytes;
        client.on('data', (chunk: Buffer) => {
          if (left <= 0) return;
          upstream.write(chunk.subarray(0, left));
          left -= chunk.length;
        });
        client.resume(); // unpipe left it paused, and a 'data' listener does not undo that
      }
    },
    /** Runs `fn` once, on the first bytes back from the server that contain `bytes`. */
    onceServerSends(bytes: Buffer, fn: () => void): void {
      onServerData = (chunk) => {
        if (!chunk.includes(bytes)) return;
        onServerData = null;
        fn();
      };
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('AMQP reconnection', () => {
  const p = proxy();
  let proxied = '';
  beforeAll(async () => {
    const port = await p.listen();
    const u = new URL(url.toString());
    u.port = String(port);
    proxied = u.toString();
  });
  afterAll(async () => {
    await p.close();
    const conn = await amqp.connect(url.toString());
    const ch = await conn.createChannel();
    await ch.deleteQueue(Q).catch(() => {});
    await ch.deleteQueue(Q2).catch(() => {});
    await ch.deleteExchange(X).catch(() => {});
    await conn.close();
  });

  it('resumes consuming and publishing after the connection drops; old deliveries settle harmlessly', async () => {
    const errors: Error[] = [];
    const broker = new AmqpBroker({ url: proxied, exchange: X, bindingKey: Q, defaultQueue: Q, publishTimeoutMs: 15_000 });
    try {
      const got: Delivery[] = [];
      await broker.consume(Q, { prefetch: 2, onDelivery: (d) => got.push(d), onError: (e) => errors.push(e) });
      const until = async (n: number): Promise<void> => {
        const deadline = Date.now() + 15_000;
        while (got.length < n) {
          if (Date.now() > deadline) throw new Error(`expected ${n} deliveries, got ${got.length}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'before', RoutingKey: Q }));
      await until(1);
      const old = got[0] as Delivery;

      p.outage(1000);
      const t0 = Date.now();
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'during', RoutingKey: Q }));
      expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
      await old.settle({ kind: 'ack' }); // its channel is gone: resolves, the server redelivers it

      await until(3);
      const names = got.slice(1).map((d) => decodeSignature(d.body).Name).sort();
      expect(names).toEqual(['before', 'during']);
      const again = got.slice(1).find((d) => decodeSignature(d.body).Name === 'before') as Delivery;
      expect(again.deliveryCount).toBe(2);
      for (const d of got.slice(1)) await d.settle({ kind: 'ack' });
      expect(errors.some((e) => e.message.includes('guest:guest'))).toBe(false);
    } finally {
      await broker.close();
    }
  });

  it('never drops a publish that was in flight when the connection was cut: it is confirmed later or rejected', async () => {
    const broker = new AmqpBroker({ url: proxied, exchange: X, bindingKey: Q2, defaultQueue: Q2, publishTimeoutMs: 15_000 });
    try {
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'warmup', RoutingKey: Q2 }));
      // ~8 MB in the pipeline, so the first confirm arrives long before the last message is sent.
      const pad = [{ Name: '', Type: 'string', Value: 'x'.repeat(20_000) }];
      const uuids = Array.from({ length: 400 }, () => newTaskUUID());
      let confirmed = 0;
      let cutWith = -1;
      const after: string[] = [];
      const pending = uuids.map((UUID) =>
        broker.publish(newSignature({ UUID, Name: 'inflight', RoutingKey: Q2, Args: pad })).then(() => {
          confirmed += 1;
          if (cutWith < 0) {
            cutWith = confirmed;
            p.outage(500);
          } else after.push(UUID);
        }),
      );
      const results = await Promise.allSettled(pending);
      const ok = uuids.filter((_, i) => results[i]?.status === 'fulfilled');
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      for (const f of failed) expect(String(f.reason)).toMatch(/AMQP|closed/);
      expect(after.length).toBeGreaterThan(0); // the cut really caught publishes in flight

      const conn = await amqp.connect(url.toString());
      const ch = await conn.createChannel();
      const stored = new Set<string>();
      for (;;) {
        const msg = await ch.get(Q2, { noAck: true });
        if (!msg) break;
        stored.add(decodeSignature(msg.content.toString()).UUID);
      }
      await conn.close();
      console.log(`cut with ${uuids.length - cutWith} of ${uuids.length} unconfirmed: ${after.length} confirmed after the cut, ${failed.length} rejected, ${stored.size - 1} stored`);
      expect(ok.filter((u) => !stored.has(u))).toEqual([]);
    } finally {
      await broker.close();
    }
  });

  it('sends again only the unconfirmed part of a batch cut mid-way, and resolves once all of it is stored', async () => {
    const Q3 = `mts_test_q_${randomUUID()}`;
    const broker = new AmqpBroker({ url: proxied, exchange: X, bindingKey: Q3, defaultQueue: Q3, publishTimeoutMs: 15_000 });
    const conn = await amqp.connect(url.toString());
    try {
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'warmup', RoutingKey: Q3 }));
      const pad = [{ Name: '', Type: 'string', Value: 'x'.repeat(20_000) }];
      const uuids = Array.from({ length: 400 }, () => newTaskUUID());
      // Only about the first 50 messages (1 MB) reach the server, so the batch cannot all be
      // confirmed. The connection is cut 100 ms after the first confirm (basic.ack: class 60,
      // method 80), once the client has read the confirms that came.
      let cut = false;
      p.passClientBytes(1_000_000);
      p.onceServerSends(Buffer.from([0, 60, 0, 80]), () => {
        setTimeout(() => {
          cut = true;
          p.outage(500);
        }, 100);
      });
      await broker.publishBatch(uuids.map((UUID) => newSignature({ UUID, Name: 'inflight', RoutingKey: Q3, Args: pad })));
      expect(cut).toBe(true);

      const ch = await conn.createChannel();
      const copies = new Map<string, number>();
      for (;;) {
        const msg = await ch.get(Q3, { noAck: true });
        if (!msg) break;
        const id = decodeSignature(msg.content.toString()).UUID;
        copies.set(id, (copies.get(id) ?? 0) + 1);
      }
      await ch.deleteQueue(Q3);
      expect(uuids.filter((u) => !copies.has(u))).toEqual([]);
      // Confirmed before the cut, so not sent again: a batch is not retried wholesale.
      expect(copies.get(uuids[0]!)).toBe(1);
      const twice = uuids.filter((u) => (copies.get(u) ?? 0) > 1).length;
      console.log(`batch cut after its first 1 MB: ${twice} of ${uuids.length} stored twice`);
    } finally {
      await broker.close();
      await conn.close();
    }
  });

  it('close() right after the connection is cut returns instead of waiting for a CloseOk that never comes', async () => {
    const broker = new AmqpBroker({ url: proxied, exchange: X, bindingKey: Q, defaultQueue: Q, publishTimeoutMs: 5_000 });
    await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'warmup', RoutingKey: Q }));
    p.outage(300);
    const closed = await Promise.race([
      broker.close().then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 10_000)),
    ]);
    expect(closed).toBe(true);
    await new Promise((r) => setTimeout(r, 400));
  });

  it('refuses at once, with a config error, an exchange declared with another type', async () => {
    const X2 = `mts_test_${randomUUID()}`;
    const conn = await amqp.connect(url.toString());
    const ch = await conn.createChannel();
    await ch.assertExchange(X2, 'fanout', { durable: true, autoDelete: false });
    const errors: Error[] = [];
    const broker = new AmqpBroker({ url: url.toString(), exchange: X2, exchangeType: 'direct', publishTimeoutMs: 10_000, onError: (e) => errors.push(e) });
    try {
      // A retried failure would end in the publish timeout's error instead, after 10 s.
      await expect(broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'x', RoutingKey: 'q' }))).rejects.toMatchObject({
        code: 'CONFIG',
        message: expect.stringContaining(`exchange "${X2}" as direct`),
      });
      await expect(broker.consume('q', { prefetch: 1, onDelivery: () => {} })).rejects.toMatchObject({ code: 'CONFIG' });
      expect(errors).toEqual([]);
    } finally {
      await broker.close();
      await ch.deleteExchange(X2);
      await conn.close();
    }
  });

  it('gives up a connection attempt the server never answers after connectTimeoutMs, and tries again', async () => {
    // Accepts the socket and says nothing, as a server still starting up can.
    const silent = net.createServer(() => {});
    const sockets = new Set<net.Socket>();
    silent.on('connection', (s) => sockets.add(s));
    const port = await new Promise<number>((r) => silent.listen(0, '127.0.0.1', () => r((silent.address() as net.AddressInfo).port)));
    const errors: Error[] = [];
    const broker = new AmqpBroker({
      url: `amqp://guest:s3cret@127.0.0.1:${port}/`,
      connectTimeoutMs: 200,
      reconnectMinMs: 50,
      reconnectMaxMs: 100,
      publishTimeoutMs: 1_500,
      onError: (e) => errors.push(e),
    });
    try {
      await expect(broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'x', RoutingKey: 'q' }))).rejects.toThrow(/timed out/);
      const failed = errors.filter((e) => /AMQP connect to .* failed/.test(e.message));
      expect(failed.length).toBeGreaterThanOrEqual(2);
      expect(errors.some((e) => e.message.includes('s3cret'))).toBe(false);
    } finally {
      await broker.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('rejects a publish with a clear error when the outage outlasts publishTimeoutMs', async () => {
    const broker = new AmqpBroker({ url: proxied, exchange: X, bindingKey: Q, defaultQueue: Q, publishTimeoutMs: 500 });
    try {
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'warmup', RoutingKey: Q }));
      p.outage(2000);
      await expect(broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'lost', RoutingKey: Q }))).rejects.toThrow(/timed out/);
    } finally {
      await broker.close();
      await new Promise((r) => setTimeout(r, 1600));
    }
  });
});
