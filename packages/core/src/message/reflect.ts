import { ReflectArgsError } from '../errors.js';
import type { Arg, TaskResult, WireValue } from './signature.js';

/**
 * The one table between Go type strings and TypeScript values (Go's `typesMap`,
 * `v2/tasks/reflect.go`). 64-bit integers are `bigint` so they stay exact;
 * narrower integers and floats are `number`; `[]byte`/`[]uint8` is a `Uint8Array`
 * carried as base64, as Go writes it.
 */
export interface GoTypeMap {
  bool: boolean;
  int: bigint;
  int8: number;
  int16: number;
  int32: number;
  int64: bigint;
  uint: bigint;
  uint8: number;
  uint16: number;
  uint32: number;
  uint64: bigint;
  float32: number;
  float64: number;
  string: string;
  '[]bool': boolean[];
  '[]int': bigint[];
  '[]int8': number[];
  '[]int16': number[];
  '[]int32': number[];
  '[]int64': bigint[];
  '[]uint': bigint[];
  '[]uint8': Uint8Array;
  '[]uint16': number[];
  '[]uint32': number[];
  '[]uint64': bigint[];
  '[]float32': number[];
  '[]float64': number[];
  '[]byte': Uint8Array;
  '[]string': string[];
}
export type GoType = keyof GoTypeMap;
export type GoValue<T extends GoType> = GoTypeMap[T];

type Scalar = 'bool' | 'string' | 'float' | { signed: boolean; bits: 8 | 16 | 32 | 64; big: boolean };

const INT_KINDS: Record<string, Scalar> = {
  int: { signed: true, bits: 64, big: true },
  int8: { signed: true, bits: 8, big: false },
  int16: { signed: true, bits: 16, big: false },
  int32: { signed: true, bits: 32, big: false },
  int64: { signed: true, bits: 64, big: true },
  uint: { signed: false, bits: 64, big: true },
  uint8: { signed: false, bits: 8, big: false },
  uint16: { signed: false, bits: 16, big: false },
  uint32: { signed: false, bits: 32, big: false },
  uint64: { signed: false, bits: 64, big: true },
};
const SCALARS: Record<string, Scalar> = { ...INT_KINDS, bool: 'bool', string: 'string', float32: 'float', float64: 'float' };

export const GO_TYPES: readonly GoType[] = [
  ...Object.keys(SCALARS),
  ...Object.keys(SCALARS).map((t) => `[]${t}`),
  '[]byte',
] as GoType[];
const GO_TYPE_SET = new Set<string>(GO_TYPES);

export function isGoType(type: string): type is GoType {
  return GO_TYPE_SET.has(type);
}

const isBytes = (type: string): boolean => type === '[]byte' || type === '[]uint8';

/** Wire value → TypeScript value, with Go's acceptance rules (and range checks Go lacks). */
export function fromWire(type: string, value: unknown): unknown {
  if (!isGoType(type)) throw new ReflectArgsError(`${type} is not one of supported types`);
  if (isBytes(type)) return bytesFromWire(type, value);
  const scalar = SCALARS[type];
  if (scalar) return scalarFromWire(type, scalar, value);
  const elem = type.slice(2);
  const elemScalar = SCALARS[elem] as Scalar;
  // Go gives an empty slice for null and {} (and panics on other objects; we refuse).
  if (value === null || value === undefined) return [];
  if (typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0) return [];
  if (!Array.isArray(value)) throw new ReflectArgsError(`${describe(value)} is not ${type}`);
  return value.map((v) => scalarFromWire(elem, elemScalar, v));
}

function scalarFromWire(type: string, scalar: Scalar, value: unknown): unknown {
  if (scalar === 'bool') {
    if (typeof value === 'boolean') return value;
  } else if (scalar === 'string') {
    if (typeof value === 'string') return value;
  } else if (scalar === 'float') {
    if (typeof value === 'number') return type === 'float32' ? Math.fround(value) : value;
    if (typeof value === 'bigint') return Number(value);
  } else {
    if (typeof value === 'number' && !Number.isInteger(value)) {
      throw new ReflectArgsError(`strconv.ParseInt: parsing "${value}": invalid syntax`);
    }
    if (typeof value === 'number' || typeof value === 'bigint') {
      const big = BigInt(value);
      checkRange(type, scalar, big);
      return scalar.big ? big : Number(big);
    }
  }
  throw new ReflectArgsError(`${describe(value)} is not ${type}`);
}

function checkRange(type: string, kind: { signed: boolean; bits: number }, v: bigint): void {
  const bits = BigInt(kind.bits);
  const min = kind.signed ? -(1n << (bits - 1n)) : 0n;
  const max = kind.signed ? (1n << (bits - 1n)) - 1n : (1n << bits) - 1n;
  if (v < min || v > max) throw new ReflectArgsError(`${v} overflows ${type}`);
}

