import { randomUUID } from 'node:crypto';
import { type Backend, MemoryBroker, MemoryTransport, Server, TaskStates, arg, chord, group, newSignature } from '@machinery-ts/core';
import { afterEach, describe, expect, it } from 'vitest';

export interface BackendContractOptions {
  /** A new backend connected to the shared store. */
  readonly create: () => Promise<Backend> | Backend;
  /** Members and racers of the chord race. @default 50 and 4 */
  readonly chordMembers?: number;
  readonly chordRacers?: number;
  /** Members of the chord the core Worker runs end to end on 4 workers. @default 40 */
  readonly workerChordMembers?: number;
}

export function backendContract(name: string, options: BackendContractOptions): void {
  describe(`Backend contract: ${name}`, () => {
    const opened: Backend[] = [];
    const make = async (): Promise<Backend> => {
      const b = await options.create();
      opened.push(b);
      return b;
    };
    const id = (p = 'task'): string => `${p}_${randomUUID()}`;
    afterEach(async () => {
      await Promise.allSettled(opened.splice(0).map((b) => b.close()));
    });

    it('returns null for a state never written', async () => {
      expect(await (await make()).getState(id())).toBeNull();
    });

    it('keeps TaskName and CreatedAt from PENDING across later states', async () => {
      const b = await make();
      const uuid = id();
      await b.setState({ taskUUID: uuid, taskName: 'add', state: TaskStates.PENDING });
      const pending = await b.getState(uuid);
      for (const state of [TaskStates.RECEIVED, TaskStates.STARTED] as const) {
        await b.setState({ taskUUID: uuid, taskName: '', state });
      }
      await b.setState({ taskUUID: uuid, taskName: '', state: TaskStates.SUCCESS, results: [{ Type: 'int64', Value: 9007199254740993n }] });
      const done = await b.getState(uuid);
      expect(done?.TaskName).toBe('add');
      expect(done?.CreatedAt).toBe(pending?.CreatedAt);
      expect(done?.State).toBe('SUCCESS');
      expect(done?.Results).toEqual([{ Type: 'int64', Value: 9007199254740993n }]);
      expect(done?.Error).toBe('');
    });

    it('setStates, where offered, writes each state as setState would', async () => {
      const b = await make();
      if (!b.setStates) return; // optional; the worker and server fall back to setState
      const [first, second, third] = [id(), id(), id()];
      await b.setState({ taskUUID: first, taskName: 'add', state: TaskStates.PENDING });
      const created = (await b.getState(first))?.CreatedAt;
      await b.setStates([
        { taskUUID: first, taskName: '', state: TaskStates.SUCCESS, results: [{ Type: 'string', Value: 'ok' }] },
        { taskUUID: second, taskName: 'mul', state: TaskStates.PENDING },
        { taskUUID: third, taskName: 'div', state: TaskStates.FAILURE, error: 'by zero' },
      ]);
      expect(await b.getState(first)).toMatchObject({ TaskName: 'add', State: 'SUCCESS', CreatedAt: created, Results: [{ Type: 'string', Value: 'ok' }] });
      expect(await b.getState(second)).toMatchObject({ TaskName: 'mul', State: 'PENDING', Results: null });
      expect(await b.getState(third)).toMatchObject({ State: 'FAILURE', Error: 'by zero' });
    });

    it('stores FAILURE with its error and no results', async () => {
      const b = await make();
      const uuid = id();
      await b.setState({ taskUUID: uuid, taskName: 'boom', state: TaskStates.FAILURE, error: 'boom: x' });
      expect(await b.getState(uuid)).toMatchObject({ State: 'FAILURE', Error: 'boom: x', Results: null });
    });

    it('keeps group members in order and purges', async () => {
      const b = await make();
      const g = id('group');
      const members = [id(), id(), id()];
      await b.initGroup(g, members);
      expect((await b.getGroupMeta(g))?.TaskUUIDs).toEqual(members);
      await b.setState({ taskUUID: members[2] as string, taskName: 'x', state: TaskStates.SUCCESS, results: [] });
      const states = await b.groupTaskStates(g, 3);
      expect(states.map((s) => s?.TaskUUID ?? null)).toEqual([null, null, members[2]]);
      await b.purgeGroupMeta(g);
      expect(await b.getGroupMeta(g)).toBeNull();
    });

    it('triggerChord: incomplete, then fires once, then already-triggered; reset allows again', async () => {
      const b = await make();
      const g = id('group');
      const members = [id(), id()];
      await b.initGroup(g, members);
      await b.setState({ taskUUID: members[0] as string, taskName: 'x', state: TaskStates.SUCCESS, results: [] });
      expect(await b.triggerChord(g, { when: 'complete', count: 2 })).toEqual({ fired: false, reason: 'incomplete' });
      await b.setState({ taskUUID: members[1] as string, taskName: 'x', state: TaskStates.FAILURE, error: 'e' });
      const first = await b.triggerChord(g, { when: 'complete', count: 2 });
      expect(first.fired).toBe(true);
      expect(await b.triggerChord(g, { when: 'complete', count: 2 })).toEqual({ fired: false, reason: 'already-triggered' });
      expect(await b.triggerChord(g, { when: 'now' })).toEqual({ fired: false, reason: 'already-triggered' });
      await b.resetChordTrigger(g);
      expect((await b.triggerChord(g, { when: 'now' })).fired).toBe(true);
      expect(await b.triggerChord(id('group'), { when: 'now' })).toEqual({ fired: false, reason: 'no-group' });
    });

    it('lets exactly one of many racing backends fire a completed chord', async () => {
      const members = options.chordMembers ?? 50;
      const racers = await Promise.all(Array.from({ length: options.chordRacers ?? 4 }, () => make()));
      const g = id('group');
      const uuids = Array.from({ length: members }, () => id());
      await (racers[0] as Backend).initGroup(g, uuids);
      let fired = 0;
      await Promise.all(
        uuids.map(async (uuid, i) => {
          const b = racers[i % racers.length] as Backend;
          await b.setState({ taskUUID: uuid, taskName: 'm', state: TaskStates.SUCCESS, results: [{ Type: 'int64', Value: i }] });
          const r = await b.triggerChord(g, { when: 'complete', count: members });
          if (r.fired) {
            fired += 1;
            expect(r.states.map((s) => s?.Results?.[0]?.Value)).toEqual(uuids.map((_, j) => j));
          }
        }),
      );
      expect(fired).toBe(1);
    });

    it('carries the core Worker: exact int64 results, a chord over 4 workers firing once, a failed member rejecting its chord', async () => {
      // Four servers on one in-memory queue, each with its own backend, stand for four worker processes.
      const transport = new MemoryTransport();
      const servers = await Promise.all(
        Array.from({ length: 4 }, async () => new Server({ broker: new MemoryBroker({ transport }), backend: await make() })),
      );
      let callbacks = 0;
      const workers = servers.map((s) => {
        s.registerTask('double', ([n]) => (n as bigint) * 2n);
        s.registerTask('fail', () => {
          throw new Error('member failed for good');
        });
        s.registerTask('total', (args) => {
          callbacks += 1;
          return (args as bigint[]).reduce((a, b) => a + b, 0n);
        });
        return s.newWorker({ concurrency: 8, handleSignals: false, onError: () => {} });
      });
      try {
        await Promise.all(workers.map((w) => w.start()));
        const producer = servers[0] as Server;
        const one = await producer.sendTask({ Name: 'double', Args: [arg('int64', 4611686018427387903n)] });
        expect(await one.get({ timeoutMs: 10_000 })).toEqual([9223372036854775806n]);

        const n = options.workerChordMembers ?? 40;
        const members = Array.from({ length: n }, (_, i) => newSignature({ Name: 'double', Args: [arg('int64', BigInt(i))] }));
        const r = await producer.sendChord(chord(group(...members), newSignature({ Name: 'total' })), { concurrency: 16 });
        expect(await r.get({ timeoutMs: 20_000 })).toEqual([BigInt(n * (n - 1))]);

        const bad = await producer.sendChord(
          chord(group(newSignature({ Name: 'double', Args: [arg('int64', 1n)] }), newSignature({ Name: 'fail' })), newSignature({ Name: 'total' })),
        );
        await expect(bad.get({ timeoutMs: 10_000 })).rejects.toThrow('member failed for good');
        await new Promise((res) => setTimeout(res, 200));
        expect(callbacks).toBe(1);
      } finally {
        await Promise.all(workers.map((w) => w.stop()));
        await Promise.all(servers.map((s) => s.close()));
      }
    });

    it('waitForState (when offered) resolves on completion and returns at its deadline', async () => {
      const b = await make();
      if (!b.waitForState) return;
      const uuid = id();
      const t0 = Date.now();
      expect(await b.waitForState(uuid, { timeoutMs: 200 })).toBeNull();
      expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
      const writer = await make();
      const waiting = b.waitForState(uuid, { timeoutMs: 5000 });
      setTimeout(() => void writer.setState({ taskUUID: uuid, taskName: 'w', state: TaskStates.SUCCESS, results: [] }), 100);
      expect((await waiting)?.State).toBe('SUCCESS');
    });
  });
}
