import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import {
  type AsyncResult,
  type Chain,
  type Chord,
  type Group,
  type Signature,
  type TypedSignature,
  Server,
  arg,
  call,
  chain,
  chord,
  defineTask,
  group,
  immutable,
  newSignature,
  partial,
} from '../src/index.js';

const add = defineTask({ name: 'add', args: ['int64', 'int64'], results: ['int64'], run: ([a, b]) => a + b });
const label = defineTask({ name: 'label', args: ['string', 'int64'], results: ['string'], run: ([p, n]) => `${p}${n}` });
const split = defineTask({
  name: 'split',
  args: ['string'],
  results: ['string', 'int32'],
  run: ([s]) => [s.toUpperCase(), s.length] as [string, number],
});
const describeIt = defineTask({
  name: 'describe',
  args: ['string', 'int32'],
  results: ['string'],
  run: ([s, n]) => `${s}:${n}`,
});
const total3 = defineTask({
  name: 'total3',
  args: ['string', 'int64', 'int64', 'int64'],
  results: ['string'],
  run: ([p, a, b, c]) => `${p}${a + b + c}`,
});
const ping = defineTask({ name: 'ping', args: [], results: ['bool'], run: () => true });

describe('typed signatures', () => {
  it('carry the missing argument and result Go types', () => {
    expectTypeOf(call(add, 1n, 2n)).toEqualTypeOf<TypedSignature<[], readonly ['int64'], false>>();
    expectTypeOf(partial(add, 1n)).toEqualTypeOf<TypedSignature<['int64'], readonly ['int64'], false>>();
    expectTypeOf(partial(add)).toEqualTypeOf<TypedSignature<readonly ['int64', 'int64'], readonly ['int64'], false>>();
    expectTypeOf(immutable(call(add, 1n, 2n))).toEqualTypeOf<TypedSignature<[], readonly ['int64'], true>>();
    expectTypeOf(call(add, 1n, 2n)).toMatchTypeOf<Signature>();
  });

  it('partial converts the given prefix and refuses more args than declared', () => {
    expect(partial(label, 'n=').Args).toEqual([{ Name: '', Type: 'string', Value: 'n=' }]);
    expect(partial(add).Args).toEqual([]);
    // @ts-expect-error a bigint where the first arg is a string; run time refuses it too
    expect(() => partial(label, 1n)).toThrow('Reflect task args error: 1 is not string');
    // @ts-expect-error three args for a task declaring two
    expect(() => partial(add, 1n, 2n, 3n)).toThrow('add takes 2 args, given 3');
  });

  it('immutable sets Go\'s flag on a copy', () => {
    const s = call(add, 1n, 2n);
    const i = immutable(s);
    expect(i.Immutable).toBe(true);
    expect(s.Immutable).toBe(false);
    expect(immutable(newSignature({ Name: 'x' })).Immutable).toBe(true);
  });

  it('refuses to send a signature that still lacks arguments', () => {
    const server = new Server();
    // Never called: only the types are under test.
    // @ts-expect-error a partial signature only fits in a chain or a chord
    const sendPartial = () => server.sendTask(partial(add, 1n));
    const sendTyped = () => server.sendTask(call(split, 'x'));
    expectTypeOf(sendTyped).returns.resolves.toHaveProperty('get').returns.resolves.toEqualTypeOf<[string, number]>();
    expect(sendPartial).toBeTypeOf('function');
  });
});

