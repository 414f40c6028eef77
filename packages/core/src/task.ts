import { ReflectArgsError } from './errors.js';
import { type GoType, type GoValue, toWire } from './message/reflect.js';
import { type Signature, newSignature } from './message/signature.js';

/** What a running task can see: its own signature and a signal that fires at its deadline. */
export interface TaskContext {
  readonly signature: Signature;
  readonly signal: AbortSignal;
  /** 1 for the first run, then counting the retries that led here (best effort). */
  readonly attempt: number;
}

/** An untyped handler: converted args in, one result (or `undefined` for none) out. */
export type TaskHandler = (args: unknown[], ctx: TaskContext) => unknown;

type ValuesOf<T extends readonly GoType[]> = { -readonly [K in keyof T]: T[K] extends GoType ? GoValue<T[K]> : never };
type ReturnOf<R extends readonly GoType[]> = R extends readonly [] ? void : R extends readonly [infer One extends GoType] ? GoValue<One> : ValuesOf<R>;

/**
 * A task declared once with its Go types: producers get compile-time checks of their
 * arguments, and the worker still checks every message at run time (Go may send it).
 */
export interface TaskDefinition<A extends readonly GoType[] = readonly GoType[], R extends readonly GoType[] = readonly GoType[]> {
  readonly name: string;
  readonly args: A;
  readonly results: R;
  readonly run: (args: ValuesOf<A>, ctx: TaskContext) => ReturnOf<R> | Promise<ReturnOf<R>>;
}

export type ArgsOf<D> = D extends { readonly args: infer A extends readonly GoType[] } ? ValuesOf<A> : never;
export type ResultsOf<D> = D extends { readonly results: infer R extends readonly GoType[] } ? ValuesOf<R> : never;

export function defineTask<const A extends readonly GoType[], const R extends readonly GoType[]>(
  definition: TaskDefinition<A, R>,
): TaskDefinition<A, R> {
  return definition;
}

/** Any typed task, whatever its types: what registration accepts. */
export interface AnyTaskDefinition {
  readonly name: string;
  readonly args: readonly GoType[];
  readonly results: readonly GoType[];
  readonly run: (args: never, ctx: TaskContext) => unknown;
}

/** How the worker holds any task, typed or not. */
export interface RegisteredTask {
  readonly name: string;
  readonly resultTypes?: readonly string[];
  readonly handler: TaskHandler;
}

export function toRegistered(name: string, task: TaskHandler | AnyTaskDefinition): RegisteredTask {
  if (typeof task === 'function') return { name, handler: task };
  const def = task;
  return {
    name,
    resultTypes: def.results,
    handler: async (args, ctx) => {
      const value = await (def.run as (a: unknown[], c: TaskContext) => unknown)(args, ctx);
      // Typed tasks with several results return a tuple; wrap the single-result case to match.
      return new MultipleResults(def.results.length === 1 ? [value] : def.results.length === 0 ? [] : (value as unknown[]));
    },
  };
}

/** Returned by a handler to store several results (Go tasks may return many values). */
export class MultipleResults {
  constructor(readonly values: readonly unknown[]) {}
}

/**
 * A signature for a typed task, its arguments checked at compile time against the
 * declared Go types and converted to wire values at run time.
 */
export function call<const A extends readonly GoType[], const R extends readonly GoType[]>(
  definition: TaskDefinition<A, R>,
  ...args: ValuesOf<A>
): Signature {
  const values = args as readonly unknown[];
  if (values.length !== definition.args.length) {
    throw new ReflectArgsError(`${definition.name} takes ${definition.args.length} args, given ${values.length}`);
  }
  return newSignature({
    Name: definition.name,
    Args: definition.args.map((type, i) => ({ Name: '', Type: type, Value: toWire(type, values[i]) })),
  });
}
