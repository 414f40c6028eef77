import { parse as losslessParse, stringify as losslessStringify } from 'lossless-json';
import { MalformedMessageError } from '../errors.js';

/**
 * JSON that keeps integers exact. Numbers that fit a double stay `number`;
 * integers beyond 2^53 become `bigint`. `JSON.parse` is used whenever the text
 * holds no digit run long enough to lose precision, which is almost always.
 */

const LONG_DIGIT_RUN = /\d{16}/;
const FORBIDDEN_KEY = /"(?:__proto__|constructor|prototype)"\s*:/;
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

const INTEGER_LITERAL = /^-?\d+$/;

/** A double where it is exact; a `bigint` for integer literals beyond 2^53. */
function exactNumber(text: string): number | bigint {
  const n = Number(text);
  return INTEGER_LITERAL.test(text) && !Number.isSafeInteger(n) ? BigInt(text) : n;
}

export function parseExactJson(text: string): unknown {
  let value: unknown;
  try {
    value = LONG_DIGIT_RUN.test(text)
      ? losslessParse(text, null, {
          parseNumber: exactNumber,
          // Go keeps the last of duplicate keys; so do we.
          onDuplicateKey: ({ newValue }) => newValue,
        })
      : JSON.parse(text);
  } catch (err) {
    throw new MalformedMessageError(`invalid JSON (${(err as Error).message})`, { cause: err });
  }
  // The regex only shortlists: a forbidden key inside a string value matches too,
  // so the parsed value is walked before rejecting.
  if (FORBIDDEN_KEY.test(text)) {
    const found = findForbiddenKey(value);
    if (found) throw new MalformedMessageError(`forbidden key "${found}"`);
  }
  return value;
}

function findForbiddenKey(value: unknown): string | undefined {
  if (Array.isArray(value)) {
    for (const item of value) {
      const found = findForbiddenKey(item);
      if (found) return found;
    }
  } else if (value !== null && typeof value === 'object') {
    for (const key of Object.keys(value)) {
      if (FORBIDDEN_KEYS.has(key)) return key;
      const found = findForbiddenKey((value as Record<string, unknown>)[key]);
      if (found) return found;
    }
  }
  return undefined;
}

/** Compact JSON; `bigint` values are written as exact integer literals. */
export function stringifyExactJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (err) {
    if (!(err instanceof TypeError) || !/BigInt/i.test(err.message)) throw err;
    return losslessStringify(value) ?? 'null';
  }
}

/** Printable ASCII other than `"` and `\\`: what `JSON.stringify` writes back unchanged. */
const PLAIN_ASCII = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** `JSON.stringify(s)`, without the call for a string that needs no escaping (UUIDs, names, times). */
export function jsonString(s: string): string {
  return PLAIN_ASCII.test(s) ? `"${s}"` : JSON.stringify(s);
}

/**
 * `JSON.stringify(v)` for a value `JSON.stringify` writes the same at the top level as inside
 * an object: a finite number, a string, a boolean or null. `undefined` for anything else
 * (which the caller then encodes the general way).
 */
export function jsonScalar(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      return jsonString(v);
    case 'number':
      return Number.isFinite(v) ? String(v) : undefined;
    case 'boolean':
      return v ? 'true' : 'false';
    default:
      return v === null ? 'null' : undefined;
  }
}
