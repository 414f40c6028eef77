import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScriptedWrite } from '@machinery-ts/core';
import { RedisBackend, stateChannel } from '../src/index.js';

const URL = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const id = (): string => `task_mtstest_${randomUUID()}`;

let raw: Redis;
let client: Redis;
let backend: RedisBackend;
/** Commands the backend sent, by name. */
let sent: string[] = [];

beforeAll(() => {
  raw = new Redis(URL);
  client = new Redis(URL);
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    sent.push(command.name);
    return (send as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  backend = new RedisBackend({ client, resultsExpireIn: 120 });
});

afterAll(async () => {
  await backend.close();
  await client.quit();
  await raw.quit();
});

const scriptCalls = (): number => sent.filter((n) => n === 'evalsha' || n === 'eval').length;

describe('RedisBackend state batching', () => {
  it('sends the state writes of one turn as one script call', async () => {
    // Loads the script (the first call may be NOSCRIPT, then EVAL).
    await Promise.all([id(), id()].map((u) => backend.setState({ taskUUID: u, taskName: 'add', state: 'PENDING' })));
    const ids = Array.from({ length: 50 }, id);
    sent = [];
    await Promise.all(ids.map((u) => backend.setState({ taskUUID: u, taskName: 'add', state: 'PENDING' })));
    expect(scriptCalls()).toBe(1);
    const stored = await raw.mget(ids);
    expect(stored.every((s) => s?.includes('"State":"PENDING"'))).toBe(true);
  });

  it('a lone PENDING write is a plain SET, sent at the end of the tick', async () => {
    const uuid = id();
    sent = [];
    const written = backend.setState({ taskUUID: uuid, taskName: 'add', state: 'PENDING' });
    await new Promise<void>((r) => process.nextTick(r));
    expect(sent).toEqual(['set']); // already on its way, before the turn ends
    await written;
    expect((await backend.getState(uuid))?.State).toBe('PENDING');
  });

  it("a task's states written within one turn collapse into the last: one write, one announcement, the merged document", async () => {
    const uuid = id();
    await backend.setState({ taskUUID: uuid, taskName: 'add', state: 'PENDING' });
    const created = (await backend.getState(uuid))?.CreatedAt;
    const sub = new Redis(URL);
    const heard: string[] = [];
    sub.on('message', (_ch: string, m: string) => heard.push(m));
    await sub.subscribe(stateChannel(uuid));
    sent = [];
    await Promise.all([
      backend.setState({ taskUUID: uuid, taskName: '', state: 'RECEIVED' }),
      backend.setState({ taskUUID: uuid, taskName: '', state: 'STARTED' }),
      backend.setState({ taskUUID: uuid, taskName: '', state: 'SUCCESS', results: [{ Type: 'int64', Value: 3 }] }),
    ]);
    expect(scriptCalls()).toBe(1);
    const doc = `{"TaskUUID":"${uuid}","TaskName":"add","State":"SUCCESS","Results":[{"Type":"int64","Value":3}],"Error":"","CreatedAt":"${created}","TTL":0}`;
    expect(await raw.get(uuid)).toBe(doc);
    await waitFor(() => heard.length > 0);
    await sub.quit();
    expect(heard).toEqual([doc]);
  });

  it('a later write to a key queued earlier lands last, keeping the name and creation time of a PENDING queued with it', async () => {
    const [a, b] = [id(), id()];
    await Promise.all([
      backend.setState({ taskUUID: a, taskName: 'x', state: 'PENDING' }),
      backend.setState({ taskUUID: b, taskName: 'y', state: 'PENDING' }),
      backend.setState({ taskUUID: a, taskName: '', state: 'FAILURE', error: 'boom' }),
    ]);
    // Merged with the PENDING document of the same turn, which never reached Redis.
    const stored = await backend.getState(a);
    expect(stored?.State).toBe('FAILURE');
    expect(stored?.Error).toBe('boom');
    expect(stored?.TaskName).toBe('x');
    expect(stored?.CreatedAt).not.toBe('0001-01-01T00:00:00Z');
    expect((await backend.getState(b))?.State).toBe('PENDING');
  });

  it('a command issued after writes that were not awaited is applied after them', async () => {
    const uuid = id();
    const written = backend.setState({ taskUUID: uuid, taskName: 'add', state: 'PENDING' });
    const read = await backend.getState(uuid);
    await written;
    expect(read?.State).toBe('PENDING');

    const gone = id();
    const write = backend.setState({ taskUUID: gone, taskName: 'add', state: 'PENDING' });
    await backend.purgeState(gone);
    await write;
    expect(await raw.exists(gone)).toBe(0);
  });

  it('splits a large turn into calls of 256 keys, every state stored', async () => {
    const ids = Array.from({ length: 600 }, id);
    sent = [];
    await Promise.all(ids.map((u) => backend.setState({ taskUUID: u, taskName: 'add', state: 'PENDING' })));
    expect(scriptCalls()).toBe(3);
    expect((await raw.mget(ids)).filter((s) => s !== null)).toHaveLength(600);
  });

  it('a failed call rejects every write it carried, and later turns still write', async () => {
    const hash = id();
    await raw.hset(hash, 'f', 'v'); // GET inside the script fails on a hash: WRONGTYPE
    const other = id();
    const results = await Promise.allSettled([
      backend.setState({ taskUUID: other, taskName: 'add', state: 'PENDING' }),
      backend.setState({ taskUUID: hash, taskName: '', state: 'STARTED' }),
    ]);
    await raw.del(hash);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    const after = id();
    await backend.setState({ taskUUID: after, taskName: 'add', state: 'PENDING' });
    expect((await backend.getState(after))?.State).toBe('PENDING');
  });

  it('a write after close rejects clearly', async () => {
    const closed = new RedisBackend({ url: URL });
    await closed.close();
    await expect(closed.setState({ taskUUID: id(), taskName: 'add', state: 'PENDING' })).rejects.toThrow(/closed/);
  });
});

describe('RedisBackend scriptedWrite (a SUCCESS handed to the broker that acks its delivery)', () => {
  const everywhere = (): boolean => true;
  /** Runs a handed-over write as a broker would: its Lua over its key, shared arguments, then its own. */
  const apply = (w: ScriptedWrite): Promise<unknown> => raw.eval(w.lua, 1, w.key, ...w.shared, ...w.args);

  it('writes the same merged document and announcement as setState, and folds a write of the task still queued', async () => {
    const [viaScript, viaSet] = [id(), id()];
    await Promise.all([viaScript, viaSet].map((u) => backend.setState({ taskUUID: u, taskName: 'add', state: 'PENDING' })));
    const sub = new Redis(URL);
    const heard: string[] = [];
    sub.on('message', (_ch: string, m: string) => heard.push(m));
    await sub.subscribe(stateChannel(viaScript));
    const success = { taskName: '', state: 'SUCCESS', results: [{ Type: 'int64', Value: 3 }] } as const;
    sent = [];
    const started = backend.setState({ taskUUID: viaScript, taskName: '', state: 'STARTED' });
    const write = backend.scriptedWrite({ taskUUID: viaScript, ...success }, everywhere);
    expect(write?.key).toBe(viaScript);
    expect(write?.store).toBe(backend.store);
    // The STARTED write was taken out of the batch: it settles without a command of its own.
    await started;
    expect(sent).toEqual([]);
    await apply(write as ScriptedWrite);
    await backend.setState({ taskUUID: viaSet, ...success });
    const [a, b] = (await raw.mget(viaScript, viaSet)) as [string, string];
    const created = (JSON.parse(a) as { CreatedAt: string }).CreatedAt;
    expect(created).not.toBe('0001-01-01T00:00:00Z');
    expect(a).toBe(`{"TaskUUID":"${viaScript}","TaskName":"add","State":"SUCCESS","Results":[{"Type":"int64","Value":3}],"Error":"","CreatedAt":"${created}","TTL":0}`);
    expect(b.replace(viaSet, viaScript).replace(/"CreatedAt":"[^"]*"/, '')).toBe(a.replace(/"CreatedAt":"[^"]*"/, ''));
    expect(await raw.ttl(viaScript)).toBeGreaterThan(100);
    await waitFor(() => heard.length > 0);
    await sub.quit();
    expect(heard).toEqual([a]);
  });

  it('keeps the name and creation time of a PENDING write of the same turn it folds', async () => {
    const uuid = id();
    const pending = backend.setState({ taskUUID: uuid, taskName: 'x', state: 'PENDING' });
    const write = backend.scriptedWrite({ taskUUID: uuid, taskName: '', state: 'SUCCESS', results: [] }, everywhere) as ScriptedWrite;
    await pending;
    expect(await raw.exists(uuid)).toBe(0);
    await apply(write);
    const stored = await backend.getState(uuid);
    expect(stored?.TaskName).toBe('x');
    expect(stored?.CreatedAt).not.toBe('0001-01-01T00:00:00Z');
  });

  it('hands nothing over while a write of the task is on its way, for another store, or for a state that is not completed', async () => {
    const uuid = id();
    const success = { taskUUID: uuid, taskName: '', state: 'SUCCESS' } as const;
    const started = backend.setState({ taskUUID: uuid, taskName: 'add', state: 'STARTED' });
    const read = backend.getState(uuid); // sends the queued write at once, ahead of its GET
    // STARTED is sent and not confirmed: a write by another connection could land before it.
    expect(backend.scriptedWrite(success, everywhere)).toBeUndefined();
    await started;
    await read;
    expect(backend.scriptedWrite(success, everywhere)).toBeDefined();

    const queued = backend.setState({ taskUUID: uuid, taskName: 'add', state: 'STARTED' });
    // Refused by the broker: the queued write stays queued and is sent.
    expect(backend.scriptedWrite(success, (store) => store === 'redis://elsewhere:6379/0')).toBeUndefined();
    expect(backend.scriptedWrite({ taskUUID: uuid, taskName: '', state: 'STARTED' }, everywhere)).toBeUndefined();
    await queued;
    expect((await backend.getState(uuid))?.State).toBe('STARTED');
  });
});

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
}
