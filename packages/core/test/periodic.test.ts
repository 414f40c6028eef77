import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Lock } from '../src/contracts/lock.js';
import { ConfigError } from '../src/errors.js';
import { newSignature } from '../src/message/signature.js';
import { MemoryLock } from '../src/memory/memory-lock.js';
import { Scheduler, parseGoDuration, parseSchedule } from '../src/periodic.js';
import { Server } from '../src/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until ~50 ms past a whole second, so the next boundary is far from now; returns it. */
async function nextSecondBoundary(): Promise<number> {
  const into = Date.now() % 1000;
  if (into > 700 || into < 50) await sleep((1050 - into) % 1000);
  return (Math.floor(Date.now() / 1000) + 1) * 1000;
}

function countingServer(lock: Lock): { server: Server; published: string[] } {
  const server = new Server({ lock });
  const published: string[] = [];
  const orig = server.broker.publish.bind(server.broker);
  server.broker.publish = async (sig) => {
    published.push(sig.UUID);
    return orig(sig);
  };
  return { server, published };
}

describe('parseSchedule', () => {
  it('computes cron fire times in UTC by default', () => {
    const s = parseSchedule('0 6 * * ?');
    const from = Date.UTC(2026, 0, 1, 7, 0, 0);
    expect(new Date(s.next(from) as number).toISOString()).toBe('2026-01-02T06:00:00.000Z');
    expect(new Date(s.next(Date.UTC(2026, 0, 1, 5, 59)) as number).toISOString()).toBe('2026-01-01T06:00:00.000Z');
  });

  it('computes cron fire times in a given zone and with a CRON_TZ prefix', () => {
    const from = Date.UTC(2026, 0, 1, 0, 0, 0);
    // 06:00 in New York in January is 11:00 UTC.
    expect(new Date(parseSchedule('0 6 * * *', 'America/New_York').next(from) as number).toISOString()).toBe('2026-01-01T11:00:00.000Z');
    expect(new Date(parseSchedule('CRON_TZ=Asia/Tokyo 0 6 * * *').next(from) as number).toISOString()).toBe('2026-01-01T21:00:00.000Z');
  });

  it('accepts descriptors and @every with Go durations, aligned to the epoch', () => {
    expect(parseSchedule('@hourly').next(Date.UTC(2026, 0, 1, 0, 30))).toBe(Date.UTC(2026, 0, 1, 1, 0));
    expect(parseSchedule('@every 1h30m').next(0)).toBe(5_400_000);
    expect(parseSchedule('@every 5m').next(299_999)).toBe(300_000);
    expect(parseSchedule('@every 5m').next(300_000)).toBe(600_000);
    expect(parseSchedule('@every 100ms').next(1)).toBe(1000);
    expect(parseGoDuration('1.5s')).toBe(1500);
    expect(parseGoDuration('2h45m10s')).toBe(9_910_000);
  });

  it('rejects bad specs with an error naming the spec', () => {
    for (const spec of ['every minute', '* * * *', '0 0 * * * *', '@every soon', '@every', '61 * * * *', '@sometimes', 'CRON_TZ=Nowhere/Land 0 6 * * *']) {
      let caught: unknown;
      try {
        parseSchedule(spec);
      } catch (err) {
        caught = err;
      }
      expect(caught, spec).toBeInstanceOf(ConfigError);
      expect((caught as Error).message).toContain(`"${spec}"`);
    }
    const scheduler = new Scheduler(new Server());
    expect(() => scheduler.registerPeriodicTask('nope', 'job', newSignature({ Name: 'add' }))).toThrow(/periodic task job: invalid periodic spec "nope"/);
  });
});

