import { announcedOn } from './announce.js';
import type { ScriptedWrite, StateUpdate } from './contracts/backend.js';
import type { Delivery, Outcome, Subscription } from './contracts/broker.js';
import {
  MalformedMessageError,
  PayloadTooLargeError,
  RetryTaskLater,
  TaskTimeoutError,
  UnknownTaskError,
  UnrecoverableError,
  errorText,
} from './errors.js';
import { decodeSignature, sniffTaskUUID } from './message/codec.js';
import { argsFromWire, resultsToWire } from './message/reflect.js';
import { type Arg, type Signature, type TaskResult, TaskStates, copySignature } from './message/signature.js';
import { formatRfc3339Nano, parseRfc3339 } from './message/time.js';
import type { Server } from './server.js';
import { MultipleResults, type RegisteredTask, type TaskContext } from './task.js';

export interface WorkerOptions {
  /** Name in logs and transport listings. @default 'machinery-ts-worker' */
  readonly consumerTag?: string;
  /**
   * Task functions run at once. A slot frees when the function returns, throws or times out;
   * the outcome is then recorded (state write, callbacks, retry) in the background, its
   * delivery still unsettled and so still counted against `concurrency + readAhead` by the broker.
   * @default 10
   */
  readonly concurrency?: number;
  /**
   * Deliveries held beyond `concurrency`, ready to start, so a finished task's slot refills
   * without waiting for the broker. A number fixes it; for long tasks, 0 or 1 leaves waiting
   * messages to idle workers instead. Unset, it is `concurrency` (about what Go's Redis worker
   * holds), and three times that while tasks average under 1 ms (until they average 2 ms), on
   * brokers that can change a running consumer's prefetch (`Subscription.setPrefetch`: Redis,
   * SQS, memory; not AMQP). `Worker.readAhead` tells which it is now.
   * @default concurrency, or 3 × concurrency for short tasks
   */
  readonly readAhead?: number;
  /** Queue to consume (Go's custom queue). @default the server's default queue */
  readonly queue?: string;
  /** Per-task deadline when the signature sets none; 0 = none. @default 0 */
  readonly taskTimeoutMs?: number;
  /** Longest Fibonacci retry delay, before jitter. @default 3600000 */
  readonly maxRetryDelayMs?: number;
  /** Longest delay a task may ask for with `RetryTaskLater`. @default 86400000 */
  readonly maxRetryLaterMs?: number;
  /** Messages larger than this are dead-lettered unread. @default 1048576 */
  readonly maxPayloadBytes?: number;
  /** Times an unknown task is handed back (with growing delays) before it is dead-lettered. @default 5 */
  readonly unknownTaskRequeues?: number;
  /**
   * Which in-progress states are written before a task runs: Go's RECEIVED and STARTED
   * (`all`), STARTED only, or none (PENDING, then the outcome). Each is a backend write
   * per task. @default 'all'
   */
  readonly progressStates?: 'all' | 'started' | 'none';
  /** Install SIGINT/SIGTERM handlers in `launch()`. @default true */
  readonly handleSignals?: boolean;
  readonly onPreTask?: (signature: Signature) => void | Promise<void>;
  readonly onPostTask?: (signature: Signature) => void | Promise<void>;
  /** Final task failures and transport errors. Without it they go to `console.error`, as does anything it throws. */
  readonly onError?: (error: Error, signature?: Signature) => void;
}

const FIB_CACHE = [1, 1];
/** Go's `FibonacciNext`: the smallest Fibonacci number strictly greater than `n`. */
export function fibonacciNext(n: number): number {
  let i = 0;
  for (;;) {
    while (FIB_CACHE.length <= i) FIB_CACHE.push((FIB_CACHE.at(-1) as number) + (FIB_CACHE.at(-2) as number));
    const f = FIB_CACHE[i] as number;
    if (f > n) return f;
    i++;
  }
}

