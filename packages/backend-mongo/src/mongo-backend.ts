import {
  type Backend,
  type BackendCapabilities,
  type ChordTriggerMode,
  type ChordTriggerResult,
  type GroupMeta,
  type StateUpdate,
  type TaskState,
  isCompleted,
} from '@machinery-ts/core';
import { type Collection, type Db, type Document, MongoClient } from 'mongodb';
import {
  documentToGroupMeta,
  documentToState,
  effectiveExpireIn,
  groupMetaToDocument,
  isExpired,
  stateToDocument,
} from './documents.js';

export interface MongoBackendOptions {
  /**
   * `mongodb://…` or `mongodb+srv://…`; `mongodb://` is prepended when neither is given (as Go
   * does). Ignored when `client` is given. @default mongodb://127.0.0.1:27017
   */
  readonly url?: string;
  /** A client owned by the caller: used as is and left open by `close()`. */
  readonly client?: MongoClient;
  /** @default 'machinery' (Go's default) */
  readonly database?: string;
  /** Seconds a result lives (`delete_at = now + n`); 3600 when 0, unlike Go. @default 3600 */
  readonly resultsExpireIn?: number;
  /**
   * Give non-final states and group metas a `delete_at` too, so they expire like results
   * (Go never expires them). `false` writes Go's layout exactly. @default true
   */
  readonly expirePending?: boolean;
}

interface Collections {
  readonly tasks: Collection<TaskDoc>;
  readonly groups: Collection<GroupDoc>;
}

type TaskDoc = Document & { _id: string };
type GroupDoc = Document & { _id: string };

/** Reads keep Int64 as `Long`, so 64-bit results come back exact. */
const READ = { promoteLongs: false } as const;

/**
 * Go Machinery v2's MongoDB result backend layout: collections `tasks` and `group_metas`,
 * bson field names, a TTL index on `delete_at`. State writes are single `$set` upserts
 * (so `task_name`/`created_at` written by PENDING are kept); the chord step is one
 * `findOneAndUpdate` on `chord_triggered: false`, so exactly one caller fires.
 */
export class MongoBackend implements Backend {
  readonly capabilities: BackendCapabilities = { waitForState: false, mayEvict: false };
  readonly #client: MongoClient;
  readonly #owned: boolean;
  readonly #database: string;
  readonly #expireIn: number;
  readonly #expirePending: boolean;
  #ready: Promise<Collections> | undefined;
  #closed = false;

  constructor(options: MongoBackendOptions = {}) {
    if (options.client) {
      this.#client = options.client;
      this.#owned = false;
    } else {
      this.#client = new MongoClient(normaliseUrl(options.url ?? 'mongodb://127.0.0.1:27017'));
      this.#owned = true;
    }
    this.#database = options.database ?? 'machinery';
    this.#expireIn = effectiveExpireIn(options.resultsExpireIn);
    this.#expirePending = options.expirePending ?? true;
  }

  /** The client this backend sends commands on. */
  get client(): MongoClient {
    return this.#client;
  }

