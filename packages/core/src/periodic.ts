import { Cron } from 'croner';
import { ConfigError } from './errors.js';
import { type Signature, copySignature } from './message/signature.js';
import type { Lock } from './contracts/lock.js';
import type { Server } from './server.js';
import { chain, chord, group } from './workflow.js';

/**
 * Periodic tasks, like Go's `RegisterPeriodicTask` & co.
 *
 * Differences from Go:
 * - Schedules run in `timeZone` (default **UTC**); Go's robfig/cron uses the process's local zone.
 *   A `CRON_TZ=Area/City ` or `TZ=Area/City ` prefix on the spec overrides it, as in Go.
 * - `@every <duration>` fires at multiples of the interval since the Unix epoch (not "interval after
 *   registration" as in Go), so every scheduler agrees on the fire times and the lock dedupes them.
 * - In the default `fire-time` lock mode the key names the tick, not the binary (see `lockMode`).
 */
export interface SchedulerOptions {
  /** IANA zone for cron specs. @default 'UTC' */
  readonly timeZone?: string;
  /**
   * How a tick is claimed, so that it fires once across schedulers. @default 'fire-time'
   *
   * - `'fire-time'`: key `machinery_lock_` + name + `|` + spec + `|` + the tick's scheduled fire time
   *   in ms, taken with `Lock.acquire` for `lockTtlMs`. Every tick has its own key, so schedulers
   *   whose clocks disagree by less than `lockTtlMs` still fire each tick once, whatever their
   *   binaries are called. Go processes do not see these keys.
   * - `'go'`: Go Machinery's key and value, so TypeScript and Go schedulers on one store share the
   *   lock: key `machinery_lock_` + `goBinaryName` + name + spec (no separators), value = the next
   *   fire time in Unix ns − 1, taken with `Lock.acquireUntil` (the lock must implement it). The key
   *   does not say which tick it is for: whether a tick was taken is decided by comparing that
   *   value with the tick's fire time, each written by its scheduler's own clock. Clocks apart by
   *   a sizeable part of the interval, time zones that differ, or `@every` intervals above 1 s
   *   (Go counts them from process start, we from the epoch) make the side that fires first
   *   decide the cadence, and a hand-over between schedulers can send two ticks closer together
   *   than the interval or leave one out. Pick it only while Go schedulers run beside ours.
   *
   * Either mode makes one attempt per tick. Go's `LockWithRetries` tries `retries + 1` times back
   * to back; its retries only help with the gap between its `SETNX` and its `GET`, which the
   * lock's atomic step does not have. A lock that throws (store unreachable) skips the tick and
   * reports to `onError`; so does a claim answered only after the next tick was due.
   */
  readonly lockMode?: 'fire-time' | 'go';
  /**
   * The Go binary's basename (`filepath.Base(os.Args[0])`, e.g. `worker` for `./bin/worker`) that
   * Go puts in its lock keys. Required in `go` mode and rejected in `fire-time` mode: a name
   * guessed from this process (`node`, a script's name) would silently miss Go's key, and Go and
   * this scheduler would each fire every tick. Go binaries with different names never share a
   * key either.
   */
  readonly goBinaryName?: string;
  /**
   * Lease length of a tick's lock in `fire-time` mode; also its length in `go` mode for a schedule
   * with no next fire time. Clamped to ≥ 1 s. @default 60_000
   */
  readonly lockTtlMs?: number;
  /** Called when sending a tick fails. @default console.error */
  readonly onError?: (err: unknown, name: string) => void;
}

/** A parsed schedule: the first fire time strictly after `afterMs`. */
export interface Schedule {
  readonly spec: string;
  next(afterMs: number): number | null;
}

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3,
  'μs': 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Go's `time.ParseDuration`, in milliseconds (e.g. `1h30m`, `1.5s`, `500ms`). */
export function parseGoDuration(text: string): number {
  const s = text.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  if (s.length === 0) throw new ConfigError(`invalid duration "${text}"`);
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) throw new ConfigError(`invalid duration "${text}": expected a Go duration such as 5m, 1h30m or 10s`);
    total += Number(m[1]) * (DURATION_UNITS[m[2] as string] as number);
    pos = re.lastIndex;
  }
  return total;
}

const DESCRIPTORS = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);