/** A running task's context. Most handlers never look at the signal, so its AbortController is made on first use. */
class RunContext implements TaskContext {
  #controller: AbortController | undefined;
  constructor(
    readonly signature: Signature,
    readonly attempt: number,
  ) {}
  get signal(): AbortSignal {
    return (this.#controller ??= new AbortController()).signal;
  }
  /** Static, so a handler holding the context has no `abort` of its own to call. */
  static abort(ctx: RunContext, reason: Error): void {
    (ctx.#controller ??= new AbortController()).abort(reason);
  }
}

/**
 * Consumes one queue and runs tasks: RECEIVED → STARTED → SUCCESS / FAILURE / RETRY,
 * callbacks, chords, retries, and a delivery settled only after its outcome is recorded.
 */
export class Worker {
  readonly #server: Server;
  readonly #opts: Required<Omit<WorkerOptions, 'onPreTask' | 'onPostTask' | 'onError'>> & WorkerOptions;
  readonly #waiting: Delivery[] = [];
  /** Each delivery's handling, from its task's start to its outcome recorded; removes itself when done. */
  readonly #running = new Map<Delivery, Promise<void>>();
  /** Task functions running now: what `concurrency` bounds. */
  #busy = 0;
  #pumpQueued = false;
  /** Tasks of this turn whose RECEIVED / STARTED wait for its end (see `#recordProgress`). */
  #deferred: { sig: Signature; slot: Slot }[] = [];
  #deferredScheduled = false;
  /** Settles under way of tasks whose outcome is recorded (their slot is already free). */
  readonly #settling = new Map<Delivery, Promise<void>>();
  readonly #unknownSeen = new Map<string, number>();
  #subscription: Subscription | undefined;
  /** `readAhead` was left unset and the broker can change its prefetch: it follows the tasks' mean time (see `#timed`). */
  #adaptive: boolean;
  /** Mean time a task holds its slot, ms, weighted to recent ones; NaN before the first. */
  #meanTaskMs = Number.NaN;
  /** Holding the deeper read-ahead of short tasks now. */
  #deep = false;
  #stopping = false;
  #stopped: Promise<void> | undefined;

  constructor(server: Server, options: WorkerOptions = {}) {
    this.#server = server;
    // An option given as undefined (`{ readAhead: config.readAhead }`) is one left unset.
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as WorkerOptions;
    this.#opts = {
      consumerTag: 'machinery-ts-worker',
      concurrency: 10,
      readAhead: given.concurrency ?? 10,
      queue: server.defaultQueue,
      taskTimeoutMs: 0,
      maxRetryDelayMs: 3_600_000,
      maxRetryLaterMs: 86_400_000,
      maxPayloadBytes: 1_048_576,
      unknownTaskRequeues: 5,
      progressStates: 'all',
      handleSignals: true,
      ...given,
    };
    this.#adaptive = given.readAhead === undefined;
    if (!(this.#opts.concurrency >= 1)) throw new RangeError(`concurrency must be at least 1, found ${this.#opts.concurrency}`);
    if (!(this.#opts.readAhead >= 0)) throw new RangeError(`readAhead must be 0 or more, found ${this.#opts.readAhead}`);
    if (!['all', 'started', 'none'].includes(this.#opts.progressStates)) {
      throw new RangeError(`progressStates must be 'all', 'started' or 'none', found ${JSON.stringify(this.#opts.progressStates)}`);
    }
  }

  /** Starts consuming. Resolves once the subscription is up. */
  async start(): Promise<void> {
    this.#subscription = await this.#server.broker.consume(this.#opts.queue, {
      prefetch: this.#prefetch(),
      consumerTag: this.#opts.consumerTag,
      onDelivery: (d) => {
        this.#waiting.push(d);
        this.#pump();
      },
      onError: (err) => this.#reportError(err),
    });
    if (!this.#subscription.setPrefetch) this.#adaptive = false;
  }

  /**
   * Runs until SIGINT/SIGTERM: the first signal stops fetching, hands back what has not
   * started and waits for running tasks; a second one hands back and resolves at once.
   */
  async launch(): Promise<void> {
    if (!this.#opts.handleSignals) {
      await this.start();
      return this.#stopped ?? new Promise(() => undefined);
    }
    // Handlers go in before consuming starts: a task may begin (and a signal arrive)
    // before `start()` resolves, and an unhandled SIGINT would kill the process mid-task.
    let signals = 0;
    let onSignal = (): void => {
      signals += 1;
    };
    const listener = (): void => onSignal();
    process.on('SIGINT', listener);
    process.on('SIGTERM', listener);
    try {
      await this.start();
    } catch (err) {
      process.off('SIGINT', listener);
      process.off('SIGTERM', listener);
      throw err;
    }
    return new Promise<void>((resolve) => {
      const done = (): void => {
        process.off('SIGINT', listener);
        process.off('SIGTERM', listener);
        resolve();
      };
      onSignal = (): void => {
        signals += 1;
        if (signals === 1) void this.stop().then(done);
        else void this.stop({ abandonRunning: true }).then(done);
      };
      // Signals that came while starting count now, in order.
      const early = signals;
      signals = 0;
      for (let i = 0; i < early; i++) onSignal();
    });
  }

  /**
   * Graceful stop: no more fetching, prefetched deliveries requeued in order, running tasks
   * awaited (unless `abandonRunning`: their deliveries are left unsettled, so the broker
   * redelivers them — nothing is lost either way). Idempotent.
   */
  stop(options: { abandonRunning?: boolean } = {}): Promise<void> {
    this.#stopping = true;
    const stopping = (this.#stopped ??= (async () => {
      await this.#subscription?.stop();
      const waiting = this.#waiting.splice(0);
      // Requeue at the head in reverse so the queue keeps its order. Once the broker refuses
      // one (its server unreachable), the rest are not tried: like it, they stay the broker's
      // and come back after its redelivery timeout, and a stop never waits on each in turn.
      for (const d of waiting.reverse()) {
        try {
          await d.settle({ kind: 'requeue' });
        } catch (err) {
          this.#reportError(err as Error);
          break;
        }
      }
    })());
    // Settles in flight are waited for either way: they are quick, and a lost ack means a rerun.
    const settled = async (): Promise<void> => {
      while (this.#settling.size > 0) await Promise.allSettled([...this.#settling.values()]);
    };
    if (options.abandonRunning) return stopping.then(settled);
    return stopping.then(async () => {
      while (this.#running.size > 0) await Promise.allSettled([...this.#running.values()]);
      await settled();
    });
  }

  /** Task functions running now. */
  get runningCount(): number {
    return this.#busy;
  }

  /** Deliveries held beyond those running now (`readAhead`, or what an unset one has become). */
  get readAhead(): number {
    return this.#readAheadWhen(this.#deep);
  }

  #readAheadWhen(deep: boolean): number {
    return deep ? DEEP_READ_AHEAD * this.#opts.concurrency : this.#opts.readAhead;
  }

  #prefetch(deep = this.#deep): number {
    return this.#opts.concurrency + this.#readAheadWhen(deep);
  }

  /**
   * Folds one task's time into the mean and moves between the two read-aheads of an unset
   * `readAhead` when it crosses `SHORT_TASK_MS` (down) or `LONG_TASK_MS` (up): the gap keeps a
   * mean near one bound from changing the broker's prefetch at every task.
   */
  #timed(ms: number): void {
    const mean = Number.isNaN(this.#meanTaskMs) ? ms : this.#meanTaskMs + (ms - this.#meanTaskMs) * MEAN_WEIGHT;
    this.#meanTaskMs = mean;
    const deep = this.#deep ? mean < LONG_TASK_MS : mean < SHORT_TASK_MS;
    // Before `start()` has the subscription (a broker may deliver from inside `consume`), the switch waits for a later task.
    if (deep === this.#deep || !this.#subscription?.setPrefetch) return;
    const prefetch = this.#prefetch(deep);
    try {
      this.#subscription.setPrefetch(prefetch);
      this.#deep = deep;
    } catch (err) {
      // Called from a slot's release, which must not throw. The broker keeps the bound it has,
      // and the worker stops adapting rather than failing the same way at every task.
      this.#adaptive = false;
      this.#reportError(new Error(`readAhead stays at ${this.readAhead}: the broker refused a prefetch of ${prefetch}: ${(err as Error).message}`, { cause: err }));
    }
  }

  #pump(): void {
    while (!this.#stopping && this.#busy < this.#opts.concurrency) {
      const delivery = this.#waiting.shift();
      if (!delivery) return;
      this.#busy += 1;
      // A task that ended within the call is done: nothing to wait for. Otherwise `#handle`
      // has awaited something first, so the entry is set before its own `finally` removes it.
      const running = this.#handle(delivery, { held: true, since: this.#adaptive ? performance.now() : 0 });
      if (running) this.#running.set(delivery, running);
    }
  }

  /**
   * Frees a task's slot, once. The next deliveries start from a microtask rather than from
   * here: a task function that returns at once would otherwise start the next one inside
   * its own call, one stack frame deeper per delivery waiting.
   */
  #release(slot: Slot): void {
    if (!slot.held) return;
    slot.held = false;
    this.#busy -= 1;
    if (this.#adaptive) this.#timed(performance.now() - slot.since);
    if (this.#pumpQueued) return;
    this.#pumpQueued = true;
    queueMicrotask(() => {
      this.#pumpQueued = false;
      this.#pump();
    });
  }

  /**
   * Never rejects. The slot frees as soon as the task function is done, or as soon as it is
   * clear that none will run (`#process`); otherwise, at the latest, here at the end.
   * Recording the outcome is not running the task, and holding the slot for that round trip
   * capped a worker at `concurrency` tasks per write.
   *
   * A task whose outcome is known within the call (a function that returns a plain value,
   * with no hook or deadline to wait for) is handled without a promise of its own: at tens of
   * thousands of tasks a second, each async step per task is measurable. `undefined` then.
   */
  #handle(delivery: Delivery, slot: Slot): Promise<void> | undefined {
    let outcome: Settlement | Promise<Settlement>;
    try {
      outcome = this.#process(delivery, slot);
    } catch (err) {
      outcome = this.#notRecorded(err);
    }
    if (isThenable(outcome)) return this.#handleLater(delivery, slot, outcome);
    this.#recorded(delivery, slot, outcome);
    return undefined;
  }

  async #handleLater(delivery: Delivery, slot: Slot, pending: Promise<Settlement>): Promise<void> {
    let outcome: Settlement;
    try {
      outcome = await pending;
    } catch (err) {
      outcome = this.#notRecorded(err);
    }
    this.#recorded(delivery, slot, outcome);
  }

  /** A state write or publish failed: the outcome is not recorded, so the task is tried again later. */
  #notRecorded(err: unknown): Settlement {
    this.#reportError(err as Error);
    return RETRY_SOON;
  }

  /**
   * The slot frees once the outcome is recorded: the broker's settle (an ack round trip on
   * most transports) finishes in the background, still counted against prefetch there.
   */
  #recorded(delivery: Delivery, slot: Slot, outcome: Settlement): void {
    try {
      // Marked before the settle starts: one that ends within the call (an adapter that
      // throws at once) removes the mark itself, and is then not put back.
      this.#settling.set(delivery, RESOLVED);
      const settling = this.#settle(delivery, outcome);
      if (this.#settling.has(delivery)) this.#settling.set(delivery, settling);
    } finally {
      this.#running.delete(delivery);
      this.#release(slot);
    }
  }

  /** Settles in the background; removes itself from `#settling`, which `stop()` waits on. */
  #settle(delivery: Delivery, settlement: Settlement): Promise<void> {
    if (settlement.kind !== 'write-then-ack') return this.#settleOutcome(delivery, settlement);
    let acked: Promise<void>;
    try {
      acked = (delivery.ackAfterWrite as (write: ScriptedWrite) => Promise<void>)(settlement.write);
    } catch (err) {
      acked = Promise.reject(err);
    }
    // Chained rather than an async step: one per task, at tens of thousands a second.
    return acked.then(
      () => void this.#settling.delete(delivery),
      // Neither the state nor the ack may have been made (a refused write, a lost reply, a
      // consumer closed under it): the outcome goes the usual way, its state write first.
      () =>
        this.#settleOutcome(
          delivery,
          this.#server.backend.setState(settlement.update).then(
            () => ACK,
            (err: unknown) => {
              this.#reportError(err as Error);
              return RETRY_SOON;
            },
          ),
        ),
    );
  }

  async #settleOutcome(delivery: Delivery, outcome: Outcome | Promise<Outcome>): Promise<void> {
    try {
      await delivery.settle(await outcome);
    } catch (err) {
      this.#reportError(err as Error);
    } finally {
      this.#settling.delete(delivery);
    }
  }

  /** The outcome, or a promise of it where something is awaited on the way; may throw, as a rejection would. */
  #process(delivery: Delivery, slot: Slot): Settlement | Promise<Settlement> {
    const { body } = delivery;
    const size = Buffer.byteLength(body);
    if (size > this.#opts.maxPayloadBytes) {
      return this.#noRun(slot, this.#reject(new PayloadTooLargeError(size, this.#opts.maxPayloadBytes), body));
    }
    let sig: Signature;
    try {
      sig = decodeSignature(body);
      if (!sig.Name) throw new MalformedMessageError('no task name');
    } catch (err) {
      return this.#noRun(slot, this.#reject(err as Error, body));
    }

    const task = this.#server.getTask(sig.Name);
    if (!task) return this.#noRun(slot, this.#unknownTask(sig, delivery));
    this.#unknownSeen.delete(sig.UUID);

    // Go workers run a message with a future ETA at once; we wait for it (a foreign
    // producer may have pushed it straight into the queue).
    const eta = sig.ETA ? parseRfc3339(sig.ETA) : null;
    if (eta !== null && eta - Date.now() > 50) return { kind: 'retry-later', delayMs: eta - Date.now() };

    const progress = this.#recordProgress(sig, delivery, slot);
    let args: unknown[];
    try {
      args = argsFromWire(sig.Args);
    } catch (err) {
      this.#release(slot);
      return this.#badArgs(sig, err as Error, progress);
    }
    // Hooks are awaited only where given: an `await` of nothing still costs a turn of the microtask queue.
    const { onPreTask, onPostTask } = this.#opts;
    const run: TaskRun = { task, sig, args, delivery, progress, slot };
    return onPreTask || onPostTask ? this.#runWithHooks(run) : this.#run(run);
  }

  /**
   * A delivery that never reaches a task function frees its slot at once, as a returning
   * function would: writing its FAILURE is recording an outcome, not running a task.
   */
  #noRun(slot: Slot, outcome: Promise<Outcome>): Promise<Outcome> {
    this.#release(slot);
    return outcome;
  }

  async #badArgs(sig: Signature, err: Error, progress: { written: Promise<void> }): Promise<Settlement> {
    await progress.written;
    await this.#taskFailed(sig, err);
    return ACK;
  }

  async #runWithHooks(run: TaskRun): Promise<Settlement> {
    const { onPreTask, onPostTask } = this.#opts;
    if (onPreTask) await onPreTask(run.sig);
    try {
      return await this.#run(run);
    } finally {
      if (onPostTask) await onPostTask(run.sig);
    }
  }

  /**
   * Issues the RECEIVED / STARTED writes without holding the task back for them: they
   * only inform, and waiting a round trip for each was most of a short task's latency.
   * A failed write is reported, never fatal — the outcome write that follows is what counts.
   * `ordered` says the outcome may be issued before they are confirmed: the backend
   * applies writes in the order they were issued, so a late STARTED cannot land after SUCCESS.
   */
  #recordProgress(sig: Signature, delivery: Delivery, slot: Slot): Progress {
    const backend = this.#server.backend;
    const ordered = backend.capabilities.orderedWrites === true;
    const mode = this.#opts.progressStates;
    // A backend that keeps nothing is not asked to keep these.
    if (mode === 'none' || backend.capabilities.storesStates === false) return ordered ? NOTHING_WRITTEN_ORDERED : NOTHING_WRITTEN;
    // Where the outcome can go with the ack, the backend folds the writes of a task still
    // queued in the turn into it (`scriptedWrite`): a task that ends within its turn would
    // have them made and dropped. They wait for the turn's end, and only a task still
    // running then has them written (a turn later than otherwise, before any outcome).
    if (ordered && delivery.ackAfterWrite && backend.scriptedWrite) {
      this.#deferred.push({ sig, slot });
      if (!this.#deferredScheduled) {
        this.#deferredScheduled = true;
        setImmediate(() => this.#writeDeferredProgress());
      }
      return NOTHING_WRITTEN_ORDERED;
    }
    return this.#writeProgress(sig);
  }

  /** The progress writes of the tasks of the last turn that are still running. */
  #writeDeferredProgress(): void {
    this.#deferredScheduled = false;
    const waiting = this.#deferred;
    this.#deferred = [];
    for (const { sig, slot } of waiting) if (slot.held) void this.#writeProgress(sig);
  }

  #writeProgress(sig: Signature): Progress {
    const backend = this.#server.backend;
    const ordered = backend.capabilities.orderedWrites === true;
    const mode = this.#opts.progressStates;
    const report = (err: unknown): void => this.#reportError(err as Error, sig);
    const started = (): Promise<void> => backend.setState({ taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.STARTED });
    if (mode === 'started') return { written: started().catch(report), ordered };
    const received = backend.setState({ taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.RECEIVED }).catch(report);
    // Ordered: issued together, and STARTED settles after RECEIVED is applied (each reports
    // its own failure). Otherwise one after the other.
    return { written: ordered ? started().catch(report) : received.then(started).catch(report), ordered };
  }

  /** Runs the task function; the outcome comes back as it is where the function returned a plain value. */
  #run(run: TaskRun): Settlement | Promise<Settlement> {
    const { task, sig, args, delivery } = run;
    const timeoutMs = this.#opts.taskTimeoutMs;
    const ctx = new RunContext(sig, delivery.deliveryCount);
    const lease = this.#keepLeased(delivery);
    if (timeoutMs > 0) return this.#runWithin(run, timeoutMs, ctx, lease);
    let returned: unknown;
    try {
      // Called directly: a synchronous throw is the task's failure all the same, and a plain
      // value is taken as it is, without a turn of the microtask queue.
      returned = task.handler(args, ctx);
    } catch (err) {
      this.#ended(lease, run.slot);
      return this.#outcome(run, { err }, undefined);
    }
    if (isThenable(returned)) return this.#awaitTask(run, returned, lease);
    this.#ended(lease, run.slot);
    return this.#outcome(run, undefined, returned);
  }

  async #awaitTask(run: TaskRun, returned: PromiseLike<unknown>, lease: Lease | undefined): Promise<Settlement> {
    let value: unknown;
    let failure: { err: unknown } | undefined;
    try {
      value = await returned;
    } catch (err) {
      failure = { err };
    } finally {
      this.#ended(lease, run.slot);
    }
    return this.#outcome(run, failure, value);
  }

  async #runWithin(run: TaskRun, timeoutMs: number, ctx: RunContext, lease: Lease | undefined): Promise<Settlement> {
    const timer = setTimeout(() => RunContext.abort(ctx, new TaskTimeoutError(timeoutMs)), timeoutMs);
    let value: unknown;
    let failure: { err: unknown } | undefined;
    try {
      // The deadline's listener goes on the signal before the handler's own, so a handler
      // that settles on abort still loses the race to the timeout.
      const signal = ctx.signal;
      const deadline = new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
      value = await Promise.race([deadline, Promise.resolve().then(() => run.task.handler(run.args, ctx))]);
    } catch (err) {
      failure = { err };
    } finally {
      clearTimeout(timer);
      this.#ended(lease, run.slot);
    }
    return this.#outcome(run, failure, value);
  }

  #ended(lease: Lease | undefined, slot: Slot): void {
    lease?.stop();
    this.#release(slot);
  }

  /**
   * The progress writes are applied before the outcome's: awaited here when the backend may
   * reorder writes, else by the ordering itself (the outcome's write lands after them).
   * `written` never rejects.
   */
  #outcome(run: TaskRun, failure: { err: unknown } | undefined, value: unknown): Settlement | Promise<Settlement> {
    const { task, sig, delivery, progress } = run;
    if (!progress.ordered) {
      return progress.written.then(() => (failure ? this.#onTaskError(sig, failure.err) : this.#onTaskValue(task, sig, value, delivery)));
    }
    return failure ? this.#onTaskError(sig, failure.err) : this.#onTaskValue(task, sig, value, delivery);
  }

  #onTaskValue(task: RegisteredTask, sig: Signature, value: unknown, delivery: Delivery): Settlement | Promise<Settlement> {
    let results: TaskResult[];
    try {
      results = resultsToWire(value instanceof MultipleResults ? value.values : value === undefined ? [] : [value], task.resultTypes);
    } catch (err) {
      return this.#onTaskError(sig, new UnrecoverableError(`task ${sig.Name} returned a bad result: ${(err as Error).message}`));
    }
    return this.#successWithAck(sig, results, delivery) ?? this.#taskSucceeded(sig, results).then(() => ACK);
  }

  /**
   * The SUCCESS write handed to the broker, to be applied in the step that acks the delivery
   * (`Delivery.ackAfterWrite`), where the backend and the broker share a store: one round
   * trip fewer on the way from a finished task to its next message. Only for a task with
   * nothing to do after its write (no callbacks, no chord, no `onPostTask`, which Go runs
   * after the state is stored).
   */
  #successWithAck(sig: Signature, results: TaskResult[], delivery: Delivery): Settlement | undefined {
    if (!delivery.ackAfterWrite || this.#opts.onPostTask || sig.OnSuccess?.length || (sig.GroupUUID && sig.ChordCallback)) return undefined;
    const { backend, broker } = this.#server;
    if (!backend.scriptedWrite || !broker.carriesWritesFor || backend.capabilities.storesStates === false) return undefined;
    const update: StateUpdate = { taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.SUCCESS, results, ...announce(sig) };
    const write = backend.scriptedWrite(update, this.#carried);
    return write ? { kind: 'write-then-ack', write, update } : undefined;
  }

  /** Whether the broker can apply a write meant for `store` (one function for every task). */
  readonly #carried = (store: string): boolean => this.#server.broker.carriesWritesFor?.(store) === true;

  /** Extends the delivery at half the broker's redelivery timeout while a task runs. */
  #keepLeased(delivery: Delivery): Lease | undefined {
    if (!delivery.extend) return undefined;
    const every = Math.max(50, this.#server.broker.capabilities.redeliveryTimeoutMs / 2);
    const t = setInterval(() => void delivery.extend?.().catch((err: unknown) => this.#reportError(err as Error)), every);
    t.unref();
    return { stop: () => clearInterval(t) };
  }

  async #onTaskError(sig: Signature, err: unknown): Promise<Outcome> {
    const backend = this.#server.backend;
    if (err instanceof RetryTaskLater) {
      await backend.setState({ taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.RETRY });
      await this.#republish(sig, Math.min(Math.max(0, err.delayMs), this.#opts.maxRetryLaterMs));
      return { kind: 'ack' };
    }
    if (sig.RetryCount > 0 && !(err instanceof UnrecoverableError)) {
      await backend.setState({ taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.RETRY });
      const retry = copySignature(sig);
      retry.RetryCount -= 1;
      retry.RetryTimeout = fibonacciNext(sig.RetryTimeout);
      const base = Math.min(retry.RetryTimeout * 1000, this.#opts.maxRetryDelayMs);
      // Jitter (±10%) keeps a failed batch from retrying in lockstep; Go has none.
      await this.#republish(retry, base * (0.9 + Math.random() * 0.2));
      return { kind: 'ack' };
    }
    const error = err instanceof Error ? err : new Error(errorText(err));
    await this.#taskFailed(sig, error);
    if (sig.StopTaskDeletionOnError) return { kind: 'dead-letter', reason: `task failed: ${error.message}` };
    return { kind: 'ack' };
  }

  async #republish(sig: Signature, delayMs: number): Promise<void> {
    const next = copySignature(sig);
    next.ETA = formatRfc3339Nano(Date.now() + delayMs);
    await this.#server.sendTask(next);
  }

  #taskSucceeded(sig: Signature, results: TaskResult[]): Promise<void> {
    const backend = this.#server.backend;
    const stored =
      backend.capabilities.storesStates === false
        ? RESOLVED
        : backend.setState({ taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.SUCCESS, results, ...announce(sig) });
    // Most tasks have nothing to do after the write: no async step of their own.
    if (!sig.OnSuccess?.length && !(sig.GroupUUID && sig.ChordCallback)) return stored;
    return stored.then(() => this.#afterSuccess(sig, results));
  }

  async #afterSuccess(sig: Signature, results: TaskResult[]): Promise<void> {
    for (const cb of sig.OnSuccess ?? []) {
      const next = copySignature(cb);
      if (!sig.Immutable) next.Args = [...(next.Args ?? []), ...results.map(toArg)];
      await this.#server.sendTask(next);
    }
    if (sig.GroupUUID && sig.ChordCallback) await this.#maybeFireChord(sig);
  }

  async #maybeFireChord(sig: Signature): Promise<void> {
    const backend = this.#server.backend;
    const callback = sig.ChordCallback as Signature;
    const trigger = await backend.triggerChord(sig.GroupUUID, { when: 'complete', count: sig.GroupTaskCount });
    if (!trigger.fired) return;
    const failed = trigger.states.find((s) => s?.State === TaskStates.FAILURE);
    if (failed) return this.#failChord(callback, failed.Error);
    const next = copySignature(callback);
    if (!callback.Immutable) {
      next.Args = [...(next.Args ?? []), ...trigger.states.flatMap((s) => (s?.Results ?? []).map(toArg))];
    }
    try {
      await this.#server.sendTask(next);
    } catch (err) {
      // Never Go's "flag set, callback lost" (#413): undo, so a redelivery can fire it.
      await backend.resetChordTrigger(sig.GroupUUID);
      throw err;
    }
  }

  /** A member failed for good: the chord's result records it, so nobody waits forever. */
  async #failChord(callback: Signature, error: string): Promise<void> {
    const backend = this.#server.backend;
    await backend.setState({ taskUUID: callback.UUID, taskName: callback.Name, state: TaskStates.FAILURE, error, ...announce(callback) });
    for (const onError of callback.OnError ?? []) await this.#sendOnError(onError, error);
  }

  async #taskFailed(sig: Signature, err: Error): Promise<void> {
    const backend = this.#server.backend;
    await backend.setState({ taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.FAILURE, error: err.message, ...announce(sig) });
    this.#reportError(err, sig);
    for (const cb of sig.OnError ?? []) await this.#sendOnError(cb, err.message);
    if (sig.GroupUUID && sig.ChordCallback) {
      const trigger = await backend.triggerChord(sig.GroupUUID, { when: 'now' });
      if (trigger.fired) await this.#failChord(sig.ChordCallback, err.message);
    }
  }

  async #sendOnError(cb: Signature, error: string): Promise<void> {
    const next = copySignature(cb);
    next.Args = [{ Name: '', Type: 'string', Value: error }, ...(next.Args ?? [])];
    await this.#server.sendTask(next);
  }

  /** Malformed or oversized: FAILURE where an id can be found, then the dead-letter path. */
  async #reject(err: Error, body: string): Promise<Outcome> {
    this.#reportError(err);
    const uuid = sniffTaskUUID(body);
    if (uuid) {
      const name = /"name"\s*:\s*"([^"\\]{1,200})"/i.exec(body)?.[1] ?? '';
      await this.#server.backend.setState({ taskUUID: uuid, taskName: name, state: TaskStates.FAILURE, error: err.message });
    }
    return { kind: 'dead-letter', reason: err.message };
  }

  /**
   * Another worker may know the task (mixed fleets), so it goes back with growing delays —
   * never Go's hot loop (#454) — and to the dead-letter path after `unknownTaskRequeues`.
   */
  async #unknownTask(sig: Signature, delivery: Delivery): Promise<Outcome> {
    const err = new UnknownTaskError(sig.Name);
    if (sig.IgnoreWhenTaskNotRegistered) return { kind: 'ack' };
    const key = sig.UUID || delivery.body;
    const seen = Math.max(this.#unknownSeen.get(key) ?? 0, delivery.deliveryCount - 1) + 1;
    if (this.#unknownSeen.size > 10_000) this.#unknownSeen.clear();
    this.#unknownSeen.set(key, seen);
    if (seen > this.#opts.unknownTaskRequeues) {
      this.#unknownSeen.delete(key);
      this.#reportError(err, sig);
      if (sig.UUID) {
        await this.#server.backend.setState({ taskUUID: sig.UUID, taskName: sig.Name, state: TaskStates.FAILURE, error: err.message, ...announce(sig) });
      }
      return { kind: 'dead-letter', reason: err.message };
    }
    return { kind: 'retry-later', delayMs: Math.min(30_000, 100 * 2 ** (seen - 1)) };
  }

  /** `err` is typed Error, but a hook or adapter may throw anything, `undefined` included. */
  #reportError(err: Error, sig?: Signature): void {
    const where = sig ? `${sig.Name} ${sig.UUID}: ` : '';
    const error = err instanceof Error ? err : new Error(errorText(err));
    if (!this.#opts.onError) {
      console.error(`[machinery-ts] ${where}${error.message}`);
      return;
    }
    try {
      this.#opts.onError(error, sig);
    } catch (thrown) {
      // A throwing handler must not cost a worker slot or settle: both run after a report.
      console.error(`[machinery-ts] onError threw (${errorText(thrown)}) reporting ${where}${error.message}`);
    }
  }
}

