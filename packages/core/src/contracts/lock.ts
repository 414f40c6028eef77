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
 * ## The optional Go-compatible capability
 *
 * `acquireUntil` is Go Machinery's periodic lock (`v2/locks/redis`), for schedulers that
 * share keys with Go processes. An adapter either implements it with exactly the semantics
 * below, on the key and value layout Go reads and writes, or leaves it out; the scheduler
 * refuses its `go` lock mode for a lock without it.
 *
 * ## What is left out on purpose
 *
 * - Fencing tokens and clock-skew bounds: the default scheduler mode derives keys from the
 *   tick's fire time, so skew between schedulers cannot make one tick fire twice. The Go
 *   mode has no such protection; see `acquireUntil`.
 * - Re-entrancy and waiting queues.
 * - Retries, Go's included: Go retries to cover the window between its `SETNX` and `GET`,
 *   which an atomic adapter does not have, so an immediate retry would only repeat the answer.
 */
export interface Lock {
  acquire(key: string, ttlMs: number): Promise<string | null>;
  release(key: string, token: string): Promise<boolean>;

  /**
   * Takes `key` the way Go Machinery's lock does, where the value itself says until when
   * the key is held: a decimal count of Unix nanoseconds.
   *
   * Resolves `true`, storing `untilNs` as a decimal string, when the key
   * - is absent, or
   * - holds a decimal integer (Go's `strconv.Atoi` form: optional sign, no spaces, within
   *   int64) that is non-zero and strictly less than `nowNs`: the holder's time is over.
   *
   * Resolves `false` otherwise — including for a value that is not such an integer (a
   * token written by `acquire`, say) and for `"0"`, which Go never takes over. The check
   * and the write are one atomic step, so among concurrent callers at most one wins a
   * given expired value (Go reads, then `GETSET`s and compares again to get the same
   * outcome non-atomically).
   *
   * On success the key also expires by itself at `untilNs + 1 ns` by the caller's clock
   * (the store's granularity, rounded up, at least 1 ms), as Go's `PX` / `EXPIRE` does,
   * so a removed schedule leaves nothing behind.
   *
   * `nowNs` defaults to the caller's current time, as in Go. A scheduler passes the fire
   * time of the tick it acts for instead, so a tick it runs late is judged by when it was
   * due, not by when the event loop got to it.
   *
   * Nothing identifies the holder: there is no token and no `release` for such a key. The
   * comparison is between an instant written with the holder's clock and `nowNs` taken
   * with the caller's, so it is only as good as the agreement of the two clocks.
   *
   * @throws RangeError when `untilNs < nowNs`: that lock would be over before it is taken
   *   (Go's `SET … PX` with a negative time fails the same way); and when `nowNs` is not after
   *   the Unix epoch.
   */
  acquireUntil?(key: string, untilNs: bigint, nowNs?: bigint): Promise<boolean>;

  close(): Promise<void>;
}
