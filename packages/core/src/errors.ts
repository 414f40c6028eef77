/**
 * Errors of machinery-ts. Each carries a stable `code` so callers branch on it,
 * not on message text; messages that Go also produces keep Go's wording.
 */

export type ErrorCode =
  | 'MALFORMED_MESSAGE'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNKNOWN_TASK'
  | 'REFLECT_ARGS'
  | 'TASK_TIMEOUT'
  | 'RESULT_TIMEOUT'
  | 'TASK_FAILED'
  | 'CONFIG'
  | 'CLOSED'
  | 'STATE_MISSING'
  | 'ADAPTER_MISSING';

export class MachineryError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MachineryError';
    this.code = code;
  }
}

/** A message that is not a task at all: bad JSON, a forbidden key, a field of the wrong type. */
export class MalformedMessageError extends MachineryError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super('MALFORMED_MESSAGE', `Malformed task message: ${detail}`, options);
    this.name = 'MalformedMessageError';
  }
}

export class PayloadTooLargeError extends MachineryError {
  constructor(readonly size: number, readonly limit: number) {
    super('PAYLOAD_TOO_LARGE', `Task message of ${size} bytes exceeds the limit of ${limit} bytes`);
    this.name = 'PayloadTooLargeError';
  }
}

export class UnknownTaskError extends MachineryError {
  constructor(readonly taskName: string) {
    super('UNKNOWN_TASK', `task ${taskName} is not registered`);
    this.name = 'UnknownTaskError';
  }
}

/** Go's `Reflect task args error: …`: arguments that do not convert to their declared types. No retry. */
export class ReflectArgsError extends MachineryError {
  constructor(detail: string) {
    super('REFLECT_ARGS', `Reflect task args error: ${detail}`);
    this.name = 'ReflectArgsError';
  }
}

export class TaskTimeoutError extends MachineryError {
  constructor(readonly timeoutMs: number) {
    super('TASK_TIMEOUT', `Task timed out after ${timeoutMs} ms`);
    this.name = 'TaskTimeoutError';
  }
}

/** `AsyncResult.get` gave up waiting. Go's text is `Timeout reached`. */
export class ResultTimeoutError extends MachineryError {
  constructor(readonly taskUUID: string, readonly timeoutMs: number) {
    super('RESULT_TIMEOUT', `Timeout reached: no final state for ${taskUUID} within ${timeoutMs} ms`);
    this.name = 'ResultTimeoutError';
  }
}

/** A task ended in FAILURE; `message` is the error text the worker stored. */
export class TaskFailedError extends MachineryError {
  constructor(readonly taskUUID: string, readonly taskError: string) {
    super('TASK_FAILED', taskError);
    this.name = 'TaskFailedError';
  }
}

export class ConfigError extends MachineryError {
  constructor(message: string) {
    super('CONFIG', message);
    this.name = 'ConfigError';
  }
}

export class ClosedError extends MachineryError {
  constructor(what: string) {
    super('CLOSED', `${what} is closed`);
    this.name = 'ClosedError';
  }
}

/**
 * Thrown by a task to be run again after `delayMs`, like Go's `ErrRetryTaskLater`:
 * `RetryCount` is not decremented. The worker's `maxRetryLaterMs` caps the delay.
 */
export class RetryTaskLater extends Error {
  constructor(readonly delayMs: number, message = 'retry requested') {
    super(`Task error: ${message} Will retry in: ${delayMs}ms`);
    this.name = 'RetryTaskLater';
  }
}

/** Thrown by a task to fail at once, whatever `RetryCount` says. */
export class UnrecoverableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnrecoverableError';
  }
}

/** The text Go stores in `Error` for a thrown value. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  return 'Invoking task caused a panic';
}
