import { afterEach, describe, expect, it, vi } from 'vitest';
import { ClosedError, Reconnector } from '../src/index.js';

/** A Reconnector whose attempts fail `failures` times, then succeed with their number. */
function flaky(failures: number, extra: { minMs?: number; maxMs?: number; fatalOn?: number } = {}) {
  const starts: number[] = [];
  const reported: Error[] = [];
  let closed = false;
  let running = 0;
  let overlapped = false;
  const r = new Reconnector<number>({
    attempt: async () => {
      starts.push(Date.now());
      running += 1;
      overlapped ||= running > 1;
      await new Promise((res) => setTimeout(res, 5));
      running -= 1;
      const n = starts.length;
      if (n <= failures) throw Object.assign(new Error(`attempt ${n} failed`), { n });
      return n;
    },
    what: 'test connect to x://***@host',
    isClosed: () => closed,
    closedError: () => new ClosedError('Test'),
    configMismatch: (err) => ((err as { n: number }).n === extra.fatalOn ? 'the mismatch' : undefined),
    report: (e) => reported.push(e),
    minMs: extra.minMs ?? 20,
    maxMs: extra.maxMs ?? 80,
  });
  return { r, starts, reported, close: () => (closed = true), overlapped: () => overlapped };
}

describe('Reconnector', () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it('runs one attempt at a time for any number of callers, and all get the same connection', async () => {
    const f = flaky(2);
    const got = await Promise.all([f.r.connect(), f.r.connect(), f.r.connect()]);
    expect(got).toEqual([3, 3, 3]);
    expect(f.starts).toHaveLength(3);
    expect(f.overlapped()).toBe(false);
    expect(f.reported.map((e) => e.message)).toEqual(['test connect to x://***@host failed: attempt 1 failed', 'test connect to x://***@host failed: attempt 2 failed']);
    expect((f.reported[0]?.cause as { n: number }).n).toBe(1);
  });

  it('retries after a jittered delay that doubles up to the cap', async () => {
    vi.useFakeTimers();
    vi.spyOn(Math, 'random').mockReturnValue(0.5); // the middle of each delay's upper half: 3/4 of it
    const f = flaky(5, { minMs: 40, maxMs: 100 });
    const connected = f.r.connect();
    await vi.runAllTimersAsync();
    expect(await connected).toBe(6);
    // Each gap is the 5 ms attempt plus 3/4 of 40, 80, then the cap of 100.
    const gaps = f.starts.slice(1).map((t, i) => t - (f.starts[i] as number));
    expect(gaps).toEqual([35, 65, 80, 80, 80]);
  });

  it('starts afresh after a connection is had: a later connect() is a new attempt', async () => {
    const f = flaky(0);
    expect(await f.r.connect()).toBe(1);
    expect(await f.r.connect()).toBe(2);
  });

  it('ends with a CONFIG error, without retrying, on a failure configMismatch names', async () => {
    const f = flaky(10, { fatalOn: 2 });
    await expect(f.r.connect()).rejects.toMatchObject({
      code: 'CONFIG',
      message: 'test connect to x://***@host failed: attempt 2 failed (the mismatch)',
    });
    expect(f.starts).toHaveLength(2);
    expect(f.reported).toHaveLength(1);
  });

  it('gives callers the closed error once closed, and starts no attempt after', async () => {
    const f = flaky(100, { minMs: 30 });
    const waiting = f.r.connect();
    // Closed while the first attempt runs (it takes 5 ms): its failure is the closing's doing, not reported.
    await new Promise((res) => setTimeout(res, 2));
    f.close();
    await expect(waiting).rejects.toBeInstanceOf(ClosedError);
    await expect(f.r.connect()).rejects.toBeInstanceOf(ClosedError);
    await new Promise((res) => setTimeout(res, 100));
    expect(f.starts).toHaveLength(1);
    expect(f.reported).toEqual([]);
  });

  it('settled() waits for the attempts under way and never rejects', async () => {
    const f = flaky(1, { fatalOn: 1 });
    void f.r.connect().catch(() => {});
    await f.r.settled();
    expect(f.starts).toHaveLength(1);
    await expect(f.r.settled()).resolves.toBeUndefined();
  });
});
