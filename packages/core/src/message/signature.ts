import { v4 as uuidv4 } from 'uuid';

/**
 * A wire value inside `Arg.Value` / `TaskResult.Value`: what JSON can hold, with
 * integers beyond 2^53 kept as `bigint` so they never pass through a double.
 */
export type WireValue = null | boolean | number | bigint | string | WireValue[] | { [key: string]: WireValue };

/** One positional argument. `Name` is ignored by Go (arguments are positional). */
export interface Arg {
  Name: string;
  /** A Go type string such as `int64` or `[]string` (see `reflect.ts`). */
  Type: string;
  Value: WireValue;
}

/** One return value of a task, as stored in the backend. */
export interface TaskResult {
  Type: string;
  Value: WireValue;
}

/**
 * The task message, field for field Go Machinery v2's `tasks.Signature`.
 * Key order here is the order Go writes them in; `encodeSignature` relies on it.
 */
export interface Signature {
  UUID: string;
  Name: string;
  RoutingKey: string;
  /** RFC 3339 with up to nanosecond precision, kept as text so no precision is lost. */
  ETA: string | null;
  GroupUUID: string;
  GroupTaskCount: number;
  Args: Arg[] | null;
  Headers: Record<string, WireValue> | null;
  Priority: number;
  Immutable: boolean;
  RetryCount: number;
  RetryTimeout: number;
  OnSuccess: Signature[] | null;
  OnError: Signature[] | null;
  ChordCallback: Signature | null;
  BrokerMessageGroupId: string;
  SQSReceiptHandle: string;
  StopTaskDeletionOnError: boolean;
  IgnoreWhenTaskNotRegistered: boolean;
}

export const SIGNATURE_FIELDS = [
  'UUID', 'Name', 'RoutingKey', 'ETA', 'GroupUUID', 'GroupTaskCount', 'Args', 'Headers', 'Priority',
  'Immutable', 'RetryCount', 'RetryTimeout', 'OnSuccess', 'OnError', 'ChordCallback',
  'BrokerMessageGroupId', 'SQSReceiptHandle', 'StopTaskDeletionOnError', 'IgnoreWhenTaskNotRegistered',
] as const satisfies readonly (keyof Signature)[];

export type SignatureInit = Partial<Signature> & { Name: string };

/** A signature with Go's zero values for every field not given. */
export function newSignature(init: SignatureInit): Signature {
  return {
    UUID: init.UUID ?? '',
    Name: init.Name,
    RoutingKey: init.RoutingKey ?? '',
    ETA: init.ETA ?? null,
    GroupUUID: init.GroupUUID ?? '',
    GroupTaskCount: init.GroupTaskCount ?? 0,
    Args: init.Args ?? null,
    Headers: init.Headers ?? {},
    Priority: init.Priority ?? 0,
    Immutable: init.Immutable ?? false,
    RetryCount: init.RetryCount ?? 0,
    RetryTimeout: init.RetryTimeout ?? 0,
    OnSuccess: init.OnSuccess ?? null,
    OnError: init.OnError ?? null,
    ChordCallback: init.ChordCallback ?? null,
    BrokerMessageGroupId: init.BrokerMessageGroupId ?? '',
    SQSReceiptHandle: init.SQSReceiptHandle ?? '',
    StopTaskDeletionOnError: init.StopTaskDeletionOnError ?? false,
    IgnoreWhenTaskNotRegistered: init.IgnoreWhenTaskNotRegistered ?? false,
  };
}

/** A deep copy: retries, callbacks and periodic ticks must never share nested arrays. */
export function copySignature(sig: Signature): Signature {
  return {
    ...sig,
    Args: sig.Args ? sig.Args.map((a) => ({ ...a })) : null,
    Headers: sig.Headers ? { ...sig.Headers } : null,
    OnSuccess: sig.OnSuccess ? sig.OnSuccess.map(copySignature) : null,
    OnError: sig.OnError ? sig.OnError.map(copySignature) : null,
    ChordCallback: sig.ChordCallback ? copySignature(sig.ChordCallback) : null,
  };
}

export const newTaskUUID = (): string => `task_${uuidv4()}`;
export const newGroupUUID = (): string => `group_${uuidv4()}`;
export const newChordUUID = (): string => `chord_${uuidv4()}`;

/** The six task states of Go Machinery (`v2/tasks/state.go`). */
export const TaskStates = {
  PENDING: 'PENDING',
  RECEIVED: 'RECEIVED',
  STARTED: 'STARTED',
  RETRY: 'RETRY',
  SUCCESS: 'SUCCESS',
  FAILURE: 'FAILURE',
} as const;
export type TaskStateName = (typeof TaskStates)[keyof typeof TaskStates];

/** The state document of §2.2, key order as Go writes it. */
export interface TaskState {
  TaskUUID: string;
  TaskName: string;
  State: TaskStateName;
  Results: TaskResult[] | null;
  Error: string;
  /** RFC 3339 text, as written by the PENDING state; `0001-01-01T00:00:00Z` when unknown. */
  CreatedAt: string;
  TTL: number;
}

export const GO_ZERO_TIME = '0001-01-01T00:00:00Z';

export function isCompleted(state: TaskState | null | undefined): boolean {
  return state?.State === TaskStates.SUCCESS || state?.State === TaskStates.FAILURE;
}

/** The group document of §2.2. */
export interface GroupMeta {
  GroupUUID: string;
  TaskUUIDs: string[];
  ChordTriggered: boolean;
  Lock: boolean;
  CreatedAt: string;
  TTL: number;
}
