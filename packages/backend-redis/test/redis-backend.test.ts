import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeTaskState } from '@machinery-ts/core';
import { RedisBackend, stateChannel } from '../src/index.js';

const URL = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const id = (p: string): string => `${p}_mtstest_${randomUUID()}`;

let raw: Redis;
let backend: RedisBackend;

beforeAll(() => {
  raw = new Redis(URL);
  backend = new RedisBackend({ url: URL, resultsExpireIn: 120 });
});

afterAll(async () => {
  await backend.close();
  await raw.quit();
});

describe('RedisBackend states', () => {
  it('refuses an expiry that SET … EX cannot take; 0 and none mean Go\'s 3600', async () => {
    for (const bad of [1.5, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new RedisBackend({ url: 'redis://127.0.0.1:1', resultsExpireIn: bad })).toThrow(/resultsExpireIn must be whole seconds/);
    }
    const expiry = (b: RedisBackend): number | undefined => b.plainWrite({ taskUUID: 'x', taskName: 'n', state: 'PENDING' })?.expireSeconds;
    expect(expiry(backend)).toBe(120);
    const zero = new RedisBackend({ url: URL, resultsExpireIn: 0 });
    const absent = new RedisBackend({ url: URL });
    expect([expiry(zero), expiry(absent)]).toEqual([3600, 3600]);
    await Promise.all([zero.close(), absent.close()]);
  });

  it('writes the §13 SUCCESS document byte for byte after a Go PENDING document', async () => {
    const uuid = id('task');
    const created = '2026-11-22T20:18:13.156749485Z';
    await raw.set(
      uuid,
      `{"TaskUUID":"${uuid}","TaskName":"add","State":"PENDING","Results":null,"Error":"","CreatedAt":"${created}","TTL":0}`,
      'EX',
      3600,
    );
    await backend.setState({ taskUUID: uuid, taskName: '', state: 'RECEIVED' });
    await backend.setState({ taskUUID: uuid, taskName: '', state: 'STARTED' });
    await backend.setState({ taskUUID: uuid, taskName: 'add', state: 'SUCCESS', results: [{ Type: 'int64', Value: 2 }] });
    expect(await raw.get(uuid)).toBe(
      `{"TaskUUID":"${uuid}","TaskName":"add","State":"SUCCESS","Results":[{"Type":"int64","Value":2}],"Error":"","CreatedAt":"${created}","TTL":0}`,
    );
  });

  it('PENDING sets TaskName and CreatedAt; RECEIVED, STARTED and SUCCESS keep them; TTL applied', async () => {
    const uuid = id('task');
    await backend.setState({ taskUUID: uuid, taskName: 'add', state: 'PENDING' });
    const pending = await backend.getState(uuid);
    expect(pending?.TaskName).toBe('add');
    expect(pending?.CreatedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    expect(await raw.get(uuid)).toBe(encodeTaskState(pending!));
    for (const state of ['RECEIVED', 'STARTED', 'SUCCESS'] as const) {
      await backend.setState({ taskUUID: uuid, taskName: '', state, results: state === 'SUCCESS' ? [] : null });
      const s = await backend.getState(uuid);
      expect(s?.State).toBe(state);
      expect(s?.TaskName).toBe('add');
      expect(s?.CreatedAt).toBe(pending?.CreatedAt);
      expect(await raw.get(uuid)).toBe(encodeTaskState(s!));
    }
    const s = await backend.getState(uuid);
    expect(s?.Results).toEqual([]);
    const ttl = await raw.ttl(uuid);
    expect(ttl).toBeGreaterThan(115);
    expect(ttl).toBeLessThanOrEqual(120);
  });

  it('writes FAILURE with the error and Go zero values when nothing was stored', async () => {
    const uuid = id('task');
    await backend.setState({ taskUUID: uuid, taskName: 'div', state: 'FAILURE', error: 'boom "x"\n<&>' });
    expect(await raw.get(uuid)).toBe(
      `{"TaskUUID":"${uuid}","TaskName":"div","State":"FAILURE","Results":null,"Error":"boom \\"x\\"\\n<&>","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`,
    );
    expect(await raw.ttl(uuid)).toBeGreaterThan(100);
  });

  it('takes the given name and the zero time where a document in Go\'s layout holds empty ones', async () => {
    const uuid = id('task');
    await raw.set(uuid, `{"TaskUUID":"${uuid}","TaskName":"","State":"PENDING","Results":null,"Error":"","CreatedAt":"","TTL":0}`, 'EX', 60);
    await backend.setState({ taskUUID: uuid, taskName: 'given', state: 'STARTED' });
    expect(await raw.get(uuid)).toBe(
      `{"TaskUUID":"${uuid}","TaskName":"given","State":"STARTED","Results":null,"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`,
    );
  });

  it('escapes a raw control character of a kept TaskName rather than copying it', async () => {
    const uuid = id('task');
    const created = '2026-11-22T20:18:13.156749485Z';
    await raw.set(uuid, `{"TaskUUID":"${uuid}","TaskName":"a\u0001b","State":"PENDING","Results":null,"Error":"","CreatedAt":"${created}","TTL":0}`, 'EX', 60);
    await backend.setState({ taskUUID: uuid, taskName: 'given', state: 'STARTED' });
    const text = (await raw.get(uuid)) as string;
    expect(text).toBe(`{"TaskUUID":"${uuid}","TaskName":"a\\u0001b","State":"STARTED","Results":null,"Error":"","CreatedAt":"${created}","TTL":0}`);
    expect((JSON.parse(text) as { TaskName: string }).TaskName).toBe('a\u0001b');
  });

  it('re-encodes a kept TaskName exactly as JSON.stringify would', async () => {
    const uuid = id('task');
    const name = 'a/b "q" \\ \t\u0001 é 😀 <x>';
    await backend.setState({ taskUUID: uuid, taskName: name, state: 'PENDING' });
    await backend.setState({ taskUUID: uuid, taskName: '', state: 'STARTED' });
    const s = await backend.getState(uuid);
    expect(s?.TaskName).toBe(name);
    expect(await raw.get(uuid)).toBe(encodeTaskState(s!));
  });

  it('keeps TaskName and CreatedAt from documents the fast path cannot read (escapes, other key order, spaces)', async () => {
    const created = '2026-11-22T20:18:13.156749485Z';
    const layouts = [
      (u: string) => `{"TaskUUID":"${u}","TaskName":"say \\"hi\\" \\\\ bye","State":"PENDING","Results":null,"Error":"","CreatedAt":"${created}","TTL":0}`,
      (u: string) => `{"TaskName":"reordered","TaskUUID":"${u}","CreatedAt":"${created}","State":"PENDING","TTL":0}`,
      (u: string) => `{ "TaskUUID": "${u}", "TaskName": "spaced", "State": "PENDING", "CreatedAt": "${created}", "TTL": 0 }`,
      // Go's layout, but the last ',"CreatedAt":"' is a nested object's, not the document's.
      (u: string) =>
        `{"TaskUUID":"${u}","TaskName":"nested","State":"RETRY","Results":[{"Type":"map","Value":{"A":1,"CreatedAt":"inner","TTL":1}}],"Error":"","CreatedAt":"${created}","TTL":0}`,
      (u: string) => `{"TaskUUID":"${u}","TaskName":"plain","State":"PENDING","Results":null,"Error":"","CreatedAt":"${created}","TTL":-1}`,
      // The name is x", : its escaped quote is followed by ," as the end of a name would be.
      (u: string) => String.raw`{"TaskUUID":"${u}","TaskName":"x\",","State":"PENDING","Results":null,"Error":"","CreatedAt":"${created}","TTL":0}`,
    ];
    for (const [i, layout] of layouts.entries()) {
      const uuid = id(`task${i}`);
      const before = layout(uuid);
      await raw.set(uuid, before, 'EX', 60);
      await backend.setState({ taskUUID: uuid, taskName: 'other', state: 'STARTED' });
      const after = await backend.getState(uuid);
      expect(after?.TaskName).toBe((JSON.parse(before) as { TaskName: string }).TaskName);
      expect(after?.CreatedAt).toBe(created);
      expect(JSON.parse((await raw.get(uuid)) as string)).toMatchObject({ State: 'STARTED', CreatedAt: created });
    }
  });

  it('stores and returns a Go document with an int64 beyond 2^53 byte for byte', async () => {
    const uuid = id('task');
    const doc = `{"TaskUUID":"${uuid}","TaskName":"big","State":"SUCCESS","Results":[{"Type":"int64","Value":9007199254740993}],"Error":"","CreatedAt":"2026-11-22T20:18:13.156749485Z","TTL":0}`;
    await raw.set(uuid, doc, 'EX', 60);
    await backend.setState({ taskUUID: uuid, taskName: '', state: 'SUCCESS', results: [{ Type: 'int64', Value: 9007199254740993n }] });
    expect(await raw.get(uuid)).toBe(doc);
  });

  it('reads a Go document with an int64 beyond 2^53 exactly (bigint)', async () => {
    const uuid = id('task');
    const doc = `{"TaskUUID":"${uuid}","TaskName":"big","State":"SUCCESS","Results":[{"Type":"int64","Value":9007199254740993}],"Error":"","CreatedAt":"2026-11-22T20:18:13.156749485Z","TTL":0}`;
    await raw.set(uuid, doc, 'EX', 60);
    const s = await backend.getState(uuid);
    expect(s?.Results?.[0]?.Value).toBe(9007199254740993n);
    expect(encodeTaskState(s!)).toBe(doc);
  });

  it('returns null for missing states and purges', async () => {
    const uuid = id('task');
    expect(await backend.getState(uuid)).toBeNull();
    await backend.setState({ taskUUID: uuid, taskName: 'x', state: 'PENDING' });
    await backend.purgeState(uuid);
    expect(await backend.getState(uuid)).toBeNull();
  });

  it('announces completed states (only those) on the state channel', async () => {
    const uuid = id('task');
    const sub = raw.duplicate();
    const got: string[] = [];
    sub.on('message', (_c: string, m: string) => got.push(m));
    await sub.subscribe(stateChannel(uuid));
    await backend.setState({ taskUUID: uuid, taskName: 'x', state: 'PENDING' });
    await backend.setState({ taskUUID: uuid, taskName: 'x', state: 'STARTED' });
    await backend.setState({ taskUUID: uuid, taskName: 'x', state: 'SUCCESS', results: [] });
    await backend.setState({ taskUUID: uuid, taskName: 'x', state: 'FAILURE', error: 'e' });
    await new Promise((r) => setTimeout(r, 50));
    // Each announcement is the document just written, so a waiter needs no read.
    expect(got.map((m) => JSON.parse(m) as { State: string; TaskName: string })).toMatchObject([
      { State: 'SUCCESS', TaskName: 'x' },
      { State: 'FAILURE', TaskName: 'x' },
    ]);
    expect(got[1]).toBe(await raw.get(uuid));
    await sub.quit();
  });
});

describe('RedisBackend.waitForState', () => {
  it('resolves promptly after another client writes a completed state', async () => {
    const uuid = id('task');
    const other = new RedisBackend({ url: URL, waitPollMs: 60_000 });
    await backend.setState({ taskUUID: uuid, taskName: 'add', state: 'PENDING' });
    const started = Date.now();
    const waiting = backend.waitForState(uuid, { timeoutMs: 5000 });
    setTimeout(() => {
      void other.setState({ taskUUID: uuid, taskName: '', state: 'STARTED' }).then(() =>
        other.setState({ taskUUID: uuid, taskName: '', state: 'SUCCESS', results: [{ Type: 'int64', Value: 2 }] }),
      );
    }, 100);
    const s = await waiting;
    expect(s?.State).toBe('SUCCESS');
    expect(s?.Results).toEqual([{ Type: 'int64', Value: 2 }]);
    expect(Date.now() - started).toBeLessThan(1000);
    await other.close();
  });

  it('ends the wait from the announcement itself: one read (the first) in all', async () => {
    const uuid = id('task');
    const waiter = new RedisBackend({ url: URL, waitPollMs: 60_000 });
    await backend.setState({ taskUUID: uuid, taskName: 'add', state: 'PENDING' });
    let reads = 0;
    const get = waiter.client.get.bind(waiter.client);
    waiter.client.get = ((...a: Parameters<typeof get>) => (reads++, get(...a))) as typeof get;
    const waiting = waiter.waitForState(uuid, { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 100));
    expect(reads).toBe(1);
    await backend.setState({ taskUUID: uuid, taskName: '', state: 'SUCCESS', results: [{ Type: 'string', Value: 'ok' }] });
    expect(await waiting).toMatchObject({ State: 'SUCCESS', TaskName: 'add', Results: [{ Type: 'string', Value: 'ok' }] });
    expect(reads).toBe(1);
    await waiter.close();
  });

  it('resolves at once for an already completed state', async () => {
    const uuid = id('task');
    await backend.setState({ taskUUID: uuid, taskName: 'add', state: 'FAILURE', error: 'e' });
    const s = await backend.waitForState(uuid, { timeoutMs: 5000 });
    expect(s?.State).toBe('FAILURE');
  });

  it('picks up a state written by Go (no publish) through the fallback poll', async () => {
    const uuid = id('task');
    const b = new RedisBackend({ url: URL, waitPollMs: 100 });
    const waiting = b.waitForState(uuid, { timeoutMs: 5000 });
    setTimeout(() => {
      void raw.set(uuid, `{"TaskUUID":"${uuid}","TaskName":"add","State":"SUCCESS","Results":[],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`, 'EX', 60);
    }, 150);
    expect((await waiting)?.State).toBe('SUCCESS');
    await b.close();
  });

  it('returns null on timeout and on abort when nothing is stored', async () => {
    const started = Date.now();
    expect(await backend.waitForState(id('task'), { timeoutMs: 200 })).toBeNull();
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const t = Date.now();
    expect(await backend.waitForState(id('task'), { timeoutMs: 5000, signal: ac.signal })).toBeNull();
    expect(Date.now() - t).toBeLessThan(1000);
  });

  it('supports many concurrent waiters on one key and cleans up', async () => {
    const uuid = id('task');
    const waits = Array.from({ length: 10 }, () => backend.waitForState(uuid, { timeoutMs: 5000 }));
    await new Promise((r) => setTimeout(r, 50));
    await backend.setState({ taskUUID: uuid, taskName: 'x', state: 'SUCCESS', results: [] });
    const all = await Promise.all(waits);
    expect(all.every((s) => s?.State === 'SUCCESS')).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(await raw.pubsub('NUMSUB', stateChannel(uuid))).toEqual([stateChannel(uuid), 0]);
  });

  it('close() ends pending waits and is idempotent; a passed-in client stays open', async () => {
    const client = new Redis(URL);
    const b = new RedisBackend({ client });
    const waiting = b.waitForState(id('task'), { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 50));
    await b.close();
    await b.close();
    expect(await waiting).toBeNull();
    expect(await client.ping()).toBe('PONG');
    await client.quit();
  });
});

describe('RedisBackend groups and chords', () => {
  it('initGroup writes the Go GroupMeta document and groupTaskStates keeps order', async () => {
    const g = id('group');
    const members = [id('task'), id('task'), id('task')];
    await backend.initGroup(g, members);
    const text = await raw.get(g);
    expect(text).toMatch(
      new RegExp(`^\\{"GroupUUID":"${g}","TaskUUIDs":\\["${members.join('","')}"\\],"ChordTriggered":false,"Lock":false,"CreatedAt":"[^"]+","TTL":0\\}$`),
    );
    expect(await raw.ttl(g)).toBeGreaterThan(100);
    const meta = await backend.getGroupMeta(g);
    expect(meta?.TaskUUIDs).toEqual(members);
    await backend.setState({ taskUUID: members[2]!, taskName: 'c', state: 'SUCCESS', results: [] });
    await backend.setState({ taskUUID: members[0]!, taskName: 'a', state: 'PENDING' });
    const states = await backend.groupTaskStates(g, 3);
    expect(states.map((s) => s?.TaskName ?? null)).toEqual(['a', null, 'c']);
    expect(await backend.groupTaskStates(id('group'), 3)).toEqual([]);
    await backend.purgeGroupMeta(g);
    expect(await backend.getGroupMeta(g)).toBeNull();
  });

  it("'complete' fires only when all members are done, once; reset allows again", async () => {
    const g = id('group');
    const members = [id('task'), id('task')];
    expect(await backend.triggerChord(g, { when: 'complete', count: 2 })).toEqual({ fired: false, reason: 'no-group' });
    await backend.initGroup(g, members);
    expect(await backend.triggerChord(g, { when: 'complete', count: 2 })).toEqual({ fired: false, reason: 'incomplete' });
    await backend.setState({ taskUUID: members[0]!, taskName: 'a', state: 'SUCCESS', results: [{ Type: 'int64', Value: 7 }] });
    expect(await backend.triggerChord(g, { when: 'complete', count: 2 })).toEqual({ fired: false, reason: 'incomplete' });
    await backend.setState({ taskUUID: members[1]!, taskName: 'b', state: 'FAILURE', error: 'x' });
    expect(await backend.triggerChord(g, { when: 'complete', count: 3 })).toEqual({ fired: false, reason: 'incomplete' });
    const before = await raw.get(g);
    const r = await backend.triggerChord(g, { when: 'complete', count: 2 });
    expect(r.fired).toBe(true);
    if (r.fired) {
      expect(r.states.map((s) => s?.State)).toEqual(['SUCCESS', 'FAILURE']);
      expect(r.states[0]?.Results).toEqual([{ Type: 'int64', Value: 7 }]);
      expect(r.states[1]?.Error).toBe('x');
    }
    expect(await raw.get(g)).toBe(before!.replace('"ChordTriggered":false', '"ChordTriggered":true'));
    expect((await backend.getGroupMeta(g))?.ChordTriggered).toBe(true);
    expect(await backend.triggerChord(g, { when: 'complete', count: 2 })).toEqual({ fired: false, reason: 'already-triggered' });
    await backend.resetChordTrigger(g);
    expect(await raw.get(g)).toBe(before);
    expect((await backend.triggerChord(g, { when: 'complete', count: 2 })).fired).toBe(true);
  });

  it("'now' fires whatever the members say, once", async () => {
    const g = id('group');
    const members = [id('task'), id('task')];
    await backend.initGroup(g, members);
    await backend.setState({ taskUUID: members[1]!, taskName: 'b', state: 'FAILURE', error: 'x' });
    const r = await backend.triggerChord(g, { when: 'now' });
    expect(r.fired).toBe(true);
    if (r.fired) expect(r.states.map((s) => s?.State ?? null)).toEqual([null, 'FAILURE']);
    expect(await backend.triggerChord(g, { when: 'now' })).toEqual({ fired: false, reason: 'already-triggered' });
  });

  it("waits while Go's TriggerChordMutex is held", async () => {
    const g = id('group');
    const mutex = id('mutex');
    const b = new RedisBackend({ url: URL, goChordMutex: mutex });
    await b.initGroup(g, []);
    await raw.set(mutex, 'go-token', 'PX', 300);
    const started = Date.now();
    const r = await b.triggerChord(g, { when: 'now' });
    expect(r.fired).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    await b.close();
  });

  it('a 200-member group completed by 8 racing backends fires exactly once (20 trials)', async () => {
    const racers = Array.from({ length: 8 }, () => new RedisBackend({ url: URL }));
    try {
      for (let trial = 0; trial < 20; trial++) {
        const g = id('group');
        const members = Array.from({ length: 200 }, () => id('task'));
        await racers[0]!.initGroup(g, members);
        let fired = 0;
        let firedStates = 0;
        await Promise.all(
          racers.map(async (b, k) => {
            for (let i = k; i < members.length; i += racers.length) {
              await b.setState({ taskUUID: members[i]!, taskName: 't', state: 'SUCCESS', results: [{ Type: 'int64', Value: i }] });
              const r = await b.triggerChord(g, { when: 'complete', count: members.length });
              if (r.fired) {
                fired++;
                firedStates = r.states.length;
                expect(r.states.map((s) => s?.Results?.[0]?.Value)).toEqual(members.map((_, j) => j));
              }
            }
          }),
        );
        expect(fired).toBe(1);
        expect(firedStates).toBe(200);
        await raw.del(g, ...members);
      }
    } finally {
      await Promise.all(racers.map((b) => b.close()));
    }
  });
});
