import memjs from 'memjs';
import {
  type Backend,
  type BackendCapabilities,
  type ChordTriggerMode,
  type ChordTriggerResult,
  type GroupMeta,
  type StateUpdate,
  type TaskState,
  MachineryError,
  TaskStates,
  decodeGroupMeta,
  decodeTaskState,
  encodeGroupMeta,
  encodeTaskState,
  isCompleted,
  mergeTaskState,
  newGroupMeta,
} from '@machinery-ts/core';

/**
 * The Memcache result backend, laid out as Go Machinery v2's `backends/memcache`:
 *
 * - key = task UUID / group UUID verbatim, value = the JSON documents of §2.2;
 * - expiry = the absolute Unix time `now + resultsExpireIn` (3600 when 0), as Go passes it.
 *
 * Fixes over Go:
 * - States after PENDING keep `TaskName` and `CreatedAt` (Go's memcache backend drops them).
 * - `triggerChord` lets exactly one caller through, using memcached's atomic `add` on
 *   `<groupUUID>:chord_triggered` (Go's Lock flag polling is racy, issue #30).
 */
export interface MemcacheBackendOptions {
  /** `memcache://h1:p1[,h2:p2…]` (Go v1 URL form). Ignored when `client` is given. */
  readonly url?: string;
  /** A memjs client to use; the backend never closes a client it did not create. */
  readonly client?: memjs.Client;
  /** Seconds a state lives; Go's 3600 when 0. @default 3600 */
  readonly resultsExpireIn?: number;
}

/** Suffix of the key whose successful `add` is the chord trigger. */
export const CHORD_TRIGGERED_SUFFIX = ':chord_triggered';
/** Suffix of the short-lived lock key that serialises a state's read-merge-write. */
export const STATE_LOCK_SUFFIX = '.lock';

/** Seconds a merge lock lives if its holder dies before deleting it (relative expiry). */
const LOCK_EXPIRES_S = 2;
/** How long `setState` keeps trying for the merge lock before rejecting. */
const LOCK_WAIT_MS = 5_000;