/** A task's place among the `concurrency` running: freed once, when its function is done (or none will run). */
type Slot = { held: boolean; readonly since: number };
/** The RECEIVED / STARTED writes issued for a task; `ordered`: the backend applies writes in issue order. */
type Progress = { readonly written: Promise<void>; readonly ordered: boolean };
/** The timer that keeps a long task's delivery leased. */
type Lease = { stop(): void };
/** A task about to run, and what its outcome is recorded against. */
interface TaskRun {
  readonly task: RegisteredTask;
  readonly sig: Signature;
  readonly args: unknown[];
  readonly delivery: Delivery;
  readonly progress: Progress;
  readonly slot: Slot;
}

const RESOLVED: Promise<void> = Promise.resolve();

/**
 * An unset `readAhead` is `concurrency` and becomes `DEEP_READ_AHEAD × concurrency` while the
 * mean time a task holds its slot is under `SHORT_TASK_MS` (until it reaches `LONG_TASK_MS`).
 * Such a task ends long before the broker round trip that refills its slot (its state write,
 * ack and the next claim: 0.3 to 1 ms on Redis), so with `concurrency` held its slots sat idle
 * for that trip; a held message of such a task still waits only milliseconds. Measured on
 * Redis (no-op tasks, worker in its own process, 2 cores): concurrency 1 ran 8,000–9,300
 * tasks/s holding 1 and 14,100–14,300 holding 3; concurrency 10, 23,800–24,200 holding 10 and
 * 28,400–29,400 holding 30; concurrency 100 the same either way. Long tasks keep `concurrency`:
 * a message held behind them waits for a whole task while another worker may be idle.
 */
