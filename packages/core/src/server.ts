import { announcedOn, withAnnounceTarget } from './announce.js';
import { AsyncResult, type GetOptions, waitCompleted } from './async-result.js';
import type { Backend, PlainWrite, StateUpdate } from './contracts/backend.js';
import type { Broker } from './contracts/broker.js';
import type { Lock } from './contracts/lock.js';
import { ConfigError, MachineryError } from './errors.js';
import { type Signature, type SignatureInit, TaskStates, newSignature, newTaskUUID } from './message/signature.js';
import { MemoryBackend } from './memory/memory-backend.js';
import { MemoryBroker } from './memory/memory-broker.js';
import { MemoryLock } from './memory/memory-lock.js';
import type { GoType } from './message/reflect.js';
import {
  type AnyTaskDefinition,
  type GoValues,
  type RegisteredTask,
  type TaskHandler,
  type TypedSignature,
  type UntypedSignature,
  type UntypedSignatureInit,
  toRegistered,
} from './task.js';
import { Worker, type WorkerOptions } from './worker.js';
import { type Chain, type Chord, type Group } from './workflow.js';

export interface ServerOptions {
  /** @default a private MemoryBroker */
  readonly broker?: Broker;
  /** @default a private MemoryBackend */
  readonly backend?: Backend;
  /** @default a private MemoryLock */
  readonly lock?: Lock;
  /** Queue of tasks without a routing key. @default 'machinery_tasks' */
  readonly defaultQueue?: string;
}

/**
 * Holds the transports and the task registry; sends tasks and workflows and makes workers.
 * The adapters it was given are closed by `close()`.
 */
export class Server {
  readonly broker: Broker;
  readonly backend: Backend;
  readonly lock: Lock;
  readonly defaultQueue: string;
  readonly #tasks = new Map<string, RegisteredTask>();

  constructor(options: ServerOptions = {}) {
    this.defaultQueue = options.defaultQueue ?? 'machinery_tasks';
    this.broker = options.broker ?? new MemoryBroker({ defaultQueue: this.defaultQueue });
    this.backend = options.backend ?? new MemoryBackend();
    this.lock = options.lock ?? new MemoryLock();
  }

  registerTask(name: string, task: TaskHandler): void;
  registerTask(task: AnyTaskDefinition): void;
  registerTask(nameOrDef: string | AnyTaskDefinition, task?: TaskHandler): void {
    if (typeof nameOrDef === 'string') {
      if (typeof task !== 'function') throw new MachineryError('CONFIG', `task ${nameOrDef}: the handler must be a function`);
      this.#tasks.set(nameOrDef, toRegistered(nameOrDef, task));
    } else {
      this.#tasks.set(nameOrDef.name, toRegistered(nameOrDef.name, nameOrDef));
    }
  }

  registerTasks(tasks: Record<string, TaskHandler | AnyTaskDefinition>): void {
    for (const [name, task] of Object.entries(tasks)) {
      this.#tasks.set(name, toRegistered(name, task));
    }
  }

  getTask(name: string): RegisteredTask | undefined {
    return this.#tasks.get(name);
  }

  isTaskRegistered(name: string): boolean {
    return this.#tasks.has(name);
  }

  /**
   * Writes PENDING, then publishes (Go's order, so a fast worker never finds no state).
   * A typed signature must be complete (a `partial` one only fits in a chain or a chord),
   * and its result is typed by the task's declared results.
   */
  async sendTask<R extends readonly GoType[]>(signature: TypedSignature<[], R>): Promise<AsyncResult<GoValues<R>>>;
  async sendTask<R extends unknown[] = unknown[]>(signature: UntypedSignature | UntypedSignatureInit): Promise<AsyncResult<R>>;
  async sendTask(signature: Signature | SignatureInit): Promise<AsyncResult> {
    const sig = this.#outgoing(signature);
    const pending = { taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.PENDING };
    const write = this.#carriedWrite(pending);
    if (write) {
      try {
        await this.broker.publishAfterWrite?.(sig, write);
      } catch (err) {
        throw new MachineryError('TASK_FAILED', `Set state pending and publish error: ${(err as Error).message}`, { cause: err });
      }
      return this.#result(sig);
    }
    try {
      await this.backend.setState(pending);
    } catch (err) {
      throw new MachineryError('TASK_FAILED', `Set state pending error: ${(err as Error).message}`, { cause: err });
    }
    try {
      await this.broker.publish(sig);
    } catch (err) {
      throw new MachineryError('TASK_FAILED', `Publish message error: ${(err as Error).message}`, { cause: err });
    }
    return this.#result(sig);
  }

