import { randomUUID } from 'node:crypto';
import memjs from 'memjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type TaskState, TaskStates, isCompleted, resultsFromWire } from '@machinery-ts/core';
import { MemcacheBackend, parseMemcacheUrl } from '../src/index.js';

const URL = process.env.MTS_MEMCACHE_URL ?? 'memcache://127.0.0.1:11213';
const RFC3339_NANO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/;

const taskId = (): string => `task_${randomUUID()}`;
const groupId = (): string => `group_${randomUUID()}`;

let raw: memjs.Client;
let backend: MemcacheBackend;

async function rawGet(key: string): Promise<string | null> {
  const { value } = await raw.get(key);
  return value === null ? null : value.toString('utf8');
}

beforeAll(() => {
  raw = memjs.Client.create(parseMemcacheUrl(URL), { logger: { log: () => undefined } });
  backend = new MemcacheBackend({ url: URL });
});

afterAll(async () => {
  await backend.close();
  raw.close();
});

describe('parseMemcacheUrl', () => {
  it('takes Go v1 URL form', () => {
    expect(parseMemcacheUrl('memcache://h1:1,h2:2')).toBe('h1:1,h2:2');
    expect(parseMemcacheUrl('memcache://127.0.0.1:11213/')).toBe('127.0.0.1:11213');
    expect(() => parseMemcacheUrl('redis://x:1')).toThrow(/Invalid memcache URL/);
    expect(() => parseMemcacheUrl('memcache://')).toThrow(/Invalid memcache URL/);
  });
});