describe('typed chains', () => {
  it('accept links missing exactly the previous link\'s results', () => {
    const c = chain(call(add, 1n, 2n), partial(add, 10n), partial(label, 'sum='));
    expectTypeOf(c).toEqualTypeOf<Chain<[string]>>();
    expectTypeOf(chain(call(split, 'ab'), partial(describeIt))).toEqualTypeOf<Chain<[string]>>();
    // After an immutable link nothing is passed on, so the next link is complete.
    expectTypeOf(chain(immutable(call(add, 1n, 2n)), call(split, 'x'))).toEqualTypeOf<Chain<[string, number]>>();
    expect(c.tasks).toHaveLength(3);
  });

  it('refuse a mismatched link', () => {
    // @ts-expect-error label wants a string then an int64, but add passes one int64 onto nothing given
    chain(call(add, 1n, 2n), partial(label));
    // @ts-expect-error split passes (string, int32); add is missing (int64)
    chain(call(split, 'x'), partial(add, 1n));
    // @ts-expect-error a complete link after a non-immutable one would get one arg too many
    chain(call(add, 1n, 2n), call(add, 3n, 4n));
    // @ts-expect-error after an immutable link nothing arrives, so a partial link stays short
    chain(immutable(call(add, 1n, 2n)), partial(add, 1n));
    // @ts-expect-error the first link receives nothing
    chain(partial(add, 1n), partial(add, 1n));
    const unsure: TypedSignature<[], readonly ['int64']> = call(add, 1n, 2n);
    // @ts-expect-error whether unsure passes its result on is not known statically
    chain(unsure, partial(add, 1n));
    // @ts-expect-error nor whether it passes nothing
    chain(unsure, call(add, 1n, 2n));
    // An untyped next link is not checked either way.
    const mixed = chain(unsure, newSignature({ Name: 'log' }));
    expectTypeOf(mixed).toEqualTypeOf<Chain<unknown[]>>();
    // At run time the refused chains above still build (only the compiler objects); this one nests as Go's.
    expect(mixed.tasks[0]?.OnSuccess?.map((t) => t.Name)).toEqual(['log']);
  });

  it('leave untyped links unchecked, and type the result only from a typed last link', () => {
    const plain = newSignature({ Name: 'add', Args: [arg('int64', 5n)] });
    expectTypeOf(chain(call(add, 1n, 2n), plain)).toEqualTypeOf<Chain<unknown[]>>();
    expectTypeOf(chain(plain, partial(label, 'x'))).toEqualTypeOf<Chain<[string]>>();
    const many: Signature[] = [plain, plain];
    expectTypeOf(chain(...many)).toEqualTypeOf<Chain<unknown[]>>();
  });
});

describe('typed chords', () => {
  it('type a group by its members\' results in group order', () => {
    expectTypeOf(group(call(add, 1n, 1n), call(split, 'x'))).toEqualTypeOf<Group<['int64', 'string', 'int32'], [[bigint], [string, number]]>>();
    const members = [call(add, 1n, 1n), call(add, 2n, 2n)];
    expectTypeOf(group(...members)).toEqualTypeOf<Group<'int64'[], [bigint][]>>();
    expectTypeOf(group(newSignature({ Name: 'x' }), call(add, 1n, 1n))).toEqualTypeOf<Group<unknown, [unknown[], [bigint]]>>();
    const plain: Signature[] = [newSignature({ Name: 'x' })];
    expectTypeOf(group(...plain)).toEqualTypeOf<Group<unknown, unknown[][]>>();
    // @ts-expect-error a group member gets nothing appended, so it must be complete
    group(call(add, 1n, 1n), partial(add, 1n));
  });

  it('accept a callback missing exactly the members\' results', () => {
    const c = chord(group(call(add, 1n, 1n), call(add, 2n, 2n), call(add, 3n, 3n)), partial(total3, 'total='));
    expectTypeOf(c).toEqualTypeOf<Chord<[string]>>();
    expectTypeOf(chord(group(call(split, 'x')), partial(describeIt))).toEqualTypeOf<Chord<[string]>>();
    expectTypeOf(chord(group(call(add, 1n, 1n)), immutable(call(ping)))).toEqualTypeOf<Chord<[boolean]>>();
    expectTypeOf(chord(group(call(add, 1n, 1n)), newSignature({ Name: 'collect' }))).toEqualTypeOf<Chord<unknown[]>>();
  });

  it('refuse a callback that does not fit the group', () => {
    // @ts-expect-error two members give two int64s, total3 is missing three
    chord(group(call(add, 1n, 1n), call(add, 2n, 2n)), partial(total3, 'total='));
    // @ts-expect-error results arrive as (int64, string, int32), describe is missing (string, int32)
    chord(group(call(add, 1n, 1n), call(split, 'x')), partial(describeIt));
    // @ts-expect-error an immutable callback receives nothing, so it must be complete
    chord(group(call(add, 1n, 1n)), immutable(partial(add, 1n)));
    const members = [call(add, 1n, 1n), call(add, 2n, 2n)];
    const unsureCallback: TypedSignature<['int64'], ['bool']> = partial(label, 'x') as unknown as TypedSignature<['int64'], ['bool']>;
    // @ts-expect-error whether the callback receives the members' results is not known statically
    chord(group(call(add, 1n, 1n)), unsureCallback);
    // @ts-expect-error the member count is not known statically, so a fixed-arity callback is not provably right
    chord(group(...members), partial(total3, 'x'));
    // What the compiler accepts instead: the same members with a callback that takes nothing.
    const fits = chord(group(...members), immutable(call(ping)));
    expect(fits.group.tasks.map((t) => t.ChordCallback?.Name)).toEqual(['ping', 'ping']);
  });
});

