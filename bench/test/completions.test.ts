import { describe, expect, it } from 'vitest';
import { CompletionPoll, type StateReader } from '../src/completions.js';

/** States in a Map, counting what each poll reads. */
function store(): StateReader & { states: Map<string, string>; gets: number; read: number } {
  const states = new Map<string, string>();
  const s = {
    states,
    gets: 0,
    read: 0,
    async get(id: string) {
      s.gets += 1;
      return states.get(id) ?? null;
    },
    async mget(ids: string[]) {
      s.read += ids.length;
      return ids.map((id) => states.get(id) ?? null);
    },
  };
  return s;
}

const finish = (s: ReturnType<typeof store>, ids: string[], state = 'SUCCESS'): void => {
  for (const id of ids) s.states.set(id, `{"TaskUUID":"${id}","State":"${state}"}`);
};
const ids = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `t${from + i}`);

describe('CompletionPoll', () => {
  it('counts completed and failed tasks, and finds the unfinished ones again later', async () => {
    const s = store();
    const poll = new CompletionPoll(s);
    for (const id of ids(250)) poll.add(id);
    finish(s, ids(120));
    finish(s, ['t3'], 'FAILURE');
    s.states.set('t5', '{"TaskUUID":"t5","State":"STARTED"}');
    // The first chunk of 100 is read; the second's last task is unfinished, so it waits.
    expect(await poll.poll()).toEqual({ done: 98, failed: 1 });
    finish(s, ['t5']);
    expect(await poll.poll()).toEqual({ done: 99, failed: 1 });
    finish(s, ids(130, 120));
    expect(await poll.poll()).toEqual({ done: 249, failed: 1 });
  });

  it('with 300,000 tasks sent and none finished, a poll reads one state', async () => {
    const s = store();
    const poll = new CompletionPoll(s);
    for (const id of ids(300_000)) poll.add(id);
    expect(await poll.poll()).toEqual({ done: 0, failed: 0 });
    expect([s.gets, s.read]).toEqual([1, 0]);
    finish(s, ids(300_000));
    expect(await poll.poll()).toEqual({ done: 300_000, failed: 0 });
  });

  it('reads each state about once while tasks finish in order', async () => {
    const s = store();
    const poll = new CompletionPoll(s);
    for (const id of ids(10_000)) poll.add(id);
    for (let n = 0; n < 10_000; n += 350) {
      finish(s, ids(350, n).filter((id) => Number(id.slice(1)) < 10_000));
      await poll.poll();
    }
    expect(poll.done).toBe(10_000);
    // One MGET per chunk of 100, plus the unfinished of a chunk read a second time.
    expect(s.read).toBeLessThan(10_500);
  });

  it('reads only the unfinished of a chunk until they finish, then goes on', async () => {
    const s = store();
    const poll = new CompletionPoll(s);
    for (const id of ids(300)) poll.add(id);
    finish(s, ids(300).filter((id) => id !== 't42'));
    await poll.poll();
    s.read = 0;
    expect(await poll.poll()).toEqual({ done: 99, failed: 0 });
    expect(s.read).toBe(1);
    finish(s, ['t42']);
    expect(await poll.poll()).toEqual({ done: 300, failed: 0 });
  });
});
