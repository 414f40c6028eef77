import { randomUUID } from 'node:crypto';
import { newSignature } from '@machinery-ts/core';
import { collectDeliveries } from '@machinery-ts/contract-tests';
import { describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { brokerTestBed, recordCommands } from './support.js';

const { url, queue, keyPrefix, redis, broker } = brokerTestBed('acks');

describe('RedisBroker acks', () => {
  it('sends the acks of one turn as one call carrying claim numbers (no bodies), each resolving only once its message left the claimed hash', async () => {
    const n = 40;
    await broker.publishBatch(Array.from({ length: n }, (_, i) => newSignature({ Name: 'noop', UUID: `t${i}` })));
    const c = collectDeliveries();
    const sub = await broker.consume(queue, { prefetch: n, onDelivery: c.onDelivery, consumerTag: 'acks' });
    await c.until(n);
    const claimed = (await redis.keys(`${keyPrefix}claimed:acks:*`))[0] as string;
    expect(await redis.hlen(claimed)).toBe(n + 1); // the messages and the '#' counter

    const recorded = recordCommands(broker.client);
    try {
      await Promise.all(c.got.map((d) => d.settle({ kind: 'ack' })));
    } finally {
      recorded.stop();
    }
    const calls = recorded.calls;
    // One call removes from the hash (its first key): the acks, with the claim of the slots they
    // free (the queue is empty, so nothing comes); a prefetch of 40 is too small to be split in
    // halves (see 'refills on ack' below). It carries one number per acked message and no body.
    // (eval: a first-time NOSCRIPT retry; the claim that follows names the queue first.)
    const onHash = calls.filter((call) => call[0] !== 'eval' && (call[1] === claimed || call[3] === claimed));
    expect(onHash).toHaveLength(1);
    const numbers = c.got.map((d) => (d as unknown as { claimNo: string }).claimNo).sort();
    expect(onHash[0]?.slice(-n).sort()).toEqual(numbers);
    expect(onHash[0]?.some((a) => a.includes('"noop"'))).toBe(false);
    expect(await redis.hkeys(claimed)).toEqual(['#']);

    // On an empty queue the consumer waits in BLMOVE: that message sits in the list until its ack.
    const inflight = broker.inflightKey((await redis.hkeys(broker.consumersKey)).find((k) => k.startsWith('acks:')) as string);
    await broker.publish(newSignature({ Name: 'noop', UUID: 'single' }));
    await c.until(n + 1);
    expect(await redis.llen(inflight)).toBe(1);
    await c.got[n]?.settle({ kind: 'ack' });
    expect(await redis.llen(inflight)).toBe(0);
    await sub.stop();
  });

  it('an ack still gathering when the broker closes is sent before the unsettled rest goes back to the queue', async () => {
    const q2 = `${queue}_close`;
    const closing = new RedisBroker({ url, defaultQueue: q2, keyPrefix });
    await closing.publishBatch([newSignature({ Name: 'noop', UUID: 'acked' }), newSignature({ Name: 'noop', UUID: 'unsettled' })]);
    const c = collectDeliveries();
    await closing.consume(q2, { prefetch: 2, onDelivery: c.onDelivery, consumerTag: 'closing' });
    await c.until(2);
    const acked = c.got.find((d) => d.body.includes('"acked"'));
    const settling = acked?.settle({ kind: 'ack' });
    await closing.close();
    await settling;
    // Only the unsettled message is handed back; the acked one is not run again.
    const left = await redis.lrange(q2, 0, -1);
    await redis.del(q2);
    expect(left.map((b) => (JSON.parse(b) as { UUID: string }).UUID)).toEqual(['unsettled']);
  });
});

describe('RedisBroker in-flight return', () => {
  it("puts a dead consumer's claimed messages back at the queue head in their order, the unsettled only", async () => {
    const q3 = `${queue}_reap`;
    const prefix = `mts_test_${randomUUID()}:`;
    const dying = new RedisBroker({ url, defaultQueue: q3, keyPrefix: prefix, leaseMs: 300, reapIntervalMs: 100 });
    await dying.publishBatch(Array.from({ length: 8 }, (_, i) => newSignature({ Name: 'noop', UUID: `m${i}` })));
    const c = collectDeliveries();
    await dying.consume(q3, { prefetch: 5, onDelivery: c.onDelivery, consumerTag: 'dying' });
    await c.until(5);
    await c.got[1]?.settle({ kind: 'ack' });
    await c.got[3]?.settle({ kind: 'ack' });
    await dying.disconnectAbruptly();
    const reaper = new RedisBroker({ url, defaultQueue: q3, keyPrefix: prefix, leaseMs: 300, reapIntervalMs: 100 });
    let moved = 0;
    for (let i = 0; i < 40 && moved <= 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      moved = await reaper.reap();
    }
    // The two acks freed slots, so it had claimed more before it died: all unsettled come back.
    expect(moved).toBe(c.got.length - 2);
    const left = (await redis.lrange(q3, 0, -1)).map((b) => (JSON.parse(b) as { UUID: string }).UUID);
    expect(left).toEqual(['m0', 'm2', 'm4', 'm5', 'm6', 'm7']);
    expect(await redis.keys(`${prefix}claimed:*`)).toEqual([]);
    await reaper.close();
    await redis.del(q3);
  });
});

/** A broker of its own on a fresh queue holding `n` messages, consumed with `prefetch`; waits for the first deliveries. */
async function consuming(tag: string, n: number, prefetch: number) {
  const q = `${queue}_${tag}`;
  const prefix = `mts_test_${randomUUID()}:`;
  const b = new RedisBroker({ url, defaultQueue: q, keyPrefix: prefix });
  await b.publishBatch(Array.from({ length: n }, (_, i) => newSignature({ Name: 'noop', UUID: `${tag}${i}` })));
  const c = collectDeliveries();
  const sub = await b.consume(q, { prefetch, onDelivery: c.onDelivery, consumerTag: tag });
  await c.until(prefetch);
  const done = async (): Promise<void> => {
    await b.close();
    await redis.del(q);
  };
  return { q, prefix, b, c, sub, done };
}

describe('RedisBroker refills on ack', () => {
  it('claims the slots a turn of acks frees in the same call, never above prefetch', async () => {
    const { q: q4, b, c, sub, done } = await consuming('refill', 30, 10);
    const recorded = recordCommands(b.client);
    await Promise.all(c.got.slice(0, 4).map((d) => d.settle({ kind: 'ack' })));
    recorded.stop();
    // The 4 freed slots came back with the acks' reply: delivered before the acks resolved.
    expect(c.got).toHaveLength(14);
    expect(recorded.names().filter((n) => n === 'evalsha' || n === 'hdel')).toEqual(['evalsha']);
    expect(await redis.llen(q4)).toBe(16);
    // Never more than prefetch unsettled, and the rest drains normally.
    for (let settled = 4; settled < 30; settled++) {
      expect(c.got.length - settled).toBeLessThanOrEqual(10);
      await c.until(settled + 1);
      await c.got[settled]?.settle({ kind: 'ack' });
    }
    expect(new Set(c.got.map((d) => (JSON.parse(d.body) as { UUID: string }).UUID)).size).toBe(30);
    await sub.stop();
    await done();
  });

  it('from a prefetch of 100, sends a turn of 100 acks as two calls of 50 a turn apart, each claiming the 50 slots it frees', async () => {
    const { b, c, sub, done } = await consuming('halves', 200, 100);
    const recorded = recordCommands(b.client);
    const acks = c.got.slice(0, 100).map((d) => d.settle({ kind: 'ack' }));
    const callsAfter = () => recorded.calls.filter((call) => call[0] === 'evalsha' && call.length > 50);
    // Runs right after the flush and before the turn after it.
    const afterFlush = await new Promise<number>((r) => setImmediate(() => r(callsAfter().length)));
    await Promise.all(acks);
    recorded.stop();
    expect(afterFlush).toBe(1);
    // After the sha, the key count and the two keys: the slots claimed, then the 50 claim numbers.
    expect(callsAfter().map((call) => [call[5], call.length - 6])).toEqual([
      ['50', 50],
      ['50', 50],
    ]);
    await c.until(200);
    for (const d of c.got.slice(100)) await d.settle({ kind: 'ack' });
    expect(new Set(c.got.map((d) => (JSON.parse(d.body) as { UUID: string }).UUID)).size).toBe(200);
    await sub.stop();
    await done();
  });
});

describe('RedisBroker stop during a refill', () => {
  it('hands out nothing after stop(), and the refilled messages go back to the queue', async () => {
    const { q: q5, prefix, c, sub, done } = await consuming('stopping', 20, 5);
    const acks = c.got.slice(0, 5).map((d) => d.settle({ kind: 'ack' }));
    await new Promise((r) => setImmediate(r)); // the acks and their refill are sent…
    await sub.stop(); // …and stop() begins before the reply
    const seen = c.got.length;
    await Promise.all(acks);
    await new Promise((r) => setTimeout(r, 100));
    expect(c.got.length).toBe(seen);
    expect(await redis.llen(q5)).toBe(20 - seen);
    expect(await redis.keys(`${prefix}claimed:*`)).toEqual([]);
    await done();
  });
});

describe('RedisBroker after a reconnect', () => {
  it('puts back claims whose reply never arrived, and only those', async () => {
    const { q, prefix, b, c, sub, done } = await consuming('stranded', 6, 3);
    const claimed = (await redis.keys(`${prefix}claimed:stranded:*`))[0] as string;
    // As a claim executed just before a connection broke leaves it: in the hash, never handed out.
    const lost = JSON.stringify(newSignature({ Name: 'noop', UUID: 'lost-reply' }));
    await redis.hset(claimed, '999', lost);
    b.client.disconnect(true); // ioredis reconnects; the broker looks at its claimed hash again
    for (let i = 0; i < 100 && (await redis.hexists(claimed, '999')) === 1; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await redis.hexists(claimed, '999')).toBe(0);
    expect(await redis.lindex(q, 0)).toBe(lost); // back at the head of its queue
    // The three it holds stay claimed: not handed back, not given out twice.
    expect(c.got).toHaveLength(3);
    expect(await redis.hlen(claimed)).toBe(4); // three messages and the '#' counter
    await Promise.all(c.got.map((d) => d.settle({ kind: 'ack' })));
    await c.until(4);
    expect((JSON.parse(c.got[3]?.body ?? '{}') as { UUID: string }).UUID).toBe('lost-reply');
    await sub.stop();
    await done();
  });
});

describe('RedisBroker at a trickle', () => {
  const claimNo = (d: unknown): string | undefined => (d as { claimNo: string | undefined }).claimNo;

  it('waits in BLMOVE again after a blocking delivery: one command per message on the main connection (the ack)', async () => {
    const q = `${queue}_trickle`;
    const b = new RedisBroker({ url, defaultQueue: q, keyPrefix: `mts_test_${randomUUID()}:` });
    const c = collectDeliveries();
    const sub = await b.consume(q, { prefetch: 4, onDelivery: c.onDelivery, consumerTag: 'trickle' });
    await new Promise((r) => setTimeout(r, 50)); // the first claim found nothing; it waits in BLMOVE
    const recorded = recordCommands(b.client);
    for (let i = 0; i < 5; i++) {
      await redis.rpush(q, JSON.stringify(newSignature({ Name: 'noop', UUID: `slow${i}` })));
      await c.until(i + 1);
      await c.got[i]?.settle({ kind: 'ack' });
      await new Promise((r) => setImmediate(r));
    }
    recorded.stop();
    expect(c.got.every((d) => claimNo(d) === undefined)).toBe(true); // all came by BLMOVE
    // Just the acks (each with its refill claim); no claim that finds the queue empty in between.
    const timers = [b.leasesKey, b.reaperLockKey];
    const perMessage = recorded.calls.filter((call) => !timers.some((k) => call.includes(k)));
    expect(perMessage).toHaveLength(5);
    expect(perMessage.every((call) => call.includes(q))).toBe(true);
    await sub.stop();
    await b.close();
    await redis.del(q);
  });

  it('still fills every slot while earlier deliveries run, and picks up a burst in one batch at the next ack', async () => {
    const q = `${queue}_burst`;
    const b = new RedisBroker({ url, defaultQueue: q, keyPrefix: `mts_test_${randomUUID()}:` });
    const c = collectDeliveries();
    const sub = await b.consume(q, { prefetch: 3, onDelivery: c.onDelivery, consumerTag: 'burst' });
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 3; i++) {
      await redis.rpush(q, JSON.stringify(newSignature({ Name: 'noop', UUID: `held${i}` })));
      await c.until(i + 1); // delivered although none of the earlier ones is settled
    }
    await redis.rpush(q, ...Array.from({ length: 10 }, (_, i) => JSON.stringify(newSignature({ Name: 'noop', UUID: `burst${i}` }))));
    await new Promise((r) => setTimeout(r, 50));
    expect(c.got).toHaveLength(3); // prefetch holds
    await Promise.all(c.got.map((d) => d.settle({ kind: 'ack' })));
    // The three acks' refill claimed three at once, into the claimed hash.
    expect(c.got).toHaveLength(6);
    expect(c.got.slice(3).every((d) => claimNo(d) !== undefined)).toBe(true);
    await sub.stop();
    await b.close();
    await redis.del(q);
  });
});