describe('typed workflows end to end', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function start(): Promise<Server> {
    const server = new Server();
    cleanups.push(() => server.close());
    for (const def of [add, label, split, describeIt, total3, ping]) server.registerTask(def);
    const worker = server.newWorker({ handleSignals: false, concurrency: 4, onError: () => undefined });
    await worker.start();
    cleanups.push(() => worker.stop());
    return server;
  }

  it('a typed chain resolves with the last link\'s typed result', async () => {
    const server = await start();
    const result = await (await server.sendChain(chain(call(add, 1n, 2n), partial(add, 10n), partial(label, 'sum=')))).get({ timeoutMs: 3000 });
    expectTypeOf(result).toEqualTypeOf<[string]>();
    expect(result).toEqual(['sum=13']);
    const pair = await (await server.sendChain(chain(immutable(call(add, 1n, 1n)), immutable(call(add, 5n, 5n)), call(split, 'ab')))).get({ timeoutMs: 3000 });
    expectTypeOf(pair).toEqualTypeOf<[string, number]>();
    expect(pair).toEqual(['AB', 2]);
  });

  it('a typed group gives each member a typed async result', async () => {
    const server = await start();
    const [sum, parts] = await server.sendGroup(group(call(add, 1n, 2n), call(split, 'hey')));
    const values = [await sum.get({ timeoutMs: 3000 }), await parts.get({ timeoutMs: 3000 })] as const;
    expectTypeOf(values).toEqualTypeOf<readonly [[bigint], [string, number]]>();
    expect(values).toEqual([[3n], ['HEY', 3]]);
    const untyped = await server.sendGroup(group(newSignature({ Name: 'add', Args: [arg('int64', 1n), arg('int64', 1n)] })));
    expectTypeOf(untyped).toEqualTypeOf<[AsyncResult<unknown[]>]>();
    const plain: Signature[] = [];
    const sendPlain = () => server.sendGroup(group(...plain));
    expectTypeOf(sendPlain).returns.resolves.toEqualTypeOf<AsyncResult<unknown[]>[]>();
    expect(await untyped[0]?.get({ timeoutMs: 3000 })).toEqual([2n]);
  });

  it('a typed chord resolves with the callback\'s typed result, members in group order', async () => {
    const server = await start();
    const c = chord(group(call(add, 1n, 1n), call(add, 2n, 2n), call(add, 30n, 30n)), partial(total3, 'total='));
    const result = await (await server.sendChord(c, { concurrency: 2 })).get({ timeoutMs: 3000 });
    expectTypeOf(result).toEqualTypeOf<[string]>();
    expect(result).toEqual(['total=66']);
    const ordered = await (await server.sendChord(chord(group(call(split, 'abc')), partial(describeIt)))).get({ timeoutMs: 3000 });
    expect(ordered).toEqual(['ABC:3']);
  });

  it('the worker still refuses args that do not fit the declared types (a Go producer may send them)', async () => {
    const server = await start();
    const short = await server.sendTask(newSignature({ Name: 'add', Args: [arg('int64', 1n)], RetryCount: 3 }));
    await expect(short.get({ timeoutMs: 3000 })).rejects.toThrow('Reflect task args error: add takes 2 args, given 1');
    const wrong = await server.sendTask(newSignature({ Name: 'add', Args: [arg('int64', 1n), arg('int32', 2)] }));
    await expect(wrong.get({ timeoutMs: 3000 })).rejects.toThrow('add arg 1 is int64, given int32');
    // A chain whose types were not checked (untyped links) fails at the mismatched link.
    const broken = await server.sendChain(chain(call(split, 'x'), newSignature({ Name: 'add', Args: [arg('int64', 1n)] })));
    await expect(broken.get({ timeoutMs: 3000 })).rejects.toThrow('add takes 2 args, given 3');
  });

  it('keeps untyped workflows and an explicitly named result type working', async () => {
    const server = await start();
    const c = chain(newSignature({ Name: 'add', Args: [arg('int64', 1n), arg('int64', 1n)] }), newSignature({ Name: 'add', Args: [arg('int64', 5n)] }));
    const r = await server.sendChain<[bigint]>(c);
    expectTypeOf(r.get).returns.resolves.toEqualTypeOf<[bigint]>();
    expect(await r.get({ timeoutMs: 3000 })).toEqual([7n]);
  });
});
