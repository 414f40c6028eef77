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
