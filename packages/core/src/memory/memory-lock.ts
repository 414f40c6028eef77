import { randomUUID } from 'node:crypto';
import type { Lock } from '../contracts/lock.js';

/** Leases in a map shared by every `MemoryLock` built on the same `Map`. */
export class MemoryLock implements Lock {
  readonly #leases: Map<string, { token: string; expiresAt: number }>;

  constructor(options: { leases?: Map<string, { token: string; expiresAt: number }> } = {}) {
    this.#leases = options.leases ?? new Map();
  }

  async acquire(key: string, ttlMs: number): Promise<string | null> {
    const now = Date.now();
    const held = this.#leases.get(key);
    if (held && held.expiresAt > now) return null;
    // Periodic keys are unique per tick: drop expired leases so the map stays small.
    if (this.#leases.size > 1000) for (const [k, v] of this.#leases) if (v.expiresAt <= now) this.#leases.delete(k);
    const token = randomUUID();
    this.#leases.set(key, { token, expiresAt: now + ttlMs });
    return token;
  }

  async release(key: string, token: string): Promise<boolean> {
    const held = this.#leases.get(key);
    if (!held || held.token !== token || held.expiresAt <= Date.now()) return false;
    this.#leases.delete(key);
    return true;
  }

  /** Live keys, for tests that check a removed schedule leaves nothing behind. */
  keys(): string[] {
    const now = Date.now();
    return [...this.#leases].filter(([, v]) => v.expiresAt > now).map(([k]) => k);
  }

  async close(): Promise<void> {}
}
