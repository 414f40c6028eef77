import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { corkForTick } from '../src/index.js';

/** A stream that records how its writes reach the underlying sink: one entry per syscall-like call. */
function sink() {
  const calls: string[][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      calls.push([chunk.toString()]);
      cb();
    },
    writev(chunks, cb) {
      calls.push(chunks.map((c) => String(c.chunk)));
      cb();
    },
  });
  return { stream, calls };
}

describe('corkForTick', () => {
  it('sends the writes of one tick in one writev, and later ticks separately', async () => {
    const { stream, calls } = sink();
    corkForTick(stream);
    stream.write('a');
    corkForTick(stream); // a second call in the same tick changes nothing
    stream.write('b');
    await Promise.resolve().then(() => stream.write('c')); // still this tick's work
    expect(calls).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(calls).toEqual([['a', 'b', 'c']]);
    expect(stream.writableCorked).toBe(0);
    corkForTick(stream);
    stream.write('d');
    await new Promise((r) => setImmediate(r));
    expect(calls).toEqual([['a', 'b', 'c'], ['d']]);
  });

  it('ignores a missing or destroyed stream', () => {
    expect(() => corkForTick(undefined)).not.toThrow();
    const { stream } = sink();
    stream.destroy();
    corkForTick(stream);
    expect(stream.writableCorked).toBe(0);
  });
});
