import { MalformedMessageError } from '../errors.js';
import { flatten, jsonScalar, jsonString, parseExactJson, stringifyExactJson } from './json.js';
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
} from './signature.js';
import { parseRfc3339 } from './time.js';

/**
 * Encoding and decoding of the three wire documents. Encoding writes Go's field
 * order with every key present. Decoding is as lenient as Go's `encoding/json`
 * (keys match case-insensitively, unknown keys are ignored, missing keys are zero)
 * and as strict: a value that does not fit its field makes the whole message malformed.
 */

export function encodeSignature(sig: Signature): string {
  return plainSignatureJson(sig) ?? stringifyExactJson(orderedSignature(sig));
}

/**
 * What `encodeSignature` writes, built from a few pieces for the shape nearly every message
 * has: each field of its declared type, no callbacks, arguments of scalar values, plain
 * headers. `undefined` for any other shape, which takes the general path.
 *
 * The text between the fields that differ per message (UUID, ETA, arguments, headers) depends
 * only on fields a sender repeats from one message to the next (name, queue, group, retry
 * settings); each such run is kept for the values it was last made for (see `Segment`). A
 * bulk send then joins about ten pieces per message instead of forty, and what it allocates
 * per message (which a collector must copy while the batch is alive) falls with it.
 */
function plainSignatureJson(sig: Signature): string | undefined {
  if (sig.OnSuccess || sig.OnError || sig.ChordCallback) return undefined;
  const { UUID, Name, RoutingKey, ETA, GroupUUID, BrokerMessageGroupId, SQSReceiptHandle, Immutable, StopTaskDeletionOnError, IgnoreWhenTaskNotRegistered } = sig;
  if (
    typeof UUID !== 'string' ||
    typeof Name !== 'string' ||
    typeof RoutingKey !== 'string' ||
    (ETA !== null && typeof ETA !== 'string') ||
    typeof GroupUUID !== 'string' ||
    typeof BrokerMessageGroupId !== 'string' ||
    typeof SQSReceiptHandle !== 'string' ||
    typeof Immutable !== 'boolean' ||
    typeof StopTaskDeletionOnError !== 'boolean' ||
    typeof IgnoreWhenTaskNotRegistered !== 'boolean'
  ) {
    return undefined;
  }
  const { GroupTaskCount, Priority, RetryCount, RetryTimeout } = sig;
  if (!isFiniteNumber(GroupTaskCount) || !isFiniteNumber(Priority) || !isFiniteNumber(RetryCount) || !isFiniteNumber(RetryTimeout)) return undefined;
  const args = sig.Args ? plainArgsJson(sig.Args) : 'null';
  const headers = plainHeadersJson(sig.Headers);
  if (args === undefined || headers === undefined) return undefined;
  return (
    '{"UUID":' +
    jsonString(UUID) +
    NAME_SEGMENT.text(Name, RoutingKey, undefined, undefined) +
    (ETA === null ? 'null' : jsonString(ETA)) +
    GROUP_SEGMENT.text(GroupUUID, GroupTaskCount, undefined, undefined) +
    args +
    ',"Headers":' +
    headers +
    RETRY_SEGMENT.text(Priority, Immutable, RetryCount, RetryTimeout) +
    TAIL_SEGMENT.text(BrokerMessageGroupId, SQSReceiptHandle, StopTaskDeletionOnError, IgnoreWhenTaskNotRegistered)
  );
}

const isFiniteNumber = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n);

/**
 * A run of JSON text made from up to four field values, kept for the values it was last made
 * for. One entry, compared with `===`: a sender's next message nearly always repeats them,
 * and a miss costs what building the text always cost. (`-0` and `0` compare equal and write
 * the same.) Text used a second time is flattened (`flatten`), so the messages that share it
 * copy it rather than walk its pieces; text that changes every time is never flattened.
 */