/** `memcache://h1:p1,h2:p2` → `h1:p1,h2:p2` (memjs's server string). */
export function parseMemcacheUrl(url: string): string {
  const m = /^memcache:\/\/([^/?#]*)\/?$/i.exec(url.trim());
  if (!m || !m[1]) throw new MachineryError('CONFIG', `Invalid memcache URL "${url}", want memcache://host:port[,host:port…]`);
  const servers = m[1]
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (servers.length === 0) throw new MachineryError('CONFIG', `Invalid memcache URL "${url}": no servers`);
  return servers.join(',');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class MemcacheBackend implements Backend {
  readonly capabilities: BackendCapabilities = { waitForState: false, mayEvict: true };
  readonly client: memjs.Client;
  readonly #ownsClient: boolean;
  readonly #ttl: number;
  #closed = false;

  constructor(options: MemcacheBackendOptions = {}) {
    this.#ttl = options.resultsExpireIn || 3600;
    if (options.client) {
      this.client = options.client;
      this.#ownsClient = false;
    } else {
      const servers = parseMemcacheUrl(options.url ?? 'memcache://127.0.0.1:11211');
      this.client = memjs.Client.create(servers, { retries: 1, timeout: 2, conntimeout: 2 });
      this.#ownsClient = true;
    }
  }

  /**
   * Go's expiry: the absolute Unix time `now + n`. memcached (and memjs's `expires`, which is
   * passed through verbatim) treat values above 30 days as absolute Unix times, so this is
   * what Go's gomemcache `Expiration: int32(time.Now().Unix() + n)` sends.
   */
  #expires(): number {
    return Math.floor(Date.now() / 1000) + this.#ttl;
  }

  async #getText(key: string): Promise<string | null> {
    const { value } = await this.client.get(key);
    return value === null ? null : value.toString('utf8');
  }

  async #set(key: string, text: string): Promise<void> {
    const ok = await this.client.set(key, text, { expires: this.#expires() });
    if (!ok) throw new Error(`memcache SET ${key} failed`);
  }

  #readState = async (taskUUID: string): Promise<TaskState | null> => {
    const text = await this.#getText(taskUUID);
    return text === null ? null : decodeTaskState(text);
  };

  /**
   * Writes one state, merging `TaskName`/`CreatedAt` from the stored document.
   *
   * Why a lock key and not CAS: memcached has CAS, but memjs 1.3.2 exposes neither `gets`
   * nor `cas` (its source reads "TODO: support version (CAS)"). So the read-merge-write is
   * serialised by `add`-ing `<uuid>.lock` (add is atomic: it fails when the key exists),
   * with a 2 s relative expiry so a crashed holder cannot block the task for long, retried
   * with small jittered sleeps; after 5 s without the lock the write rejects rather than
   * write unmerged. PENDING needs no merge (it sets both fields) and also takes the lock, so
   * a PENDING racing a later state cannot be overwritten by a stale merge.
   */
  async setState(update: StateUpdate): Promise<void> {
    const lockKey = update.taskUUID + STATE_LOCK_SUFFIX;
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let attempt = 0; ; attempt++) {
      if (await this.client.add(lockKey, '1', { expires: LOCK_EXPIRES_S })) break;
      if (Date.now() >= deadline) {
        throw new Error(`memcache: could not take the merge lock of ${update.taskUUID} within ${LOCK_WAIT_MS} ms`);
      }
      await sleep(Math.min(2 + attempt * 2, 25) + Math.random() * 5);
    }
    try {
      const old = update.state === TaskStates.PENDING ? null : await this.#readState(update.taskUUID);
      const state = mergeTaskState(update, old);
      await this.#set(update.taskUUID, encodeTaskState(state));
    } finally {
      await this.client.delete(lockKey).catch(() => undefined);
    }
  }

  getState(taskUUID: string): Promise<TaskState | null> {
    return this.#readState(taskUUID);
  }

  async initGroup(groupUUID: string, taskUUIDs: readonly string[]): Promise<void> {
    const meta = newGroupMeta(groupUUID, taskUUIDs);
    // A re-initialised group starts untriggered.
    await this.client.delete(groupUUID + CHORD_TRIGGERED_SUFFIX);
    await this.#set(groupUUID, encodeGroupMeta(meta));
  }

  async getGroupMeta(groupUUID: string): Promise<GroupMeta | null> {
    const text = await this.#getText(groupUUID);
    return text === null ? null : decodeGroupMeta(text);
  }

  /**
   * Member states in group order. An evicted (or expired) member state is `null` in its
   * slot; memcached gives no way to tell eviction from "never written". No meta → `[]`.
   */
  async groupTaskStates(groupUUID: string, count: number): Promise<(TaskState | null)[]> {
    const meta = await this.getGroupMeta(groupUUID);
    if (!meta) return [];
    return this.#memberStates(meta.TaskUUIDs.slice(0, count || undefined));
  }

  #memberStates(ids: readonly string[]): Promise<(TaskState | null)[]> {
    // memjs has no multi-get; the GETs are pipelined on the client's connections.
    return Promise.all(ids.map(this.#readState));
  }

  /**
   * The chord step. The only atomic decision is memcached's `add` of
   * `<groupUUID>:chord_triggered`: exactly one `add` succeeds however many callers race.
   * The winner then rewrites the group meta with `ChordTriggered: true` so Go readers see it.
   * In 'complete' mode a missing (evicted) member state counts as incomplete.
   */
  async triggerChord(groupUUID: string, mode: ChordTriggerMode): Promise<ChordTriggerResult> {
    const meta = await this.getGroupMeta(groupUUID);
    if (!meta) return { fired: false, reason: 'no-group' };
    if (meta.ChordTriggered) return { fired: false, reason: 'already-triggered' };
    const states = await this.#memberStates(meta.TaskUUIDs);
    if (mode.when === 'complete' && (states.length < mode.count || !states.every(isCompleted))) {
      return { fired: false, reason: 'incomplete' };
    }
    const won = await this.client.add(groupUUID + CHORD_TRIGGERED_SUFFIX, '1', { expires: this.#expires() });
    if (!won) return { fired: false, reason: 'already-triggered' };
    await this.#set(groupUUID, encodeGroupMeta({ ...meta, ChordTriggered: true }));
    return { fired: true, states };
  }

  /** Flips the meta back first, then deletes the trigger key, so a retry can fire again. */
  async resetChordTrigger(groupUUID: string): Promise<void> {
    const meta = await this.getGroupMeta(groupUUID);
    if (meta) await this.#set(groupUUID, encodeGroupMeta({ ...meta, ChordTriggered: false }));
    await this.client.delete(groupUUID + CHORD_TRIGGERED_SUFFIX);
  }

  async purgeState(taskUUID: string): Promise<void> {
    await this.client.delete(taskUUID);
  }

  async purgeGroupMeta(groupUUID: string): Promise<void> {
    await this.client.delete(groupUUID);
    await this.client.delete(groupUUID + CHORD_TRIGGERED_SUFFIX);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsClient) this.client.close();
  }
}
