/**
 * # The Lock contract
 *
 * A lock keeps a periodic task from firing twice for one tick when several schedulers
 * run. It is a lease, not a mutex: it expires by itself after `ttlMs`, so a crashed
 * holder never blocks later ticks and a removed schedule leaves nothing behind.
 *
 * ## What every adapter guarantees
 *
 * 1. `acquire` is atomic across processes: for one key, while a lease is live, exactly one
 *    caller gets a token; everyone else gets `null` at once (no waiting, no retries — the
 *    scheduler decides whether to retry).
 * 2. A lease ends at `ttlMs` (at the store's granularity, rounded up) or on `release`.
 * 3. `release` deletes the key only if the token still matches (a late holder cannot free
 *    a lease someone else took after expiry) and says whether it did.
 *
 * ## What is left out on purpose
 *
 * - Fencing tokens and clock-skew bounds: the scheduler derives keys from the tick's fire
 *   time, so skew between schedulers cannot make one tick fire twice.
 * - Re-entrancy and waiting queues.
 */
export interface Lock {
  acquire(key: string, ttlMs: number): Promise<string | null>;
  release(key: string, token: string): Promise<boolean>;
  close(): Promise<void>;
}
