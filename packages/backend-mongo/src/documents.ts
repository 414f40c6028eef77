import {
  type GroupMeta,
  type StateUpdate,
  type TaskResult,
  type TaskState,
  type TaskStateName,
  type WireValue,
  GO_ZERO_TIME,
  TaskStates,
  formatRfc3339Nano,
  parseExactJson,
  stringifyExactJson,
} from '@machinery-ts/core';
import { Binary, Decimal128, type Document, Double, Long } from 'mongodb';

/**
 * Go Machinery v2's MongoDB documents (`v2/backends/mongo/mongodb.go`), as pure functions.
 *
 * Task document (`tasks`, a `$set` upsert on `{_id: taskUUID}`):
 *
 * | State | `$set` |
 * |---|---|
 * | PENDING | `{state, task_name, created_at}` (+ `delete_at`, a fix over Go, see below) |
 * | RECEIVED, STARTED, RETRY | `{state}` (+ `delete_at`, a fix over Go) |
 * | SUCCESS | `{state, results: [{type, value}], delete_at}` |
 * | FAILURE | `{state, error, delete_at}` |
 *
 * Group meta (`group_metas`): `{_id, task_uuids, chord_triggered: false, lock: false, created_at}`
 * (+ `delete_at`, a fix over Go).
 *
 * Fixes over Go (both documented in the README):
 * - with `expirePending` (default true) every state and every group meta gets `delete_at`,
 *   so they are removed by the TTL index; Go sets it only on SUCCESS/FAILURE, so PENDING
 *   documents of tasks that never finish, and all group metas, live forever;
 * - a `resultsExpireIn` of 0 means 3600 s (the other backends' default), where Go writes
 *   `delete_at = now` and the document is deleted within a minute.
 */

/** Go's `config.DefaultResultsExpireIn`, applied when `resultsExpireIn` is 0 or unset. */
export const DEFAULT_RESULTS_EXPIRE_IN = 3600;

export function effectiveExpireIn(resultsExpireIn: number | undefined): number {
  return resultsExpireIn && resultsExpireIn > 0 ? resultsExpireIn : DEFAULT_RESULTS_EXPIRE_IN;
}

const INT_TYPES = new Set(['int', 'int8', 'int16', 'int32', 'int64', 'uint', 'uint8', 'uint16', 'uint32', 'uint64']);
const FLOAT_TYPES = new Set(['float32', 'float64']);
const BYTES_TYPES = new Set(['[]byte', '[]uint8']);
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

/**
 * The `$set` of the upsert that writes `update`, exactly as Go lays it out (plus `delete_at`
 * on non-final states when `expirePending`).
 */
export function stateToDocument(update: StateUpdate, now: Date, expireIn: number, expirePending = true): Document {
  const deleteAt = new Date(now.getTime() + effectiveExpireIn(expireIn) * 1000);
  switch (update.state) {
    case TaskStates.PENDING:
      return {
        state: update.state,
        task_name: update.taskName,
        created_at: now,
        ...(expirePending ? { delete_at: deleteAt } : {}),
      };
    case TaskStates.SUCCESS:
      return { state: update.state, results: resultsToBson(update.results ?? []), delete_at: deleteAt };
    case TaskStates.FAILURE:
      return { state: update.state, error: update.error ?? '', delete_at: deleteAt };
    default:
      return { state: update.state, ...(expirePending ? { delete_at: deleteAt } : {}) };
  }
}

/** Go's group meta document, as `InitGroup` inserts it (plus `delete_at` when `expirePending`). */
export function groupMetaToDocument(
  groupUUID: string,
  taskUUIDs: readonly string[],
  now: Date,
  expireIn: number,
  expirePending = true,
): Document {
  return {
    _id: groupUUID,
    task_uuids: [...taskUUIDs],
    chord_triggered: false,
    lock: false,
    created_at: now,
    ...(expirePending ? { delete_at: new Date(now.getTime() + effectiveExpireIn(expireIn) * 1000) } : {}),
  };
}

/** Results → Go's bson: integers as Int64, floats as double, bytes as binary, JSON-object strings as `json`. */
export function resultsToBson(results: readonly TaskResult[]): Document[] {
  return results.map((r) => {
    if (typeof r.Value === 'string' && !BYTES_TYPES.has(r.Type)) {
      // Go's decodeResults: a string value that decodes as a JSON object is stored as an embedded document.
      const obj = jsonObject(r.Value);
      if (obj) return { type: 'json', value: jsonToBson(obj) };
    }
    return { type: r.Type, value: valueToBson(r.Type, r.Value) };
  });
}

function valueToBson(type: string, value: WireValue): unknown {
  if (value === null) return null;
  if (INT_TYPES.has(type)) return intToBson(value);
  if (FLOAT_TYPES.has(type)) return floatToBson(value);
  if (BYTES_TYPES.has(type)) {
    if (typeof value === 'string') return new Binary(Buffer.from(value, 'base64'));
    if (Array.isArray(value) && value.every((v) => typeof v === 'number')) return new Binary(Uint8Array.from(value as number[]));
    return genericToBson(value);
  }
  if (type.startsWith('[]') && Array.isArray(value)) {
    const elem = type.slice(2);
    if (INT_TYPES.has(elem)) return value.map(intToBson);
    if (FLOAT_TYPES.has(elem)) return value.map(floatToBson);
  }
  return genericToBson(value);
}

function intToBson(value: WireValue): unknown {
  if (typeof value === 'number' && Number.isInteger(value)) return longOf(BigInt(value));
  if (typeof value === 'bigint') return longOf(value);
  return genericToBson(value);
}

