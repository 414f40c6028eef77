import { describe, expect, it } from 'vitest';
import { type TaskState, waitForAnnouncedState } from '../src/index.js';

const state = (State: TaskState['State']): TaskState => ({
  TaskUUID: 't',
  TaskName: 'add',
  State,
  Results: State === 'SUCCESS' ? [] : null,
  Error: '',
  CreatedAt: '0001-01-01T00:00:00Z',
  TTL: 0,
});

/** A fake store: `stored` is what a read returns; `announce` plays the transport's notification. */
function harness(initial: TaskState | null) {
  let stored = initial;
  let reads = 0;
  let wake: ((s?: TaskState | null) => void) | undefined;
  let listening = false;
  const closing = new Set<() => void>();
  let closed = false;
  let failReads = false;
  return {
    set: (s: TaskState | null) => (stored = s),
    announce: (s?: TaskState | null) => wake?.(s),
    reads: () => reads,
    listening: () => listening,
    close: () => {
      closed = true;
      for (const end of [...closing]) end();
    },
    failReads: () => (failReads = true),
    closing,
    wait: (timeoutMs: number, signal?: AbortSignal, firstReadAfterMs?: number, pollMs = 60_000) =>
      waitForAnnouncedState({
        timeoutMs,
        ...(firstReadAfterMs !== undefined ? { firstReadAfterMs } : {}),
        ...(signal ? { signal } : {}),
        pollMs,
        closing,
        isClosed: () => closed,
        read: async () => {
          reads += 1;
          if (failReads) throw new Error('store down');
          return stored;
        },
        listen: (w) => {
          wake = w;
          listening = true;
          return { ready: Promise.resolve(), stop: () => (listening = false) };
        },
      }),
  };
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe('waitForAnnouncedState', () => {
  it('reads once after listening, ends on an announced completed state without another read, and stops listening', async () => {
    const h = harness(state('PENDING'));
    const waiting = h.wait(5000);
    await tick();
    expect(h.reads()).toBe(1);
    h.announce(state('SUCCESS'));
    expect((await waiting)?.State).toBe('SUCCESS');
    expect(h.reads()).toBe(1);
    expect(h.listening()).toBe(false);
    expect(h.closing.size).toBe(0);
  });

  it('reads again on an announcement that carries no state', async () => {
    const h = harness(state('STARTED'));
    const waiting = h.wait(5000);
    await tick();
    h.set(state('FAILURE'));
    h.announce();
    expect((await waiting)?.State).toBe('FAILURE');
    expect(h.reads()).toBe(2);
  });

  it('ends with the last state read at the deadline, on abort and on close', async () => {
    const h = harness(state('STARTED'));
    expect((await h.wait(30))?.State).toBe('STARTED');
    const abort = new AbortController();
    const aborted = h.wait(5000, abort.signal);
    await tick();
    abort.abort();
    expect((await aborted)?.State).toBe('STARTED');
    const closing = h.wait(5000);
    await tick();
    h.close();
    expect((await closing)?.State).toBe('STARTED');
  });

  it('rejects when a read fails while the backend is open', async () => {
    const h = harness(null);
    h.failReads();
    await expect(h.wait(5000)).rejects.toThrow('store down');
  });

  it('with firstReadAfterMs reads only once that delay passed unannounced, and not at all when the completion is announced first', async () => {
    const announced = harness(state('PENDING'));
    const first = announced.wait(5000, undefined, 80);
    await tick();
    expect(announced.reads()).toBe(0);
    announced.announce(state('SUCCESS'));
    expect((await first)?.State).toBe('SUCCESS');
    await new Promise((r) => setTimeout(r, 100)); // past the delay: its read was cancelled
    expect(announced.reads()).toBe(0);

    const silent = harness(state('SUCCESS')); // completed by a writer that announces nothing
    const t0 = Date.now();
    const second = silent.wait(5000, undefined, 80);
    await tick();
    expect(silent.reads()).toBe(0);
    expect((await second)?.State).toBe('SUCCESS');
    expect(silent.reads()).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(70);
  });

  it('with nothing announced, reads again every poll period until the state completes', async () => {
    const h = harness(state('STARTED'));
    const waiting = h.wait(5000, undefined, undefined, 20);
    await new Promise((r) => setTimeout(r, 90));
    const before = h.reads();
    expect(before).toBeGreaterThanOrEqual(2); // the read at once, then the poll's (four on time)
    h.set(state('SUCCESS'));
    expect((await waiting)?.State).toBe('SUCCESS');
    expect(h.reads()).toBeGreaterThan(before);
  });

  it('holds one timer while it waits, and none once it has ended', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const base = timers();
    const a = harness(state('PENDING'));
    const b = harness(state('PENDING'));
    const plain = a.wait(5000, undefined, undefined, 20);
    expect(timers()).toBe(base + 1);
    const delayed = b.wait(5000, undefined, 80, 20);
    expect(timers()).toBe(base + 2);
    a.announce(state('SUCCESS'));
    b.announce(state('SUCCESS'));
    expect((await plain)?.State).toBe('SUCCESS');
    expect((await delayed)?.State).toBe('SUCCESS');
    expect(timers()).toBe(base);
  });

  it('ends, and stops listening, when the store wakes it from inside listen', async () => {
    let stopped = false;
    const got = await waitForAnnouncedState({
      timeoutMs: 5000,
      pollMs: 60_000,
      closing: new Set(),
      isClosed: () => false,
      read: async () => null,
      listen: (wake) => {
        wake(state('SUCCESS'));
        return { ready: Promise.resolve(), stop: () => (stopped = true) };
      },
    });
    expect(got?.State).toBe('SUCCESS');
    expect(stopped).toBe(true);
  });
});
