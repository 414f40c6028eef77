import { randomUUID } from 'node:crypto';
import type { GetMessage } from 'amqplib';
import { MemoryBackend, Server, TaskStates, formatRfc3339Nano, newSignature, newTaskUUID } from '@machinery-ts/core';
import { describe, expect, it } from 'vitest';
import { rabbitTestBed } from './support.js';
import { AmqpBroker, type AmqpBrokerOptions } from '../src/index.js';

// A real Worker on broker-amqp: what RabbitMQ hands it, how it runs, where the rejects go.

const bed = rabbitTestBed();
const { url, exchange: X, queues } = bed;
const q = (): string => {
  const name = `mts_test_q_${randomUUID()}`;
  queues.push(name, `${name}.machinery-ts.dead_letter`);
  return name;
};


/** A server whose broker routes `queue` by its own name (no orphan queue), and its worker. */
async function serve(queue: string, setup: (s: Server) => void, extra: Partial<AmqpBrokerOptions> = {}, workerOptions: { unknownTaskRequeues?: number } = {}) {
  const errors: Error[] = [];
  const server = new Server({
    broker: new AmqpBroker({ url, exchange: X, bindingKey: queue, defaultQueue: queue, ...extra }),
    backend: new MemoryBackend(),
    defaultQueue: queue,
  });
  setup(server);
  const worker = server.newWorker({ concurrency: 4, handleSignals: false, onError: (e) => errors.push(e), ...workerOptions });
  await worker.start();
  return {
    server,
    errors,
    close: async (): Promise<void> => {
      await worker.stop();
      await server.close();
    },
  };
}

