import { MalformedMessageError } from '../errors.js';
import { parseExactJson, stringifyExactJson } from './json.js';
import {
  type Arg,
  type GroupMeta,
  type Signature,
  type TaskResult,
  type TaskState,
  type TaskStateName,
  type WireValue,
  GO_ZERO_TIME,
  TaskStates,
  newSignature,
} from './signature.js';
import { parseRfc3339 } from './time.js';

/**
 * Encoding and decoding of the three wire documents. Encoding writes Go's field
 * order with every key present. Decoding is as lenient as Go's `encoding/json`
 * (keys match case-insensitively, unknown keys are ignored, missing keys are zero)
 * and as strict: a value that does not fit its field makes the whole message malformed.
 */

export function encodeSignature(sig: Signature): string {
  return stringifyExactJson(orderedSignature(sig));
}

function orderedSignature(sig: Signature): Record<string, unknown> {
  return {
    UUID: sig.UUID,
    Name: sig.Name,
    RoutingKey: sig.RoutingKey,
    ETA: sig.ETA,
    GroupUUID: sig.GroupUUID,
    GroupTaskCount: sig.GroupTaskCount,
    Args: sig.Args ? sig.Args.map((a) => ({ Name: a.Name, Type: a.Type, Value: a.Value })) : null,
    Headers: sig.Headers,
    Priority: sig.Priority,
    Immutable: sig.Immutable,
    RetryCount: sig.RetryCount,
    RetryTimeout: sig.RetryTimeout,
    OnSuccess: sig.OnSuccess ? sig.OnSuccess.map(orderedSignature) : null,
    OnError: sig.OnError ? sig.OnError.map(orderedSignature) : null,
    ChordCallback: sig.ChordCallback ? orderedSignature(sig.ChordCallback) : null,
    BrokerMessageGroupId: sig.BrokerMessageGroupId,
    SQSReceiptHandle: sig.SQSReceiptHandle,
    StopTaskDeletionOnError: sig.StopTaskDeletionOnError,
    IgnoreWhenTaskNotRegistered: sig.IgnoreWhenTaskNotRegistered,
  };
}

export function decodeSignature(text: string): Signature {
  return signatureFrom(parseExactJson(text), 'message');
}

/** Best effort: the UUID of a message that failed to decode, so its FAILURE can be recorded. */
export function sniffTaskUUID(text: string): string | undefined {
  const m = /"uuid"\s*:\s*"([^"\\]{1,200})"/i.exec(text);
  return m?.[1];
}

export function encodeTaskState(state: TaskState): string {
  return stringifyExactJson({
    TaskUUID: state.TaskUUID,
    TaskName: state.TaskName,
    State: state.State,
    Results: state.Results ? state.Results.map((r) => ({ Type: r.Type, Value: r.Value })) : null,
    Error: state.Error,
    CreatedAt: state.CreatedAt,
    TTL: state.TTL,
  });
}

export function decodeTaskState(text: string): TaskState {
  const obj = asObject(parseExactJson(text), 'task state');
  const f = fieldReader(obj, 'task state');
  const state = f.string('State');
  if (state !== '' && !(state in TaskStates)) throw new MalformedMessageError(`unknown task state "${state}"`);
  return {
    TaskUUID: f.string('TaskUUID'),
    TaskName: f.string('TaskName'),
    State: (state || TaskStates.PENDING) as TaskStateName,
    Results: f.nullableArray('Results', (v, i) => typedValue(v, `task state.Results[${i}]`)),
    Error: f.string('Error'),
    CreatedAt: f.time('CreatedAt') ?? GO_ZERO_TIME,
    TTL: f.int('TTL'),
  };
}

export function encodeGroupMeta(meta: GroupMeta): string {
  return stringifyExactJson({
    GroupUUID: meta.GroupUUID,
    TaskUUIDs: meta.TaskUUIDs,
    ChordTriggered: meta.ChordTriggered,
    Lock: meta.Lock,
    CreatedAt: meta.CreatedAt,
    TTL: meta.TTL,
  });
}

export function decodeGroupMeta(text: string): GroupMeta {
  const obj = asObject(parseExactJson(text), 'group meta');
  const f = fieldReader(obj, 'group meta');
  return {
    GroupUUID: f.string('GroupUUID'),
    TaskUUIDs: f.nullableArray('TaskUUIDs', (v, i) => {
      if (typeof v !== 'string') throw new MalformedMessageError(`group meta.TaskUUIDs[${i}] is not a string`);
      return v;
    }) ?? [],
    ChordTriggered: f.bool('ChordTriggered'),
    Lock: f.bool('Lock'),
    CreatedAt: f.time('CreatedAt') ?? GO_ZERO_TIME,
    TTL: f.int('TTL'),
  };
}