function bytesFromWire(type: string, value: unknown): Uint8Array {
  if (value === null || value === undefined) return new Uint8Array();
  if (typeof value === 'string') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
      throw new ReflectArgsError(`${describe(value)} is not base64 for ${type}`);
    }
    return new Uint8Array(Buffer.from(value, 'base64'));
  }
  if (Array.isArray(value)) {
    return Uint8Array.from(value.map((v) => scalarFromWire('uint8', INT_KINDS.uint8 as Scalar, v) as number));
  }
  throw new ReflectArgsError(`${describe(value)} is not ${type}`);
}

/** TypeScript value → wire value for a declared Go type; refuses what a Go worker would choke on. */
export function toWire(type: string, value: unknown): WireValue {
  if (!isGoType(type)) throw new ReflectArgsError(`${type} is not one of supported types`);
  if (isBytes(type)) {
    if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
    if (typeof value === 'string') return bytesFromWire(type, value) && value;
    throw new ReflectArgsError(`${describe(value)} is not ${type} (expected a Uint8Array)`);
  }
  const scalar = SCALARS[type];
  if (scalar) return scalarToWire(type, scalar, value);
  if (!Array.isArray(value)) throw new ReflectArgsError(`${describe(value)} is not ${type} (expected an array)`);
  const elem = type.slice(2);
  return value.map((v) => scalarToWire(elem, SCALARS[elem] as Scalar, v));
}

function scalarToWire(type: string, scalar: Scalar, value: unknown): WireValue {
  if (scalar === 'bool' || scalar === 'string') {
    if (typeof value === (scalar === 'bool' ? 'boolean' : 'string')) return value as boolean | string;
  } else if (scalar === 'float') {
    if (typeof value === 'number' && Number.isFinite(value)) return value;
  } else if ((typeof value === 'number' && Number.isSafeInteger(value)) || typeof value === 'bigint') {
    const big = BigInt(value);
    checkRange(type, scalar, big);
    return typeof value === 'number' ? value : Number.isSafeInteger(Number(big)) ? Number(big) : big;
  }
  throw new ReflectArgsError(`${describe(value)} is not ${type}`);
}

/** Builds an `Arg` from a TypeScript value, checking it against its Go type. */
export function arg<T extends GoType>(type: T, value: GoValue<T>): Arg {
  return { Name: '', Type: type, Value: toWire(type, value) };
}

/** Converts a list of wire args to handler arguments, in order. */
export function argsFromWire(args: readonly Arg[] | null): unknown[] {
  if (!args) return [];
  return args.map((a, i) => {
    try {
      return fromWire(a.Type, a.Value);
    } catch (err) {
      if (err instanceof ReflectArgsError && args.length > 1) {
        throw new ReflectArgsError(`arg ${i}: ${err.message.replace(/^Reflect task args error: /, '')}`);
      }
      throw err;
    }
  });
}

/**
 * The Go type string for an untyped result, as Go's reflect would name it.
 * Typed tasks declare their result types instead of relying on this.
 */
export function inferGoType(value: unknown): string {
  switch (typeof value) {
    case 'boolean':
      return 'bool';
    case 'string':
      return 'string';
    case 'bigint':
      return 'int64';
    case 'number':
      return Number.isSafeInteger(value) ? 'int64' : 'float64';
    default:
  }
  if (value instanceof Uint8Array) return '[]uint8';
  if (Array.isArray(value) && value.length > 0) {
    const types = new Set(value.map(inferGoType));
    if (types.size === 1) {
      const only = [...types][0] as string;
      if (!only.startsWith('[]') && SCALARS[only]) return `[]${only}`;
    }
    if ([...types].every((t) => t === 'int64' || t === 'float64')) return '[]float64';
    return '[]interface {}';
  }
  if (Array.isArray(value)) return '[]interface {}';
  return 'map[string]interface {}';
}

/** A handler's return value → stored results. `undefined` means "no results" (Go's `[]`). */
export function resultsToWire(values: readonly unknown[], types?: readonly string[]): TaskResult[] {
  return values.map((value, i) => {
    const type = types?.[i] ?? inferGoType(value);
    if (isGoType(type)) return { Type: type, Value: toWire(type, value) };
    return { Type: type, Value: plainJson(value) };
  });
}

/** Stored results → TypeScript values; unknown Go types come back as opaque JSON. */
export function resultsFromWire(results: readonly TaskResult[] | null): unknown[] {
  if (!results) return [];
  return results.map((r) => (isGoType(r.Type) ? fromWire(r.Type, r.Value) : r.Value));
}

function plainJson(value: unknown): WireValue {
  if (value === undefined) return null;
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))) as WireValue;
}

function describe(value: unknown): string {
  if (typeof value === 'bigint') return String(value);
  if (typeof value === 'string') return value.length > 40 ? `${value.slice(0, 37)}...` : value;
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}
