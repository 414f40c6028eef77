import type {
  Backend,
  BackendCapabilities,
  ChordTriggerMode,
  ChordTriggerResult,
  StateUpdate,
  WaitOptions,
} from '../contracts/backend.js';
import { decodeGroupMeta, decodeTaskState, encodeGroupMeta, encodeTaskState } from '../message/codec.js';
import { type GroupMeta, type TaskState, isCompleted } from '../message/signature.js';
import { mergeTaskState, newGroupMeta } from '../message/state.js';

/**
 * The in-memory result backend. Documents are kept as the same JSON text Redis would
 * hold, so what tests see here is what Go would read there. Backends sharing one
 * `MemoryStore` behave like processes sharing a server.
 */
export interface MemoryBackendOptions {
  readonly store?: MemoryStore;
  /** Seconds a state lives; Go's 3600 when 0. @default 3600 */
  readonly resultsExpireIn?: number;
}

interface Entry {
  text: string;
  expiresAt: number;
}

export class MemoryStore {
  readonly entries = new Map<string, Entry>();
  readonly #waiters = new Map<string, Set<() => void>>();

  get(key: string): string | null {
    const e = this.entries.get(key);
    if (!e) return null;
    if (e.expiresAt <= Date.now()) {
      this.entries.delete(key);
      return null;
    }
    return e.text;
  }

  set(key: string, text: string, ttlSeconds: number): void {
    this.entries.set(key, { text, expiresAt: Date.now() + ttlSeconds * 1000 });
    const waiters = this.#waiters.get(key);
    if (waiters) for (const wake of waiters) wake();
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  watch(key: string, wake: () => void): () => void {
    let set = this.#waiters.get(key);
    if (!set) this.#waiters.set(key, (set = new Set()));
    set.add(wake);
    return () => {
      set.delete(wake);
      if (set.size === 0) this.#waiters.delete(key);
    };
  }
}

export class MemoryBackend implements Backend {
  readonly capabilities: BackendCapabilities = { waitForState: true, mayEvict: false, orderedWrites: true };
  readonly store: MemoryStore;
  readonly #ttl: number;

  constructor(options: MemoryBackendOptions = {}) {
    this.store = options.store ?? new MemoryStore();
    this.#ttl = options.resultsExpireIn || 3600;
  }

  async setState(update: StateUpdate): Promise<void> {
    // Single-threaded: read, merge and write happen with no await in between, so atomically.
    const state = mergeTaskState(update, this.#read(update.taskUUID));
    this.store.set(update.taskUUID, encodeTaskState(state), this.#ttl);
  }

  async setStates(updates: readonly StateUpdate[]): Promise<void> {
    for (const update of updates) await this.setState(update);
  }

  async getState(taskUUID: string): Promise<TaskState | null> {
    return this.#read(taskUUID);
  }

  #read(taskUUID: string): TaskState | null {
    const text = this.store.get(taskUUID);
    return text === null ? null : decodeTaskState(text);
  }

  async initGroup(groupUUID: string, taskUUIDs: readonly string[]): Promise<void> {
    const meta = newGroupMeta(groupUUID, taskUUIDs);
    this.store.set(groupUUID, encodeGroupMeta(meta), this.#ttl);
  }

  async getGroupMeta(groupUUID: string): Promise<GroupMeta | null> {
    const text = this.store.get(groupUUID);
    return text === null ? null : decodeGroupMeta(text);
  }

  async groupTaskStates(groupUUID: string, count: number): Promise<(TaskState | null)[]> {
    const meta = await this.getGroupMeta(groupUUID);
    if (!meta) return [];
    return meta.TaskUUIDs.slice(0, count || undefined).map((id) => this.#read(id));
  }

  async triggerChord(groupUUID: string, mode: ChordTriggerMode): Promise<ChordTriggerResult> {
    const text = this.store.get(groupUUID);
    if (text === null) return { fired: false, reason: 'no-group' };
    const meta = decodeGroupMeta(text);
    if (meta.ChordTriggered) return { fired: false, reason: 'already-triggered' };
    const states = meta.TaskUUIDs.map((id) => this.#read(id));
    if (mode.when === 'complete' && (states.length < mode.count || !states.every(isCompleted))) {
      return { fired: false, reason: 'incomplete' };
    }
    this.store.set(groupUUID, encodeGroupMeta({ ...meta, ChordTriggered: true }), this.#ttl);
    return { fired: true, states };
  }

  async resetChordTrigger(groupUUID: string): Promise<void> {
    const meta = await this.getGroupMeta(groupUUID);
    if (meta) this.store.set(groupUUID, encodeGroupMeta({ ...meta, ChordTriggered: false }), this.#ttl);
  }

  waitForState(taskUUID: string, options: WaitOptions): Promise<TaskState | null> {
    return new Promise((resolve) => {
      const first = this.#read(taskUUID);
      if (isCompleted(first) || options.signal?.aborted) return resolve(first);
      const finish = (value: TaskState | null): void => {
        clearTimeout(timer);
        unwatch();
        options.signal?.removeEventListener('abort', onAbort);
        resolve(value);
      };
      const onAbort = (): void => finish(this.#read(taskUUID));
      const unwatch = this.store.watch(taskUUID, () => {
        const state = this.#read(taskUUID);
        if (isCompleted(state)) finish(state);
      });
      const timer = setTimeout(() => finish(this.#read(taskUUID)), options.timeoutMs);
      options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async purgeState(taskUUID: string): Promise<void> {
    this.store.delete(taskUUID);
  }

  async purgeGroupMeta(groupUUID: string): Promise<void> {
    this.store.delete(groupUUID);
  }

  async close(): Promise<void> {}
}