  /** Connects (once) and creates the TTL indexes (once). A failed attempt is retried by the next call. */
  #collections(): Promise<Collections> {
    if (this.#closed) return Promise.reject(new Error('MongoBackend is closed'));
    if (!this.#ready) {
      const ready = (async (): Promise<Collections> => {
        if (this.#owned) await this.#client.connect();
        const db: Db = this.#client.db(this.#database);
        const tasks = db.collection<TaskDoc>('tasks');
        const groups = db.collection<GroupDoc>('group_metas');
        const ttl = { expireAfterSeconds: 0, background: true } as const;
        await Promise.all([tasks.createIndex({ delete_at: 1 }, ttl), groups.createIndex({ delete_at: 1 }, ttl)]);
        return { tasks, groups };
      })();
      this.#ready = ready;
      ready.catch(() => {
        if (this.#ready === ready) this.#ready = undefined;
      });
    }
    return this.#ready;
  }

  async setState(update: StateUpdate): Promise<void> {
    const { tasks } = await this.#collections();
    const set = stateToDocument(update, new Date(), this.#expireIn, this.#expirePending);
    await tasks.updateOne({ _id: update.taskUUID }, { $set: set }, { upsert: true });
  }

  async getState(taskUUID: string): Promise<TaskState | null> {
    const { tasks } = await this.#collections();
    const doc = await tasks.findOne({ _id: taskUUID }, READ);
    return doc && !isExpired(doc, Date.now()) ? documentToState(doc) : null;
  }

  async initGroup(groupUUID: string, taskUUIDs: readonly string[]): Promise<void> {
    const { groups } = await this.#collections();
    const doc = groupMetaToDocument(groupUUID, taskUUIDs, new Date(), this.#expireIn, this.#expirePending);
    // Go inserts; re-initialising a group (a re-sent group) overwrites here instead of failing on the duplicate key.
    await groups.replaceOne({ _id: groupUUID }, doc, { upsert: true });
  }

  async getGroupMeta(groupUUID: string): Promise<GroupMeta | null> {
    const { groups } = await this.#collections();
    const doc = await groups.findOne({ _id: groupUUID }, READ);
    return doc && !isExpired(doc, Date.now()) ? documentToGroupMeta(doc) : null;
  }

  async groupTaskStates(groupUUID: string, count: number): Promise<(TaskState | null)[]> {
    const meta = await this.getGroupMeta(groupUUID);
    if (!meta) return [];
    return this.#states(meta.TaskUUIDs.slice(0, count || undefined));
  }

  /** States of `ids` in their order (`find` returns natural order and skips missing ones). */
  async #states(ids: readonly string[]): Promise<(TaskState | null)[]> {
    if (ids.length === 0) return [];
    const { tasks } = await this.#collections();
    const docs = await tasks.find({ _id: { $in: [...new Set(ids)] } }, READ).toArray();
    const now = Date.now();
    const byId = new Map<string, TaskState>();
    for (const doc of docs) if (!isExpired(doc, now)) byId.set(String(doc._id), documentToState(doc));
    return ids.map((id) => byId.get(id) ?? null);
  }

  async triggerChord(groupUUID: string, mode: ChordTriggerMode): Promise<ChordTriggerResult> {
    const { groups } = await this.#collections();
    let states: (TaskState | null)[] | undefined;
    if (mode.when === 'complete') {
      const meta = await this.getGroupMeta(groupUUID);
      if (!meta) return { fired: false, reason: 'no-group' };
      if (meta.ChordTriggered) return { fired: false, reason: 'already-triggered' };
      states = await this.#states(meta.TaskUUIDs);
      if (states.length < mode.count || !states.every(isCompleted)) return { fired: false, reason: 'incomplete' };
    }
    // The atomic step: only the caller whose update matched `chord_triggered: false` gets the document back.
    // (Go's updateOne ignored MatchedCount, so every caller "fired".)
    const doc = await groups.findOneAndUpdate(
      { _id: groupUUID, chord_triggered: false },
      { $set: { chord_triggered: true } },
      { ...READ, returnDocument: 'after' },
    );
    if (!doc) {
      const exists = await groups.findOne({ _id: groupUUID }, { projection: { _id: 1, delete_at: 1 } });
      return { fired: false, reason: exists && !isExpired(exists, Date.now()) ? 'already-triggered' : 'no-group' };
    }
    // Completed states are final, so those read before the flip are still current.
    states ??= await this.#states(documentToGroupMeta(doc).TaskUUIDs);
    return { fired: true, states };
  }

  async resetChordTrigger(groupUUID: string): Promise<void> {
    const { groups } = await this.#collections();
    await groups.updateOne({ _id: groupUUID }, { $set: { chord_triggered: false } });
  }

  async purgeState(taskUUID: string): Promise<void> {
    const { tasks } = await this.#collections();
    await tasks.deleteOne({ _id: taskUUID });
  }

  async purgeGroupMeta(groupUUID: string): Promise<void> {
    const { groups } = await this.#collections();
    await groups.deleteOne({ _id: groupUUID });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const ready = this.#ready;
    this.#ready = undefined;
    if (!this.#owned) return;
    await ready?.catch(() => {});
    await this.#client.close();
  }
}

/** Go's rule: `mongodb://` is prepended unless the URL has `mongodb://` or `mongodb+srv://`. */
export function normaliseUrl(url: string): string {
  return url.startsWith('mongodb://') || url.startsWith('mongodb+srv://') ? url : `mongodb://${url}`;
}