describe('documents as Go writes them', () => {
  it('PENDING then SUCCESS, field for field, TaskName/CreatedAt kept', async () => {
    const id = taskId();
    await backend.setState({ taskUUID: id, taskName: 'add', state: TaskStates.PENDING });
    const pending = await rawGet(id);
    const createdAt = (JSON.parse(pending!) as { CreatedAt: string }).CreatedAt;
    expect(createdAt).toMatch(RFC3339_NANO);
    expect(pending).toBe(
      `{"TaskUUID":"${id}","TaskName":"add","State":"PENDING","Results":null,"Error":"","CreatedAt":"${createdAt}","TTL":0}`,
    );

    await backend.setState({ taskUUID: id, taskName: '', state: TaskStates.RECEIVED });
    expect(await rawGet(id)).toBe(
      `{"TaskUUID":"${id}","TaskName":"add","State":"RECEIVED","Results":null,"Error":"","CreatedAt":"${createdAt}","TTL":0}`,
    );
    await backend.setState({ taskUUID: id, taskName: '', state: TaskStates.STARTED });
    await backend.setState({
      taskUUID: id,
      taskName: '',
      state: TaskStates.SUCCESS,
      results: [{ Type: 'int64', Value: 2n }],
    });
    expect(await rawGet(id)).toBe(
      `{"TaskUUID":"${id}","TaskName":"add","State":"SUCCESS","Results":[{"Type":"int64","Value":2}],"Error":"","CreatedAt":"${createdAt}","TTL":0}`,
    );
    const state = await backend.getState(id);
    expect(state).toMatchObject({ TaskName: 'add', State: 'SUCCESS', CreatedAt: createdAt });
    expect(resultsFromWire(state!.Results)).toEqual([2n]);
    // The lock key is gone after the write.
    expect(await rawGet(`${id}.lock`)).toBeNull();
  });

  it('FAILURE keeps TaskName and CreatedAt; empty results store []', async () => {
    const id = taskId();
    await backend.setState({ taskUUID: id, taskName: 'fail', state: TaskStates.PENDING });
    const createdAt = (await backend.getState(id))!.CreatedAt;
    await backend.setState({ taskUUID: id, taskName: '', state: TaskStates.FAILURE, error: 'boom' });
    expect(await rawGet(id)).toBe(
      `{"TaskUUID":"${id}","TaskName":"fail","State":"FAILURE","Results":null,"Error":"boom","CreatedAt":"${createdAt}","TTL":0}`,
    );
    const id2 = taskId();
    await backend.setState({ taskUUID: id2, taskName: 'noop', state: TaskStates.SUCCESS, results: [] });
    // No PENDING before: Go's zero values, as a missing key merges nothing.
    expect(await rawGet(id2)).toBe(
      `{"TaskUUID":"${id2}","TaskName":"noop","State":"SUCCESS","Results":[],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`,
    );
  });

  it('a PENDING (retry) writes a new CreatedAt', async () => {
    const id = taskId();
    await backend.setState({ taskUUID: id, taskName: 'r', state: TaskStates.PENDING });
    const first = (await backend.getState(id))!.CreatedAt;
    await new Promise((r) => setTimeout(r, 5));
    await backend.setState({ taskUUID: id, taskName: '', state: TaskStates.RETRY });
    expect((await backend.getState(id))!.CreatedAt).toBe(first);
    await backend.setState({ taskUUID: id, taskName: 'r', state: TaskStates.PENDING });
    expect((await backend.getState(id))!.CreatedAt).not.toBe(first);
  });

  it('concurrent writers from separate instances never lose TaskName/CreatedAt', async () => {
    const others = Array.from({ length: 4 }, () => new MemcacheBackend({ url: URL }));
    try {
      const id = taskId();
      await backend.setState({ taskUUID: id, taskName: 'conc', state: TaskStates.PENDING });
      const createdAt = (await backend.getState(id))!.CreatedAt;
      const states = [TaskStates.RECEIVED, TaskStates.STARTED, TaskStates.RETRY, TaskStates.SUCCESS] as const;
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          others[i % others.length]!.setState({ taskUUID: id, taskName: '', state: states[i % states.length]! }),
        ),
      );
      expect(await backend.getState(id)).toMatchObject({ TaskName: 'conc', CreatedAt: createdAt });
    } finally {
      await Promise.all(others.map((b) => b.close()));
    }
  });

  it('group meta as Go writes it', async () => {
    const g = groupId();
    const [a, b] = [taskId(), taskId()];
    await backend.initGroup(g, [a, b]);
    const text = await rawGet(g);
    const createdAt = (JSON.parse(text!) as { CreatedAt: string }).CreatedAt;
    expect(createdAt).toMatch(RFC3339_NANO);
    expect(text).toBe(
      `{"GroupUUID":"${g}","TaskUUIDs":["${a}","${b}"],"ChordTriggered":false,"Lock":false,"CreatedAt":"${createdAt}","TTL":0}`,
    );
    expect(await backend.getGroupMeta(g)).toEqual({
      GroupUUID: g,
      TaskUUIDs: [a, b],
      ChordTriggered: false,
      Lock: false,
      CreatedAt: createdAt,
      TTL: 0,
    });
  });

  it('reads a Go-written state exactly, int64 beyond 2^53 as bigint', async () => {
    const id = taskId();
    const goDoc = `{"TaskUUID":"${id}","TaskName":"big","State":"SUCCESS","Results":[{"Type":"int64","Value":9007199254740993},{"Type":"string","Value":"x"}],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`;
    await raw.set(id, goDoc, { expires: 600 });
    const state = await backend.getState(id);
    expect(state).toMatchObject({ TaskUUID: id, TaskName: 'big', State: 'SUCCESS', Error: '', TTL: 0 });
    expect(resultsFromWire(state!.Results)).toEqual([9007199254740993n, 'x']);
    // A SUCCESS written back by TS re-encodes the same bytes.
    await backend.setState({ taskUUID: id, taskName: '', state: TaskStates.SUCCESS, results: state!.Results });
    expect(await rawGet(id)).toBe(goDoc);
  });

  it("reads Go's own memcache documents (a later state with Go's zero TaskName/CreatedAt)", async () => {
    const id = taskId();
    const goDoc = `{"TaskUUID":"${id}","TaskName":"","State":"SUCCESS","Results":[{"Type":"int64","Value":2},{"Type":"[]string","Value":["a","b"]}],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}`;
    await raw.set(id, goDoc, { expires: 600 });
    const state = await backend.getState(id);
    expect(state).toEqual({
      TaskUUID: id,
      TaskName: '',
      State: 'SUCCESS',
      Results: [
        { Type: 'int64', Value: 2 },
        { Type: '[]string', Value: ['a', 'b'] },
      ],
      Error: '',
      CreatedAt: '0001-01-01T00:00:00Z',
      TTL: 0,
    });
    expect(resultsFromWire(state!.Results)).toEqual([2n, ['a', 'b']]);
    const g = groupId();
    await raw.set(g, `{"GroupUUID":"${g}","TaskUUIDs":["${id}"],"ChordTriggered":false,"Lock":false,"CreatedAt":"2026-11-22T20:11:23.122454143Z","TTL":0}`, { expires: 600 });
    const r = await backend.triggerChord(g, { when: 'complete', count: 1 });
    expect(r.fired).toBe(true);
    // The meta rewritten for Go keeps Go's bytes apart from the flag.
    expect(await rawGet(g)).toBe(
      `{"GroupUUID":"${g}","TaskUUIDs":["${id}"],"ChordTriggered":true,"Lock":false,"CreatedAt":"2026-11-22T20:11:23.122454143Z","TTL":0}`,
    );
  });

  it('missing state reads as null', async () => {
    expect(await backend.getState(taskId())).toBeNull();
    expect(await backend.getGroupMeta(groupId())).toBeNull();
  });
});

