import type { Backend } from './contracts/backend.js';
import { ConfigError, ResultTimeoutError, TaskFailedError } from './errors.js';
import { resultsFromWire } from './message/reflect.js';
import { type TaskState, TaskStates, isCompleted } from './message/signature.js';

export interface GetOptions {
  /** Give up after this long with a `ResultTimeoutError`. @default 60000 */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

const POLL_START_MS = 5;
const POLL_MAX_MS = 250;

/**
 * The handle on a sent task. `get` waits for SUCCESS or FAILURE — through the backend's
 * `waitForState` where it has one, else by polling with back-off — and always ends:
 * a state that never appears ends in `ResultTimeoutError`, never a hang.
 */
export class AsyncResult<R extends unknown[] = unknown[]> {
  #last: TaskState | null = null;

  /** `announcedOn`: the announce target the task was sent with (Server sets it), so the wait can use it. */
  constructor(
    readonly taskUUID: string,
    readonly backend: Backend,
    readonly announcedOn?: string,
  ) {}

  /** The current state, or `null` if the backend has none (yet, or any more). */
  async state(): Promise<TaskState | null> {
    if (isCompleted(this.#last)) return this.#last;
    this.#last = (await this.backend.getState(this.taskUUID)) ?? this.#last;
    return this.#last;
  }

  /** Resolves with the task's results, converted by their Go types; rejects with its error. */
  async get(options: GetOptions = {}): Promise<R> {
    const state = await waitCompleted(this.backend, this.taskUUID, this.announcedOn ? { ...options, announcedOn: this.announcedOn } : options);
    this.#last = state;
    return AsyncResult.unwrap(state) as R;
  }

  static unwrap(state: TaskState): unknown[] {
    if (state.State === TaskStates.FAILURE) throw new TaskFailedError(state.TaskUUID, state.Error);
    return resultsFromWire(state.Results);
  }
}

export async function waitCompleted(
  backend: Backend,
  taskUUID: string,
  options: GetOptions & { readonly announcedOn?: string } = {},
): Promise<TaskState> {
  if (backend.capabilities.storesStates === false) {
    throw new ConfigError(`cannot wait for task ${taskUUID}: the result backend stores no states (NullBackend); configure one that does`);
  }
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  let pollMs = POLL_START_MS;
  for (;;) {
    options.signal?.throwIfAborted();
    const left = deadline - Date.now();
    let state: TaskState | null;
    if (backend.waitForState && left > 0) {
      state = await backend.waitForState(taskUUID, {
        timeoutMs: left,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.announcedOn ? { announcedOn: options.announcedOn } : {}),
      });
    } else {
      state = await backend.getState(taskUUID);
    }
    if (isCompleted(state)) return state as TaskState;
    if (Date.now() >= deadline) throw new ResultTimeoutError(taskUUID, timeoutMs);
    if (!backend.waitForState) {
      await new Promise((r) => setTimeout(r, Math.min(pollMs, Math.max(0, deadline - Date.now()))));
      pollMs = Math.min(POLL_MAX_MS, pollMs * 2);
    }
  }
}
