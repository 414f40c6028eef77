import { describe, expect, it } from 'vitest';
import { MemoryLock } from '../src/index.js';

describe('MemoryLock', () => {
  it('drops expired leases once many have piled up (periodic keys are unique per tick)', async () => {
    const leases = new Map<string, { token: string; expiresAt: number }>();
    const lock = new MemoryLock({ leases });
    for (let i = 0; i < 1001; i++) await lock.acquire(`tick-${i}`, 1);
    await new Promise((r) => setTimeout(r, 10));
    await lock.acquire('live', 60_000);
    expect([...leases.keys()]).toEqual(['live']);
  });
});

describe('MemoryLock.acquireUntil', () => {
  const NOW = 1_800_000_000_000_000_000n;
  const future = Date.now() + 60_000;

  it("judges stored values as Go's strconv.Atoi does", async () => {
    const leases = new Map<string, { token: string; expiresAt: number }>();
    const lock = new MemoryLock({ leases });
    const cases: Array<[string, boolean]> = [
      ['0', false], // Go never takes over a zero
      ['-0', false],
      ['000', false],
      ['-5', true],
      ['+0001', true],
      [(NOW - 1n).toString(), true],
      [NOW.toString(), false],
      ['9223372036854775807', false],
      ['9223372036854775808', false], // out of int64: Atoi fails, Go skips the tick
      ['-9223372036854775809', false],
      ['-9223372036854775808', true],
      ['12 ', false],
      ['1e18', false],
      ['3f1c7c1e-8d2b-4d55-9a51-2b1a9d6c9e01', false],
    ];
    for (const [stored, taken] of cases) {
      leases.set('k', { token: stored, expiresAt: future });
      expect(await lock.acquireUntil('k', NOW + 5n, NOW), stored).toBe(taken);
      expect(leases.get('k')?.token, stored).toBe(taken ? (NOW + 5n).toString() : stored);
    }
  });

  it('ignores an expired lease whatever its value, and expires at untilNs rounded up to the ms', async () => {
    const leases = new Map<string, { token: string; expiresAt: number }>();
    const lock = new MemoryLock({ leases });
    leases.set('k', { token: 'not-a-number', expiresAt: Date.now() - 1 });
    const until = BigInt(future) * 1_000_000n + 1n;
    expect(await lock.acquireUntil('k', until)).toBe(true);
    expect(leases.get('k')).toEqual({ token: until.toString(), expiresAt: future + 1 });
  });
});
