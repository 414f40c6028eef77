import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  type Backend,
  type BackendCapabilities,
  type ChordTriggerMode,
  type ChordTriggerResult,
  type GroupMeta,
  type PlainWrite,
  type ScriptedWrite,
  type StateUpdate,
  type TaskState,
  type WaitOptions,
  newGroupMeta,
  TaskStates,
  decodeGroupMeta,
  decodeTaskState,
  encodeGroupMeta,
  corkForTick,
  encodeTaskState,
  isCompleted,
  mergeTaskState,
  waitForAnnouncedState,
  jsonString,
} from '@machinery-ts/core';
import { RESET_CHORD_LUA, SET_STATES_LUA, TRIGGER_CHORD_LUA } from './scripts.js';
import { StateBatch } from './state-batch.js';

export interface RedisBackendOptions {
  /** `redis://[:password@]host:port[/db]`; ignored when `client` is given. @default redis://127.0.0.1:6379 */
  readonly url?: string;
  /** A client owned by the caller: used as is and left open by `close()`. */
  readonly client?: Redis;
  /** Whole seconds a state or group document lives, at least 1; Go's 3600 when 0. Other values throw a RangeError. @default 3600 */
  readonly resultsExpireIn?: number;
  /**
   * The key of Go's redsync chord mutex. While a Go worker holds it, `triggerChord` waits
   * (Go reads and writes the group document under it), so Go and TypeScript workers can
   * share chord groups. `false` ignores Go's mutex. @default 'TriggerChordMutex'
   */
  readonly goChordMutex?: string | false;
  /**
   * How long a command may wait, through a Redis outage, before it rejects (the write may
   * still land after the reconnect). Applies to the client this backend creates. @default 30000
   */
  readonly commandTimeoutMs?: number;
  /** Fallback poll while waiting, for states written by Go workers (which publish nothing). @default 500 */
  readonly waitPollMs?: number;
}

/** Channel a state write is announced on (inside the write's script). */
export function stateChannel(taskUUID: string): string {
  return `machinery-ts:state:${taskUUID}`;
}

/** Completions kept for waits that have not begun yet (a few hundred KB at most). */
const EARLY_KEPT = 1000;

/** When a wait through the reply channel reads the store if nothing was announced. */
const FALLBACK_READ_AFTER_MS = 25;

/** Prefix of a backend's own announce channel (`announceTo`); a task header naming anything else is ignored. */
export const REPLY_CHANNEL_PREFIX = 'machinery-ts:reply:';

interface ScriptedRedis {
  mtsSetStates(numKeys: number, ...keysThenArgs: string[]): Promise<number>;
  mtsTriggerChord(key: string, when: string, count: number, ttl: number, mutex: string): Promise<(string | null)[]>;
  mtsResetChord(key: string, ttl: number): Promise<number>;
}

const TAIL = ',"TTL":0}';
/** How a document with an empty id and name starts, and how one with an empty time ends. */
const BLANK_LEAD = '{"TaskUUID":"","TaskName":""';
const BLANK_TRAIL = '"","TTL":0}';

/** A queued state write; `base` is the PENDING document of the same batch it replaced, if any. */
interface QueuedState {
  readonly update: StateUpdate;
  readonly base?: TaskState;
}

const MUTEX_ATTEMPTS = 64;

const retryStrategy = (attempt: number): number => Math.min(attempt * 200, 5000) + Math.floor(Math.random() * 200);

/**
 * Go Machinery's Redis result backend layout: task state at the task UUID, group meta at
 * the group UUID, Go's JSON documents, `SET … EX n`. State writes and the chord step are
 * single Lua scripts, so they are atomic.
 */