  /** A signature as it goes out: every Go key present, a UUID, and the sender's announce target. */
  #outgoing(signature: Signature | SignatureInit): Signature {
    // Always normalised: a partial init that happens to carry some fields must still encode every Go key.
    let sig = newSignature(signature);
    if (!sig.UUID) sig.UUID = newTaskUUID();
    if (!sig.Headers) sig.Headers = {};
    const target = this.backend.announceTo?.();
    if (target) sig = withAnnounceTarget(sig, target);
    return sig;
  }

  #result(sig: Signature): AsyncResult {
    return new AsyncResult(sig.UUID, this.backend, announcedOn(sig));
  }

  /**
   * The PENDING write, when the broker can carry it with the task (broker and backend on one
   * store): one round trip instead of two, and still no task before its state.
   */
  #carriedWrite(update: StateUpdate): PlainWrite | undefined {
    if (!this.broker.publishAfterWrite || !this.backend.plainWrite) return undefined;
    const write = this.backend.plainWrite(update);
    return write && this.broker.carriesWritesFor?.(write.store) ? write : undefined;
  }

  /**
   * Sends many tasks in as few round trips as the transports allow: every PENDING state
   * first (one pipeline where the backend offers `setStates`), then one `publishBatch`.
   * When the PENDING writes fail nothing is published; when the publish fails, some tasks
   * may have gone out (the error says so) — the same "maybe sent" as one `sendTask`.
   */
  async sendTasks(
    signatures: readonly (TypedSignature<[], readonly GoType[]> | UntypedSignature | UntypedSignatureInit)[],
  ): Promise<AsyncResult[]> {
    const sigs = signatures.map((s) => this.#outgoing(s));
    if (sigs.length === 0) return [];
    const pending = sigs.map((s) => ({ taskUUID: s.UUID, taskName: s.Name, state: TaskStates.PENDING }));
    const writes = pending.map((p) => this.#carriedWrite(p));
    if (writes.every((w) => w !== undefined)) {
      try {
        const carried = writes as PlainWrite[];
        if (this.broker.publishBatchAfterWrite) await this.broker.publishBatchAfterWrite(sigs, carried);
        else await Promise.all(sigs.map((s, i) => this.broker.publishAfterWrite?.(s, carried[i] as PlainWrite)));
      } catch (err) {
        throw new MachineryError('TASK_FAILED', `Set state pending and publish error (some of the ${sigs.length} tasks may have been sent): ${(err as Error).message}`, {
          cause: err,
        });
      }
      return sigs.map((s) => this.#result(s));
    }
    try {
      if (this.backend.setStates) await this.backend.setStates(pending);
      else await Promise.all(pending.map((p) => this.backend.setState(p)));
    } catch (err) {
      throw new MachineryError('TASK_FAILED', `Set state pending error: ${(err as Error).message}`, { cause: err });
    }
    try {
      await this.broker.publishBatch(sigs);
    } catch (err) {
      throw new MachineryError('TASK_FAILED', `Publish message error (some of the ${sigs.length} tasks may have been sent): ${(err as Error).message}`, {
        cause: err,
      });
    }
    return sigs.map((s) => this.#result(s));
  }

  /** Sends every group task, at most `concurrency` publishes at once (0 = all at once). */
  async sendGroup<V extends unknown[][] = unknown[][]>(
    g: Group<unknown, V>,
    options: { concurrency?: number } = {},
  ): Promise<{ -readonly [K in keyof V]: AsyncResult<V[K]> }> {
    await this.backend.initGroup(g.groupUUID, g.tasks.map((t) => t.UUID));
    const limit = options.concurrency && options.concurrency > 0 ? options.concurrency : g.tasks.length;
    const results: AsyncResult[] = new Array(g.tasks.length);
    let next = 0;
    // Unlike Go, a failed publish does not return while others are still in flight.
    const runners = Array.from({ length: Math.min(limit, g.tasks.length) }, async () => {
      for (let i = next++; i < g.tasks.length; i = next++) {
        results[i] = await this.sendTask(g.tasks[i] as Signature);
      }
    });
    await Promise.all(runners);
    return results as { -readonly [K in keyof V]: AsyncResult<V[K]> };
  }

  /** `R` comes from a typed chord's callback; an untyped chord may still name it. */
  async sendChord<R extends unknown[] = unknown[]>(c: Chord<R> | Chord, options: { concurrency?: number } = {}): Promise<ChordAsyncResult<R>> {
    if (this.backend.capabilities.storesStates === false) {
      throw new ConfigError('a chord needs a result backend that stores states: its callback fires from the members\' stored results (this one is a NullBackend)');
    }
    const members = await this.sendGroup(c.group, options);
    return new ChordAsyncResult<R>(members, new AsyncResult<R>(c.callback.UUID, this.backend));
  }

  /** `R` comes from a typed chain's last link; an untyped chain may still name it. */
  async sendChain<R extends unknown[] = unknown[]>(c: Chain<R> | Chain): Promise<ChainAsyncResult<R>> {
    const first = c.tasks[0];
    if (!first) throw new MachineryError('CONFIG', 'a chain needs at least one task');
    await this.sendTask(first);
    return new ChainAsyncResult<R>(c.tasks.map((t) => new AsyncResult(t.UUID, this.backend)));
  }

  newWorker(options: WorkerOptions = {}): Worker {
    return new Worker(this, options);
  }

  async close(): Promise<void> {
    const results = await Promise.allSettled([this.broker.close(), this.backend.close(), this.lock.close()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }
}

/** Waits for every member, then the callback; a failed member rejects at once with its error. */
export class ChordAsyncResult<R extends unknown[] = unknown[]> {
  constructor(readonly members: readonly AsyncResult[], readonly callback: AsyncResult<R>) {}

  async get(options: GetOptions = {}): Promise<R> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    const left = (): GetOptions => ({ ...options, timeoutMs: Math.max(1, deadline - Date.now()) });
    // The callback's own state carries a member's failure (the worker records it there).
    const callbackState = waitCompleted(this.callback.backend, this.callback.taskUUID, left());
    const memberFailure = Promise.all(this.members.map((m) => m.get(left()))).then(() => callbackState);
    callbackState.catch(() => undefined);
    memberFailure.catch(() => undefined);
    const state = await Promise.race([callbackState, memberFailure]);
    return AsyncResult.unwrap(state) as R;
  }
}

/** Waits for each link in order; resolves with the last link's results. */
export class ChainAsyncResult<R extends unknown[] = unknown[]> {
  constructor(readonly links: readonly AsyncResult[]) {}

  async get(options: GetOptions = {}): Promise<R> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    let last: unknown[] = [];
    for (const link of this.links) last = await link.get({ ...options, timeoutMs: Math.max(1, deadline - Date.now()) });
    return last as R;
  }
}
