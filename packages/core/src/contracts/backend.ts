import type { GroupMeta, TaskResult, TaskState, TaskStateName } from '../message/signature.js';

/**
 * # The Backend contract
 *
 * A result backend stores task states and group metadata in Go Machinery's documents
 * (§2.2 of the reference, or the store's own Go layout such as Mongo's bson fields), so
 * Go and TypeScript read each other's results.
 *
 * ## What every adapter guarantees
 *
 * 1. **Go's documents and keys**, per store. Task state key = task UUID, group key =
 *    group UUID, unless the store's Go layout says otherwise.
 * 2. **Merged writes.** `setState` keeps `TaskName` and `CreatedAt` from the existing
 *    document (PENDING sets them). The read-merge-write is atomic where the store can make
 *    it so (Lua, CAS, `findOneAndUpdate`); a state is never half written.
 * 3. **Expiry.** Every write applies `resultsExpireIn` seconds the store's way (Go's
 *    3600 when 0). An expired state reads as `null`, never as an error.
 * 4. **The chord step is atomic.** `triggerChord` lets exactly one caller through per
 *    group, across processes and machines, however many complete members race — no global
 *    lock, no read-then-write window.
 * 5. **Group order.** `groupTaskStates` returns states in `TaskUUIDs` order.
 * 6. **Errors are errors.** A store outage rejects; it is never reported as "no state".
 *
 * ## What is left out on purpose
 *
 * - Durability beyond the store's own (memcached may evict a state; that adapter says so).
 * - Transactions across documents, apart from the chord step.
 * - Listing or searching tasks.
 * - Waiting is optional: `waitForState` exists where the store can notify; otherwise
 *   `AsyncResult` polls with back-off.
 */
export interface Backend {
  readonly capabilities: BackendCapabilities;

  /** Writes one state, merging `TaskName`/`CreatedAt` from the stored document. */
  setState(update: StateUpdate): Promise<void>;

  /**
   * Writes many states in as few round trips as the store allows (a bulk send's PENDING
   * states). Each write is independent and merged as `setState` merges; on rejection some
   * may be stored. Optional: without it, callers write one at a time.
   */
  setStates?(updates: readonly StateUpdate[]): Promise<void>;

  /**
   * `update` (a PENDING state, which merges with nothing) as a plain write, for a broker
   * that publishes into the same store (`Broker.publishAfterWrite`): the state and the task
   * then go out in one round trip, the state applied first, so a worker never finds none.
   * Optional; `undefined` for a state that needs more than a plain write.
   */
  plainWrite?(update: StateUpdate): PlainWrite | undefined;

  /**
   * `update` (a completed state) handed over for a broker to apply in the step that acks
   * its delivery (`Delivery.ackAfterWrite`): one round trip instead of a write and then an
   * ack, and no ack unless the write was applied. A write of the same task still queued in
   * this backend is folded into it, as a later `setState` would replace it. `undefined` when
   * the write cannot be handed over: `carried` (the broker's `carriesWritesFor`) refuses
   * this backend's store, an earlier write of the task may still be on its way and could
   * land after it, or the state is not one this backend hands over. The caller then writes
   * with `setState`. Optional.
   */
  scriptedWrite?(update: StateUpdate, carried: (store: string) => boolean): ScriptedWrite | undefined;

  /** The stored state, or `null` when there is none (never written, expired, purged). */
  getState(taskUUID: string): Promise<TaskState | null>;

  /** Records a group's members in order; `ChordTriggered` starts false. */
  initGroup(groupUUID: string, taskUUIDs: readonly string[]): Promise<void>;

  getGroupMeta(groupUUID: string): Promise<GroupMeta | null>;

  /** Member states in group order; a missing member state is `null` in its slot. */
  groupTaskStates(groupUUID: string, count: number): Promise<(TaskState | null)[]>;