class Segment<A, B, C = undefined, D = undefined> {
  #a: A | undefined;
  #b: B | undefined;
  #c: C | undefined;
  #d: D | undefined;
  #text: string | undefined;
  #flat = false;
  constructor(readonly build: (a: A, b: B, c: C, d: D) => string) {}

  text(a: A, b: B, c: C, d: D): string {
    if (this.#text !== undefined && a === this.#a && b === this.#b && c === this.#c && d === this.#d) {
      if (!this.#flat) {
        flatten(this.#text);
        this.#flat = true;
      }
      return this.#text;
    }
    this.#a = a;
    this.#b = b;
    this.#c = c;
    this.#d = d;
    this.#flat = false;
    this.#text = this.build(a, b, c, d);
    return this.#text;
  }
}

const NAME_SEGMENT = new Segment((name: string, routingKey: string) => `,"Name":${jsonString(name)},"RoutingKey":${jsonString(routingKey)},"ETA":`);
const GROUP_SEGMENT = new Segment((groupUUID: string, count: number) => `,"GroupUUID":${jsonString(groupUUID)},"GroupTaskCount":${count},"Args":`);
const RETRY_SEGMENT = new Segment(
  (priority: number, immutable: boolean, retryCount: number, retryTimeout: number) =>
    `,"Priority":${priority},"Immutable":${immutable},"RetryCount":${retryCount},"RetryTimeout":${retryTimeout},"OnSuccess":null,"OnError":null,"ChordCallback":null`,
);
const TAIL_SEGMENT = new Segment(
  (groupId: string, receipt: string, stopDeletion: boolean, ignoreUnregistered: boolean) =>
    `,"BrokerMessageGroupId":${jsonString(groupId)},"SQSReceiptHandle":${jsonString(receipt)},"StopTaskDeletionOnError":${stopDeletion},"IgnoreWhenTaskNotRegistered":${ignoreUnregistered}}`,
);
/**
 * An argument up to its value, `{"Name":"","Type":…,"Value":`, per type for unnamed arguments
 * (Go's usual): one task's arguments are often of several types, which would make a one-entry
 * segment miss at each. Go's types are a few dozen; the table stops growing at 64.
 */
const UNNAMED_ARG_TEXT = new Map<string, string>();

function argText(name: string, type: string): string {
  if (name !== '') return `{"Name":${jsonString(name)},"Type":${jsonString(type)},"Value":`;
  let text = UNNAMED_ARG_TEXT.get(type);
  if (text === undefined) {
    text = flatten(`{"Name":"","Type":${jsonString(type)},"Value":`);
    if (UNNAMED_ARG_TEXT.size < 64) UNNAMED_ARG_TEXT.set(type, text);
  }
  return text;
}

function plainArgsJson(args: readonly Arg[]): string | undefined {
  let out = '[';
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (typeof a !== 'object' || a === null || typeof a.Name !== 'string' || typeof a.Type !== 'string') return undefined;
    const value = jsonScalar(a.Value);
    if (value === undefined) return undefined;
    out += (i === 0 ? '' : ',') + argText(a.Name, a.Type) + value + '}';
  }
  return `${out}]`;
}

/**
 * The last headers written (own keys and values, in order) and their text: a sender's headers
 * (its announce target) repeat. Flattened when used a second time, as a `Segment` is.
 */
let lastHeaders: { keys: string[]; values: unknown[]; text: string; flat: boolean } | undefined;

