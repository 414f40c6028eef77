import { ReflectArgsError, UnrecoverableError } from './errors.js';
import { type GoType, type GoValue, toWire } from './message/reflect.js';
import { type Signature, type SignatureInit, copySignature, newSignature } from './message/signature.js';

/**
 * What a running task can see: its own signature and a signal that fires at its deadline.
 * `signal` is made on first read (most tasks never read it), so it is not an own property:
 * pass the context on as it is, or read `signal` from it; a spread copy (`{ ...ctx }`) has none.
 */
export interface TaskContext {
  readonly signature: Signature;
  readonly signal: AbortSignal;
  /** 1 for the first run, then counting the retries that led here (best effort). */
  readonly attempt: number;
}

/** An untyped handler: converted args in, one result (or `undefined` for none) out. */
export type TaskHandler = (args: unknown[], ctx: TaskContext) => unknown;

/** The TypeScript values of a tuple of Go types, e.g. `GoValues<['int64', 'string']>` is `[bigint, string]`. */
export type GoValues<T extends readonly GoType[]> = { -readonly [K in keyof T]: T[K] extends GoType ? GoValue<T[K]> : never };
type ValuesOf<T extends readonly GoType[]> = GoValues<T>;
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
      checkWireArgs(def, ctx.signature);
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

declare const signatureTypes: unique symbol;

/**
 * A `Signature` of a typed task that also carries, for the compiler only, the Go types of
 * the arguments it still lacks and of its results. Those are what `chain` and `chord`
 * check: Go appends a finished task's results to the next link's (or the chord callback's)
 * arguments, so the missing arguments must be exactly the results that will arrive.
 * It is a plain `Signature` at run time and wherever a `Signature` is expected.
 *
 * `Immutable` is Go's flag, as a literal type: in a chain, an immutable link does not pass
 * its results on; as a chord callback, an immutable signature receives none.
 */
export interface TypedSignature<
  Missing extends readonly GoType[] = readonly GoType[],
  Results extends readonly GoType[] = readonly GoType[],
  Imm extends boolean = boolean,
> extends Signature {
  Immutable: Imm;
  /** Compile-time only: never present on the object. */
  readonly [signatureTypes]: { readonly missing: Missing; readonly results: Results };
}

/** A signature that is not a `TypedSignature`, so nothing about its arguments is known. */
export type UntypedSignature = Signature & { readonly [signatureTypes]?: never };
export type UntypedSignatureInit = SignatureInit & { readonly [signatureTypes]?: never };

/** The Go types of what a typed signature still lacks and returns; `undefined` for an untyped one. */
export type SignatureTypes<S> = S extends { readonly [signatureTypes]: infer T } ? T : undefined;

type SplitAt<A extends readonly GoType[], Given extends readonly unknown[]> = Given extends readonly []
  ? A
  : A extends readonly [GoType, ...infer Rest extends readonly GoType[]]
    ? Given extends readonly [unknown, ...infer More extends readonly unknown[]]
      ? SplitAt<Rest, More>
      : never
    : never;

/** Every prefix of a tuple: the argument lists `partial` accepts. */
type Prefixes<T extends readonly unknown[]> = T extends readonly [...infer Init, unknown] ? T | Prefixes<Init> : T;

/**
 * A signature for a typed task, its arguments checked at compile time against the
 * declared Go types and converted to wire values at run time.
 */
export function call<const A extends readonly GoType[], const R extends readonly GoType[]>(
  definition: TaskDefinition<A, R>,
  ...args: ValuesOf<A>
): TypedSignature<[], R, false> {
  const values = args as readonly unknown[];
  if (values.length !== definition.args.length) {
    throw new ReflectArgsError(`${definition.name} takes ${definition.args.length} args, given ${values.length}`);
  }
  return build(definition, values) as TypedSignature<[], R, false>;
}

/**
 * A signature given only the first arguments: the rest are the results of the previous
 * chain link, or of the chord's members, which Go appends when the task is sent on.
 * `chain` and `chord` accept it only where those results have exactly the missing types.
 *
 * ### Examples
 * ```ts
 * chain(call(add, 1n, 2n), partial(multiply, 10n)); // multiply(10n, <add's result>)
 * ```
 */
export function partial<const A extends readonly GoType[], const R extends readonly GoType[], const G extends Prefixes<ValuesOf<A>>>(
  definition: TaskDefinition<A, R>,
  ...args: G
): TypedSignature<SplitAt<A, G>, R, false> {
  const values = args as readonly unknown[];
  if (values.length > definition.args.length) {
    throw new ReflectArgsError(`${definition.name} takes ${definition.args.length} args, given ${values.length}`);
  }
  return build(definition, values) as TypedSignature<SplitAt<A, G>, R, false>;
}

/**
 * A copy with Go's `Immutable` set: in a chain its results are not passed to the next link,
 * and as a chord callback it is sent with its own arguments only.
 */
export function immutable<M extends readonly GoType[], R extends readonly GoType[]>(signature: TypedSignature<M, R>): TypedSignature<M, R, true>;
export function immutable(signature: UntypedSignature): Signature;
export function immutable(signature: Signature): Signature {
  return { ...copySignature(signature), Immutable: true };
}

function build(definition: AnyTaskDefinition, values: readonly unknown[]): Signature {
  return newSignature({
    Name: definition.name,
    Args: values.map((value, i) => {
      const type = definition.args[i] as GoType;
      return { Name: '', Type: type, Value: toWire(type, value) };
    }),
  });
}

// Go's reflect names []byte "[]uint8"; the two spellings are one type.
const sameGoType = (a: string, b: string): boolean => a === b || (isBytesType(a) && isBytesType(b));
const isBytesType = (t: string): boolean => t === '[]byte' || t === '[]uint8';

/**
 * The worker's check of a message against the declared types: a Go producer, or a chain
 * whose results do not fit, can send anything. A Go worker refuses such a call too (its
 * reflect call fails), so no retry would help.
 */
function checkWireArgs(def: AnyTaskDefinition, sig: Signature): void {
  const args = sig.Args ?? [];
  if (args.length !== def.args.length) {
    throw new UnrecoverableError(new ReflectArgsError(`${def.name} takes ${def.args.length} args, given ${args.length}`).message);
  }
  args.forEach((a, i) => {
    const declared = def.args[i] as GoType;
    if (!sameGoType(a.Type, declared)) {
      throw new UnrecoverableError(new ReflectArgsError(`${def.name} arg ${i} is ${declared}, given ${a.Type}`).message);
    }
  });
}
