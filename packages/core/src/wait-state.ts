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
 */
export function waitForAnnouncedState(wait: AnnouncedWait): Promise<TaskState | null> {
  let last: TaskState | null = null;
  return new Promise<TaskState | null>((resolve, reject) => {
    let done = false;
    let reading = false;
    let again = false;
    const end = (): void => finish(last);
    const finish = (value: TaskState | null, error?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(firstRead);
      clearInterval(poll);
      wait.signal?.removeEventListener('abort', end);
      wait.closing.delete(end);
      listening.stop();
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
    const timer = setTimeout(end, Math.max(0, wait.timeoutMs));
    const poll = setInterval(check, wait.pollMs);
    let firstRead: NodeJS.Timeout | undefined;
    wait.signal?.addEventListener('abort', end, { once: true });
    wait.closing.add(end);
    const listening = wait.listen(wake);
    const delay = wait.firstReadAfterMs ?? 0;
    // A failed listen leaves the poll: the read that follows says whether the store is there.
    listening.ready.then(
      () => {
        if (delay > 0 && !done) firstRead = setTimeout(check, delay);
        else check();
      },
      check,
    );
  });
}
