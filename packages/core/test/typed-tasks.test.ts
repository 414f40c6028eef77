import { describe, expect, expectTypeOf, it } from 'vitest';
import { type ArgsOf, type ResultsOf, Server, call, defineTask } from '../src/index.js';

const add = defineTask({ name: 'add', args: ['int64', 'int64'], results: ['int64'], run: ([a, b]) => a + b });
const greet = defineTask({ name: 'greet', args: ['string', '[]byte'], results: ['string', 'int32'], run: ([s, b]) => [`${s}${b.length}`, 1] as [string, number] });

describe('typed tasks', () => {
  it('derives TypeScript types from the Go type strings', () => {
    expectTypeOf<ArgsOf<typeof add>>().toEqualTypeOf<[bigint, bigint]>();
    expectTypeOf<ArgsOf<typeof greet>>().toEqualTypeOf<[string, Uint8Array]>();
    expectTypeOf<ResultsOf<typeof greet>>().toEqualTypeOf<[string, number]>();
  });

  it('refuses wrong producer arguments at compile time and at run time', () => {
    // @ts-expect-error a number where an int64 (bigint) is declared; run time accepts safe integers
    expect(call(add, 1, 2n).Args?.[0]?.Value).toBe(1);
    // @ts-expect-error a fraction is no int64, and run time refuses it too
    expect(() => call(add, 1.5, 2n)).toThrow('Reflect task args error: 1.5 is not int64');
    // @ts-expect-error too few arguments
    expect(() => call(add, 1n)).toThrow('add takes 2 args, given 1');
    // @ts-expect-error a string where []byte is declared
    call(greet, 'x', 'aGk=');
    expect(call(add, 1n, 2n).Args).toEqual([
      { Name: '', Type: 'int64', Value: 1 },
      { Name: '', Type: 'int64', Value: 2 },
    ]);
  });

  it('refuses a handler whose result does not match the declared type', () => {
    // @ts-expect-error returns a string where an int64 result is declared
    defineTask({ name: 'bad', args: ['int64'], results: ['int64'], run: ([a]) => String(a) });
    expect(true).toBeTypeOf('boolean');
  });

  it('runs typed tasks with several results end to end', async () => {
    const server = new Server();
    server.registerTask(greet);
    const worker = server.newWorker({ handleSignals: false });
    await worker.start();
    const r = await server.sendTask(call(greet, 'len', new Uint8Array([1, 2, 3])));
    expect(await r.get({ timeoutMs: 2000 })).toEqual(['len3', 1]);
    expect((await r.state())?.Results).toEqual([{ Type: 'string', Value: 'len3' }, { Type: 'int32', Value: 1 }]);
    await worker.stop();
    await server.close();
  });
});
