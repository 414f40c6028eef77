import { randomUUID } from 'node:crypto';
import type { Lock } from '../contracts/lock.js';

const NS_PER_MS = 1_000_000n;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** Go's `strconv.Atoi` on a 64-bit platform: optional sign, decimal digits, within int64. */
function parseGoInt(text: string): bigint | null {
  if (!/^[+-]?\d+$/.test(text)) return null;
  const n = BigInt(text);
  return n < INT64_MIN || n > INT64_MAX ? null : n;
}

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
    this.#sweep(now);
    const token = randomUUID();
    this.#leases.set(key, { token, expiresAt: now + ttlMs });
    return token;
  }

  /** Go's expiry-by-value lock; the value is kept in the lease's `token`. */
  async acquireUntil(key: string, untilNs: bigint, nowNs?: bigint): Promise<boolean> {
    const now = Date.now();
    const at = nowNs ?? BigInt(now) * NS_PER_MS;
    if (untilNs < at) throw new RangeError(`acquireUntil: untilNs (${untilNs}) is before nowNs (${at})`);
    if (at <= 0n) throw new RangeError(`acquireUntil: nowNs must be positive, found ${at}`);
    const held = this.#leases.get(key);
    if (held && held.expiresAt > now) {
      const stored = parseGoInt(held.token);
      if (stored === null || stored === 0n || stored >= at) return false;
    }
    this.#sweep(now);
    // Expires at untilNs + 1 ns, rounded up to the map's millisecond granularity.
    const expiresAt = Number((untilNs + 1n + NS_PER_MS - 1n) / NS_PER_MS);
    this.#leases.set(key, { token: untilNs.toString(), expiresAt: Math.max(expiresAt, now + 1) });
    return true;
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

  // Periodic keys are unique per tick: drop expired leases so the map stays small.
  #sweep(now: number): void {
    if (this.#leases.size > 1000) for (const [k, v] of this.#leases) if (v.expiresAt <= now) this.#leases.delete(k);
  }
}