/** Headers of plain-object shape and scalar values (the announce header, trace context); else `undefined`. */
function plainHeadersJson(headers: Signature['Headers'] | undefined): string | undefined {
  if (headers === null) return 'null';
  if (typeof headers !== 'object' || Object.getPrototypeOf(headers) !== Object.prototype) return undefined;
  const last = lastHeaders;
  if (last) {
    let i = 0;
    let same = true;
    for (const key in headers) {
      if (key !== last.keys[i] || headers[key] !== last.values[i] || !Object.hasOwn(headers, key)) {
        same = false;
        break;
      }
      i++;
    }
    if (same && i === last.keys.length) {
      if (!last.flat) {
        flatten(last.text);
        last.flat = true;
      }
      return last.text;
    }
  }
  const keys: string[] = [];
  const values: unknown[] = [];
  let out = '{';
  for (const key in headers) {
    if (!Object.hasOwn(headers, key)) return undefined;
    const value = jsonScalar(headers[key]);
    if (value === undefined) return undefined;
    out += `${keys.length === 0 ? '' : ','}${jsonString(key)}:${value}`;
    keys.push(key);
    values.push(headers[key]);
  }
  const text = `${out}}`;
  lastHeaders = { keys, values, text, flat: false };
  return text;
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
  return plainTaskStateJson(state) ?? generalTaskStateJson(state);
}

/** `encodeTaskState` as one template, for fields of their declared types and scalar results; else `undefined`. */
function plainTaskStateJson(state: TaskState): string | undefined {
  const { TaskUUID, TaskName, State, Error, CreatedAt, TTL, Results } = state;
  if (
    typeof TaskUUID !== 'string' ||
    typeof TaskName !== 'string' ||
    typeof State !== 'string' ||
    typeof Error !== 'string' ||
    typeof CreatedAt !== 'string' ||
    typeof TTL !== 'number' ||
    !Number.isFinite(TTL)
  ) {
    return undefined;
  }
  let results = 'null';
  if (Results) {
    results = '[';
    for (let i = 0; i < Results.length; i++) {
      const r = Results[i];
      if (typeof r !== 'object' || r === null || typeof r.Type !== 'string') return undefined;
      const value = jsonScalar(r.Value);
      if (value === undefined) return undefined;
      results += (i === 0 ? '' : ',') + RESULT_SEGMENT.text(r.Type, undefined, undefined, undefined) + value + '}';
    }
    results += ']';
  }
  return (
    '{"TaskUUID":' +
    jsonString(TaskUUID) +
    STATE_SEGMENT.text(TaskName, State, undefined, undefined) +
    results +
    ERROR_SEGMENT.text(Error, undefined, undefined, undefined) +
    jsonString(CreatedAt) +
    TTL_SEGMENT.text(TTL, undefined, undefined, undefined)
  );
}

const STATE_SEGMENT = new Segment((name: string, state: string) => `,"TaskName":${jsonString(name)},"State":${jsonString(state)},"Results":`);
const RESULT_SEGMENT = new Segment((type: string) => `{"Type":${jsonString(type)},"Value":`);
const ERROR_SEGMENT = new Segment((error: string) => `,"Error":${jsonString(error)},"CreatedAt":`);
const TTL_SEGMENT = new Segment((ttl: number) => `,"TTL":${ttl}}`);

function generalTaskStateJson(state: TaskState): string {
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
  return exactTaskState(obj) ?? readTaskState(obj);
}

/**
 * A state document as Go and machinery-ts write it: every key in its exact case, each value
 * of its field's type. Read with fixed property names, as `exactSignature` reads a message;
 * `undefined` for anything else, which `readTaskState` takes, with the same result. A sender
 * decodes one per result it waits for, on the way from the announcement to its caller.
 */
function exactTaskState(obj: Record<string, unknown>): TaskState | undefined {
  const { TaskUUID, TaskName, State, Results, Error, CreatedAt, TTL } = obj;
  if (
    typeof TaskUUID !== 'string' ||
    typeof TaskName !== 'string' ||
    typeof State !== 'string' ||
    !Object.hasOwn(TaskStates, State) ||
    typeof Error !== 'string' ||
    typeof CreatedAt !== 'string' ||
    parseRfc3339(CreatedAt) === null ||
    !isInt(TTL) ||
    !(Results === null || Array.isArray(Results))
  ) {
    return undefined;
  }
  const results = Results === null ? null : exactObjects(Results as unknown[], exactResult);
  if (results === undefined) return undefined;
  return { TaskUUID, TaskName, State: State as TaskStateName, Results: results, Error, CreatedAt, TTL };
}

