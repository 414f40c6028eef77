import { randomUUID } from 'node:crypto';
import { type Server, type Socket, connect, createServer } from 'node:net';
import amqp from 'amqplib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TaskStates } from '@machinery-ts/core';
import { AmqpBackend } from '../src/index.js';

const url = new URL(process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/');
const exchange = `mts_backend_reconnect_${randomUUID()}`;

// A TCP proxy in front of RabbitMQ whose connections the test can cut, as a network
// failure or a server restart would, without disturbing anyone else's RabbitMQ.
let proxy: Server;
const sockets = new Set<Socket>();
let proxyUrl = '';
/** While true the proxy drops every new connection at once, as a broker that is restarting. */
let down = false;

/** Cuts every proxied connection and refuses new ones for `ms`. */
function outage(ms: number): void {
  down = true;
  for (const s of sockets) s.destroy();
  setTimeout(() => {
    down = false;
  }, ms);
}

beforeAll(async () => {
  proxy = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(url.port), url.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const port = (proxy.address() as { port: number }).port;
  const u = new URL(url);
  u.host = `127.0.0.1:${port}`;
  proxyUrl = u.toString();
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => proxy.close(r));
  const conn = await amqp.connect(url.toString());
  const ch = await conn.createChannel();
  await ch.deleteExchange(exchange).catch(() => {});
  await conn.close();
});

it('reconnects by itself after the connection is cut, and the state is still there', async () => {
  const errors: Error[] = [];
  const b = new AmqpBackend({ url: proxyUrl, exchange, reconnectMinMs: 50, onError: (e) => errors.push(e) });
  try {
    const uuid = `task_${randomUUID()}`;
    await b.setState({ taskUUID: uuid, taskName: 'r', state: TaskStates.PENDING });
    const cut = sockets.size;
    for (const s of sockets) s.destroy();
    expect(cut).toBeGreaterThan(0);
    // Issued while the connection is down: waits for the new one instead of failing.
    await b.setState({ taskUUID: uuid, taskName: '', state: TaskStates.SUCCESS, results: [] });
    expect(await b.getState(uuid)).toMatchObject({ TaskName: 'r', State: 'SUCCESS' });
    expect(errors.some((e) => /lost; reconnecting/.test(e.message))).toBe(true);
    expect(errors.every((e) => !e.message.includes(':guest@'))).toBe(true);
  } finally {
    await b.close();
  }
});

it('chord steps, group reads and writes in flight when the broker goes away finish after it is back; one fires', async () => {
  const backends = Array.from({ length: 3 }, () => new AmqpBackend({ url: proxyUrl, exchange, reconnectMinMs: 50, reconnectMaxMs: 400 }));
  try {
    const [first] = backends as [AmqpBackend];
    const g = `group_${randomUUID()}`;
    const members = Array.from({ length: 12 }, () => `task_${randomUUID()}`);
    await first.initGroup(g, members);
    setTimeout(() => outage(1_500), 30);
    const fired = await Promise.all(
      members.map(async (uuid, i) => {
        const b = backends[i % backends.length] as AmqpBackend;
        await b.setState({ taskUUID: uuid, taskName: 'm', state: TaskStates.SUCCESS, results: [] });
        const [meta, step] = await Promise.all([b.getGroupMeta(g), b.triggerChord(g, { when: 'complete', count: members.length })]);
        expect(meta?.TaskUUIDs).toEqual(members);
        return step.fired ? 1 : 0;
      }),
    );
    // A step repeated after the cut recognises its own claim by its token: exactly one fires.
    expect(fired.reduce<number>((a, b) => a + b, 0)).toBe(1);
    expect((await first.getGroupMeta(g))?.ChordTriggered).toBe(true);
    expect(await first.triggerChord(g, { when: 'now' })).toEqual({ fired: false, reason: 'already-triggered' });
  } finally {
    await Promise.all(backends.map((b) => b.close()));
  }
});