/**
 * Runs `settle` with the first script on consumer `tag`'s in-flight keys (its ack) refused, as
 * Redis would refuse a command, and checks that the settle rejected because of it.
 */
async function refuseOnce(own: RedisBroker, tag: string, settle: () => Promise<void> | undefined): Promise<void> {
  const client = own.client;
  const send = client.sendCommand.bind(client);
  const onInflight = new RegExp(`(claimed|inflight):${tag}:`);
  let refused = 0;
  client.sendCommand = ((command: { name: string; args: unknown[]; reject: (e: Error) => void; promise: Promise<unknown> }, ...rest: unknown[]) => {
    if (refused === 0 && command.name === 'evalsha' && command.args.some((a) => onInflight.test(String(a)))) {
      refused += 1;
      command.reject(new Error('refused for the test'));
      return command.promise;
    }
    return (send as (...x: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  await expect(settle()).rejects.toThrow('refused for the test');
  expect(refused).toBe(1);
}

describe('RedisBroker: an ack Redis refuses', () => {
  it('is sent again on the next heartbeat, so the message leaves the in-flight list and the prefetch slot comes back', async () => {
    const q = `${queue}_refused`;
    const own = new RedisBroker({ url, defaultQueue: q, keyPrefix, leaseMs: 600 });
    const errors: string[] = [];
    const c = collectDeliveries();
    try {
      await own.publish(newSignature({ Name: 'noop', UUID: 'r1', RoutingKey: q }));
      const sub = await own.consume(q, { prefetch: 1, onDelivery: c.onDelivery, onError: (e) => errors.push(e.message), consumerTag: 'refused' });
      await c.until(1);
      await refuseOnce(own, 'refused', () => c.got[0]?.settle({ kind: 'ack' }));
      // Prefetch 1: the next message comes only once the refused ack has been recorded.
      await own.publish(newSignature({ Name: 'noop', UUID: 'r2', RoutingKey: q }));
      await c.until(2);
      // r1 is held nowhere any more (it was claimed into the hash; the blocking list is checked too).
      const held: string[] = [];
      for (const k of await redis.keys(`${keyPrefix}claimed:refused:*`)) held.push(...Object.values(await redis.hgetall(k)));
      for (const k of await redis.keys(`${keyPrefix}inflight:refused:*`)) held.push(...(await redis.lrange(k, 0, -1)));
      expect(held.filter((b) => b.includes('"r1"'))).toEqual([]);
      expect(held.filter((b) => b.includes('"r2"'))).toHaveLength(1);
      await c.got[1]?.settle({ kind: 'ack' });
      await sub.stop();
    } finally {
      await own.close();
      await redis.del(q);
    }
  });

  it('gets one more try when the consumer stops, so the release does not hand the finished message back', async () => {
    const q = `${queue}_refused_stop`;
    // A long lease: no heartbeat comes before the stop.
    const own = new RedisBroker({ url, defaultQueue: q, keyPrefix, leaseMs: 60_000 });
    const c = collectDeliveries();
    try {
      await own.publish(newSignature({ Name: 'noop', UUID: 's1', RoutingKey: q }));
      const sub = await own.consume(q, { prefetch: 1, onDelivery: c.onDelivery, onError: () => {}, consumerTag: 'refusedstop' });
      await c.until(1);
      await refuseOnce(own, 'refusedstop', () => c.got[0]?.settle({ kind: 'ack' }));
      await sub.stop();
      // Recorded at the stop: nothing went back to the queue, nothing is left in flight.
      expect(await redis.llen(q)).toBe(0);
      for (const k of await redis.keys(`${keyPrefix}claimed:refusedstop:*`)) expect(await redis.hkeys(k)).toEqual(['#']);
    } finally {
      await own.close();
      await redis.del(q);
    }
  });
});
