import { describe, expect, it } from 'vitest';
import { MemoryBackend, MemoryBroker, MemoryTransport, MemoryStore, Server, arg, chord, group, newSignature } from '../src/index.js';

describe('chords under load', () => {
  it('a 200-member chord sent with concurrency 16 fires exactly once, 50 times over, across 4 workers', async () => {
    // Four "processes": separate servers and workers on one shared transport and store.
    const transport = new MemoryTransport();
    const store = new MemoryStore();
    const servers = Array.from({ length: 4 }, () => new Server({ broker: new MemoryBroker({ transport }), backend: new MemoryBackend({ store }) }));
    const fired = new Map<string, number>();
    const workers = servers.map((s) => {
      s.registerTask('member', async ([n]) => {
        await new Promise((r) => setImmediate(r));
        return n;
      });
      s.registerTask('callback', (args, ctx) => {
        fired.set(ctx.signature.UUID, (fired.get(ctx.signature.UUID) ?? 0) + 1);
        return args.length;
      });
      return s.newWorker({ concurrency: 8, handleSignals: false });
    });
    await Promise.all(workers.map((w) => w.start()));
    const producer = servers[0] as Server;
    for (let trial = 0; trial < 50; trial++) {
      const members = Array.from({ length: 200 }, (_, i) => newSignature({ Name: 'member', Args: [arg('int64', BigInt(i))] }));
      const r = await producer.sendChord(chord(group(...members), newSignature({ Name: 'callback' })), { concurrency: 16 });
      expect(await r.get({ timeoutMs: 10_000 })).toEqual([200n]);
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(fired.size).toBe(50);
    expect([...fired.values()].every((n) => n === 1)).toBe(true);
    await Promise.all(workers.map((w) => w.stop()));
    await Promise.all(servers.map((s) => s.close()));
  });
});
