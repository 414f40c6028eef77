// How the harness sees machinery-ts tasks complete: by reading their stored states.

/** The reads the poll makes: one state, or several in one call (`null` where there is none). */
export interface StateReader {
  get(id: string): Promise<string | null>;
  mget(ids: string[]): Promise<(string | null)[]>;
}

/**
 * States read per MGET. Every poll reads at least one chunk, so a chunk of 1000 every 10 ms
 * read five times as many documents as the tasks finishing at 20k/s: load on Redis and the
 * producer that no peer's completion check carries.
 */
const POLL_CHUNK = 100;

const isSuccess = (s: string | null): boolean => s?.includes('"State":"SUCCESS"') ?? false;
const isFailure = (s: string | null): boolean => s?.includes('"State":"FAILURE"') ?? false;

/**
 * Counts completed and failed tasks among those `add`ed. Tasks finish roughly in the order
 * sent, so each poll reads from the first task not yet seen finished and stops at the first
 * chunk with an unfinished one: each state is read about once. The unfinished of a chunk
 * already read are read again first, on their own. No poll copies the list of tasks sent, so
 * its cost does not grow with the length of the run.
 */
export class CompletionPoll {
  done = 0;
  failed = 0;
  readonly #ids: string[] = [];
  /** `#ids[#head…]` have not been read yet. */
  #head = 0;
  /** Read and unfinished then, from chunks before `#head`. */
  #stragglers: string[] = [];

  constructor(private readonly store: StateReader) {}

  add(id: string): void {
    this.#ids.push(id);
  }

  async poll(): Promise<{ done: number; failed: number }> {
    if (this.#stragglers.length > 0) {
      this.#stragglers = await this.#tally(this.#stragglers);
      // The later tasks are unlikely to be done before these: they are read once these are.
      if (this.#stragglers.length > 0) return { done: this.done, failed: this.failed };
    }
    while (this.#head < this.#ids.length) {
      const ids = this.#ids.slice(this.#head, this.#head + POLL_CHUNK);
      // A chunk whose last task is unfinished is read again later anyway: only that state now.
      if (ids.length > 1 && !this.#completed(await this.store.get(ids[ids.length - 1] as string))) break;
      this.#head += ids.length;
      this.#stragglers = await this.#tally(ids);
      if (this.#stragglers.length > 0) break;
    }
    return { done: this.done, failed: this.failed };
  }

  #completed(s: string | null): boolean {
    return isSuccess(s) || isFailure(s);
  }

  /** Counts the finished among `ids`; returns the others. */
  async #tally(ids: string[]): Promise<string[]> {
    const states = await this.store.mget(ids);
    const still: string[] = [];
    states.forEach((s, k) => {
      if (isSuccess(s)) this.done += 1;
      else if (isFailure(s)) this.failed += 1;
      else still.push(ids[k] as string);
    });
    return still;
  }
}
