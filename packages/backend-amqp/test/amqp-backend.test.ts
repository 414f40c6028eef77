import { spawn } from 'node:child_process';
import * as net from 'node:net';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import type { Channel, ChannelModel } from 'amqplib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TaskStates } from '@machinery-ts/core';
import { AmqpBackend, chordTriggeredQueue, groupMetaQueue } from '../src/index.js';

const url = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';
const exchange = `mts_backend_go_${randomUUID()}`;
const taskId = (): string => `task_${randomUUID()}`;

/** Go's `amqp.Table{"x-message-ttl": int32(ms), "x-expires": int32(ms)}` as amqplib writes an int32. */
const goArgs = (ms: number) => ({ 'x-message-ttl': { '!': 'int', value: ms }, 'x-expires': { '!': 'int', value: ms } });

let raw: ChannelModel;
const opened: AmqpBackend[] = [];
const make = (o: { resultsExpireIn?: number } = {}): AmqpBackend => {
  const b = new AmqpBackend({ url, exchange, operationTimeoutMs: 10_000, ...o });
  opened.push(b);
  return b;
};

/** A raw channel on which a server error is returned instead of thrown at the connection. */
async function onChannel<T>(fn: (ch: Channel) => Promise<T>): Promise<T> {
  const ch = await raw.createChannel();
  ch.on('error', () => {});
  try {
    return await fn(ch);
  } finally {
    await ch.close().catch(() => {});
  }
}

/** What Go's `Connect` does for a task queue: exchange, queue with Go's args, binding. */
const goDeclare = (ch: Channel, queue: string, ms = 3_600_000) =>
  ch
    .assertExchange(exchange, 'direct', { durable: true, autoDelete: false, internal: false })
    .then(() => ch.assertQueue(queue, { durable: false, autoDelete: true, exclusive: false, arguments: goArgs(ms) }))
    .then(() => ch.bindQueue(queue, exchange, queue));

beforeAll(async () => {
  raw = await amqp.connect(url);
  raw.on('error', () => {});
});
afterEach(async () => {
  await Promise.allSettled(opened.splice(0).map((b) => b.close()));
});
afterAll(async () => {
  await onChannel((ch) => ch.deleteExchange(exchange)).catch(() => {});
  await raw.close();
});

