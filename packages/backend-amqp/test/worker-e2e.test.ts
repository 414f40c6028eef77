import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import { MemoryBroker, MemoryTransport, Server, arg, chord, group, newSignature } from '@machinery-ts/core';
import { afterAll, describe, expect, it } from 'vitest';
import { AmqpBackend } from '../src/index.js';

const url = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';
const exchange = `mts_backend_e2e_${randomUUID()}`;

afterAll(async () => {
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  await ch.deleteExchange(exchange).catch(() => {});
  await conn.close();
});

describe('core Worker on the AMQP backend', () => {
  it('runs tasks and a chord across 4 workers; the callback fires once; a failing member rejects its chord', async () => {
    const transport = new MemoryTransport();
    const servers = Array.from({ length: 4 }, () => new Server({ broker: new MemoryBroker({ transport }), backend: new AmqpBackend({ url, exchange }) }));
    let callbacks = 0;
    const workers = servers.map((s) => {
      s.registerTask('double', ([n]) => (n as bigint) * 2n);
      s.registerTask('fail', () => {
        throw new Error('member failed for good');
      });
      s.registerTask('total', (args) => {
        callbacks += 1;
        return (args as bigint[]).reduce((a, b) => a + b, 0n);
      });
      return s.newWorker({ concurrency: 8, handleSignals: false });
    });
    await Promise.all(workers.map((w) => w.start()));
    const producer = servers[0] as Server;

    const one = await producer.sendTask({ Name: 'double', Args: [arg('int64', 4611686018427387903n)] });
    expect(await one.get({ timeoutMs: 10_000 })).toEqual([9223372036854775806n]);

    const members = Array.from({ length: 40 }, (_, i) => newSignature({ Name: 'double', Args: [arg('int64', BigInt(i))] }));
    const r = await producer.sendChord(chord(group(...members), newSignature({ Name: 'total' })), { concurrency: 16 });
    expect(await r.get({ timeoutMs: 20_000 })).toEqual([1560n]);

    const bad = await producer.sendChord(chord(group(newSignature({ Name: 'double', Args: [arg('int64', 1n)] }), newSignature({ Name: 'fail' })), newSignature({ Name: 'total' })));
    await expect(bad.get({ timeoutMs: 10_000 })).rejects.toThrow('member failed for good');
    await new Promise((res) => setTimeout(res, 200));
    expect(callbacks).toBe(1);

    await Promise.all(workers.map((w) => w.stop()));
    await Promise.all(servers.map((s) => s.close()));
  });
});
