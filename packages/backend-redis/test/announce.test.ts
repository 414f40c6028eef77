import { randomUUID } from 'node:crypto';
import { ANNOUNCE_HEADER, MemoryBroker, Server, type Signature } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPLY_CHANNEL_PREFIX, RedisBackend, stateChannel } from '../src/index.js';

const URL = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const id = (): string => `task_mtstest_${randomUUID()}`;

let raw: Redis;
beforeAll(() => {
  raw = new Redis(URL);
});
afterAll(async () => {
  await raw.quit();
});

const subscribers = async (channel: string): Promise<number> => Number(((await raw.pubsub('NUMSUB', channel)) as [string, number])[1]);

describe("a sender's announce channel", () => {
  it('is named in tasks sent after the first wait, and those waits need no SUBSCRIBE of their own', async () => {
    // No fallback poll within the test: only an announcement can end a wait.
    const backend = new RedisBackend({ url: URL, resultsExpireIn: 60, waitPollMs: 60_000 });
    const broker = new MemoryBroker();
    const server = new Server({ broker, backend });
    let seen: Signature | undefined;
    server.registerTask('add', ([a, b]) => Number(a) + Number(b));
    const sent: string[] = [];
    const publish = broker.publish.bind(broker);
    broker.publish = async (sig) => {
      sent.push(JSON.stringify(sig.Headers));
      seen = sig;
      return publish(sig);
    };
    const worker = server.newWorker({ concurrency: 4, handleSignals: false });
    await worker.start();
    try {
      expect(backend.announceTo()).toBeUndefined();
      const first = await server.sendTask({ Name: 'add', Args: [{ Name: '', Type: 'int64', Value: 1 }, { Name: '', Type: 'int64', Value: 2 }] });
      expect(first.announcedOn).toBeUndefined();
      expect(await first.get({ timeoutMs: 5000 })).toEqual([3n]); // starts the announce channel
      await until(() => backend.announceTo() !== undefined);
      const channel = backend.announceTo() as string;
      expect(channel.startsWith(REPLY_CHANNEL_PREFIX)).toBe(true);
      expect(await subscribers(channel)).toBe(1);

      // A slow task, so the wait is in place before it completes.
      server.registerTask('slow', async () => {
        await new Promise((r) => setTimeout(r, 150));
        return 'done';
      });
      const r = await server.sendTask({ Name: 'slow' });
      expect(r.announcedOn).toBe(channel);
      expect(seen?.Headers?.[ANNOUNCE_HEADER]).toBe(channel);
      const result = r.get({ timeoutMs: 3000 });
      await new Promise((r2) => setTimeout(r2, 50));
      expect(await subscribers(stateChannel(r.taskUUID))).toBe(0); // no per-task subscription
      expect(await result).toEqual(['done']);
      expect(sent[0]).toBe('{}');
    } finally {
      await worker.stop();
      await server.close();
    }
  });

  it('a completed state written with announceTo is published there; an unknown target is ignored', async () => {
    const backend = new RedisBackend({ url: URL, resultsExpireIn: 60 });
    const sub = new Redis(URL);
    const heard: [string, string][] = [];
    sub.on('message', (ch: string, m: string) => heard.push([ch, m]));
    const target = `${REPLY_CHANNEL_PREFIX}test${randomUUID()}`;
    const stranger = `other:${randomUUID()}`;
    await sub.subscribe(target, stranger);
    const [a, b, c] = [id(), id(), id()];
    await backend.setState({ taskUUID: a, taskName: 'x', state: 'SUCCESS', results: [], announceTo: target });
    await backend.setState({ taskUUID: b, taskName: 'x', state: 'STARTED', announceTo: target }); // not completed: not announced
    await backend.setState({ taskUUID: c, taskName: 'x', state: 'FAILURE', error: 'e', announceTo: stranger });
    await until(() => heard.length >= 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(heard.map(([ch]) => ch)).toEqual([target]);
    expect(heard[0]?.[1]).toBe(await raw.get(a));
    await sub.quit();
    await backend.close();
  });

  it('a waiter on the announce channel hears its task among others, an id that needs escaping too', async () => {
    const backend = new RedisBackend({ url: URL, resultsExpireIn: 60, waitPollMs: 60_000 });
    const writer = new RedisBackend({ url: URL, resultsExpireIn: 60 });
    await backend.waitForState(id(), { timeoutMs: 1 }); // the first wait starts the channel
    await until(() => backend.announceTo() !== undefined);
    const channel = backend.announceTo() as string;
    const odd = `${id()}"with\\escapes`;
    const waiting = backend.waitForState(odd, { timeoutMs: 3000, announcedOn: channel });
    const others = Array.from({ length: 20 }, id);
    await Promise.all(others.map((u) => writer.setState({ taskUUID: u, taskName: 'x', state: 'SUCCESS', results: [], announceTo: channel })));
    await writer.setState({ taskUUID: odd, taskName: 'x', state: 'FAILURE', error: 'boom', announceTo: channel });
    const state = await waiting;
    expect(state?.TaskUUID).toBe(odd);
    expect(state?.Error).toBe('boom');
    await writer.close();
    await backend.close();
  });

  it('a wait naming a channel this backend does not listen on subscribes per task as before', async () => {
    const backend = new RedisBackend({ url: URL, resultsExpireIn: 60 });
    const uuid = id();
    const waiting = backend.waitForState(uuid, { timeoutMs: 3000, announcedOn: `${REPLY_CHANNEL_PREFIX}elsewhere` });
    await until(async () => (await subscribers(stateChannel(uuid))) === 1);
    const writer = new RedisBackend({ url: URL, resultsExpireIn: 60 });
    await writer.setState({ taskUUID: uuid, taskName: 'x', state: 'SUCCESS', results: [] });
    expect((await waiting)?.State).toBe('SUCCESS');
    await writer.close();
    await backend.close();
  });
});

describe('completions announced before the wait', () => {
  /** A backend listening on its announce channel, a writer announcing there, and a count of the backend's GETs. */
  async function setUp() {
    const backend = new RedisBackend({ url: URL, resultsExpireIn: 60, waitPollMs: 60_000 });
    const writer = new RedisBackend({ url: URL, resultsExpireIn: 60 });
    await backend.waitForState(id(), { timeoutMs: 1 });
    await until(() => backend.announceTo() !== undefined);
    const channel = backend.announceTo() as string;
    let gets = 0;
    const send = backend.client.sendCommand.bind(backend.client);
    backend.client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
      if (command.name === 'get') gets += 1;
      return (send as (...a: unknown[]) => unknown)(command, ...rest);
    }) as typeof backend.client.sendCommand;
    const close = async (): Promise<void> => {
      await writer.close();
      await backend.close();
    };
    return { backend, writer, channel, gets: () => gets, close };
  }

  it('are kept, so a later wait for one ends at once without reading the store', async () => {
    const { backend, writer, channel, gets, close } = await setUp();
    const uuid = id();
    await writer.setState({ taskUUID: uuid, taskName: 'x', state: 'SUCCESS', results: [{ Type: 'int64', Value: 7 }], announceTo: channel });
    await new Promise((r) => setTimeout(r, 50)); // the announcement has arrived; nobody waits yet
    const state = await backend.waitForState(uuid, { timeoutMs: 3000, announcedOn: channel });
    expect(state?.State).toBe('SUCCESS');
    expect(state?.Results).toEqual([{ Type: 'int64', Value: 7 }]);
    expect(gets()).toBe(0);
    await close();
  });

  it('a wait through the channel reads the store only when nothing is announced in time (a Go worker writes silently)', async () => {
    const { backend, writer, channel, gets, close } = await setUp();
    const announced = id();
    const waiting = backend.waitForState(announced, { timeoutMs: 3000, announcedOn: channel });
    await writer.setState({ taskUUID: announced, taskName: 'x', state: 'SUCCESS', results: [], announceTo: channel });
    expect((await waiting)?.State).toBe('SUCCESS');
    await new Promise((r) => setTimeout(r, 60)); // past the fallback delay
    expect(gets()).toBe(0);

    const silent = id();
    await writer.setState({ taskUUID: silent, taskName: 'x', state: 'SUCCESS', results: [] }); // no announceTo, as from Go
    const t0 = Date.now();
    expect((await backend.waitForState(silent, { timeoutMs: 3000, announcedOn: channel }))?.State).toBe('SUCCESS');
    expect(Date.now() - t0).toBeLessThan(1000); // the fallback read, long before the 60 s poll
    expect(gets()).toBe(1);
    await close();
  });

  it('keeps a bounded number: one pushed out is read from the store instead', async () => {
    const { backend, writer, channel, gets, close } = await setUp();
    const uuids = Array.from({ length: 1001 }, id);
    await Promise.all(uuids.map((u) => writer.setState({ taskUUID: u, taskName: 'x', state: 'SUCCESS', results: [], announceTo: channel })));
    await new Promise((r) => setTimeout(r, 100));
    expect((await backend.waitForState(uuids[1000] as string, { timeoutMs: 3000, announcedOn: channel }))?.State).toBe('SUCCESS');
    expect(gets()).toBe(0);
    expect((await backend.waitForState(uuids[0] as string, { timeoutMs: 3000, announcedOn: channel }))?.State).toBe('SUCCESS');
    expect(gets()).toBe(1);
    await close();
  });
});

async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('condition not met in 3 s');
}