function signatureFrom(value: unknown, where: string): Signature {
  const obj = asObject(value, where);
  const f = fieldReader(obj, where);
  const priority = f.int('Priority');
  if (priority < 0 || priority > 255) throw new MalformedMessageError(`${where}.Priority ${priority} does not fit uint8`);
  const eta = f.raw('ETA');
  if (eta !== undefined && eta !== null && (typeof eta !== 'string' || parseRfc3339(eta) === null)) {
    throw new MalformedMessageError(`${where}.ETA must be an RFC 3339 string or null, found ${JSON.stringify(String(eta))}`);
  }
  const headers = f.raw('Headers');
  if (headers !== undefined && headers !== null && (typeof headers !== 'object' || Array.isArray(headers))) {
    throw new MalformedMessageError(`${where}.Headers must be an object or null`);
  }
  const callback = f.raw('ChordCallback');
  const sig = newSignature({
    UUID: f.string('UUID'),
    Name: f.string('Name'),
    RoutingKey: f.string('RoutingKey'),
    ETA: (eta as string | null | undefined) ?? null,
    GroupUUID: f.string('GroupUUID'),
    GroupTaskCount: f.int('GroupTaskCount'),
    Args: f.nullableArray('Args', (v, i) => argFrom(v, `${where}.Args[${i}]`)),
    Headers: (headers as Record<string, WireValue> | null | undefined) ?? null,
    Priority: priority,
    Immutable: f.bool('Immutable'),
    RetryCount: f.int('RetryCount'),
    RetryTimeout: f.int('RetryTimeout'),
    OnSuccess: f.nullableArray('OnSuccess', (v, i) => signatureFrom(v, `${where}.OnSuccess[${i}]`)),
    OnError: f.nullableArray('OnError', (v, i) => signatureFrom(v, `${where}.OnError[${i}]`)),
    ChordCallback: callback === undefined || callback === null ? null : signatureFrom(callback, `${where}.ChordCallback`),
    BrokerMessageGroupId: f.string('BrokerMessageGroupId'),
    SQSReceiptHandle: f.string('SQSReceiptHandle'),
    StopTaskDeletionOnError: f.bool('StopTaskDeletionOnError'),
    IgnoreWhenTaskNotRegistered: f.bool('IgnoreWhenTaskNotRegistered'),
  });
  // newSignature defaults Headers to {} as a Go producer sends; a decoded null stays null.
  sig.Headers = (headers as Record<string, WireValue> | null | undefined) ?? null;
  return sig;
}

function argFrom(value: unknown, where: string): Arg {
  const obj = asObject(value, where);
  const f = fieldReader(obj, where);
  return { Name: f.string('Name'), Type: f.string('Type'), Value: (f.raw('Value') ?? null) as WireValue };
}

function typedValue(value: unknown, where: string): TaskResult {
  const obj = asObject(value, where);
  const f = fieldReader(obj, where);
  return { Type: f.string('Type'), Value: (f.raw('Value') ?? null) as WireValue };
}

function asObject(value: unknown, where: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new MalformedMessageError(`${where} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Field access the way Go's decoder matches keys: an exact match first, then a
 * case-insensitive one. `null` leaves a non-pointer field at its zero value, as in Go.
 * A class rather than closures: one is made per decoded document, on every task.
 */
class FieldReader {
  #folded: Map<string, string> | undefined;

  constructor(
    private readonly obj: Record<string, unknown>,
    private readonly where: string,
  ) {}

  raw(name: string): unknown {
    if (Object.hasOwn(this.obj, name)) return this.obj[name];
    this.#folded ??= new Map(Object.keys(this.obj).map((k) => [k.toLowerCase(), k]));
    const key = this.#folded.get(name.toLowerCase());
    return key === undefined ? undefined : this.obj[key];
  }

  #bad(name: string, expected: string, found: unknown): never {
    throw new MalformedMessageError(`${this.where}.${name} must be ${expected}, found ${describe(found)}`);
  }

  string(name: string): string {
    const v = this.raw(name);
    if (v === undefined || v === null) return '';
    return typeof v === 'string' ? v : this.#bad(name, 'a string', v);
  }

  bool(name: string): boolean {
    const v = this.raw(name);
    if (v === undefined || v === null) return false;
    return typeof v === 'boolean' ? v : this.#bad(name, 'a boolean', v);
  }

  int(name: string): number {
    const v = this.raw(name);
    if (v === undefined || v === null) return 0;
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    return this.#bad(name, 'an integer', v);
  }

  time(name: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string' && parseRfc3339(v) !== null) return v;
    return this.#bad(name, 'an RFC 3339 time', v);
  }

  nullableArray<T>(name: string, item: (v: unknown, i: number) => T): T[] | null {
    const v = this.raw(name);
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v)) return this.#bad(name, 'an array or null', v);
    return v.map(item);
  }
}

function fieldReader(obj: Record<string, unknown>, where: string): FieldReader {
  return new FieldReader(obj, where);
}

function describe(value: unknown): string {
  if (typeof value === 'bigint') return `${value}`;
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