describe('Go wire compatibility', () => {
  it("writes the queue Go declares and the exact document Go's GetState decodes", async () => {
    const b = make();
    const uuid = taskId();
    await b.setState({ taskUUID: uuid, taskName: 'add', state: TaskStates.PENDING });
    const createdAt = (await b.getState(uuid))?.CreatedAt;
    expect(createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    await b.setState({ taskUUID: uuid, taskName: '', state: TaskStates.STARTED });
    await b.setState({ taskUUID: uuid, taskName: '', state: TaskStates.SUCCESS, results: [{ Type: 'int64', Value: 2 }] });

    // Go's own declare (not passive) is accepted: same durable/auto-delete flags and args.
    await onChannel((ch) => goDeclare(ch, uuid));
    // …and anything else is refused, so the line above really compares the arguments.
    await expect(onChannel((ch) => ch.assertQueue(uuid, { durable: false, autoDelete: true, arguments: goArgs(60_000) }))).rejects.toThrow(/PRECONDITION_FAILED/);
    await expect(onChannel((ch) => ch.assertQueue(uuid, { durable: true, autoDelete: true, arguments: goArgs(3_600_000) }))).rejects.toThrow(/PRECONDITION_FAILED/);
    await expect(onChannel((ch) => ch.assertQueue(uuid, { durable: false, autoDelete: true }))).rejects.toThrow(/PRECONDITION_FAILED/);

    // Go's GetState: basic.get + ack of one message. The queue holds only the latest state.
    const got = await onChannel(async (ch) => {
      const { messageCount } = await ch.checkQueue(uuid);
      const m = await ch.get(uuid, { noAck: false });
      if (m) ch.ack(m);
      return { messageCount, m };
    });
    expect(got.messageCount).toBe(1);
    if (!got.m) throw new Error('no message');
    expect(got.m.content.toString('utf8')).toBe(
      `{"TaskUUID":"${uuid}","TaskName":"add","State":"SUCCESS","Results":[{"Type":"int64","Value":2}],"Error":"","CreatedAt":"${createdAt}","TTL":0}`,
    );
    expect(got.m.properties.contentType).toBe('application/json');
    expect(got.m.properties.deliveryMode).toBe(2);
  });

  it('applies results_expire_in as Go does: x-message-ttl and x-expires in ms, and the state expires', async () => {
    const b = make({ resultsExpireIn: 1 });
    const uuid = taskId();
    await b.setState({ taskUUID: uuid, taskName: 'short', state: TaskStates.PENDING });
    await onChannel((ch) => goDeclare(ch, uuid, 1_000));
    expect((await b.getState(uuid))?.State).toBe('PENDING');
    await new Promise((r) => setTimeout(r, 1_300));
    expect(await b.getState(uuid)).toBeNull();
  });

  it('binds the task queue to the exchange with the task UUID, as Go routes its writes', async () => {
    const b = make();
    const uuid = taskId();
    await b.setState({ taskUUID: uuid, taskName: 'x', state: TaskStates.PENDING });
    await onChannel(async (ch) => {
      ch.publish(exchange, uuid, Buffer.from(`{"TaskUUID":"${uuid}","TaskName":"","State":"RECEIVED","Results":null,"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`));
      await new Promise((r) => setTimeout(r, 100));
    });
    expect((await b.getState(uuid))?.State).toBe('RECEIVED');
  });

  it('reads states written the Go way (one message per state, appended): the latest wins, and stays', async () => {
    const uuid = taskId();
    const doc = (state: string, name: string, created: string, results = 'null') =>
      `{"TaskUUID":"${uuid}","TaskName":"${name}","State":"${state}","Results":${results},"Error":"","CreatedAt":"${created}","TTL":0}`;
    await onChannel(async (ch) => {
      await goDeclare(ch, uuid);
      const cch = await raw.createConfirmChannel();
      for (const body of [
        doc('PENDING', 'add', '2026-11-22T20:18:13.156749485Z'),
        doc('RECEIVED', '', '0001-01-01T00:00:00Z'),
        doc('STARTED', '', '0001-01-01T00:00:00Z'),
        doc('SUCCESS', '', '0001-01-01T00:00:00Z', '[{"Type":"int64","Value":9007199254740993}]'),
      ]) {
        cch.publish(exchange, uuid, Buffer.from(body), { contentType: 'application/json', deliveryMode: 2 });
      }
      await cch.waitForConfirms();
      await cch.close();
    });
    const b = make();
    const first = await b.getState(uuid);
    expect(first).toMatchObject({ State: 'SUCCESS', TaskName: '', Results: [{ Type: 'int64', Value: 9007199254740993n }] });
    expect(await b.getState(uuid)).toEqual(first);
    // Older states were dropped, so Go's destructive GetState now also reads the latest.
    const body = await onChannel(async (ch) => {
      const m = await ch.get(uuid, { noAck: true });
      return m ? m.content.toString('utf8') : null;
    });
    expect(body).toContain('"State":"SUCCESS"');
    // Our declare after Go's: no 406, and the merge keeps Go's PENDING name only if still there.
    await b.setState({ taskUUID: uuid, taskName: '', state: TaskStates.FAILURE, error: 'again' });
    expect(await b.getState(uuid)).toMatchObject({ State: 'FAILURE', Error: 'again' });
  });

  it("a queue Go declared with another expiry fails that write only, not the writes beside it", async () => {
    const b = make();
    const clash = taskId();
    await onChannel((ch) => goDeclare(ch, clash, 60_000));
    const others = Array.from({ length: 10 }, taskId);
    const results = await Promise.allSettled([
      ...others.map((u) => b.setState({ taskUUID: u, taskName: 'ok', state: TaskStates.PENDING })),
      b.setState({ taskUUID: clash, taskName: 'x', state: TaskStates.PENDING }),
    ]);
    expect(results.slice(0, 10).every((r) => r.status === 'fulfilled')).toBe(true);
    expect(results[10]).toMatchObject({ status: 'rejected', reason: { code: 406 } });
    expect((await b.getState(others[0] as string))?.TaskName).toBe('ok');
  });

  it('refuses at once, with a config error, an exchange declared with another type', async () => {
    const b = new AmqpBackend({ url, exchange, exchangeType: 'topic', operationTimeoutMs: 10_000 });
    opened.push(b);
    await onChannel((ch) => ch.assertExchange(exchange, 'direct', { durable: true, autoDelete: false }));
    await expect(b.setState({ taskUUID: taskId(), taskName: 'x', state: TaskStates.PENDING })).rejects.toMatchObject({ code: 'CONFIG' });
  });

  it('gives up a connection attempt the server never answers after connectTimeoutMs, and tries again', async () => {
    // Accepts the socket and says nothing, as a server still starting up can.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => sockets.add(s));
    const port = await new Promise<number>((r) => silent.listen(0, '127.0.0.1', () => r((silent.address() as net.AddressInfo).port)));
    const errors: Error[] = [];
    const b = new AmqpBackend({
      url: `amqp://guest:s3cret@127.0.0.1:${port}/`,
      connectTimeoutMs: 200,
      reconnectMinMs: 50,
      reconnectMaxMs: 100,
      operationTimeoutMs: 1_500,
      onError: (e) => errors.push(e),
    });
    try {
      await expect(b.getState(taskId())).rejects.toThrow(/timed out/);
      expect(errors.filter((e) => /AMQP connect to .* failed/.test(e.message)).length).toBeGreaterThanOrEqual(2);
      expect(errors.some((e) => e.message.includes('s3cret'))).toBe(false);
    } finally {
      await b.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('marks a fired chord the way Go checks it: the <group>_chord_triggered queue exists', async () => {
    const b = make();
    const g = `group_${randomUUID()}`;
    const m = taskId();
    await b.initGroup(g, [m]);
    const exists = (q: string) =>
      onChannel((ch) => ch.checkQueue(q)).then(
        () => true,
        () => false,
      );
    expect(await exists(chordTriggeredQueue(g))).toBe(false);
    // Go's group queue (completed member states) is left to Go.
    expect(await exists(g)).toBe(false);
    expect(await exists(groupMetaQueue(g))).toBe(true);
    await b.setState({ taskUUID: m, taskName: 'x', state: TaskStates.SUCCESS, results: [] });
    expect((await b.triggerChord(g, { when: 'complete', count: 1 })).fired).toBe(true);
    expect(await exists(chordTriggeredQueue(g))).toBe(true);
    expect((await b.getGroupMeta(g))?.ChordTriggered).toBe(true);
    await b.purgeGroupMeta(g);
    expect(await exists(chordTriggeredQueue(g))).toBe(false);
    expect(await exists(groupMetaQueue(g))).toBe(false);
  });
});

describe('non-destructive reads', () => {
  it('returns the same state however often, and to many concurrent readers', async () => {
    const writer = make();
    const uuid = taskId();
    await writer.setState({ taskUUID: uuid, taskName: 'r', state: TaskStates.PENDING });
    await writer.setState({ taskUUID: uuid, taskName: '', state: TaskStates.SUCCESS, results: [{ Type: 'string', Value: 'ok' }] });
    const once = await writer.getState(uuid);
    expect(once?.State).toBe('SUCCESS');
    expect(await writer.getState(uuid)).toEqual(once);
    const readers = [make(), make(), make(), make()];
    const all = await Promise.all(Array.from({ length: 60 }, (_, i) => (readers[i % readers.length] as AmqpBackend).getState(uuid)));
    expect(all.filter((s) => s?.State !== 'SUCCESS')).toEqual([]);
    const left = await onChannel((ch) => ch.checkQueue(uuid));
    expect(left.messageCount).toBe(1);
  });

  it('a group read waits for a chord step holding the group document instead of answering "no group"', async () => {
    const b = make();
    const others = [make(), make(), make()];
    const g = `group_${randomUUID()}`;
    const members = [taskId(), taskId()];
    await b.initGroup(g, members);
    const [metas, steps] = await Promise.all([
      Promise.all(Array.from({ length: 12 }, (_, i) => (others[i % 3] as AmqpBackend).getGroupMeta(g))),
      Promise.all(Array.from({ length: 6 }, (_, i) => (others[i % 3] as AmqpBackend).triggerChord(g, { when: 'complete', count: 2 }))),
    ]);
    expect(metas.map((m) => m?.TaskUUIDs)).toEqual(Array.from({ length: 12 }, () => members));
    expect(steps).toEqual(Array.from({ length: 6 }, () => ({ fired: false, reason: 'incomplete' })));
  });
});

describe('waitForState', () => {
  it('sees a state Go wrote (Go announces nothing) through its slow re-read', async () => {
    const b = new AmqpBackend({ url, exchange, waitPollMs: 100 });
    opened.push(b);
    const uuid = taskId();
    const waiting = b.waitForState(uuid, { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    await onChannel(async (ch) => {
      await goDeclare(ch, uuid);
      ch.publish(exchange, uuid, Buffer.from(`{"TaskUUID":"${uuid}","TaskName":"","State":"SUCCESS","Results":[],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`));
      await new Promise((r) => setTimeout(r, 50));
    });
    expect((await waiting)?.State).toBe('SUCCESS');
  });
});

describe('chord step across processes', () => {
  it('fires exactly once per group when three processes race on the last members', async () => {
    const groups = Array.from({ length: 4 }, () => ({ group: `group_${randomUUID()}`, members: Array.from({ length: 24 }, taskId) }));
    const b = make();
    for (const { group, members } of groups) await b.initGroup(group, members);
    const fixture = fileURLToPath(new URL('./fixtures/chord-racer.ts', import.meta.url));
    const children = Array.from({ length: 3 }, (_, index) => {
      const plan = JSON.stringify({ url, exchange, groups, index, processes: 3 });
      const proc = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', fixture, plan], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const ready = new Promise<void>((resolve, reject) => {
        const t = setInterval(() => {
          if (out.includes('ready\n')) {
            clearInterval(t);
            resolve();
          }
        }, 20);
        proc.once('exit', () => {
          clearInterval(t);
          reject(new Error(`racer ${index} exited early: ${err}`));
        });
      });
      const exited = new Promise<Record<string, number>>((resolve, reject) =>
        proc.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.split('\n').at(-2) ?? '{}') as Record<string, number>) : reject(new Error(`racer ${index}: ${err}`)))),
      );
      exited.catch(() => {});
      return { proc, ready, exited };
    });
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.proc.stdin.end('go\n');
    const results = await Promise.all(children.map((c) => c.exited));
    for (const { group } of groups) {
      expect(results.reduce((n, r) => n + (r[group] ?? 0), 0)).toBe(1);
      expect((await b.getGroupMeta(group))?.ChordTriggered).toBe(true);
    }
  });

  it('resetChordTrigger lets exactly one racer fire again', async () => {
    const racers = [make(), make(), make(), make()];
    const g = `group_${randomUUID()}`;
    const m = taskId();
    await (racers[0] as AmqpBackend).initGroup(g, [m]);
    await (racers[0] as AmqpBackend).setState({ taskUUID: m, taskName: 'x', state: TaskStates.SUCCESS, results: [] });
    for (let round = 0; round < 3; round++) {
      const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => (racers[i % 4] as AmqpBackend).triggerChord(g, { when: 'now' })));
      expect(rs.filter((r) => r.fired)).toHaveLength(1);
      await (racers[round % 4] as AmqpBackend).resetChordTrigger(g);
    }
  });
});