describe('Scheduler', () => {
  it('three schedulers sharing one lock send each of 10 ticks exactly once', async () => {
    const lock = new MemoryLock({ leases: new Map() });
    const nodes = [countingServer(lock), countingServer(lock), countingServer(lock)];
    const schedulers = nodes.map((n) => new Scheduler(n.server));
    const first = await nextSecondBoundary();
    for (const s of schedulers) s.registerPeriodicTask('@every 1s', 'tick', newSignature({ Name: 'add' }));
    const sent = () => nodes.reduce((n, x) => n + x.published.length, 0);
    // Ticks at first, first+1s, …: stop as soon as 10 sends are seen (a second before the 11th tick).
    while (sent() < 10 && Date.now() < first + 20_000) await sleep(20);
    await Promise.all(schedulers.map((s) => s.stop()));
    expect(Date.now()).toBeGreaterThanOrEqual(first + 9000); // 10 ticks really elapsed, no tick sent twice
    const all = nodes.flatMap((n) => n.published);
    expect(all).toHaveLength(10);
    expect(new Set(all).size).toBe(10);
    const keys = lock.keys().sort();
    expect(keys).toHaveLength(10);
    expect(keys[0]).toBe(`machinery_lock_tick|@every 1s|${first}`);
    await Promise.all(nodes.map((n) => n.server.close()));
  }, 30_000);

  it('a removed schedule stops firing; chains, groups and chords get fresh ids per tick', async () => {
    const lock = new MemoryLock();
    const { server, published } = countingServer(lock);
    const scheduler = new Scheduler(server);
    const sig = newSignature({ Name: 'add' });
    await nextSecondBoundary();
    scheduler.registerPeriodicTask('@every 1s', 'single', sig);
    scheduler.registerPeriodicChain('@every 1s', 'chain', newSignature({ Name: 'a' }), newSignature({ Name: 'b' }));
    scheduler.registerPeriodicGroup('@every 1s', 'group', 2, newSignature({ Name: 'a' }), newSignature({ Name: 'b' }));
    scheduler.registerPeriodicChord('@every 1s', 'chord', 0, newSignature({ Name: 'cb' }), newSignature({ Name: 'a' }), newSignature({ Name: 'b' }));
    const first = await nextSecondBoundary();
    const until = async (n: number) => {
      while (published.length < n && Date.now() < first + 8000) await sleep(10);
    };
    await until(6);
    // 1 task + 1 chain head + 2 group members + 2 chord members.
    expect(Date.now()).toBeLessThan(first + 1000);
    expect(published).toHaveLength(6);
    expect(new Set(published).size).toBe(6);
    expect(scheduler.remove('single')).toBe(true);
    expect(scheduler.remove('chain')).toBe(true);
    expect(scheduler.remove('group')).toBe(true);
    expect(scheduler.remove('missing')).toBe(false);
    await until(8);
    await sleep(50);
    // Only the chord fired again, with new ids.
    expect(published).toHaveLength(8);
    expect(new Set(published).size).toBe(8);
    expect(scheduler.names()).toEqual(['chord']);
    await scheduler.stop();
    const count = published.length;
    await sleep(1100);
    expect(published).toHaveLength(count);
    expect(sig.UUID).toBe('');
    await server.close();
  }, 10_000);
});