/** Parses a Go/robfig standard spec: 5 fields, `?` as `*`, descriptors, `@every <duration>`, `CRON_TZ=` prefix. */
export function parseSchedule(spec: string, timeZone = 'UTC'): Schedule {
  const fail = (why: string): never => {
    throw new ConfigError(`invalid periodic spec "${spec}": ${why}`);
  };
  let rest = spec.trim();
  let zone = timeZone;
  const tz = /^(?:CRON_TZ|TZ)=(\S+)\s+/.exec(rest);
  if (tz) {
    zone = tz[1] as string;
    rest = rest.slice(tz[0].length).trim();
  }
  if (rest.startsWith('@every')) {
    const arg = rest.slice('@every'.length).trim();
    if (!arg) fail('@every needs a duration such as 5m');
    let ms: number;
    try {
      ms = parseGoDuration(arg);
    } catch (err) {
      return fail((err as Error).message);
    }
    // robfig/cron: sub-second parts are dropped, and the interval is at least 1 s.
    const interval = Math.max(1000, Math.floor(ms / 1000) * 1000);
    return { spec, next: (after) => (Math.floor(after / interval) + 1) * interval };
  }
  let pattern: string;
  if (rest.startsWith('@')) {
    const d = rest.toLowerCase();
    if (!DESCRIPTORS.has(d)) fail(`unknown descriptor ${rest}`);
    pattern = d === '@midnight' ? '@daily' : d === '@annually' ? '@yearly' : d;
  } else {
    const fields = rest.split(/\s+/).filter(Boolean);
    if (fields.length !== 5) fail(`expected 5 fields (minute hour day-of-month month day-of-week), found ${fields.length}`);
    pattern = fields.map((f) => f.replace(/\?/g, '*')).join(' ');
  }
  let cron: Cron;
  try {
    cron = new Cron(pattern, { timezone: zone, paused: true, mode: rest.startsWith('@') ? 'auto' : '5-part' });
    // croner checks the zone lazily; compute once so a bad zone fails here.
    cron.nextRun(new Date(0));
  } catch (err) {
    return fail((err as Error).message);
  }
  return {
    spec,
    next: (after) => {
      const d = cron.nextRun(new Date(after));
      return d ? d.getTime() : null;
    },
  };
}

interface Entry {
  readonly name: string;
  readonly schedule: Schedule;
  readonly send: () => Promise<unknown>;
  timer?: ReturnType<typeof setTimeout>;
  removed: boolean;
}

const MAX_TIMEOUT = 2 ** 31 - 1;

export class Scheduler {
  readonly #server: Server;
  readonly #timeZone: string;
  readonly #lockTtlMs: number;
  readonly #goBinaryName: string | null;
  readonly #onError: (err: unknown, name: string) => void;
  readonly #entries = new Map<string, Entry>();
  readonly #inFlight = new Set<Promise<void>>();
  #stopped = false;

