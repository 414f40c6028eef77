import { parse as losslessParse, stringify as losslessStringify } from 'lossless-json';
import { MalformedMessageError } from '../errors.js';

/**
 * JSON that keeps integers exact. Numbers that fit a double stay `number`;
 * integers beyond 2^53 become `bigint`. `JSON.parse` is used first; only when what it
 * made holds a number beyond 2^53 (an integer literal that may have lost digits) is the
 * text parsed again exactly, which is almost never.
 */

/** Keys refused anywhere in a message: merged into an object, they could reach its prototype. */
const forbiddenKey = (key: string): boolean => key === '__proto__' || key === 'constructor' || key === 'prototype';

const hasOwn = Object.prototype.hasOwnProperty;

const INTEGER_LITERAL = /^-?\d+$/;

/** A double where it is exact; a `bigint` for integer literals beyond 2^53. */
function exactNumber(text: string): number | bigint {
  const n = Number(text);
  return INTEGER_LITERAL.test(text) && !Number.isSafeInteger(n) ? BigInt(text) : n;
}

export function parseExactJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (err) {
    throw new MalformedMessageError(`invalid JSON (${(err as Error).message})`, { cause: err });
  }
  // One walk of the parsed value (about 0.2 µs for a task message, against 0.6–0.8 µs for
  // scanning its text with two regexes) finds both what needs a second look and what is refused.
  const found = inspect(value);
  if (found === 'big number') {
    try {
      value = losslessParse(text, null, {
        parseNumber: exactNumber,
        // Go keeps the last of duplicate keys; so do we.
        onDuplicateKey: ({ newValue }) => newValue,
      });
    } catch (err) {
      throw new MalformedMessageError(`invalid JSON (${(err as Error).message})`, { cause: err });
    }
    // The exact parse holds bigints where the first had doubles: only keys are looked at.
    const key = inspect(value, false);
    if (key) throw new MalformedMessageError(`forbidden key "${key}"`);
  } else if (found !== undefined) {
    throw new MalformedMessageError(`forbidden key "${found}"`);
  }
  return value;
}

/**
 * The first forbidden key in `value`, or, when `numbers`, `'big number'` as soon as a number
 * beyond 2^53 is seen (the text then gets an exact parse and a second look); `undefined` when
 * neither. Iterative, so no nesting that JSON.parse accepts can overflow the stack here.
 *
 * It runs on every message a worker takes and every state a sender reads. Keys are walked
 * with `for…in` (no array of keys per object), compared as strings rather than looked up in a
 * Set, and only objects and numbers are stacked: for a task message that is 0.18 µs against
 * 0.54 for an `Object.keys` walk (JSON.parse of it takes 1.7). The own-property check keeps
 * out what an enumerable key added to Object.prototype would bring in, a cycle through it
 * included.
 */
function inspect(value: unknown, numbers = true): string | undefined {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number') {
      if (numbers && (v > Number.MAX_SAFE_INTEGER || v < -Number.MAX_SAFE_INTEGER)) return 'big number';
    } else if (typeof v !== 'object' || v === null) {
      continue;
    } else if (Array.isArray(v)) {
      for (const x of v) if (typeof x === 'object' || typeof x === 'number') stack.push(x);
    } else {
      for (const key in v) {
        if (!hasOwn.call(v, key)) continue;
        if (forbiddenKey(key)) return key;
        const x = (v as Record<string, unknown>)[key];
        if (typeof x === 'object' || typeof x === 'number') stack.push(x);
      }
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

/**
 * `s`, flattened in place. V8 keeps a string built with `+` as a tree of its pieces, which
 * every later copy of it (a join, a socket write) walks again; turning it into a number makes
 * V8 flatten it first, once (the trick of the flatstr package). Joining 100 texts of 30 pieces
 * each took 18–20 µs as trees, 2.5–3.0 µs flattened. `[s].join('')` does not flatten: it
 * returns `s` itself.
 */
export function flatten(s: string): string {
  Number(s);
  return s;
}

/** Printable ASCII other than `"` and `\\`: what `JSON.stringify` writes back unchanged. */
const PLAIN_ASCII = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** `JSON.stringify(s)`, without the call for a string that needs no escaping (UUIDs, names, times). */
export function jsonString(s: string): string {
  // Empty is common (Go's unset fields): no regex for it.
  if (s.length === 0) return '""';
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