export class RedisBackend implements Backend {
  // One connection carries every write, and Redis applies a connection's commands in order.
  readonly capabilities: BackendCapabilities = { waitForState: true, mayEvict: false, orderedWrites: true };
  readonly #client: Redis;
  readonly #scripted: ScriptedRedis;
  readonly #owned: boolean;
  readonly #ttl: number;
  /** SET_STATES_LUA's arguments before those of each write. */
  readonly #shared: readonly string[];
  readonly #mutex: string;
  readonly #pollMs: number;
  readonly #batch: StateBatch<QueuedState>;
  #store: string | undefined;
  #subscriber: Redis | undefined;
  /** Per channel: the waiters' wake-ups and the SUBSCRIBE they share. */
  readonly #listeners = new Map<string, { wakes: Set<(message: string) => void>; ready: Promise<unknown> }>();
  readonly #waiters = new Set<() => void>();
  /**
   * This backend's announce channel: subscribed at the first wait, then named in the tasks
   * this process sends, so waiting for one of them costs no SUBSCRIBE of its own.
   */
  readonly #reply = {
    channel: `${REPLY_CHANNEL_PREFIX}${randomBytes(8).toString('hex')}`,
    on: false,
    starting: false,
    waiters: new Map<string, Set<(state: TaskState) => void>>(),
    /**
     * Completions announced before anyone waited for them (document by task id, oldest first,
     * at most EARLY_KEPT): a wait that starts later takes its result from here, no read.
     */
    early: new Map<string, string>(),
  };
  #closed = false;

  constructor(options: RedisBackendOptions = {}) {
    const given = options.resultsExpireIn ?? 0;
    // Every write is a SET … EX, which takes whole seconds only.
    if (given !== 0 && (!Number.isSafeInteger(given) || given < 1)) {
      throw new RangeError(`resultsExpireIn must be whole seconds, at least 1 (0 for Go's 3600); found ${String(given)}`);
    }
    const ttl = given || 3600;
    if (options.client) {
      this.#client = options.client;
      this.#owned = false;
    } else {
      // A Redis outage makes commands wait (capped, jittered reconnects) rather than fail
      // after ioredis' 20 quick retries; `commandTimeoutMs` bounds the wait.
      this.#client = new Redis(options.url ?? 'redis://127.0.0.1:6379', {
        maxRetriesPerRequest: null,
        retryStrategy,
        commandTimeout: options.commandTimeoutMs ?? 30_000,
      });
      // Commands reject on their own; the default handler would print connection errors.
      this.#client.on('error', () => {});
      this.#owned = true;
    }
    this.#ttl = ttl;
    this.#shared = [String(ttl), TAIL];
    this.#mutex = options.goChordMutex === false ? '' : (options.goChordMutex ?? 'TriggerChordMutex');
    this.#pollMs = options.waitPollMs ?? 500;
    const c = this.#client;
    if (!(c as unknown as Partial<ScriptedRedis>).mtsSetStates) c.defineCommand('mtsSetStates', { lua: SET_STATES_LUA });
    if (!(c as unknown as Partial<ScriptedRedis>).mtsTriggerChord) c.defineCommand('mtsTriggerChord', { numberOfKeys: 1, lua: TRIGGER_CHORD_LUA });
    if (!(c as unknown as Partial<ScriptedRedis>).mtsResetChord) c.defineCommand('mtsResetChord', { numberOfKeys: 1, lua: RESET_CHORD_LUA });
    this.#scripted = c as unknown as ScriptedRedis;
    this.#batch = new StateBatch<QueuedState>((entries) => {
      corkForTick(c.stream);
      const [only] = entries;
      if (entries.length === 1 && only) {
        const [kind, text, , , channel, sender] = this.#scriptArgs(only[1]);
        // A lone document needs no script: a plain SET costs Redis less than a script call.
        if (kind === 'D' && channel === '' && sender === '') return c.set(only[0], text, 'EX', this.#ttl);
      }
      const keys: string[] = [];
      const args: string[] = [...this.#shared];
      for (const [key, queued] of entries) {
        keys.push(key);
        args.push(...this.#scriptArgs(queued));
      }
      return this.#scripted.mtsSetStates(keys.length, ...keys, ...args);
    });
  }

  /**
   * Which Redis server and database this backend writes to, as a broker compares it
   * (`RedisBroker.carriesWritesFor`), so a PENDING state can travel with its task.
   */
  get store(): string {
    return (this.#store ??= redisStore(this.#client));
  }

  plainWrite(update: StateUpdate): PlainWrite | undefined {
    if (update.state !== TaskStates.PENDING || this.#closed) return undefined;
    return { store: this.store, key: update.taskUUID, value: encodeTaskState(mergeTaskState(update, null)), expireSeconds: this.#ttl };
  }

  /**
   * A completed state for the broker to write in the script that acks its delivery (see
   * `Backend.scriptedWrite`): the same SET_STATES_LUA and arguments a batch of this backend
   * sends, so the stored document and the announcement are the same either way.
   */
  scriptedWrite(update: StateUpdate, carried: (store: string) => boolean): ScriptedWrite | undefined {
    if (this.#closed || (update.state !== TaskStates.SUCCESS && update.state !== TaskStates.FAILURE) || !carried(this.store)) return undefined;
    const taken = this.#batch.take(update.taskUUID);
    if (taken === 'busy') return undefined;
    const { queued } = taken;
    const base = !queued ? undefined : queued.update.state === TaskStates.PENDING ? mergeTaskState(queued.update, null) : queued.base;
    return {
      store: this.store,
      lua: SET_STATES_LUA,
      shared: this.#shared,
      key: update.taskUUID,
      args: this.#scriptArgs(base ? { update, base } : { update }),
    };
  }

  /** The client this backend sends commands on. */
  get client(): Redis {
    return this.#client;
  }

  /**
   * Queued for the turn's batch (see StateBatch): one script call carries every state
   * written in this turn of the event loop, and a task's states written within one turn
   * collapse into the last.
   */
  setState(update: StateUpdate): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('RedisBackend is closed'));
    return this.#batch.add(update.taskUUID, (queued) => {
      if (!queued || update.state === TaskStates.PENDING) return { update };
      // The replaced write never reaches Redis, so this one merges with what it would have stored.
      const base = queued.update.state === TaskStates.PENDING ? mergeTaskState(queued.update, null) : queued.base;
      return base ? { update, base } : { update };
    }, update.state === TaskStates.PENDING);
  }

  async setStates(updates: readonly StateUpdate[]): Promise<void> {
    await Promise.all(updates.map((u) => this.setState(u)));
  }

  /** The six SET_STATES_LUA arguments of one write. */
  #scriptArgs({ update, base }: QueuedState): [string, string, string, string, string, string] {
    // PENDING starts a document afresh (Go overwrites too), so it needs no read.
    if (update.state === TaskStates.PENDING) return ['D', encodeTaskState(mergeTaskState(update, null)), '', '', '', ''];
    // Waiters only return on a completed state, so only those are announced.
    const completed = update.state === TaskStates.SUCCESS || update.state === TaskStates.FAILURE;
    const channel = completed ? stateChannel(update.taskUUID) : '';
    const sender = completed && update.announceTo?.startsWith(REPLY_CHANNEL_PREFIX) ? update.announceTo : '';
    if (base) return ['D', encodeTaskState(mergeTaskState(update, base)), '', '', channel, sender];
    // The document with an empty id, name and time, cut around the name and the time: the
    // script fills those in from the stored document.
    const blank = encodeTaskState({
      TaskUUID: '',
      TaskName: '',
      State: update.state,
      Results: update.state === TaskStates.SUCCESS ? [...(update.results ?? [])] : null,
      Error: update.state === TaskStates.FAILURE ? (update.error ?? '') : '',
      CreatedAt: '',
      TTL: 0,
    });
    const middle = blank.slice(BLANK_LEAD.length, blank.length - BLANK_TRAIL.length);
    return ['S', `{"TaskUUID":${jsonString(update.taskUUID)},"TaskName":`, middle, update.taskName, channel, sender];
  }

  // Every other command first sends the queued state writes, so it is applied after them.
  async getState(taskUUID: string): Promise<TaskState | null> {
    this.#batch.flush();
    const text = await this.#client.get(taskUUID);
    return text === null ? null : decodeTaskState(text);
  }

  async initGroup(groupUUID: string, taskUUIDs: readonly string[]): Promise<void> {
    this.#batch.flush();
    const meta = newGroupMeta(groupUUID, taskUUIDs);
    await this.#client.set(groupUUID, encodeGroupMeta(meta), 'EX', this.#ttl);
  }

  async getGroupMeta(groupUUID: string): Promise<GroupMeta | null> {
    this.#batch.flush();
    const text = await this.#client.get(groupUUID);
    return text === null ? null : decodeGroupMeta(text);
  }

  async groupTaskStates(groupUUID: string, count: number): Promise<(TaskState | null)[]> {
    const meta = await this.getGroupMeta(groupUUID);
    if (!meta) return [];
    const ids = meta.TaskUUIDs.slice(0, count || undefined);
    if (ids.length === 0) return [];
    const texts = await this.#client.mget(ids);
    return texts.map((t) => (t === null ? null : decodeTaskState(t)));
  }

  async triggerChord(groupUUID: string, mode: ChordTriggerMode): Promise<ChordTriggerResult> {
    this.#batch.flush();
    const count = mode.when === 'complete' ? mode.count : 0;
    for (let attempt = 0; ; attempt++) {
      const reply = await this.#scripted.mtsTriggerChord(groupUUID, mode.when, count, this.#ttl, this.#mutex);
      const [tag, ...rest] = reply;
      if (tag === 'fired') return { fired: true, states: rest.map((t) => (t === null ? null : decodeTaskState(t))) };
      if (tag === 'incomplete' || tag === 'already-triggered' || tag === 'no-group') return { fired: false, reason: tag };
      if (tag !== 'locked') throw new Error(`unexpected triggerChord reply ${String(tag)}`);
      if (attempt >= MUTEX_ATTEMPTS) throw new Error(`Go's chord mutex "${this.#mutex}" stayed locked`);
      await sleep(50 + Math.random() * 200);
    }
  }

  async resetChordTrigger(groupUUID: string): Promise<void> {
    this.#batch.flush();
    await this.#scripted.mtsResetChord(groupUUID, this.#ttl);
  }

  announceTo(): string | undefined {
    return this.#reply.on && !this.#closed ? this.#reply.channel : undefined;
  }

  // Not `async`: returning the wait's own promise saves the two extra turns an async
  // function takes to adopt a returned promise, on every result a sender waits for.
  waitForState(taskUUID: string, options: WaitOptions): Promise<TaskState | null> {
    if (this.#closed || options.signal?.aborted) return this.getState(taskUUID);
    // Sent by this process while its announce channel was up: the completion comes there.
    const viaReply = this.#reply.on && options.announcedOn === this.#reply.channel;
    if (!this.#reply.on) this.#startReply();
    if (viaReply) {
      const early = this.#takeEarly(taskUUID);
      if (early) return Promise.resolve(early);
    }
    return waitForAnnouncedState({
      ...options,
      // Via the reply channel the completion comes announced, or was kept when it came before
      // the wait: the read is only the fallback for one that was not (a Go worker's, one
      // announced while the subscriber reconnected, one pushed out of the kept ones).
      ...(viaReply ? { firstReadAfterMs: FALLBACK_READ_AFTER_MS } : {}),
      read: () => this.getState(taskUUID),
      listen: (wake) => {
        if (viaReply) return this.#listenReply(taskUUID, wake);
        // The announcement carries the document written, so a completed one ends the wait with
        // no further read. Anything else (an older announcer's bare state name) means "read".
        const onMessage = (message: string): void => {
          let state: TaskState | null = null;
          try {
            if (message.startsWith('{')) state = decodeTaskState(message);
          } catch {
            state = null;
          }
          wake(state?.TaskUUID === taskUUID ? state : null);
        };
        return { ready: this.#listen(taskUUID, onMessage), stop: () => this.#unlisten(taskUUID, onMessage) };
      },
      pollMs: this.#pollMs,
      closing: this.#waiters,
      isClosed: () => this.#closed,
    });
  }

  /** Subscribes to this backend's announce channel, once; tasks sent after that name it. */
  #startReply(): void {
    const reply = this.#reply;
    if (reply.starting || this.#closed) return;
    reply.starting = true;
    this.#sub()
      .subscribe(reply.channel)
      .then(
        () => (reply.on = !this.#closed),
        // Not fatal: waits keep subscribing per task, and a later wait tries again.
        () => (reply.starting = false),
      );
  }

  #listenReply(taskUUID: string, wake: (state: TaskState) => void): { ready: Promise<unknown>; stop: () => void } {
    const waiters = this.#reply.waiters;
    let wakes = waiters.get(taskUUID);
    if (!wakes) waiters.set(taskUUID, (wakes = new Set()));
    wakes.add(wake);
    return {
      ready: Promise.resolve(),
      stop: () => {
        wakes.delete(wake);
        if (wakes.size === 0 && waiters.get(taskUUID) === wakes) waiters.delete(taskUUID);
      },
    };
  }

  #takeEarly(taskUUID: string): TaskState | undefined {
    const text = this.#reply.early.get(taskUUID);
    if (text === undefined) return undefined;
    this.#reply.early.delete(taskUUID);
    try {
      const state = decodeTaskState(text);
      return state.TaskUUID === taskUUID && isCompleted(state) ? state : undefined;
    } catch {
      return undefined; // the wait reads the store instead
    }
  }

  #onReply(message: string): void {
    const waiters = this.#reply.waiters;
    // Every completion of a task this process sent comes here, waited for or not: the id at
    // the head of the document (as written here) decides before anything is decoded.
    const head = '{"TaskUUID":"';
    if (message.startsWith(head)) {
      const id = message.slice(head.length, message.indexOf('"', head.length));
      if (!id.includes('\\') && !waiters.has(id)) {
        this.#keepEarly(id, message);
        return;
      }
    }
    let state: TaskState;
    try {
      state = decodeTaskState(message);
    } catch {
      return; // not one of ours; the waits' poll still reads the store
    }
    const wakes = this.#reply.waiters.get(state.TaskUUID);
    if (wakes) for (const wake of [...wakes]) wake(state);
  }

  /** Keeps a completion no one waits for yet, pushing out the oldest beyond EARLY_KEPT. */
  #keepEarly(taskUUID: string, text: string): void {
    const early = this.#reply.early;
    early.delete(taskUUID);
    early.set(taskUUID, text);
    if (early.size > EARLY_KEPT) early.delete(early.keys().next().value as string);
  }

  async #listen(taskUUID: string, wake: (message: string) => void): Promise<void> {
    const channel = stateChannel(taskUUID);
    let entry = this.#listeners.get(channel);
    if (!entry) {
      entry = { wakes: new Set(), ready: this.#sub().subscribe(channel) };
      this.#listeners.set(channel, entry);
    }
    entry.wakes.add(wake);
    await entry.ready;
  }

  #unlisten(taskUUID: string, wake: (message: string) => void): void {
    const channel = stateChannel(taskUUID);
    const entry = this.#listeners.get(channel);
    if (!entry) return;
    entry.wakes.delete(wake);
    if (entry.wakes.size === 0) {
      this.#listeners.delete(channel);
      if (this.#subscriber && !this.#closed) this.#subscriber.unsubscribe(channel).catch(() => {});
    }
  }

  #sub(): Redis {
    if (!this.#subscriber) {
      const sub = this.#client.duplicate();
      sub.on('error', () => {});
      sub.on('message', (channel: string, message: string) => {
        if (channel === this.#reply.channel) return this.#onReply(message);
        const entry = this.#listeners.get(channel);
        if (entry) for (const wake of [...entry.wakes]) wake(message);
      });
      this.#subscriber = sub;
    }
    return this.#subscriber;
  }

  async purgeState(taskUUID: string): Promise<void> {
    this.#batch.flush();
    await this.#client.del(taskUUID);
  }

  async purgeGroupMeta(groupUUID: string): Promise<void> {
    this.#batch.flush();
    await this.#client.del(groupUUID);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#batch.flush();
    for (const wake of [...this.#waiters]) wake();
    this.#listeners.clear();
    this.#reply.early.clear();
    const sub = this.#subscriber;
    this.#subscriber = undefined;
    await Promise.all([sub ? quit(sub) : undefined, this.#owned ? quit(this.#client) : undefined]);
  }
}

/** `redis://host:port/db` (or the socket path) of the server a client talks to. */
export function redisStore(client: Redis): string {
  const o = client.options;
  return o.path ? `redis+unix://${o.path}/${o.db ?? 0}` : `redis://${o.host ?? '127.0.0.1'}:${o.port ?? 6379}/${o.db ?? 0}`;
}

async function quit(client: Redis): Promise<void> {
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