describe("Scheduler in lockMode 'go'", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("writes Go's key and value: binary + name + spec, next fire time in ns − 1", async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1, 0, 0, 30) });
    const leases = new Map<string, { token: string; expiresAt: number }>();
    const { server, published } = countingServer(new MemoryLock({ leases }));
    const scheduler = new Scheduler(server, { lockMode: 'go', goBinaryName: 'worker' });
    scheduler.registerPeriodicTask('*/1 * * * *', 'periodic-task', newSignature({ Name: 'add' }));
    await vi.advanceTimersByTimeAsync(30_000);
    expect(published).toHaveLength(1);
    expect([...leases.keys()]).toEqual(['machinery_lock_workerperiodic-task*/1 * * * *']);
    const lease = leases.get('machinery_lock_workerperiodic-task*/1 * * * *');
    // Fired at 00:01:00, so Go's value is 00:02:00 in ns minus 1.
    expect(lease?.token).toBe('1767225719999999999');
    expect(BigInt(lease?.token ?? 0) + 1n).toBe(BigInt(Date.UTC(2026, 0, 1, 0, 2)) * 1_000_000n);
    expect(lease?.expiresAt).toBe(Date.UTC(2026, 0, 1, 0, 2));
    await scheduler.stop();
    await server.close();
  });

  it('skips a tick while a Go value is in the future and takes one whose time is over', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1, 0, 0, 30) });
    const leases = new Map<string, { token: string; expiresAt: number }>();
    const key = 'machinery_lock_workerjob*/1 * * * *';
    const { server, published } = countingServer(new MemoryLock({ leases }));
    const scheduler = new Scheduler(server, { lockMode: 'go', goBinaryName: 'worker' });
    // A Go scheduler ahead of us already fired 00:01:00.
    const goValue = BigInt(Date.UTC(2026, 0, 1, 0, 2)) * 1_000_000n - 1n;
    leases.set(key, { token: goValue.toString(), expiresAt: Date.UTC(2026, 0, 1, 0, 2) });
    scheduler.registerPeriodicTask('*/1 * * * *', 'job', newSignature({ Name: 'add' }));
    await vi.advanceTimersByTimeAsync(30_000);
    expect(published).toHaveLength(0);
    expect(leases.get(key)?.token).toBe(goValue.toString());
    // A Go value whose time is over, left with a far expiry (as Go's GETSET leaves it without one).
    leases.set(key, { token: (goValue - 10n).toString(), expiresAt: Date.UTC(2030, 0, 1) });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(published).toHaveLength(1);
    expect(leases.get(key)?.token).toBe((BigInt(Date.UTC(2026, 0, 1, 0, 3)) * 1_000_000n - 1n).toString());
    await scheduler.stop();
    await server.close();
  });

  it('three schedulers sharing one lock send each of 5 ticks exactly once', async () => {
    const leases = new Map<string, { token: string; expiresAt: number }>();
    const nodes = [0, 1, 2].map(() => countingServer(new MemoryLock({ leases })));
    const schedulers = nodes.map((n) => new Scheduler(n.server, { lockMode: 'go', goBinaryName: 'worker' }));
    const first = await nextSecondBoundary();
    for (const s of schedulers) s.registerPeriodicTask('@every 1s', 'tick', newSignature({ Name: 'add' }));
    const sent = () => nodes.reduce((n, x) => n + x.published.length, 0);
    while (sent() < 5 && Date.now() < first + 15_000) await sleep(20);
    await Promise.all(schedulers.map((s) => s.stop()));
    expect(Date.now()).toBeGreaterThanOrEqual(first + 4000);
    expect(Date.now()).toBeLessThan(first + 5000);
    expect(nodes.flatMap((n) => n.published)).toHaveLength(5);
    expect([...leases.keys()]).toEqual(['machinery_lock_workertick@every 1s']);
    // The fifth tick (first + 4 s) holds the key until the sixth.
    expect(leases.get('machinery_lock_workertick@every 1s')?.token).toBe((BigInt(first + 5000) * 1_000_000n - 1n).toString());
    await Promise.all(nodes.map((n) => n.server.close()));
  }, 30_000);

  it('refuses go mode without a binary name, with a lock lacking acquireUntil, and a stray name', () => {
    const server = new Server();
    expect(() => new Scheduler(server, { lockMode: 'go' })).toThrow(ConfigError);
    expect(() => new Scheduler(server, { lockMode: 'go' })).toThrow(/goBinaryName/);
    expect(() => new Scheduler(server, { lockMode: 'go', goBinaryName: './bin/worker' })).toThrow(/basename/);
    expect(() => new Scheduler(server, { goBinaryName: 'worker' })).toThrow(/only used with lockMode 'go'/);
    const plain: Lock = {
      acquire: async () => null,
      release: async () => false,
      close: async () => {},
    };
    expect(() => new Scheduler(new Server({ lock: plain }), { lockMode: 'go', goBinaryName: 'worker' })).toThrow(/needs a lock with acquireUntil/);
    expect(new Scheduler(server, { lockMode: 'go', goBinaryName: 'worker' }).names()).toEqual([]);
  });

  it('reports a lock that throws to onError and skips the tick', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1, 0, 0, 30) });
    const boom = new Error('store unreachable');
    const lock: Lock = {
      acquire: async () => null,
      release: async () => false,
      acquireUntil: async () => {
        throw boom;
      },
      close: async () => {},
    };
    const errors: unknown[] = [];
    const { server, published } = countingServer(lock);
    const scheduler = new Scheduler(server, { lockMode: 'go', goBinaryName: 'w', onError: (err) => errors.push(err) });
    scheduler.registerPeriodicTask('*/1 * * * *', 'job', newSignature({ Name: 'add' }));
    await vi.advanceTimersByTimeAsync(30_000);
    expect(errors).toEqual([boom]);
    expect(published).toHaveLength(0);
    await scheduler.stop();
    await server.close();
  });
});

describe('Scheduler with a slow lock', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('skips, and reports, a tick whose lock answered only after the next tick was due: a store back from an outage sends no burst of stale ticks', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1, 0, 0, 0, 500) });
    // A store that holds every claim until it is back, as ioredis holds commands through reconnects.
    let back = (): void => {};
    const outage = new Promise<void>((r) => (back = r));
    const leases = new Map<string, { token: string; expiresAt: number }>();
    const memory = new MemoryLock({ leases });
    const lock: Lock = {
      acquire: async (key, ttlMs) => {
        await outage;
        return memory.acquire(key, ttlMs);
      },
      release: (key, token) => memory.release(key, token),
      close: async () => {},
    };
    const errors: string[] = [];
    const { server, published } = countingServer(lock);
    const scheduler = new Scheduler(server, { onError: (err) => errors.push(String(err)) });
    scheduler.registerPeriodicTask('@every 1s', 'job', newSignature({ Name: 'add' }));
    // Ticks at 1 s, 2 s and 3 s wait on the store; it answers at 3.5 s.
    await vi.advanceTimersByTimeAsync(3_000);
    expect(published).toHaveLength(0);
    back();
    await vi.advanceTimersByTimeAsync(0);
    // Only the 3 s tick is still current; before, all three went out at once.
    expect(published).toHaveLength(1);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/tick of 2026-01-01T00:00:01.000Z skipped: claimed 2500 ms late, after the next tick was due/);
    // Back to normal: the 4 s tick fires on time.
    await vi.advanceTimersByTimeAsync(600);
    expect(published).toHaveLength(2);
    await scheduler.stop();
    await server.close();
  });
});