const DEEP_READ_AHEAD = 3;
const SHORT_TASK_MS = 1;
const LONG_TASK_MS = 2;
/** Weight of the newest task in the mean: one slow task among short ones moves it by 1/16 of the difference. */
const MEAN_WEIGHT = 1 / 16;

/** The outcome of every task that needs nothing but its ack: one object, not one per task. */
const ACK: Outcome = Object.freeze({ kind: 'ack' });
/** No progress write to wait for (made once: one per task otherwise). */
const NOTHING_WRITTEN = Object.freeze({ written: RESOLVED, ordered: false });
const NOTHING_WRITTEN_ORDERED = Object.freeze({ written: RESOLVED, ordered: true });

/** After an outcome that could not be recorded (a state write failed): run the task again. */
const RETRY_SOON: Outcome = Object.freeze({ kind: 'retry-later', delayMs: 1000 });

/**
 * An `Outcome`, or a SUCCESS write the broker applies before it acks (`Delivery.ackAfterWrite`),
 * with the update it was made from, for the usual way should that fail.
 */
type Settlement = Outcome | { readonly kind: 'write-then-ack'; readonly write: ScriptedWrite; readonly update: StateUpdate };

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function';
}

/** The sender's announce target, for a completed state's write. */
function announce(sig: Signature): { announceTo?: string } {
  const target = announcedOn(sig);
  return target ? { announceTo: target } : {};
}

function toArg(r: TaskResult): Arg {
  return { Name: '', Type: r.Type, Value: r.Value };
}