  constructor(server: Server, options: SchedulerOptions = {}) {
    this.#server = server;
    this.#timeZone = options.timeZone ?? 'UTC';
    this.#lockTtlMs = Math.max(1000, options.lockTtlMs ?? 60_000);
    this.#goBinaryName = goBinaryName(server, options);
    this.#onError = options.onError ?? ((err, name) => console.error(`periodic task ${name}:`, err));
    // Fail early on a bad zone.
    parseSchedule('* * * * *', this.#timeZone);
  }

  registerPeriodicTask(spec: string, name: string, signature: Signature): void {
    const template = copySignature(signature);
    this.#add(spec, name, () => this.#server.sendTask(copySignature(template)));
  }

  registerPeriodicChain(spec: string, name: string, ...signatures: Signature[]): void {
    const templates = signatures.map(copySignature);
    if (templates.length === 0) throw new ConfigError(`periodic chain ${name}: needs at least one task`);
    this.#add(spec, name, () => this.#server.sendChain(chain(...templates)));
  }

  registerPeriodicGroup(spec: string, name: string, concurrency: number, ...signatures: Signature[]): void {
    const templates = signatures.map(copySignature);
    this.#add(spec, name, () => this.#server.sendGroup(group(...templates), { concurrency }));
  }

  registerPeriodicChord(spec: string, name: string, concurrency: number, callback: Signature, ...signatures: Signature[]): void {
    const cb = copySignature(callback);
    const templates = signatures.map(copySignature);
    this.#add(spec, name, () => this.#server.sendChord(chord(group(...templates), cb), { concurrency }));
  }

  /** Names of the registered schedules. */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  /** Stops a schedule; a tick already sending finishes. Returns whether it existed. */
  remove(name: string): boolean {
    const e = this.#entries.get(name);
    if (!e) return false;
    e.removed = true;
    if (e.timer) clearTimeout(e.timer);
    this.#entries.delete(name);
    return true;
  }

  /** Stops every schedule and waits for ticks already sending. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const name of [...this.#entries.keys()]) this.remove(name);
    await Promise.allSettled([...this.#inFlight]);
  }

  #add(spec: string, name: string, send: () => Promise<unknown>): void {
    if (this.#stopped) throw new ConfigError(`periodic task ${name}: the scheduler is stopped`);
    if (!name) throw new ConfigError('a periodic task needs a name');
    let schedule: Schedule;
    try {
      schedule = parseSchedule(spec, this.#timeZone);
    } catch (err) {
      throw new ConfigError(`periodic task ${name}: ${(err as Error).message}`);
    }
    this.remove(name);
    const entry: Entry = { name, schedule, send, removed: false };
    this.#entries.set(name, entry);
    this.#arm(entry, schedule.next(Date.now()));
  }

  #arm(entry: Entry, fireAt: number | null): void {
    if (entry.removed || fireAt === null) return;
    const wait = fireAt - Date.now();
    entry.timer = setTimeout(
      () => {
        if (entry.removed) return;
        // Timers may wake a little early, and long waits are split.
        if (Date.now() < fireAt) return this.#arm(entry, fireAt);
        this.#arm(entry, entry.schedule.next(fireAt));
        this.#track(this.#tick(entry, fireAt));
      },
      Math.min(MAX_TIMEOUT, Math.max(0, wait)),
    );
  }

  #track(p: Promise<void>): void {
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  async #tick(entry: Entry, fireAt: number): Promise<void> {
    try {
      if (!(await this.#claim(entry, fireAt))) return;
      // A claim answered only once the next tick was due (the lock's store slow, or back from an
      // outage during which every tick's claim waited) is not sent: the next tick stands for it,
      // where sending would fire every tick of the outage at once.
      const next = entry.schedule.next(fireAt);
      const now = Date.now();
      if (next !== null && now >= next) {
        const at = new Date(fireAt).toISOString();
        throw new Error(`tick of ${at} skipped: claimed ${now - fireAt} ms late, after the next tick was due (lock store slow or unreachable?)`);
      }
      await entry.send();
    } catch (err) {
      this.#onError(err, entry.name);
    }
  }

  async #claim(entry: Entry, fireAt: number): Promise<boolean> {
    const { lock } = this.#server;
    const spec = entry.schedule.spec;
    if (this.#goBinaryName === null) {
      return (await lock.acquire(`machinery_lock_${entry.name}|${spec}|${fireAt}`, this.#lockTtlMs)) !== null;
    }
    // Go writes schedule.Next(time.Now()) − 1 ns; the next fire after the tick's own time is the
    // same instant when the tick is on time, and stays right when the event loop runs it late.
    const next = entry.schedule.next(fireAt) ?? fireAt + this.#lockTtlMs;
    const key = `machinery_lock_${this.#goBinaryName}${entry.name}${spec}`;
    // Checked in the constructor.
    const acquireUntil = lock.acquireUntil as NonNullable<Lock['acquireUntil']>;
    return acquireUntil.call(lock, key, BigInt(next) * NS_PER_MS - 1n, BigInt(fireAt) * NS_PER_MS);
  }
}

const NS_PER_MS = 1_000_000n;

function goBinaryName(server: Server, options: SchedulerOptions): string | null {
  const mode = options.lockMode ?? 'fire-time';
  const name = options.goBinaryName;
  if (mode === 'fire-time') {
    if (name !== undefined) throw new ConfigError(`goBinaryName is only used with lockMode 'go', found lockMode '${mode}'`);
    return null;
  }
  if (mode !== 'go') throw new ConfigError(`lockMode must be 'fire-time' or 'go', found ${JSON.stringify(mode)}`);
  if (typeof name !== 'string' || name === '' || /[/\\]/.test(name)) {
    throw new ConfigError(
      `lockMode 'go' needs goBinaryName, the basename of the Go binary whose schedulers share the lock (e.g. 'worker'), found ${JSON.stringify(name)}`,
    );
  }
  if (typeof server.lock.acquireUntil !== 'function') {
    throw new ConfigError(
      `lockMode 'go' needs a lock with acquireUntil (Go's expiry-by-value lock), and ${server.lock.constructor.name} has none; use a lock that implements it, such as RedisLock or MemoryLock, or lockMode 'fire-time'`,
    );
  }
  return name;
}
