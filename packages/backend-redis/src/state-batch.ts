/**
 * The state writes of one event-loop turn, sent as one script call.
 *
 * A worker running short tasks issues RECEIVED, STARTED and the outcome of one task within
 * the same turn, and a producer's burst of `sendTask` calls issues hundreds of PENDING
 * writes. Gathered until `setImmediate`, they cost one command instead of one each, and the
 * writes to one key collapse into the last: a state that another write replaced before it
 * could leave this process is one no reader could have relied on seeing anyway. Entries are
 * encoded only when sent, so a replaced write costs no encoding either.
 *
 * Order is kept: a key's last write wins, the batch goes out before any command issued
 * after `flush()`, and Redis applies one connection's commands in order.
 */

interface Settle {
  resolve(): void;
  reject(error: Error): void;
}

/** Keys per script call: a bound on how long one call holds Redis. */
const MAX_KEYS = 256;

export class StateBatch<T> {
  #writes = new Map<string, T>();
  #settles: Settle[] = [];
  #scheduled = false;
  /** Keys sent and not yet confirmed, with how many of their writes are on the way. */
  readonly #unconfirmed = new Map<string, number>();

  /** `send` makes one script call for up to 256 keys and their entries. */
  constructor(private readonly send: (entries: [string, T][]) => Promise<unknown>) {}

  /** `make` is given the key's entry still queued in this turn, which the new one replaces. */
  /**
   * `make` is given the key's entry still queued in this turn, which the new one replaces.
   * `soon`: the write expects no later write of its key in this turn (a PENDING state), so
   * a batch it opens leaves at the end of the tick rather than of the turn.
   */
  add(key: string, make: (queued: T | undefined) => T, soon = false): Promise<void> {
    const next = make(this.#writes.get(key));
    // Re-inserting moves the key last, after whatever was queued since its earlier write.
    this.#writes.delete(key);
    this.#writes.set(key, next);
    if (!this.#scheduled) {
      this.#scheduled = true;
      if (soon) process.nextTick(() => this.flush());
      else setImmediate(() => this.flush());
    }
    return new Promise<void>((resolve, reject) => this.#settles.push({ resolve, reject }));
  }

  /**
   * Takes the key's queued entry out of the batch, for a write that will reach the store by
   * another way. `busy` when a write of the key was sent and is not confirmed yet: a write
   * made another way could land before it. The taken entry's caller is settled with the
   * rest of the batch, as for an entry a later write replaced.
   */
  take(key: string): { queued: T | undefined } | 'busy' {
    if (this.#unconfirmed.has(key)) return 'busy';
    const queued = this.#writes.get(key);
    if (queued !== undefined) this.#writes.delete(key);
    return { queued };
  }

  /** Sends what is queued now; each caller's promise settles with the calls that carried the batch. */
  flush(): void {
    this.#scheduled = false;
    const settles = this.#settles;
    this.#settles = [];
    if (this.#writes.size === 0) {
      // Every entry was taken (`take`): nothing of theirs is left to send.
      for (const s of settles) s.resolve();
      return;
    }
    const writes = [...this.#writes];
    this.#writes = new Map();
    for (const [key] of writes) this.#unconfirmed.set(key, (this.#unconfirmed.get(key) ?? 0) + 1);
    const sent: Promise<unknown>[] = [];
    for (let i = 0; i < writes.length; i += MAX_KEYS) sent.push(this.send(writes.slice(i, i + MAX_KEYS)));
    // A caller learns that its write landed only when every call of the batch did: which
    // call carried which write is not worth tracking for a failure that is rare and retried.
    const confirmed = (): void => {
      for (const [key] of writes) {
        const left = (this.#unconfirmed.get(key) ?? 1) - 1;
        if (left > 0) this.#unconfirmed.set(key, left);
        else this.#unconfirmed.delete(key);
      }
    };
    Promise.all(sent).then(
      () => {
        confirmed();
        settles.forEach((s) => s.resolve());
      },
      (e: unknown) => {
        // Counted as confirmed, though a timed-out write may still land later (rarely): its
        // caller hears of the failure, and a key must not stay refused for good.
        confirmed();
        settles.forEach((s) => s.reject(e instanceof Error ? e : new Error(String(e))));
      },
    );
  }
}