/** Each item of `list` read by `read`; `undefined` when one is not an object or `read` declines it. */
function exactObjects<T>(list: readonly unknown[], read: (item: Record<string, unknown>) => T | undefined): T[] | undefined {
  const out: T[] = [];
  for (const v of list) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const item = read(v as Record<string, unknown>);
    if (item === undefined) return undefined;
    out.push(item);
  }
  return out;
}

const exactResult = ({ Type, Value }: Record<string, unknown>): TaskResult | undefined =>
  typeof Type === 'string' && Value !== undefined ? { Type, Value: Value as WireValue } : undefined;

const exactArg = ({ Name, Type, Value }: Record<string, unknown>): Arg | undefined =>
  typeof Name === 'string' && typeof Type === 'string' && Value !== undefined ? { Name, Type, Value: Value as WireValue } : undefined;

function readTaskState(obj: Record<string, unknown>): TaskState {
  const f = fieldReader(obj, 'task state');
  const state = f.string('State');
  if (state !== '' && !Object.hasOwn(TaskStates, state)) throw new MalformedMessageError(`unknown task state "${state}"`);
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
  return exactSignature(obj) ?? readSignature(obj, where);
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/**
 * The message as Go writes it: every key in its exact case, each value of its field's type,
 * no callbacks. Read with a fixed property name each (a fast load from objects of the same
 * shape) instead of one lookup by name per field; `undefined` for anything else, which the
 * general reader takes, with the same result.
 */
function exactSignature(obj: Record<string, unknown>): Signature | undefined {
  const { UUID, Name, RoutingKey, ETA, GroupUUID, GroupTaskCount, Args, Headers, Priority, Immutable, RetryCount, RetryTimeout } = obj;
  const { OnSuccess, OnError, ChordCallback, BrokerMessageGroupId, SQSReceiptHandle, StopTaskDeletionOnError, IgnoreWhenTaskNotRegistered } = obj;
  if (
    typeof UUID !== 'string' ||
    typeof Name !== 'string' ||
    typeof RoutingKey !== 'string' ||
    typeof GroupUUID !== 'string' ||
    typeof BrokerMessageGroupId !== 'string' ||
    typeof SQSReceiptHandle !== 'string' ||
    typeof Immutable !== 'boolean' ||
    typeof StopTaskDeletionOnError !== 'boolean' ||
    typeof IgnoreWhenTaskNotRegistered !== 'boolean' ||
    !isInt(GroupTaskCount) ||
    !isInt(RetryCount) ||
    !isInt(RetryTimeout) ||
    !isInt(Priority) ||
    Priority < 0 ||
    Priority > 255 ||
    OnSuccess !== null ||
    OnError !== null ||
    ChordCallback !== null ||
    !(Args === null || Array.isArray(Args)) ||
    !(Headers === null || (typeof Headers === 'object' && !Array.isArray(Headers))) ||
    !(ETA === null || (typeof ETA === 'string' && parseRfc3339(ETA) !== null))
  ) {
    return undefined;
  }
  const args = Args === null ? null : exactObjects(Args as unknown[], exactArg);
  if (args === undefined) return undefined;
  return {
    UUID,
    Name,
    RoutingKey,
    ETA,
    GroupUUID,
    GroupTaskCount,
    Args: args,
    Headers: Headers as Record<string, WireValue> | null,
    Priority,
    Immutable,
    RetryCount,
    RetryTimeout,
    OnSuccess: null,
    OnError: null,
    ChordCallback: null,
    BrokerMessageGroupId,
    SQSReceiptHandle,
    StopTaskDeletionOnError,
    IgnoreWhenTaskNotRegistered,
  };
}

function readSignature(obj: Record<string, unknown>, where: string): Signature {
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
  // In newSignature's field order (the same object shape as exactSignature's); a decoded null
  // Headers stays null.
  return {
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
  };
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
