import { MachineryError } from './errors.js';

/**
 * How an adapter (re)connects to a server that drops connections: on demand, one attempt at
 * a time however many callers are waiting, retried with capped, jittered exponential back-off
 * until one succeeds, the owner closes, or a failure shows the configuration itself is wrong.
 *
 * The back-off spreads a fleet of workers that lost their server together over the interval
 * instead of having them all knock at once when it comes back.
 */
export interface ReconnectOptions<T> {
  /** What is being connected to, for messages; no password in it: `AMQP connect to amqp://***@host:5672/`. */
  readonly what: string;
  /** One attempt. It cleans up after itself when it fails (a half-open connection is its to close). */
  readonly attempt: () => Promise<T>;
  /** Once true, no attempt starts and callers get `closedError()`. */
  readonly isClosed: () => boolean;
  readonly closedError: () => Error;
  /**
   * For a failure no retry can mend (the server holds a topology declared otherwise): what the
   * configuration got wrong. The loop then ends with a `CONFIG` error saying so; anything else
   * is retried.
   */
  readonly configMismatch?: (err: unknown) => string | undefined;
  /** Told of each failure that is retried, as `<what> failed: <reason>` (not of the owner closing meanwhile). */
  readonly report: (err: Error) => void;
  /** The first delay before a retry; it doubles up to `maxMs`. Each delay is jittered into its upper half. */
  readonly minMs: number;
  readonly maxMs: number;
}

export class Reconnector<T> {
  readonly #opts: ReconnectOptions<T>;
  #connecting: Promise<T> | null = null;

  constructor(options: ReconnectOptions<T>) {
    this.#opts = options;
  }

  /** Joins the attempts under way, or starts them. */
  connect(): Promise<T> {
    if (this.#opts.isClosed()) return Promise.reject(this.#opts.closedError());
    if (!this.#connecting) {
      const connecting = this.#loop().finally(() => {
        this.#connecting = null;
      });
      // A reconnect nobody awaits (after a drop) must not become an unhandled rejection.
      connecting.catch(() => {});
      this.#connecting = connecting;
    }
    return this.#connecting;
  }

  /** Settles when the attempts under way, if any, have ended either way. */
  async settled(): Promise<void> {
    await this.#connecting?.catch(() => {});
  }

  async #loop(): Promise<T> {
    const o = this.#opts;
    let wait = o.minMs;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) {
        await new Promise((r) => setTimeout(r, wait / 2 + Math.random() * (wait / 2)));
        wait = Math.min(o.maxMs, wait * 2);
      }
      if (o.isClosed()) throw o.closedError();
      try {
        return await o.attempt();
      } catch (err) {
        if (o.isClosed()) throw o.closedError();
        const message = `${o.what} failed: ${err instanceof Error ? err.message : String(err)}`;
        const mismatch = o.configMismatch?.(err);
        if (mismatch !== undefined) throw new MachineryError('CONFIG', `${message} (${mismatch})`, { cause: err });
        o.report(new Error(message, { cause: err }));
      }
    }
  }
}
