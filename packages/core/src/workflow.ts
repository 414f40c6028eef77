import { type Signature, copySignature, newChordUUID, newGroupUUID, newTaskUUID } from './message/signature.js';
import type { GoType } from './message/reflect.js';
import type { GoValues, SignatureTypes } from './task.js';

declare const workflowTypes: unique symbol;

/**
 * Go's `NewGroup`: ids filled in, every member told its group and the group's size.
 * For the compiler only, `R` is the Go types of all members' results in group order —
 * what a chord callback receives — or `unknown` when some member is untyped, and `V` is
 * each member's result values, which `sendGroup` types its async results by.
 */
export interface Group<R = unknown, V extends unknown[][] = unknown[][]> {
  readonly groupUUID: string;
  readonly tasks: Signature[];
  readonly [workflowTypes]?: { readonly results: R; readonly members: V };
}

/** `R`: the callback's result values, as `ChordAsyncResult.get()` resolves them. */
export interface Chord<R extends unknown[] = unknown[]> {
  readonly group: Group;
  readonly callback: Signature;
  readonly [workflowTypes]?: R;
}

/** `R`: the last link's result values, as `ChainAsyncResult.get()` resolves them. */
export interface Chain<R extends unknown[] = unknown[]> {
  readonly tasks: Signature[];
  readonly [workflowTypes]?: R;
}

type Canon<T extends readonly GoType[]> = { -readonly [K in keyof T]: T[K] extends '[]byte' ? '[]uint8' : T[K] };
type SameTypes<A extends readonly GoType[], B extends readonly GoType[]> = [Canon<A>] extends [Canon<B>]
  ? [Canon<B>] extends [Canon<A>]
    ? true
    : false
  : false;

/**
 * A typed link or callback must be missing exactly what arrives. `Arriving` is `undefined`
 * when that is not known (an untyped neighbour: not checked) and `never` when it could be
 * either of two things (a flag typed only as `boolean`: refused). Untyped `S` is never checked.
 */
type Expect<S, Arriving extends readonly GoType[] | undefined> = SignatureTypes<S> extends {
  readonly missing: infer M extends readonly GoType[];
}
  ? [Arriving] extends [never]
    ? S & { readonly 'whether results are passed on is not known statically: type Immutable as true or false': never }
    : [Arriving] extends [readonly GoType[]]
      ? SameTypes<M, Arriving & readonly GoType[]> extends true
        ? S
        : S & { readonly 'expected missing args': Arriving; readonly 'but is missing': M }
      : S
  : S;

/**
 * What a finished link hands the next one: its results, nothing if immutable, unknown
 * (unchecked) if untyped. A typed link whose flag is only known as `boolean` could do
 * either, which no next link fits unless it returns nothing: `never` makes that an error.
 */
type Passed<S> = SignatureTypes<S> extends { readonly results: infer R extends readonly GoType[] }
  ? S extends { readonly Immutable: false }
    ? R
    : S extends { readonly Immutable: true }
      ? []
      : R extends readonly []
        ? []
        : never
  : undefined;

type CheckChain<L extends readonly Signature[], Arriving extends readonly GoType[] | undefined> = L extends readonly [
  infer Head extends Signature,
  ...infer Tail extends readonly Signature[],
]
  ? [Expect<Head, Arriving>, ...CheckChain<Tail, Passed<Head>>]
  : L;

type CheckComplete<M extends readonly Signature[]> = { [K in keyof M]: Expect<M[K], []> };

type ResultValues<S> = SignatureTypes<S> extends { readonly results: infer R extends readonly GoType[] } ? GoValues<R> : unknown[];
type MemberValues<M extends readonly Signature[]> = { -readonly [K in keyof M]: ResultValues<M[K]> };
type LastResults<L extends readonly Signature[]> = L extends readonly [...Signature[], infer Last] ? ResultValues<Last> : unknown[];

/** Every member's results in group order; `unknown` as soon as one member is untyped. */
type GroupResults<M extends readonly Signature[]> = M extends readonly [infer Head, ...infer Tail extends readonly Signature[]]
  ? SignatureTypes<Head> extends { readonly results: infer R extends readonly GoType[] }
    ? GroupResults<Tail> extends infer More extends readonly GoType[]
      ? [...R, ...More]
      : unknown
    : unknown
  : M extends readonly []
    ? []
    : M extends readonly (infer Each)[]
      ? SignatureTypes<Each> extends { readonly results: infer R extends readonly GoType[] }
        ? R[number][]
        : unknown
      : unknown;

/**
 * What a chord callback receives: nothing when immutable, else the group's results, unknown
 * (unchecked) when some member is untyped. A typed callback whose flag is only known as
 * `boolean` fits only a group that returns nothing.
 */
type CallbackGets<G, C> = SignatureTypes<C> extends undefined
  ? undefined
  : C extends { readonly Immutable: true }
    ? []
    : G extends Group<infer R, unknown[][]>
      ? R extends readonly GoType[]
        ? C extends { readonly Immutable: false }
          ? R
          : R extends readonly []
            ? []
            : never
        : undefined
      : undefined;

/**
 * Go's `NewGroup`. Members must be complete (a member gets no results appended); typed
 * members give the group its result types, which `chord` checks the callback against.
 */
export function group<const M extends readonly Signature[]>(
  ...signatures: M & CheckComplete<M>
): Group<GroupResults<M>, MemberValues<M>>;
export function group(...signatures: readonly Signature[]): Group {
  const groupUUID = newGroupUUID();
  const tasks = signatures.map((s) => {
    const t = copySignature(s);
    if (!t.UUID) t.UUID = newTaskUUID();
    t.GroupUUID = groupUUID;
    t.GroupTaskCount = signatures.length;
    return t;
  });
  return { groupUUID, tasks };
}

/**
 * Go's `NewChord`: every group task carries a full copy of the callback. The callback is
 * sent with its own arguments followed by each member's results in group order, so a typed
 * callback built with `partial` must be missing exactly those types. A group whose length
 * is not known statically (spread from an array) cannot be checked against a typed callback
 * unless the callback is `immutable`; pass an untyped `Signature` to opt out.
 */
export function chord<G extends Group, const C extends Signature>(g: G, callback: Expect<C, CallbackGets<G, C>>): Chord<ResultValues<C>>;
export function chord(g: Group, callback: Signature): Chord {
  const cb = copySignature(callback);
  if (!cb.UUID) cb.UUID = newChordUUID();
  for (const t of g.tasks) t.ChordCallback = copySignature(cb);
  return { group: g, callback: cb };
}

/**
 * Go's `NewChain`: each later link nested in its predecessor's `OnSuccess`. Unlike Go,
 * `OnSuccess` callbacks a link already had are kept beside the next link.
 *
 * Typed links are checked pairwise: the first must be complete, and each later one must be
 * missing exactly the previous link's results (or nothing, after an `immutable` link).
 * Untyped links are not checked, nor are their neighbours' expectations of them.
 */
export function chain<const L extends readonly Signature[]>(...signatures: L & CheckChain<L, []>): Chain<LastResults<L>>;
export function chain(...signatures: readonly Signature[]): Chain {
  const tasks = signatures.map((s) => {
    const t = copySignature(s);
    if (!t.UUID) t.UUID = newTaskUUID();
    return t;
  });
  for (let i = tasks.length - 1; i > 0; i--) {
    const prev = tasks[i - 1] as Signature;
    prev.OnSuccess = [...(prev.OnSuccess ?? []), tasks[i] as Signature];
  }
  return { tasks };
}
