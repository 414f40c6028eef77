import { randomUUID } from 'node:crypto';
import { type Broker, type Delivery, decodeSignature, newSignature, newTaskUUID, formatRfc3339Nano } from '@machinery-ts/core';
import { afterEach, describe, expect, it } from 'vitest';

export interface BrokerContractOptions {
  /** A new broker connected to the shared server. */
  readonly create: () => Promise<Broker> | Broker;
  /** Makes `broker` die as a killed process would (drop its connection without settling). */
  readonly crash?: (broker: Broker) => Promise<void>;
  /** Redelivery after a crash is this slow on this transport; tests wait this long. @default capabilities */
  readonly redeliveryWaitMs?: number;
}

/** Gathers deliveries (with their arrival times) and waits for a count of them. */
export function collectDeliveries() {
  const got: Delivery[] = [];
  const at: number[] = [];
  const waiters: (() => void)[] = [];
  return {
    got,
    at,
    onDelivery: (d: Delivery) => {
      got.push(d);
      at.push(Date.now());
      for (const w of waiters.splice(0)) w();
    },
    async until(n: number, timeoutMs = 10_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (got.length < n) {
        if (Date.now() > deadline) throw new Error(`expected ${n} deliveries, got ${got.length}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 20);
        });
      }
    },
  };
}

export function brokerContract(name: string, options: BrokerContractOptions): void {
  describe(`Broker contract: ${name}`, () => {
    const opened: Broker[] = [];
    const make = async (): Promise<Broker> => {
      const b = await options.create();
      opened.push(b);
      return b;
    };
    const queue = (): string => `contract_${randomUUID()}`;
    afterEach(async () => {
      await Promise.allSettled(opened.splice(0).map((b) => b.close()));
    });

    it('delivers a published message with the Go body, routing key set', async () => {
      const broker = await make();
      const q = queue();
      const sig = newSignature({ UUID: newTaskUUID(), Name: 'add', RoutingKey: q });
      const c = collectDeliveries();
      await broker.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
      await broker.publish(sig);
      await c.until(1);
      const d = c.got[0] as Delivery;
      expect(decodeSignature(d.body).UUID).toBe(sig.UUID);
      expect(d.deliveryCount).toBe(1);
      await d.settle({ kind: 'ack' });
    });

    it('never has more than prefetch unsettled deliveries, and continues after settling', async () => {
      const broker = await make();
      const q = queue();
      await broker.publishBatch(Array.from({ length: 6 }, () => newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q })));
      const c = collectDeliveries();
      await broker.consume(q, { prefetch: 2, onDelivery: c.onDelivery });
      await c.until(2);
      await new Promise((r) => setTimeout(r, 300));
      expect(c.got.length).toBe(2);
      for (const d of c.got.splice(0)) await d.settle({ kind: 'ack' });
      await c.until(2);
      expect(c.got.length).toBe(2);
    });

    it('setPrefetch, where offered, raises the bound of a running consumer and lowers it without taking back', async (ctx) => {
      const broker = await make();
      const q = queue();
      await broker.publishBatch(Array.from({ length: 6 }, () => newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q })));
      const c = collectDeliveries();
      const sub = await broker.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
      if (!sub.setPrefetch) {
        ctx.skip();
        return;
      }
      await c.until(1);
      sub.setPrefetch(3);
      await c.until(3);
      await new Promise((r) => setTimeout(r, 300));
      expect(c.got.length).toBe(3);
      sub.setPrefetch(1);
      await (c.got[0] as Delivery).settle({ kind: 'ack' });
      await (c.got[1] as Delivery).settle({ kind: 'ack' });
      await new Promise((r) => setTimeout(r, 300));
      expect(c.got.length).toBe(3);
      await (c.got[2] as Delivery).settle({ kind: 'ack' });
      await c.until(4);
      await new Promise((r) => setTimeout(r, 300));
      expect(c.got.length).toBe(4);
    });

    it('holds a delayed message until its ETA', async () => {
      const broker = await make();
      const q = queue();
      const c = collectDeliveries();
      await broker.consume(q, { prefetch: 5, onDelivery: c.onDelivery });
      const start = Date.now();
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q, ETA: formatRfc3339Nano(Date.now() + 800) }));
      await c.until(1, 10_000);
      expect(Date.now() - start).toBeGreaterThanOrEqual(750);
    });

    it('redelivers a requeued message and a retry-later one after its delay', async () => {
      const broker = await make();
      const q = queue();
      const c = collectDeliveries();
      await broker.consume(q, { prefetch: 5, onDelivery: c.onDelivery });
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 't', RoutingKey: q }));
      await c.until(1);
      await (c.got[0] as Delivery).settle({ kind: 'requeue' });
      await c.until(2);
      const t0 = Date.now();
      await (c.got[1] as Delivery).settle({ kind: 'retry-later', delayMs: 500 });
      await c.until(3);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
      expect(decodeSignature((c.got[2] as Delivery).body).Name).toBe('t');
      if (broker.capabilities.countsDeliveries) expect((c.got[2] as Delivery).deliveryCount).toBeGreaterThan(1);
    });

    it('does not redeliver a dead-lettered or acked message, and a second settle is ignored', async () => {
      const broker = await make();
      const q = queue();
      const c = collectDeliveries();
      await broker.consume(q, { prefetch: 5, onDelivery: c.onDelivery });
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'a', RoutingKey: q }));
      await broker.publish(newSignature({ UUID: newTaskUUID(), Name: 'b', RoutingKey: q }));
      await c.until(2);
      await (c.got[0] as Delivery).settle({ kind: 'dead-letter', reason: 'test' });
      await (c.got[1] as Delivery).settle({ kind: 'ack' });
      await (c.got[1] as Delivery).settle({ kind: 'requeue' });
      await new Promise((r) => setTimeout(r, 700));
      expect(c.got.length).toBe(2);
    });

    it('stop() ends deliveries; a crashed consumer\'s unsettled message comes back to another', async () => {
      const a = await make();
      const b = await make();
      const q = queue();
      const ca = collectDeliveries();
      await a.consume(q, { prefetch: 1, onDelivery: ca.onDelivery });
      await b.publish(newSignature({ UUID: newTaskUUID(), Name: 'survivor', RoutingKey: q }));
      await ca.until(1);
      if (options.crash) await options.crash(a);
      else await a.close();
      const cb = collectDeliveries();
      await b.consume(q, { prefetch: 1, onDelivery: cb.onDelivery });
      await cb.until(1, (options.redeliveryWaitMs ?? b.capabilities.redeliveryTimeoutMs) + 10_000);
      expect(decodeSignature((cb.got[0] as Delivery).body).Name).toBe('survivor');
      await (cb.got[0] as Delivery).settle({ kind: 'ack' });
    });

    it('delivers a raw malformed body untouched, for the worker to judge', async () => {
      const broker = await make();
      const q = queue();
      const c = collectDeliveries();
      await broker.consume(q, { prefetch: 1, onDelivery: c.onDelivery });
      const sig = newSignature({ UUID: newTaskUUID(), Name: 'x\u2028<&>', RoutingKey: q, Args: [{ Name: '', Type: 'int64', Value: 18446744073709551615n }] });
      await broker.publish(sig);
      await c.until(1);
      expect(decodeSignature((c.got[0] as Delivery).body).Args?.[0]?.Value).toBe(18446744073709551615n);
    });
  });
}