const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('a Worker on broker-amqp', () => {
  it("runs a message with Go's exact bytes and properties, published by hand", async () => {
    const queue = q();
    const uuid = `task_${randomUUID()}`;
    // What a Go v2 producer writes (reference §4.3): body, application/json, persistent, Priority, empty Headers.
    const body =
      `{"UUID":"${uuid}","Name":"add","RoutingKey":"${queue}","ETA":null,"GroupUUID":"","GroupTaskCount":0,` +
      '"Args":[{"Name":"","Type":"int64","Value":1},{"Name":"","Type":"int64","Value":2}],"Headers":{},"Priority":5,' +
      '"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,' +
      '"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}';
    const app = await serve(queue, (s) => s.registerTask('add', (args) => (args[0] as bigint) + (args[1] as bigint)));
    try {
      const ch = await bed.admin.createConfirmChannel();
      await new Promise<void>((resolve, reject) =>
        ch.publish(X, queue, Buffer.from(body), { contentType: 'application/json', deliveryMode: 2, priority: 5, headers: {} }, (err) =>
          err ? reject(err) : resolve(),
        ),
      );
      await ch.close();
      await until('SUCCESS', async () => (await app.server.backend.getState(uuid))?.State === TaskStates.SUCCESS);
      const state = await app.server.backend.getState(uuid);
      expect(state?.TaskName).toBe('add');
      expect(state?.Results).toEqual([{ Type: 'int64', Value: 3 }]);
      const { messageCount } = await (async () => {
        const c = await bed.admin.createChannel();
        const ok = await c.checkQueue(queue);
        await c.close();
        return ok;
      })();
      expect(messageCount).toBe(0); // acked after the outcome was recorded
    } finally {
      await app.close();
    }
  });

  for (const mode of ['a queue per delay (Go case A)', 'one shared delayed queue (Go case B)'] as const) {
    it(`runs tasks delayed by 1 s and 3 s within 150 ms of their ETA: ${mode}`, async () => {
      const queue = q();
      const extra: Partial<AmqpBrokerOptions> = mode.includes('case B') ? { delayedQueue: q() } : {};
      const started = new Map<string, number>();
      const app = await serve(
        queue,
        (s) =>
          s.registerTask('when', (_args, ctx) => {
            started.set(ctx.signature.UUID, Date.now());
          }),
        extra,
      );
      try {
        const etas = new Map<string, number>();
        // In ETA order: with one shared queue a later head would hold back an earlier one (Go's caveat).
        for (const ms of [1_000, 3_000]) {
          const UUID = newTaskUUID();
          const eta = Date.now() + ms;
          etas.set(UUID, eta);
          await app.server.sendTask(newSignature({ UUID, Name: 'when', RoutingKey: queue, ETA: formatRfc3339Nano(eta) }));
        }
        await until('both delayed tasks', () => started.size === 2, 15_000);
        const lateness = [...etas].map(([uuid, eta]) => (started.get(uuid) as number) - eta);
        console.log(`${mode}: ran ${lateness.map((l) => `${l} ms`).join(' and ')} after the ETA`);
        for (const l of lateness) {
          expect(l).toBeGreaterThanOrEqual(-5);
          expect(l).toBeLessThanOrEqual(150);
        }
        for (const [uuid] of etas) expect((await app.server.backend.getState(uuid))?.State).toBe(TaskStates.SUCCESS);
      } finally {
        await app.close();
      }
    });
  }

  it('sends poison messages to the dead-letter queue with a reason: malformed, empty, unknown task, failure kept on request', async () => {
    const queue = q();
    const slowRuns: number[] = [];
    const app = await serve(
      queue,
      (s) => {
        s.registerTask('boom', () => {
          throw new Error('boom');
        });
        s.registerTask('slow', async (_args, ctx) => {
          slowRuns.push(ctx.attempt);
          await new Promise((r) => setTimeout(r, 800));
        });
      },
      {},
      { unknownTaskRequeues: 2 },
    );
    const dlq = `${queue}.machinery-ts.dead_letter`;
    try {
      const ch = await bed.admin.createConfirmChannel();
      const raw = (body: string): Promise<void> =>
        new Promise<void>((resolve, reject) =>
          ch.publish(X, queue, Buffer.from(body), { contentType: 'application/json', deliveryMode: 2 }, (err) => (err ? reject(err) : resolve())),
        );
      // A task is running on the same channel while the poison arrives (Go nacks every unacked delivery then).
      const slowUUID = newTaskUUID();
      await app.server.sendTask(newSignature({ UUID: slowUUID, Name: 'slow', RoutingKey: queue }));
      await until('the slow task to start', () => slowRuns.length === 1);
      const malformedUUID = `task_${randomUUID()}`;
      await raw(`{"UUID":"${malformedUUID}","Name":"boom","Args":[`);
      await raw('');
      const unknownUUID = newTaskUUID();
      await app.server.sendTask(newSignature({ UUID: unknownUUID, Name: 'nobody-has-it', RoutingKey: queue }));
      const failedUUID = newTaskUUID();
      await app.server.sendTask(newSignature({ UUID: failedUUID, Name: 'boom', RoutingKey: queue, StopTaskDeletionOnError: true }));
      await ch.close();

      const parked: GetMessage[] = [];
      const reader = await bed.admin.createChannel();
      await until(
        '4 dead letters',
        async () => {
          const m = await reader.get(dlq, { noAck: true }).catch(() => false as const);
          if (m) parked.push(m);
          return parked.length === 4;
        },
        20_000,
      );
      await reader.close();
      const byBody = (pred: (b: string) => boolean): GetMessage | undefined => parked.find((m) => pred(m.content.toString()));
      const reason = (m: GetMessage | undefined): string => String(m?.properties.headers?.['x-machinery-ts-reason']);
      expect(reason(byBody((b) => b.includes(malformedUUID)))).toMatch(/^Malformed task message/);
      expect(reason(byBody((b) => b === ''))).toMatch(/^Malformed task message/);
      expect(reason(byBody((b) => b.includes(unknownUUID)))).toBe('task nobody-has-it is not registered');
      expect(reason(byBody((b) => b.includes(failedUUID)))).toBe('task failed: boom');
      for (const m of parked) expect(m.properties.headers?.['x-machinery-ts-queue']).toBe(queue);

      // Where the message names a task, its result says what happened to it.
      expect((await app.server.backend.getState(malformedUUID))?.State).toBe(TaskStates.FAILURE);
      expect((await app.server.backend.getState(unknownUUID))?.Error).toBe('task nobody-has-it is not registered');
      expect((await app.server.backend.getState(failedUUID))?.Error).toBe('boom');
      await until('the slow task', async () => (await app.server.backend.getState(slowUUID))?.State === TaskStates.SUCCESS);
      expect(slowRuns).toEqual([1]);
      // Its ack still found its channel: no 'unknown delivery tag' or other channel error.
      expect(app.errors.map((e) => e.message).filter((m) => /channel|delivery tag|PRECONDITION/i.test(m))).toEqual([]);
      // Nothing is left behind in the work queue.
      const c = await bed.admin.createChannel();
      expect((await c.checkQueue(queue)).messageCount).toBe(0);
      await c.close();
    } finally {
      await app.close();
    }
  });
});