describe('expiry', () => {
  it('passes the absolute unix time now + resultsExpireIn (3600 when 0), as Go does', async () => {
    const client = memjs.Client.create(parseMemcacheUrl(URL), { logger: { log: () => undefined } });
    try {
      const spy = vi.spyOn(client, 'set');
      const b0 = new MemcacheBackend({ client, resultsExpireIn: 0 });
      const before = Math.floor(Date.now() / 1000);
      await b0.setState({ taskUUID: taskId(), taskName: 'x', state: TaskStates.PENDING });
      await b0.initGroup(groupId(), []);
      const after = Math.floor(Date.now() / 1000);
      // memjs's promise form re-enters set() with a callback; count the outer calls only.
      const calls = spy.mock.calls.filter((c) => typeof (c as unknown[])[3] !== 'function');
      expect(calls).toHaveLength(2);
      for (const call of calls) {
        const expires = (call[2] as { expires: number }).expires;
        expect(expires).toBeGreaterThanOrEqual(before + 3600);
        expect(expires).toBeLessThanOrEqual(after + 3600);
        expect(expires).toBeGreaterThan(30 * 24 * 3600); // memcached reads it as absolute
      }
      await b0.close();
      // close() leaves a client it did not create open.
      expect((await client.set(`k_${randomUUID()}`, 'v', { expires: 60 }))).toBe(true);
    } finally {
      client.close();
    }
  });

  // memcached counts expiry in whole seconds of its own clock, so a 1 s expiry can lapse at
  // once (it failed that way in CI); 2 s leaves a second to read the state back. That clock
  // ticks once a second and lags the wall clock by up to a second more, so the lapse is
  // waited for (a fixed 3.2 s wait failed in one clean-clone run) rather than timed.
  it('resultsExpireIn 2: the state is there at once and gone within a few seconds', async () => {
    const b1 = new MemcacheBackend({ url: URL, resultsExpireIn: 2 });
    try {
      const id = taskId();
      const g = groupId();
      await b1.setState({ taskUUID: id, taskName: 'short', state: TaskStates.PENDING });
      await b1.initGroup(g, [id]);
      expect(await b1.getState(id)).not.toBeNull();
      const deadline = Date.now() + 8000;
      while ((await b1.getState(id)) !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      expect(await b1.getState(id)).toBeNull();
      expect(await b1.getGroupMeta(g)).toBeNull();
    } finally {
      await b1.close();
    }
  });
});

async function makeGroup(n: number): Promise<{ g: string; ids: string[] }> {
  const g = groupId();
  const ids = Array.from({ length: n }, taskId);
  await backend.initGroup(g, ids);
  return { g, ids };
}

const success = (id: string, v: number): Promise<void> =>
  backend.setState({ taskUUID: id, taskName: 'm', state: TaskStates.SUCCESS, results: [{ Type: 'int64', Value: BigInt(v) }] });

describe('chord trigger', () => {
  it('no-group, incomplete, then fires once with states in group order', async () => {
    expect(await backend.triggerChord(groupId(), { when: 'complete', count: 1 })).toEqual({ fired: false, reason: 'no-group' });
    const { g, ids } = await makeGroup(3);
    await success(ids[0]!, 0);
    await success(ids[1]!, 1);
    expect(await backend.triggerChord(g, { when: 'complete', count: 3 })).toEqual({ fired: false, reason: 'incomplete' });
    await backend.setState({ taskUUID: ids[2]!, taskName: 'm', state: TaskStates.FAILURE, error: 'e' });
    const r = await backend.triggerChord(g, { when: 'complete', count: 3 });
    expect(r.fired).toBe(true);
    if (!r.fired) throw new Error('unreachable');
    expect(r.states.map((s) => s?.TaskUUID)).toEqual(ids);
    expect(r.states.map((s) => s?.State)).toEqual(['SUCCESS', 'SUCCESS', 'FAILURE']);
    expect((await backend.getGroupMeta(g))!.ChordTriggered).toBe(true);
    expect(await backend.triggerChord(g, { when: 'complete', count: 3 })).toEqual({ fired: false, reason: 'already-triggered' });
    expect(await backend.triggerChord(g, { when: 'now' })).toEqual({ fired: false, reason: 'already-triggered' });
  });

  it("'now' fires whatever the members say, exactly once", async () => {
    const { g, ids } = await makeGroup(3);
    await backend.setState({ taskUUID: ids[0]!, taskName: 'm', state: TaskStates.FAILURE, error: 'x' });
    const results = await Promise.all(Array.from({ length: 10 }, () => backend.triggerChord(g, { when: 'now' })));
    expect(results.filter((r) => r.fired)).toHaveLength(1);
    const won = results.find((r) => r.fired);
    if (!won?.fired) throw new Error('unreachable');
    expect(won.states.map((s) => s?.State ?? null)).toEqual(['FAILURE', null, null]);
    expect(results.filter((r) => !r.fired && r.reason === 'already-triggered')).toHaveLength(9);
  });

  it('resetChordTrigger lets a retry fire again', async () => {
    const { g, ids } = await makeGroup(2);
    await Promise.all(ids.map((id, i) => success(id, i)));
    expect((await backend.triggerChord(g, { when: 'complete', count: 2 })).fired).toBe(true);
    await backend.resetChordTrigger(g);
    expect((await backend.getGroupMeta(g))!.ChordTriggered).toBe(false);
    expect(await rawGet(`${g}:chord_triggered`)).toBeNull();
    expect((await backend.triggerChord(g, { when: 'complete', count: 2 })).fired).toBe(true);
    expect((await backend.triggerChord(g, { when: 'complete', count: 2 })).fired).toBe(false);
  });

  it('an evicted member state reads as null and keeps the chord incomplete', async () => {
    const { g, ids } = await makeGroup(3);
    await Promise.all(ids.map((id, i) => success(id, i)));
    await raw.delete(ids[1]!); // what an eviction looks like
    const states = await backend.groupTaskStates(g, 3);
    expect(states.map((s) => s?.TaskUUID ?? null)).toEqual([ids[0], null, ids[2]]);
    expect(await backend.triggerChord(g, { when: 'complete', count: 3 })).toEqual({ fired: false, reason: 'incomplete' });
    expect((await backend.triggerChord(g, { when: 'now' })).fired).toBe(true);
  });

  it('groupTaskStates: order, count prefix, no meta → []', async () => {
    const { g, ids } = await makeGroup(4);
    await Promise.all(ids.map((id, i) => success(id, i)));
    const all = await backend.groupTaskStates(g, 4);
    expect(all.map((s) => resultsFromWire(s!.Results)[0])).toEqual([0n, 1n, 2n, 3n]);
    expect((await backend.groupTaskStates(g, 2)).map((s) => s?.TaskUUID)).toEqual(ids.slice(0, 2));
    expect(await backend.groupTaskStates(groupId(), 2)).toEqual([]);
  });

  it('a 200-member chord completed by 8 racing instances fires exactly once (50 trials)', async () => {
    const instances = Array.from({ length: 8 }, () => new MemcacheBackend({ url: URL }));
    try {
      const N = 200;
      for (let trial = 0; trial < 50; trial++) {
        const { g, ids } = await makeGroup(N);
        // All but the last 8 members finish first.
        await Promise.all(ids.slice(0, N - 8).map((id, i) => success(id, i)));
        // The last 8 finish on 8 instances at once; every one of them (twice) checks the chord,
        // as do the instances of members that finished earlier.
        const outcomes = await Promise.all(
          instances.map(async (inst, k) => {
            const id = ids[N - 8 + k]!;
            await inst.setState({
              taskUUID: id,
              taskName: 'm',
              state: TaskStates.SUCCESS,
              results: [{ Type: 'int64', Value: BigInt(N - 8 + k) }],
            });
            return Promise.all([
              inst.triggerChord(g, { when: 'complete', count: N }),
              inst.triggerChord(g, { when: 'complete', count: N }),
            ]);
          }),
        );
        const flat = outcomes.flat();
        const fired = flat.filter((r) => r.fired);
        expect(fired, `trial ${trial}`).toHaveLength(1);
        const win = fired[0]!;
        if (!win.fired) throw new Error('unreachable');
        expect(win.states).toHaveLength(N);
        expect(win.states.every((s: TaskState | null) => isCompleted(s))).toBe(true);
        expect(win.states.map((s) => s!.TaskUUID)).toEqual(ids);
        expect((await backend.getGroupMeta(g))!.ChordTriggered).toBe(true);
      }
    } finally {
      await Promise.all(instances.map((b) => b.close()));
    }
  });

  it('purgeState and purgeGroupMeta delete', async () => {
    const { g, ids } = await makeGroup(1);
    await success(ids[0]!, 1);
    expect((await backend.triggerChord(g, { when: 'now' })).fired).toBe(true);
    await backend.purgeState(ids[0]!);
    await backend.purgeGroupMeta(g);
    expect(await backend.getState(ids[0]!)).toBeNull();
    expect(await backend.getGroupMeta(g)).toBeNull();
    expect(await rawGet(`${g}:chord_triggered`)).toBeNull();
  });
});

describe('lifecycle and errors', () => {
  it('capabilities', () => {
    expect(backend.capabilities).toEqual({ waitForState: false, mayEvict: true });
  });

  it('close is idempotent', async () => {
    const b = new MemcacheBackend({ url: URL });
    await b.getState(taskId());
    await b.close();
    await b.close();
  });

  it('an unreachable server rejects instead of reading as "no state"', async () => {
    const b = new MemcacheBackend({ url: 'memcache://127.0.0.1:1' });
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      await expect(b.getState(taskId())).rejects.toThrow();
    } finally {
      log.mockRestore();
      await b.close();
    }
  });
});