/** Int64 when it fits; beyond int64 (only uint64 can be) a Decimal128, which Go cannot store at all. */
function longOf(v: bigint): Long | Decimal128 {
  return v >= INT64_MIN && v <= INT64_MAX ? Long.fromBigInt(v) : Decimal128.fromString(v.toString());
}

function floatToBson(value: WireValue): unknown {
  if (typeof value === 'number') return new Double(value);
  if (typeof value === 'bigint') return new Double(Number(value));
  return genericToBson(value);
}

/** Values of types without a Go mapping: integers as Int64 (what Go's int helpers accept), other numbers as doubles. */
function genericToBson(value: WireValue): unknown {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'bigint') return longOf(value);
  if (typeof value === 'number') return Number.isInteger(value) ? Long.fromNumber(value) : new Double(value);
  if (Array.isArray(value)) return value.map(genericToBson);
  const out: Document = {};
  for (const [k, v] of Object.entries(value)) out[k] = genericToBson(v);
  return out;
}

/** Go decodes the JSON into `bson.M`, so its numbers become doubles; integers beyond 2^53 stay exact here (Int64). */
function jsonToBson(value: unknown): unknown {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number') return new Double(value);
  if (typeof value === 'bigint') return longOf(value);
  if (Array.isArray(value)) return value.map(jsonToBson);
  const out: Document = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = jsonToBson(v);
  return out;
}

/** The object a string holds when it is exactly one JSON object whose keys MongoDB accepts in `$set`. */
function jsonObject(text: string): Record<string, unknown> | null {
  if (!text.trimStart().startsWith('{')) return null;
  let value: unknown;
  try {
    value = parseExactJson(text);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  return keysStorable(value) ? (value as Record<string, unknown>) : null;
}

function keysStorable(value: unknown): boolean {
  if (Array.isArray(value)) return value.every(keysStorable);
  if (value === null || typeof value !== 'object') return true;
  return Object.entries(value).every(([k, v]) => !k.startsWith('$') && !k.includes('.') && !k.includes('\0') && keysStorable(v));
}

function bsonType(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const t = (value as { _bsontype?: unknown })._bsontype;
  return typeof t === 'string' ? t : undefined;
}

function exactInt(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** A bson value → a wire value: Int64 as a number when exact, else `bigint`; binary as base64, as Go's JSON would. */
export function bsonToWire(value: unknown): WireValue {
  if (value === null || value === undefined) return null;
  if (typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return exactInt(value);
  if (value instanceof Date) return formatRfc3339Nano(value.getTime());
  if (Array.isArray(value)) return value.map(bsonToWire);
  switch (bsonType(value)) {
    case 'Long':
      return exactInt((value as Long).toBigInt());
    case 'Double':
    case 'Int32':
      return (value as Double).value;
    case 'Decimal128': {
      const text = (value as Decimal128).toString();
      return /^-?\d+$/.test(text) ? exactInt(BigInt(text)) : Number(text);
    }
    case 'Binary':
      return (value as Binary).toString('base64');
    case undefined:
      break;
    default:
      return String(value);
  }
  const out: { [key: string]: WireValue } = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = bsonToWire(v);
  return out;
}

function dateText(value: unknown): string {
  return value instanceof Date && !Number.isNaN(value.getTime()) ? formatRfc3339Nano(value.getTime()) : GO_ZERO_TIME;
}

function ttlOf(value: unknown): number {
  const v = bsonToWire(value);
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : 0;
}

/** Results read back; Go's `json` results come back as the string results they were written from. */
export function resultsFromBson(results: unknown): TaskResult[] {
  if (!Array.isArray(results)) return [];
  return results.map((r: unknown) => {
    const doc = (r ?? {}) as { type?: unknown; value?: unknown };
    const type = typeof doc.type === 'string' ? doc.type : '';
    const value = bsonToWire(doc.value);
    if (type === 'json') return { Type: 'string', Value: stringifyExactJson(value) };
    return { Type: type, Value: value };
  });
}

/**
 * A task document (Go's or ours) → the state, normalised like Go's JSON documents:
 * `Results` only for SUCCESS (`[]` when absent), `Error` only for FAILURE, `CreatedAt`
 * Go's zero time when the document has none.
 */
export function documentToState(doc: Document): TaskState {
  const state = doc.state as TaskStateName;
  return {
    TaskUUID: String(doc._id),
    TaskName: typeof doc.task_name === 'string' ? doc.task_name : '',
    State: state,
    Results: state === TaskStates.SUCCESS ? resultsFromBson(doc.results) : null,
    Error: state === TaskStates.FAILURE && typeof doc.error === 'string' ? doc.error : '',
    CreatedAt: dateText(doc.created_at),
    TTL: ttlOf(doc.ttl),
  };
}

export function documentToGroupMeta(doc: Document): GroupMeta {
  return {
    GroupUUID: String(doc._id),
    TaskUUIDs: Array.isArray(doc.task_uuids) ? doc.task_uuids.map(String) : [],
    ChordTriggered: doc.chord_triggered === true,
    Lock: doc.lock === true,
    CreatedAt: dateText(doc.created_at),
    TTL: ttlOf(doc.ttl),
  };
}

/** Whether the document's `delete_at` has passed (the TTL monitor runs only once a minute). */
export function isExpired(doc: Document, nowMs: number): boolean {
  const at = doc.delete_at;
  return at instanceof Date && at.getTime() <= nowMs;
}
