import type { WaitOptions } from './contracts/backend.js';
import { type TaskState, isCompleted } from './message/signature.js';

export interface AnnouncedWait extends WaitOptions {
  /** Reads the stored state. */
  readonly read: () => Promise<TaskState | null>;
  /**
   * Starts listening for announcements of writes to the task. `wake` gets the state when the
   * announcement carries it, or nothing (then the state is read). `ready` resolves once
   * listening, so no write after it goes unnoticed; `stop` ends the listening.
   */
  readonly listen: (wake: (announced?: TaskState | null) => void) => { ready: Promise<unknown>; stop: () => void };
  /** Re-read interval, for writers that announce nothing (Go's). */
  readonly pollMs: number;
  /**
   * Delay of the first read (default: at once, as soon as listening). A store that is sure
   * to announce the completion, and keeps what was announced before the wait began, needs
   * the read only as a fallback: then it costs nothing when the announcement comes first.
   */
  readonly firstReadAfterMs?: number;
  /** Waits to end (with the last state read) when the backend closes; the wait adds and removes itself. */
  readonly closing: Set<() => void>;
  /** Whether the backend is closed: a read failing then ends the wait instead of rejecting. */
  readonly isClosed: () => boolean;
}

/**
 * `Backend.waitForState` for stores that announce their writes (Redis Pub/Sub, an AMQP
 * topic): listen first, then read, so a write in between is not missed; one read at a
 * time, an announcement during a read scheduling one more; a slow poll for writers that
 * announce nothing. Resolves with the completed state, or the last one read at the
 * deadline, on abort and on close; rejects when a read fails.
 *
 * One timer serves the deadline, the delayed first read and the poll: a sender may wait on
 * every task it sends, and each timer is an insert into Node's timer lists and a removal
 * when the wait ends (three per wait before; thousands of waits held as many timers).
 */
export function waitForAnnouncedState(wait: AnnouncedWait): Promise<TaskState | null> {
  let last: TaskState | null = null;
  return new Promise<TaskState | null>((resolve, reject) => {
    let done = false;
    let reading = false;
    let again = false;
    let listening = false;
    const start = performance.now();
    const deadline = start + Math.max(0, wait.timeoutMs);
    const delay = wait.firstReadAfterMs ?? 0;
    let timer: NodeJS.Timeout | undefined;
    let stopListening = (): void => {};
    const end = (): void => finish(last);
    const finish = (value: TaskState | null, error?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      wait.signal?.removeEventListener('abort', end);
      wait.closing.delete(end);
      stopListening();
      if (error === undefined) resolve(value);
      else reject(error);
    };
    const check = (): void => {
      if (done) return;
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      wait.read().then(
        (state) => {
          reading = false;
          last = state;
          if (isCompleted(state)) finish(state);
          else if (again) {
            again = false;
            check();
          }
        },
        (err: unknown) => {
          reading = false;
          if (wait.isClosed()) finish(last);
          else finish(null, err);
        },
      );
    };
    const wake = (announced?: TaskState | null): void => {
      if (announced && isCompleted(announced)) finish(announced);
      else check();
    };
    // Fires at the first read's delay (or a poll period), then every poll period, and at the
    // deadline at the latest; no read before listening has begun.
    const arm = (ms: number): void => {
      timer = setTimeout(tick, Math.min(ms, Math.max(0, deadline - performance.now())));
    };
    const tick = (): void => {
      if (done) return;
      if (performance.now() >= deadline) {
        end();
        return;
      }
      if (listening) check();
      arm(wait.pollMs);
    };
    arm(delay > 0 ? delay : wait.pollMs);
    wait.signal?.addEventListener('abort', end, { once: true });
    wait.closing.add(end);
    const listen = wait.listen(wake);
    // Ended already (a store that wakes from inside `listen`): nothing left to stop later.
    if (done) listen.stop();
    else stopListening = listen.stop;
    // A failed listen leaves the poll: the read that follows says whether the store is there.
    const begin = (): void => {
      listening = true;
      if (delay === 0 || performance.now() - start >= delay) check();
    };
    listen.ready.then(begin, begin);
  });
}