  /**
   * The atomic "group completed + chord trigger" step.
   * - `{ when: 'complete', count }`: fires only when all `count` members are completed
   *   (SUCCESS or FAILURE) and the chord has not fired; returns the member states.
   * - `{ when: 'now' }`: fires if the chord has not fired, whatever the members say
   *   (used when a member fails for good, so the chord result records the failure).
   * Exactly one caller per group ever gets `fired: true`.
   */
  triggerChord(groupUUID: string, mode: ChordTriggerMode): Promise<ChordTriggerResult>;

  /** Undoes a fired trigger when the callback could not be published, so a retry can fire it. */
  resetChordTrigger(groupUUID: string): Promise<void>;

  /**
   * Resolves with the state once it is completed (or changes, at the adapter's choice;
   * callers re-check), or `null` at the deadline or when `signal` aborts. Present only
   * when `capabilities.waitForState` is true.
   */
  waitForState?(taskUUID: string, options: WaitOptions): Promise<TaskState | null>;

  /**
   * Where this backend hears completions announced for the tasks this process sends, once
   * it listens there (it may start at its first wait): Server puts it in each task's
   * `machinery-ts-announce` header, the worker passes it on with the completed state
   * (`StateUpdate.announceTo`), and a wait for such a task (`WaitOptions.announcedOn`)
   * needs no listening of its own. `undefined` while not listening. Optional.
   */
  announceTo?(): string | undefined;

  purgeState(taskUUID: string): Promise<void>;
  purgeGroupMeta(groupUUID: string): Promise<void>;

  /** Releases connections this adapter opened. Idempotent. */
  close(): Promise<void>;
}

export interface BackendCapabilities {
  /** `waitForState` is implemented without busy polling. */
  readonly waitForState: boolean;
  /** States can vanish before they expire (cache eviction). */
  readonly mayEvict: boolean;
  /**
   * Writes are applied in the order they were issued, even when the caller does not wait
   * for one before issuing the next (one ordered connection, or a synchronous store). The
   * worker then sends a task's outcome without waiting for its STARTED write to be
   * confirmed. Absent means no: the worker waits.
   */
  readonly orderedWrites?: boolean;
  /**
   * `false` for a backend that keeps nothing (`NullBackend`): waiting for a result or firing
   * a chord can never succeed, so callers refuse at once. Absent means it stores states.
   */
  readonly storesStates?: boolean;
}

/** A key set to a value with an expiry, in the store the backend names. */
export interface PlainWrite {
  /** The store it is for, e.g. `redis://127.0.0.1:6379/0`; a broker carries it only into that one. */
  readonly store: string;
  readonly key: string;
  readonly value: string;
  /** Whole seconds, at least 1. */
  readonly expireSeconds: number;
}

/**
 * A state write for a broker on the same Redis server to run inside its own Lua script.
 * `lua` is a script body run once per call over any number of such writes sharing `lua`
 * and `shared`: KEYS are their keys, ARGV is `shared` followed by each write's `args` in
 * turn. It raises (a Lua error) when a write cannot be made, and the broker then acks none
 * of the deliveries in that call. The broker runs it as it is and never reads the arguments.
 */
export interface ScriptedWrite {
  /** The store it is for, as `Broker.carriesWritesFor` compares it. */
  readonly store: string;
  readonly lua: string;
  readonly shared: readonly string[];
  readonly key: string;
  readonly args: readonly string[];
}

export interface StateUpdate {
  readonly taskUUID: string;
  /** Written with PENDING; later states keep the stored name when this is empty. */
  readonly taskName: string;
  readonly state: TaskStateName;
  readonly results?: readonly TaskResult[] | null;
  readonly error?: string;
  /**
   * The sender's announce target from the task's header: a backend that announces
   * completed states announces this one there too. Absent for most writes.
   */
  readonly announceTo?: string;
}

export type ChordTriggerMode = { readonly when: 'complete'; readonly count: number } | { readonly when: 'now' };

export type ChordTriggerResult =
  | { readonly fired: true; readonly states: readonly (TaskState | null)[] }
  | { readonly fired: false; readonly reason: 'incomplete' | 'already-triggered' | 'no-group' };

export interface WaitOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** The announce target the task was sent with (see `Backend.announceTo`), when known. */
  readonly announcedOn?: string;
}
